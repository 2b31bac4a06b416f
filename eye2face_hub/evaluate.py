"""Compare generators on a folder of face photos, the way the research measured them, and more.

Pixel metrics (L1, L2, PSNR, SSIM) come from torchmetrics. The VGG metrics use the feature loss's own
backbone, layers and weights; no Inception or LPIPS weights can be fetched offline, so FD is computed
on VGG features (`fd_vgg`), not Inception (FID).

The identity block (`identity` in metrics.json) comes from an independent face recogniser, dlib's ResNet face
descriptor (`eye2face_hub.identity`, the `eval` extra); without it, everything else is still measured.

VGG weights are found, in this order: `--vgg-weights`; the `EYE2FACE_VGG_WEIGHTS` environment variable; the
path a model recorded, if it exists here; the recorded file name in `../shared/vgg19/` beside the checkout (or
beside the current folder). A recorded sha256 is checked.
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
from .data import EyeFacePairs, prepare, to_unit
from .hub import load_generator
from .losses import EyeToFaceLoss, LossConfig, file_sha256
from .model import EyeToFace
from .pipeline import comparison_grid, to_images
from .training import initialise_loss_scale
from .vgg import DEFAULT_VGG_WEIGHTS, load_vgg19

VGG_ENV = "EYE2FACE_VGG_WEIGHTS"
VGG_DEFAULT_DIRS = (Path(__file__).resolve().parents[2] / "shared" / "vgg19", Path("..") / "shared" / "vgg19")


class VGGWeightsNotFound(FileNotFoundError):
    """The VGG weights a model was trained with are not here (or a file by that name has another sha256)."""


def _is_local_reference(weights: str) -> bool:
    return weights.endswith(".safetensors") or weights.startswith((".", "/")) or os.path.exists(weights)


def find_vgg_weights(recorded: str, sha256: str | None = None, given: str | None = None) -> str:
    """A loadable VGG weights reference (a file, a folder or a Hub id) for the weights a model recorded.

    `recorded`: the model's loss_config.vgg_weights (a file name, an old absolute path, or a Hub id); `sha256`:
    its recorded hash, checked against the file found; `given`: `--vgg-weights`. Order: `given`, else
    $EYE2FACE_VGG_WEIGHTS (each a file, a folder holding the recorded file, or a Hub id; an explicit path that
    does not exist is an error, never skipped), else the recorded path as it is, else the recorded file name in
    ../shared/vgg19/ beside the checkout or beside the current folder.
    """
    name = os.path.basename(os.path.normpath(recorded)) if _is_local_reference(recorded) else None
    explicit = [(source, value) for source, value in (("--vgg-weights", given), (VGG_ENV, os.environ.get(VGG_ENV))) if value]
    if explicit:
        source, value = explicit[0]
        if name and os.path.isdir(value) and os.path.exists(os.path.join(value, name)):
            candidates = [os.path.join(value, name)]  # a folder that holds the recorded file
        elif os.path.exists(value) or not _is_local_reference(value):
            candidates = [value]  # a file, a model folder, or a Hub id
        else:
            raise VGGWeightsNotFound(f"VGG19 weights {value} ({source}) not found")
    elif name is None:
        return recorded  # a Hub id
    else:
        candidates = [recorded, *(str(folder / name) for folder in VGG_DEFAULT_DIRS)]
    for candidate in candidates:
        if not _is_local_reference(candidate):
            return candidate
        if not os.path.exists(candidate):
            continue
        file = os.path.join(candidate, "model.safetensors") if os.path.isdir(candidate) else candidate
        if sha256 and os.path.isfile(file) and file_sha256(file) != sha256:
            raise VGGWeightsNotFound(
                f"VGG19 weights {candidate} have sha256 {file_sha256(file)[:16]}..., not the {sha256[:16]}... recorded "
                f"for {recorded}: pass the weights the model was trained with (--vgg-weights PATH)"
            )
        return candidate
    hashed = f" (sha256 {sha256[:16]}...)" if sha256 else ""
    raise VGGWeightsNotFound(
        f"VGG19 weights {name}{hashed} not found at {', '.join(dict.fromkeys(candidates))}. "
        f"Pass --vgg-weights PATH (the file, or a folder holding it) or set {VGG_ENV}"
    )


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


def _feature_setup(models: dict[str, torch.nn.Module], vgg_weights: str | None) -> tuple[LossConfig, EyeToFaceLoss]:
    """The feature loss the models are compared with (the returned loss's `feature`): the trained feature model's
    layers, weights and l_initial.

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
    criterion = EyeToFaceLoss(cfg, vgg)
    record = trained[0].training_info if trained else None
    if record and record.get("l_initial"):
        criterion.feature.l_initial.copy_(torch.tensor(record["l_initial"]))
    return cfg, criterion


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
) -> dict:
    """Writes metrics.json, metrics.md and grid.png to `out`; returns the metrics.

    `two_eye_baselines` adds, for each one-eye model, its faces of each photo from the left eye alone, from the right
    eye alone, and the mean of the two (OneEyeModelOnBothEyes): what a two-eye model has to beat.

    The identity block (dlib's face descriptor) is computed when `identity_block` and the `eval` extra is
    installed; otherwise metrics["identity"] says why it is missing.
    """
    models = {src: load_generator(src).eval() for src in model_sources}
    identity_missing = identity.available() if identity_block else "left out (--no-identity)"
    cfg, criterion = _feature_setup(models, vgg_weights)  # before detection: missing weights fail at once
    feature_loss = criterion.feature
    if two_eye_baselines:
        models |= {f"{src} ({use})": OneEyeModelOnBothEyes(m, use)
                   for src, m in models.items() if m.eyes == 1 for use in OneEyeModelOnBothEyes.USES}
    pairs_rows, stats = prepare(images, None, limit=limit)
    if len(pairs_rows) == 0:
        raise ValueError(f"no photo in {images} had exactly one face and two eyes ({dict(stats)})")
    pairs = EyeFacePairs(pairs_rows)
    if not feature_loss.is_initialised:  # no trained feature model: scale by a fresh generator, as training does
        eyes, faces = (torch.stack(t) for t in zip(*(pairs[i] for i in range(min(64, len(pairs))))))
        initialise_loss_scale(criterion, eyes, faces, build_generator=EyeToFace, seed=0)

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
    face_ids = {name: [] for name in models}  # dlib descriptors of the generated faces
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
            if not identity_missing:
                face_ids[name].append(identity.descriptors(pred))

    # Both eyes of a photo share its real face: keep one real descriptor per photo.
    real = torch.cat(descriptors["real"])[pairs.one_per_photo()]
    real_id = F.normalize(F.adaptive_avg_pool2d(real, 4).flatten(1), dim=1)
    real_fd = real.mean((2, 3))
    weights = torch.tensor(cfg.layer_weights, dtype=torch.float64)
    metrics = {"n_photos": len(pairs_rows), "n_pairs": n_pairs, "haar_yield": dict(stats),
               "chance_top1": 1 / len(real), "chance_top5": min(5, len(real)) / len(real),
               "feature_layers": layers, "vgg_weights": cfg.to_dict()["vgg_weights"],
               "vgg_weights_sha256": cfg.to_dict()["vgg_weights_sha256"]}
    if identity_missing:
        metrics["identity"] = {"skipped": identity_missing}
    else:
        # One real face per photo; pair i belongs to photo pairs.photo(i).
        real_ids = identity.descriptors(pairs.faces)
        metrics["identity"] = {
            "recogniser": identity.recogniser_name(), "same_person_distance": identity.SAME_PERSON,
            "n_real_faces": len(real_ids), "chance_top1": 1 / len(real_ids), "chance_top5": min(5, len(real_ids)) / len(real_ids),
            "real_spread": identity.spread(real_ids),
            "real_within_same_person": identity.share_within_same_person(real_ids),  # different photos called one person
        }
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
        if not identity_missing:
            m["identity"] = identity.identity_metrics(np.concatenate(face_ids[name]), real_ids, pairs.photo(np.arange(n_pairs)))
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


METRIC_COLUMNS = [("l1", "L1"), ("l2", "L2"), ("psnr", "PSNR"), ("ssim", "SSIM"), ("feature_loss", "feature loss"),
                  ("std_features", "std of features"), ("id_top1", "VGG id top-1"), ("id_top5", "VGG id top-5"),
                  ("fd_vgg", "FD (VGG)")]
IDENTITY_COLUMNS = [("distance_own", "distance to own real face"), ("distance_others", "to other real faces"),
                    ("within_same_person", "within 0.6 of own"), ("within_same_person_others", "within 0.6 of others"),
                    ("top1", "top-1"), ("top5", "top-5"),
                    ("spread", "spread")]


def markdown_table(metrics: dict, names: list[str]) -> str:
    head = "| model | " + " | ".join(title for _, title in METRIC_COLUMNS) + " |"
    rows = [head, "|---" * (len(METRIC_COLUMNS) + 1) + "|"]
    for name in names:
        rows.append(f"| {name} | " + " | ".join(f"{metrics[name][k]:.4g}" for k, _ in METRIC_COLUMNS) + " |")
    rows.append(
        f"\n{metrics['n_photos']} photos, {metrics['n_pairs']} (eye, face) pairs; identity chance level: "
        f"top-1 {metrics['chance_top1']:.4f}, top-5 {metrics['chance_top5']:.4f}. VGG layers {metrics['feature_layers']}."
    )
    rows.append("\n" + identity_table(metrics, names))
    return "\n".join(rows) + "\n"


def identity_table(metrics: dict, names: list[str]) -> str:
    """The identity block as markdown, or the one line that says how to add it."""
    block = metrics.get("identity") or {"skipped": "not computed"}
    if "skipped" in block:
        return f"Identity block (dlib face descriptor) skipped: {block['skipped']}."
    rows = ["Identity, by dlib's ResNet face descriptor (distances; same person within 0.6):", "",
            "| model | " + " | ".join(title for _, title in IDENTITY_COLUMNS) + " |",
            "|---" * (len(IDENTITY_COLUMNS) + 1) + "|"]
    for name in names:
        rows.append(f"| {name} | " + " | ".join(f"{metrics[name]['identity'][k]:.4g}" for k, _ in IDENTITY_COLUMNS) + " |")
    rows.append("| real faces | " + " | ".join("" for _ in IDENTITY_COLUMNS[:-1]) + f" | {block['real_spread']:.4g} |")
    rows.append(
        f"\nRetrieval among the {block['n_real_faces']} real faces; chance level top-1 {block['chance_top1']:.4f}, "
        f"top-5 {block['chance_top5']:.4f}. Spread: mean pairwise distance within a set (low: one face for everyone). "
        f"Real faces of different photos within 0.6 of each other: {block['real_within_same_person']:.4g}."
    )
    return "\n".join(rows)
