"""Compare generators on a folder of face photos, the way the research measured them, and more.

Pixel metrics (L1, L2, PSNR, SSIM) come from torchmetrics. The VGG metrics use the feature loss's own
backbone, layers and weights; no Inception or LPIPS weights can be fetched offline, so FD is computed
on VGG features (`fd_vgg`), not Inception (FID).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from .data import EyeFacePairs, prepare, to_unit
from .losses import FeatureLoss, LossConfig
from .model import EyeToFace
from .pipeline import comparison_grid, to_images
from .vgg import load_vgg19


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


def _feature_setup(models: dict[str, EyeToFace], vgg_weights: str | None):
    """The feature loss the models are compared with: the trained feature model's layers, weights and l_initial.

    Without a trained feature model, the paper's preset over as many layers as the VGG weights cover.
    """
    trained = [m for m in models.values() if m.loss_config and m.loss_config.get("feature_weight")]
    if trained:
        cfg = LossConfig.from_dict(trained[0].loss_config)
        if vgg_weights:
            cfg.vgg_weights = vgg_weights
        vgg = load_vgg19(cfg.vgg_weights, max_layer=max(cfg.feature_layers))
    else:
        vgg = load_vgg19(vgg_weights or LossConfig().vgg_weights)
        cfg = LossConfig.from_preset("feature", feature_layers=list(range(vgg.max_layer + 1)), vgg_weights=vgg.weights_source)
    loss = FeatureLoss.from_config(cfg, vgg)
    record = trained[0].training_info if trained else None
    if record and record.get("l_initial"):
        loss.l_initial.copy_(torch.tensor(record["l_initial"]))
    return cfg, loss


@torch.inference_mode()
def evaluate(
    model_sources: list[str], images: str, out: str, *, limit: int | None = None, vgg_weights: str | None = None,
    batch_size: int = 32, grid_rows: int = 8,
) -> dict:
    """Writes metrics.json, metrics.md and grid.png to `out`; returns the metrics."""
    models = {src: EyeToFace.from_pretrained(src).eval() for src in model_sources}
    pairs_rows, stats = prepare(images, None, limit=limit)
    if len(pairs_rows) == 0:
        raise ValueError(f"no photo in {images} had exactly one face and two eyes ({dict(stats)})")
    pairs = EyeFacePairs(pairs_rows)
    cfg, feature_loss = _feature_setup(models, vgg_weights)
    if not feature_loss.is_initialised:  # no trained feature model: scale by a fresh generator, as training does
        torch.manual_seed(0)
        first = torch.stack([pairs[i][0] for i in range(min(64, len(pairs)))])
        real = torch.stack([pairs[i][1] for i in range(min(64, len(pairs)))])
        feature_loss.initialise(EyeToFace().train()(to_unit(first)), to_unit(real))

    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    layers, deepest = cfg.feature_layers, max(cfg.feature_layers)
    loader = torch.utils.data.DataLoader(pairs, batch_size=batch_size)
    sums = {name: {k: 0.0 for k in ("l1", "l2", "psnr", "ssim", "feature_loss")} for name in models}
    moments = {name: [RunningMoments() for _ in layers] for name in [*models, "real"]}
    descriptors = {name: [] for name in [*models, "real"]}  # for identity retrieval and FD
    for eye, face in tqdm(loader, desc="Evaluating"):
        eye, face = to_unit(eye), to_unit(face)
        real_feats = feature_loss.vgg(face, layers)
        for m, f in zip(moments["real"], real_feats):
            m.update(f)
        descriptors["real"].append(real_feats[layers.index(deepest)])
        for name, model in models.items():
            pred = model(eye)
            s = sums[name]
            s["l1"] += (pred - face).abs().mean().item() * len(eye)
            s["l2"] += ((pred - face) ** 2).mean().item() * len(eye)
            s["psnr"] += peak_signal_noise_ratio(pred, face, data_range=1.0, reduction="none", dim=(1, 2, 3)).sum().item()
            s["ssim"] += structural_similarity_index_measure(pred, face, data_range=1.0, reduction="none").sum().item()
            s["feature_loss"] += feature_loss(pred, face).item() * len(eye)
            pred_feats = feature_loss.vgg(pred, layers)
            for m, f in zip(moments[name], pred_feats):
                m.update(f)
            descriptors[name].append(pred_feats[layers.index(deepest)])

    n_pairs = len(pairs)
    # Both eyes of a photo share its real face: keep one real descriptor per photo.
    real = torch.cat(descriptors["real"])[::2]
    real_id = F.normalize(F.adaptive_avg_pool2d(real, 4).flatten(1), dim=1)
    real_fd = real.mean((2, 3))
    weights = torch.tensor(cfg.layer_weights, dtype=torch.float64)
    metrics = {"n_photos": len(pairs_rows), "n_pairs": n_pairs, "haar_yield": dict(stats),
               "chance_top1": 1 / len(real), "chance_top5": min(5, len(real)) / len(real),
               "feature_layers": layers, "vgg_weights": cfg.vgg_weights}
    for name in models:
        m = {k: v / n_pairs for k, v in sums[name].items()}
        per_layer = torch.stack([(r.std().mean() - g.std().mean()).abs() for r, g in zip(moments["real"], moments[name])])
        m["std_features"] = float((weights * per_layer).sum())
        gen = torch.cat(descriptors[name])
        sims = F.normalize(F.adaptive_avg_pool2d(gen, 4).flatten(1), dim=1) @ real_id.T
        truth = torch.arange(n_pairs) // 2
        rank = (sims > sims[torch.arange(n_pairs), truth][:, None]).sum(1)  # 0 = own face ranked first
        m["id_top1"] = float((rank < 1).double().mean())
        m["id_top5"] = float((rank < 5).double().mean())
        m["fd_vgg"] = frechet_distance(gen.mean((2, 3)), real_fd)
        metrics[name] = m

    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (out_dir / "metrics.md").write_text(markdown_table(metrics, list(models)))
    idx = list(range(0, min(2 * grid_rows, n_pairs), 2))
    eyes = torch.stack([pairs[i][0] for i in idx])
    columns = [list(eyes.permute(0, 2, 3, 1).numpy())]
    columns += [to_images(model(to_unit(eyes))) for model in models.values()]
    columns.append(list(torch.stack([pairs[i][1] for i in idx]).permute(0, 2, 3, 1).numpy()))
    labels = ["eye", *[Path(s).name[-18:] for s in models], "real"]
    Image.fromarray(comparison_grid(columns, labels)).save(out_dir / "grid.png")
    return metrics


METRIC_COLUMNS = [("l1", "L1"), ("l2", "L2"), ("psnr", "PSNR"), ("ssim", "SSIM"), ("feature_loss", "feature loss"),
                  ("std_features", "std of features"), ("id_top1", "id top-1"), ("id_top5", "id top-5"), ("fd_vgg", "FD (VGG)")]


def markdown_table(metrics: dict, names: list[str]) -> str:
    head = "| model | " + " | ".join(title for _, title in METRIC_COLUMNS) + " |"
    rows = [head, "|---" * (len(METRIC_COLUMNS) + 1) + "|"]
    for name in names:
        rows.append(f"| {name} | " + " | ".join(f"{metrics[name][k]:.4g}" for k, _ in METRIC_COLUMNS) + " |")
    rows.append(
        f"\n{metrics['n_photos']} photos, {metrics['n_pairs']} (eye, face) pairs; identity chance level: "
        f"top-1 {metrics['chance_top1']:.4f}, top-5 {metrics['chance_top5']:.4f}. VGG layers {metrics['feature_layers']}."
    )
    return "\n".join(rows) + "\n"
