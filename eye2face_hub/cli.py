"""The `eye2face` command: prepare data, generate faces, evaluate models and merge evaluations."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _prepare(args) -> None:
    from .data import prepare

    pairs, stats = prepare(
        args.images, args.out, image_column=args.image_column, split=args.split, num_proc=args.num_proc,
        limit=args.limit, push_to_hub=args.push_to_hub, check_landmarks=args.landmark_check, val_photos=args.val_photos,
        pad=args.pad,
    )
    total, kept = sum(stats.values()), stats["kept"]
    print(f"{total} photos: kept {kept} ({kept / max(total, 1):.1%}) -> {2 * kept} pairs")
    print(stats.table())
    for name, counts in stats.by_split.items():
        print(f"{name}: {sum(counts.values())} photos, kept {counts['kept']}")
    if args.out:
        Path(args.out, "yield.json").write_text(json.dumps(stats.to_dict(), indent=2))
        print(f"saved {args.out} ({', '.join(f'{name} {n} rows' for name, n in rows_per_split(pairs).items())})")


def rows_per_split(pairs) -> dict[str, int]:
    """Rows per split of a prepared set (one Dataset: "train")."""
    return {name: len(rows) for name, rows in pairs.items()} if hasattr(pairs, "items") else {"train": len(pairs)}


def _generate(args) -> None:
    from PIL import Image

    from .pipeline import Eye2FaceError, EyeToFacePipeline

    pipe = EyeToFacePipeline.from_pretrained({"face": args.model})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = Path(args.image[0]).stem
    if args.eye_crop:
        from .data import MIN_EYE_CROP
        from .pipeline import load_photo

        if len(args.image) > 2:
            raise Eye2FaceError("give one eye crop, or the left and the right one (--image LEFT RIGHT)")
        made = pipe.from_eye_crops([load_photo(path, min_side=MIN_EYE_CROP) for path in args.image])
        if not made.faces and not made.both_eyes:
            raise Eye2FaceError(f"{args.model} is a two-eye model: give it the left and the right eye crop "
                                "(--image LEFT RIGHT)")
        written = [(face, f"{Path(path).stem}-face") for path, face in zip(args.image, made.faces.get("face", []))]
        written += [(face, "+".join(Path(p).stem for p in args.image) + "-face") for face in made.both_eyes.values()]
        for image, name in written:
            Image.fromarray(image).save(out / f"{name}.png")
        print("wrote " + ", ".join(str(out / f"{name}.png") for _, name in written))
        return
    if len(args.image) != 1:
        raise Eye2FaceError("give one photo (--image PHOTO); two images are for two eye crops with --eye-crop")
    result = pipe(args.image[0], eyes=args.eyes)
    for note in result.notes:
        print(f"note: {note}")
    written = [(result.annotated(), "detections"), (result.real_face, "real-face")]
    for r in result.eyes:
        written += [(r.eye, f"{r.side}-eye")] + [(face, f"{r.side}-face") for face in r.faces.values()]
    written += [(face, "both-eyes-face") for face in result.both_eyes.values()]
    for image, name in written:
        Image.fromarray(image).save(out / f"{stem}-{name}.png")
    print(f"wrote {len(written)} images to {out}")


def _evaluate(args) -> None:
    from .evaluate import evaluate

    metrics = evaluate(args.model, args.images, args.out, limit=args.limit, vgg_weights=args.vgg_weights,
                       identity_block=args.identity, two_eye_baselines=args.two_eye_baselines,
                       check_landmarks=args.landmark_check)
    print((Path(args.out) / "metrics.md").read_text())
    print(f"wrote {args.out}/metrics.json, metrics.md and grid.png ({metrics['n_pairs']} pairs)")


def _merge(args) -> None:
    from .evaluate import markdown_table, merge_evaluations, model_names

    paths = [Path(r) / "metrics.json" if Path(r).is_dir() else Path(r) for r in args.runs]
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such metrics.json (give evaluate's --out folders or metrics files)")
    merged = merge_evaluations([json.loads(path.read_text()) for path in paths])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(merged, indent=2))
    out.with_suffix(".md").write_text(markdown_table(merged, model_names(merged)))
    print(f"wrote {out} and {out.with_suffix('.md')}: {len(model_names(merged))} models on {merged['n_photos']} photos")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eye2face", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="photos -> (eye, face) pairs dataset with the Haar pipeline")
    p.add_argument("--images", required=True, help="an image folder, or a dataset for datasets.load_dataset")
    p.add_argument("--out", required=True, help="where to save the pairs dataset (save_to_disk)")
    p.add_argument("--num-proc", type=int, default=None, help="processes for Dataset.map (default: 1)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N photos")
    p.add_argument("--image-column", default="image")
    p.add_argument("--split", default="train")
    p.add_argument("--push-to-hub", default=None, metavar="REPO_ID")
    p.add_argument("--landmark-check", action=argparse.BooleanOptionalAction, default=True,
                   help="drop photos whose eye boxes do not each hold a YuNet eye landmark (default; "
                   "--no-landmark-check: Haar alone, the research's filter)")
    p.add_argument("--val-photos", type=int, default=0, metavar="N",
                   help="hold out N photos as a 'validation' split, never trained on: an equal share of each age band "
                   "(from UTKFace names; one band otherwise), spread over its file names")
    p.add_argument("--pad", type=float, default=0.0, metavar="FRACTION",
                   help="pad each photo by FRACTION of its longer side (edge pixels repeated) before finding the face: "
                   "for photos cropped tight to the face, e.g. UTKFace (0.2); default 0, the research's pipeline")
    p.set_defaults(func=_prepare)

    p = sub.add_parser("generate", help="photo (or eye crop) -> generated faces as PNG")
    p.add_argument("--model", required=True, help="a saved model folder or Hub repo id")
    p.add_argument("--image", required=True, nargs="+",
                   help="a photo; or, with --eye-crop, one eye crop or two (the left and the right one; a two-eye "
                   "model needs both)")
    p.add_argument("--out", required=True)
    p.add_argument("--eyes", choices=["left", "right", "both"], default="both")
    p.add_argument("--eye-crop", action="store_true", help="the image is already an eye crop")
    p.set_defaults(func=_generate)

    p = sub.add_parser("evaluate", help="metrics of one or more models on a folder of face photos, or on a prepared "
                       "set's validation split")
    p.add_argument("--model", required=True, action="append", help="repeat to compare models")
    p.add_argument("--images", required=True,
                   help="a folder of photos (or a dataset), or a prepared pairs folder with a validation split")
    p.add_argument("--out", required=True)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument(
        "--vgg-weights", default=None,
        help="a safetensors file, a folder holding the file the model recorded, or a Hub id (default: "
        "$EYE2FACE_VGG_WEIGHTS, else the weights the model recorded, found by name in ../shared/vgg19/)",
    )
    p.add_argument("--two-eye-baselines", action="store_true",
                   help="also score each one-eye model per photo: from the left eye alone, from the right eye alone, "
                   "and the mean of the two faces (the baselines for two-eye models)")
    p.add_argument("--no-identity", dest="identity", action="store_false",
                   help="leave out the identity blocks (dlib's face descriptor, needs pip install -e \".[eval]\"; SFace)")
    p.add_argument("--landmark-check", action=argparse.BooleanOptionalAction, default=True,
                   help="drop photos whose eye boxes do not each hold a YuNet eye landmark, as prepare does (default; "
                   "--no-landmark-check: Haar alone, the research's filter, e.g. its 333 CelebA validation photos)")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("merge", help="several evaluations of the same photos as one table (each model's rows must "
                       "agree where two evaluations scored it)")
    p.add_argument("runs", nargs="+", metavar="RUN", help="evaluate's --out folders, or their metrics.json files")
    p.add_argument("--out", required=True, metavar="FILE.json", help="the merged metrics; its table goes beside it (.md)")
    p.set_defaults(func=_merge)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .evaluate import NothingToEvaluate, NotTheSameEvaluation
    from .hub import ModelLoadError
    from .pipeline import Eye2FaceError

    try:
        args.func(args)
    except (Eye2FaceError, ModelLoadError, FileNotFoundError, NothingToEvaluate, NotTheSameEvaluation) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
