"""The two-eye generator: both eyes of a photo in, one face out."""

import json
import re

import numpy as np
import pytest
import torch

from eye2face_hub import EyeToFace, load_generator
from eye2face_hub.data import EyeFacePairs, load_pairs
from eye2face_hub.model import TwoEyesToFace

from .training_run import train


def varied(model):
    """An untrained model whose output varies with its input: BatchNorm statistics of one batch of random eyes."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # a cumulative average: exactly that batch's statistics
    model.train()(torch.rand(16, *(2,) * (model.eyes == 2), 3, 32, 32))
    return model.eval()


def test_shapes_and_the_input_check():
    two, one = TwoEyesToFace().eval(), EyeToFace().eval()
    out = two(torch.rand(3, 2, 3, 32, 32))
    assert out.shape == (3, 3, 128, 128) and 0 <= out.min() and out.max() <= 1
    assert two.encoder[0][0].in_channels == 6 and one.encoder[0][0].in_channels == 3
    assert [m.weight.shape for m in two.decoder.modules() if isinstance(m, torch.nn.ConvTranspose2d)] == \
        [m.weight.shape for m in one.decoder.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    with pytest.raises(ValueError, match="this is a two-eye model, give it both eyes of a photo"):
        two(torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match="this is a one-eye model, give it one eye per sample"):
        one(torch.rand(1, 2, 3, 32, 32))


def test_the_face_depends_on_both_eyes():
    torch.manual_seed(0)
    model = TwoEyesToFace().train()
    eyes = torch.rand(4, 2, 3, 32, 32, requires_grad=True)
    model(eyes).sum().backward()
    per_eye = eyes.grad.abs().sum(dim=(0, 2, 3, 4))
    assert (per_eye > 0.05 * per_eye.max()).all(), f"one eye hardly matters: gradient mass per eye {per_eye.tolist()}"


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = TwoEyesToFace(latent_dim=32, loss_config={"preset": "feature"}).eval()
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["arch"] == "two_eyes_to_face" and config["latent_dim"] == 32
    loaded = load_generator(tmp_path)
    assert type(loaded) is TwoEyesToFace and loaded.eyes == 2
    x = torch.rand(2, 2, 3, 32, 32)
    assert torch.equal(model(x), loaded(x))
    assert "a whole face from two eyes" in (tmp_path / "README.md").read_text()
    EyeToFace().save_pretrained(tmp_path / "one")
    assert "a whole face from one eye" in (tmp_path / "one" / "README.md").read_text()


def test_one_sample_per_photo(prepared_pairs):
    rows = load_pairs(str(prepared_pairs))
    one, two = EyeFacePairs(rows, progress=False), EyeFacePairs(rows, progress=False, eyes=2)
    assert len(one) == 2 * len(two) == 2 * len(rows)
    eyes, face = two[3]
    assert eyes.shape == (2, 3, 32, 32) and torch.equal(face, one[6][1])
    assert torch.equal(eyes[0], one[6][0]) and torch.equal(eyes[1], one[7][0])


@pytest.mark.slow
def test_training_loss_goes_down_on_real_data(prepared_pairs, tmp_path):
    log = train(prepared_pairs, tmp_path, "--arch", "two_eyes_to_face", "--preset", "l1", "--epochs", "4",
                "--batch-size", "4")
    values = [float(v) for v in re.findall(r"train loss ([0-9.]+)", log)]
    assert len(values) == 4 and values[-1] < values[0], values
    model = load_generator(tmp_path)
    assert type(model) is TwoEyesToFace
    card = (tmp_path / "README.md").read_text()  # the model card describes a two-eye model and its photo rows
    assert "a whole face from two eyes" in card and "one eye" not in card and f"- name: {tmp_path.name}\n" in card, card
    assert f"{model.training_info['train_pairs']} training photos, each one row" in card, card


def test_pipeline_gives_a_two_eye_face_from_both_detected_eyes(astronaut):
    from eye2face_hub import EyeToFacePipeline
    from eye2face_hub.data import EYE_SIZE, crop, detect

    torch.manual_seed(0)
    pipe = EyeToFacePipeline({"one": EyeToFace(), "two": varied(TwoEyesToFace())})
    result = pipe(astronaut)
    assert [r.side for r in result.eyes] == ["left", "right"] and set(result.eyes[0].faces) == {"one"}
    assert set(result.both_eyes) == {"two"} and result.both_eyes["two"].shape == (128, 128, 3)
    left, right = (crop(astronaut, box, EYE_SIZE) for box in detect(astronaut).eyes)
    np.testing.assert_array_equal(result.both_eyes["two"], pipe.generate_from_both_eyes(left, right)["two"])
    swapped = pipe.generate_from_both_eyes(right, left)["two"]
    assert not np.array_equal(swapped, result.both_eyes["two"]), "the two-eye face ignores which eye is which"
    one_eye = astronaut.copy()
    x, y, w, h = detect(astronaut).eyes[1]
    one_eye[y : y + h, x : x + w] = one_eye[y : y + h, x : x + w].mean((0, 1))  # hide the right eye
    assert len(detect(one_eye).eyes) == 1, "test photo: exactly one eye should stay detectable"
    result = pipe(one_eye)
    assert not result.both_eyes and any("no two-eye face" in n for n in result.notes)


def test_cli_generate_takes_two_eye_crops_for_a_two_eye_model(tmp_path, astronaut, capsys):
    from PIL import Image

    from eye2face_hub.cli import main as cli
    from eye2face_hub.data import EYE_SIZE, crop, detect

    TwoEyesToFace().save_pretrained(tmp_path / "two")
    EyeToFace().save_pretrained(tmp_path / "one")
    left, right = (tmp_path / f"{side}.png" for side in ("left", "right"))
    for path, box in zip((left, right), detect(astronaut).eyes):
        Image.fromarray(crop(astronaut, box, EYE_SIZE)).save(path)
    assert cli(["generate", "--model", str(tmp_path / "two"), "--image", str(left), str(right), "--eye-crop",
                "--out", str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["left+right-face.png"], "one face, from both crops"
    assert Image.open(tmp_path / "out" / "left+right-face.png").size == (128, 128)
    assert cli(["generate", "--model", str(tmp_path / "two"), "--image", str(left), "--eye-crop", "--out", str(tmp_path)]) != 0
    assert "is a two-eye model: give it the left and the right eye crop" in capsys.readouterr().err
    assert cli(["generate", "--model", str(tmp_path / "one"), "--image", str(left), str(right), "--eye-crop",
                "--out", str(tmp_path / "one-out")]) == 0  # a one-eye model: a face from each crop
    assert sorted(p.name for p in (tmp_path / "one-out").iterdir()) == ["left-face.png", "right-face.png"]
    Image.fromarray(astronaut).save(tmp_path / "astronaut.png")
    assert cli(["generate", "--model", str(tmp_path / "two"), "--image", str(tmp_path / "astronaut.png"),
                "--out", str(tmp_path / "photo")]) == 0
    assert (tmp_path / "photo" / "astronaut-both-eyes-face.png").exists()


def test_evaluate_compares_a_two_eye_model_on_the_same_photos(celeba_sample, tmp_path):
    from eye2face_hub.evaluate import evaluate

    from .paths import VGG_FILE, need

    torch.manual_seed(0)
    varied(EyeToFace(latent_dim=16)).save_pretrained(tmp_path / "one")
    varied(TwoEyesToFace(latent_dim=16)).save_pretrained(tmp_path / "two")
    sources = [str(tmp_path / "one"), str(tmp_path / "two")]
    metrics = evaluate(sources, str(celeba_sample), str(tmp_path / "eval"), limit=6, vgg_weights=str(need(VGG_FILE)),
                       identity_block=False, two_eye_baselines=True)
    one, two = metrics[sources[0]], metrics[sources[1]]
    left, right, mean = (metrics[f"{sources[0]} ({use})"] for use in ("left eye", "right eye", "mean of both eyes"))
    assert not [k for k in metrics if k.startswith(f"{sources[1]} (")]  # only one-eye models get the baselines
    assert left["l1"] != right["l1"]
    assert (left["l1"] + right["l1"]) / 2 == pytest.approx(one["l1"], rel=1e-5)  # each pair is one photo's left or right eye
    assert mean["l1"] != one["l1"] and mean["l2"] <= one["l2"] + 1e-6  # averaging two guesses never raises L2
    assert metrics["n_pairs"] == 2 * metrics["n_photos"] > 0
    assert 0 < two["l2"] < two["l1"] < 1 and two["l1"] != one["l1"] and 0 <= two["id_top1"] <= two["id_top5"] <= 1
