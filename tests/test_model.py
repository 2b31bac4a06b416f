import json

import pytest
import torch

from eye2face_hub import GENERATORS, EyeToFace, GeneratorHub, ModelConfigError, load_generator


def test_shapes_range_and_size():
    model = EyeToFace().eval()
    out = model(torch.rand(3, 3, 32, 32))
    assert out.shape == (3, 3, 128, 128)
    assert out.min() >= 0 and out.max() <= 1
    assert sum(p.numel() for p in model.parameters()) <= 10_000_000
    with pytest.raises(ValueError, match="eye crops of shape"):
        model(torch.rand(1, 3, 64, 64))


def test_architecture_follows_the_paper():
    model = EyeToFace(encoder_widths=(8, 16, 32), latent_dim=16, decoder_widths=(32, 16, 8, 8, 8))
    first, second = model.encoder[0], model.encoder[1]
    assert len(first) == 3 and first[0].stride == (2, 2)  # first block: one conv+BN+LeakyReLU group
    assert len(second) == 6 and second[0].stride == (2, 2) and second[3].stride == (1, 1)
    assert isinstance(second[1], torch.nn.BatchNorm2d) and isinstance(second[2], torch.nn.LeakyReLU)
    assert all(isinstance(block[0], torch.nn.ConvTranspose2d) for block in model.decoder)
    assert model.encode(torch.rand(2, 3, 32, 32)).shape == (2, 16)


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = EyeToFace(encoder_widths=(8, 16), latent_dim=32, decoder_widths=(32, 16, 8, 8), loss_config={"preset": "l1"})
    model.train()
    model(torch.rand(4, 3, 32, 32))  # moves BatchNorm running stats off their defaults
    model.eval()
    model.save_pretrained(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} >= {"model.safetensors", "config.json", "README.md"}
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["latent_dim"] == 32 and config["loss_config"] == {"preset": "l1"}
    loaded = EyeToFace.from_pretrained(tmp_path)  # strict keys
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(model(x), loaded(x))
    assert loaded.loss_config == {"preset": "l1"}


def test_config_names_the_architecture_and_loaders_follow_it(tmp_path):
    EyeToFace(latent_dim=16).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["arch"] == "eye_to_face" and GENERATORS["eye_to_face"] is EyeToFace
    assert type(load_generator(tmp_path)) is EyeToFace
    del config["arch"]  # a config.json from before `arch`: still an EyeToFace
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert type(load_generator(tmp_path)) is EyeToFace and EyeToFace.from_pretrained(tmp_path).encode(torch.rand(1, 3, 32, 32)).shape == (1, 16)


def test_unknown_or_other_architecture_is_a_clear_error(tmp_path):
    class Other(torch.nn.Module, GeneratorHub):
        arch = "test_other"

        def __init__(self, width: int = 2):
            super().__init__()
            self.layer = torch.nn.Linear(width, width)

    try:
        Other(width=3).save_pretrained(tmp_path / "other")
        assert type(load_generator(tmp_path / "other")) is Other and load_generator(tmp_path / "other").layer.in_features == 3
        with pytest.raises(ModelConfigError, match="describes a Other .arch='test_other'., not a EyeToFace"):
            EyeToFace.from_pretrained(tmp_path / "other")
    finally:
        del GENERATORS["test_other"]
    with pytest.raises(ModelConfigError, match="unknown architecture arch='test_other'"):
        load_generator(tmp_path / "other")
