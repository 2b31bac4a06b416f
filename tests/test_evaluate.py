import json

import pytest
import torch

from eye2face_hub import EyeToFace
from eye2face_hub.cli import main as cli
from eye2face_hub.evaluate import RunningMoments, frechet_distance

from .paths import VGG_FILE, need


def test_running_moments_match_torch():
    x = torch.randn(50, 3, 4, 4)
    m = RunningMoments()
    for chunk in x.split(7):
        m.update(chunk)
    torch.testing.assert_close(m.std().float(), x.flatten(1).std(0, correction=0))


def test_frechet_distance():
    torch.manual_seed(0)
    a = torch.randn(2000, 3)
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-6)
    shifted = a + torch.tensor([2.0, 0, 0])
    assert frechet_distance(a, shifted) == pytest.approx(4.0, rel=1e-6)
    scaled = a * 2  # covariance 4I vs I: trace term 3*(1 + 4 - 2*2) = 3
    assert frechet_distance(a, scaled) == pytest.approx(3.0, rel=0.1)


def test_evaluate_cli(celeba_sample, tmp_path):
    models = []
    for seed, name in [(0, "a"), (1, "b")]:
        torch.manual_seed(seed)
        EyeToFace(latent_dim=32).save_pretrained(tmp_path / name)
        models += ["--model", str(tmp_path / name)]
    out = tmp_path / "eval"
    assert cli(["evaluate", *models, "--images", str(celeba_sample), "--out", str(out), "--limit", "10",
                "--vgg-weights", str(need(VGG_FILE))]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_pairs"] == 2 * metrics["haar_yield"]["kept"] > 0
    assert metrics["chance_top1"] == pytest.approx(2 / metrics["n_pairs"])
    for name in ("a", "b"):
        m = metrics[str(tmp_path / name)]
        assert {"l1", "l2", "psnr", "ssim", "feature_loss", "std_features", "id_top1", "id_top5", "fd_vgg"} <= set(m)
        assert 0 < m["l2"] < m["l1"] < 1 and 0 <= m["id_top1"] <= m["id_top5"] <= 1
        assert m["std_features"] > 0 and m["fd_vgg"] > 0
    assert metrics[str(tmp_path / "a")]["l1"] != metrics[str(tmp_path / "b")]["l1"]
    assert "| model |" in (out / "metrics.md").read_text() and (out / "grid.png").stat().st_size > 0
