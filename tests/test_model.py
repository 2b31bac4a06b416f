import json

import pytest
import torch

from eye2face_hub import EyeToFace


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
