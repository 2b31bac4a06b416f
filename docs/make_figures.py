"""Make the README's figures from the bundled weights, without copying any CelebA pixels into the project.

    python docs/make_figures.py [--celeba ../shared/data/celeba256]

- docs/astronaut.png and each weights folder's samples.png: eye | model(s) | real face, on the public-domain
  astronaut photo that ships with scikit-image.
- docs/validation-faces.png: the bundled models' faces for held-out CelebA eyes. The eyes and real faces
  are not shown: CelebA's licence does not let this project redistribute them (see them locally with
  `eye2face evaluate`, whose grid.png has every column).
- docs/two-eyes.png (with the two-eye model): the one-eye feature model from each eye, their mean and the two-eye
  model, on the astronaut and on held-out CelebA photos.
- docs/identity-faces.png: each identity model beside its start and its control (COMPARED), from the same eyes: the
  astronaut, then held-out CelebA photos (generated faces only).
- docs/faces-by-age.png (with --utkface, a prepared set with a validation split): the same models and the all-ages
  ones on held-out UTKFace photos of each age band (generated faces only; UTKFace's licence is CelebA's).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

from eye2face_hub import EyeToFacePipeline, load_generator
from eye2face_hub.data import prepare
from eye2face_hub.grid import comparison_image
from eye2face_hub.pipeline import comparison_grid

ROOT = Path(__file__).resolve().parents[1]
# Every bundled model that is there: the research's pair, then the GAN comparison and the two-eye model.
WEIGHTS = {label: ROOT / "weights" / folder for label, folder in [
    ("L1 loss", "eye2face-l1"), ("feature loss", "eye2face-feature"), ("WGAN-GP", "eye2face-wgan-gp"),
    ("feature + GAN", "eye2face-feature-gan"), ("two eyes", "eye2face-two-eyes"),
] if (ROOT / "weights" / folder / "model.safetensors").is_file()}
# The comparisons of #24 and #25: each start, its control (the same steps without the change) and what changed, from
# weights/ when bundled, else milestones/. Those not there are left out.
COMPARED_FOLDERS = [
    ("feature loss", "eye2face-feature"), ("feature, control", "eye2face-feature-control"),
    ("feature + identity", "eye2face-feature-id"), ("feature + id, +10 ep", "eye2face-feature-id-e10"),
    ("feature, all ages", "eye2face-feature-allages"), ("feature + id, all ages", "eye2face-feature-id-allages"),
    ("two eyes", "eye2face-two-eyes"), ("two eyes, control", "eye2face-two-eyes-control"),
    ("two eyes + identity", "eye2face-two-eyes-id"), ("two eyes, all ages", "eye2face-two-eyes-allages"),
    ("two eyes + id, all ages", "eye2face-two-eyes-id-allages"),
]
AGE_EXAMPLES = 3  # held-out UTKFace photos shown per age band


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--celeba", default=str(ROOT.parent / "shared" / "data" / "celeba256"))
    parser.add_argument("--n", type=int, default=8, help="validation photos shown")
    parser.add_argument("--utkface", default=str(ROOT / "data" / "utkface-pairs"),
                        help="a prepared set with a validation split, for docs/faces-by-age.png")
    args = parser.parse_args()

    models = {name: load_generator(path) for name, path in WEIGHTS.items()}
    pipe = EyeToFacePipeline(models)
    result = pipe(data.astronaut())
    eyes = [r.eye for r in result.eyes]
    real = [result.real_face] * len(eyes)

    def faces_of(name):  # a two-eye model has one face for both eyes: shown on each eye's row
        return [result.both_eyes[name]] * len(eyes) if name in pipe.two_eyes else [r.faces[name] for r in result.eyes]

    columns = [eyes, *[faces_of(name) for name in models], real]
    Image.fromarray(comparison_grid(columns, ["eye", *models, "real"])).save(ROOT / "docs" / "astronaut.png")
    for name, path in WEIGHTS.items():
        grid = comparison_grid([eyes, faces_of(name), real], ["eye", "generated", "real"])
        Image.fromarray(grid).save(path / "samples.png")

    # The held-out photos: the last 500 files, never trained on (train_accelerate.py --val-split 333 rows).
    folder = Path(args.celeba)
    held_out = sorted(folder.glob("*.jpg"))[-500:]
    tmp = ROOT / "docs" / ".validation-photos"
    tmp.mkdir(exist_ok=True)
    try:
        for f in held_out[: 3 * args.n]:
            (tmp / f.name).unlink(missing_ok=True)
            (tmp / f.name).symlink_to(f.resolve())
        rows, _ = prepare(str(tmp), None)
    finally:
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()
    rows = rows.select(range(min(args.n, len(rows))))
    eyes = [np.asarray(im.convert("RGB")) for im in rows["left_eye"]]
    right = [np.asarray(im.convert("RGB")) for im in rows["right_eye"]]
    faces = pipe.generate(eyes)
    for name in pipe.two_eyes:  # from both eyes of the same photos
        faces[name] = [pipe.generate_from_both_eyes(a, b)[name] for a, b in zip(eyes, right)]
    Image.fromarray(comparison_grid([faces[name] for name in models], list(models))).save(ROOT / "docs" / "validation-faces.png")
    print("wrote docs/astronaut.png, docs/validation-faces.png and samples.png in each weights folder")
    if "two eyes" in pipe.two_eyes and "feature loss" in models:
        two_eyes_figure(result, faces["feature loss"], pipe.generate(right)["feature loss"], faces["two eyes"])

    compared = {label: load_generator(path) for label, path in compared_models().items()}
    astronaut = ("the astronaut (public domain)", result.eyes[0].eye, result.eyes[1].eye, result.real_face)
    held_out_rows = [("held-out CelebA photo", a, b, None) for a, b in zip(eyes, right)]
    faces_figure(compared, [astronaut, *held_out_rows], ROOT / "docs" / "identity-faces.png")
    if Path(args.utkface).is_dir():
        faces_figure(compared, utkface_rows(args.utkface), ROOT / "docs" / "faces-by-age.png")


def compared_models() -> dict[str, Path]:
    """COMPARED_FOLDERS that are there, each from weights/ when bundled, else from milestones/."""
    found = {}
    for label, folder in COMPARED_FOLDERS:
        for place in ("weights", "milestones"):
            if (ROOT / place / folder / "model.safetensors").is_file():
                found[label] = ROOT / place / folder
                break
    return found


def utkface_rows(prepared: str) -> list[tuple]:
    """AGE_EXAMPLES held-out photos of each age band, spread over the band, captioned with their age."""
    from eye2face_hub.ages import age_from_name, band_of, band_order
    from eye2face_hub.data import held_out_split

    rows = held_out_split(prepared)
    by_band = {}
    for i, name in enumerate(rows["source"]):
        by_band.setdefault(band_of(name), []).append(i)
    picked = []
    for band in band_order(by_band):
        idx = by_band[band]
        for i in idx[:: max(1, len(idx) // AGE_EXAMPLES)][:AGE_EXAMPLES]:
            row = rows[i]
            picked.append((f"age {age_from_name(row['source'])} ({band})", np.asarray(row["left_eye"].convert("RGB")),
                           np.asarray(row["right_eye"].convert("RGB")), None))
    return picked


def faces_figure(models: dict, rows: list[tuple], path: Path) -> None:
    """One captioned row a photo: its eyes and real face where they may be shown (columns left out when no row
    shows them), then each model's face (two-eye models from both eyes, one-eye models from the left eye)."""
    pipe = EyeToFacePipeline(models)
    inputs = any(real is not None for *_, real in rows)  # only photos this project may redistribute show them
    tiles = []
    for caption, left, right, real in rows:
        one_eye = pipe.generate([left]) if pipe.one_eye else {}
        both = pipe.generate_from_both_eyes(left, right) if pipe.two_eyes else {}
        faces = [both[name] if name in both else one_eye[name][0] for name in models]
        shown = [left, right, real] if real is not None else [None] * 3
        tiles.append((caption, shown + faces if inputs else faces))
    labels = (["left eye", "right eye", "real"] if inputs else []) + list(models)
    Image.fromarray(comparison_image(tiles, labels)).save(path)
    print(f"wrote {path.relative_to(ROOT)}")


def two_eyes_figure(astronaut, from_left, from_right, from_both) -> None:
    """docs/two-eyes.png: the one-eye feature model from each eye, the mean of the two, and the two-eye model.

    The astronaut's row first, with its eyes and real face; then held-out CelebA photos, whose eyes and real faces
    are grey tiles (not redistributable).
    """
    def mean(a, b):
        return ((a.astype(np.float32) + b) / 2).round().astype(np.uint8)

    (a_left, a_right), blank = astronaut.eyes, np.full_like(astronaut.real_face, 200)
    rows = [[a_left.eye, a_right.eye, a_left.faces["feature loss"], a_right.faces["feature loss"],
             mean(a_left.faces["feature loss"], a_right.faces["feature loss"]), astronaut.both_eyes["two eyes"],
             astronaut.real_face]]
    rows += [[blank, blank, a, b, mean(a, b), c, blank] for a, b, c in zip(from_left, from_right, from_both)]
    labels = ["left eye", "right eye", "from left", "from right", "mean", "two eyes", "real"]
    Image.fromarray(comparison_grid([list(c) for c in zip(*rows)], labels)).save(ROOT / "docs" / "two-eyes.png")
    print("wrote docs/two-eyes.png")


if __name__ == "__main__":
    main()
