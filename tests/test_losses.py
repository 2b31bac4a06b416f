import json

import pytest
import torch

from eye2face_hub.losses import (
    EyeToFaceLoss,
    FeatureLoss,
    LossConfig,
    batch_std,
    layer_weights,
    std_loss,
)
from eye2face_hub.data import as_input
from eye2face_hub.model import EyeToFace
from eye2face_hub.vgg import VGG19Features


@pytest.mark.parametrize("n,focus", [(22, 10), (12, 10), (22, 3), (5, 2)])
def test_layer_weights_shape(n, focus):
    w = layer_weights(n, focus)
    assert len(w) == n
    assert sum(w) == pytest.approx(1.0, abs=1e-12)
    assert w[0] == 0
    assert max(range(n), key=w.__getitem__) == focus
    assert all(a < b for a, b in zip(w[:focus], w[1 : focus + 1]))  # rising to the focus
    assert all(a > b for a, b in zip(w[focus:], w[focus + 1 :]))  # falling after it
    assert w[-1] == 0


def test_layer_weights_bad_focus():
    with pytest.raises(ValueError, match="focus"):
        layer_weights(22, 22)


def test_std_loss_hand_computed():
    # Two 1x1x2 "images": pixel 0 is (0, 2) -> std 1; pixel 1 is (1, 1) -> std 0; sigma = 0.5.
    y = torch.tensor([[[[0.0, 1.0]]], [[[2.0, 1.0]]]])
    assert batch_std(y).item() == pytest.approx(0.5)
    y_pred = torch.full_like(y, 0.3)  # a collapsed generator: sigma = 0
    assert std_loss(y_pred, y).item() == pytest.approx(0.5)
    assert std_loss(y, y).item() == 0


def test_pooled_std_loss_sees_faces_not_pixel_noise():
    # Pixel-scale noise that differs between images meets the per-pixel sigma, not the pooled one.
    g = torch.Generator().manual_seed(0)
    faces = torch.rand(8, 3, 1, 1, generator=g).expand(8, 3, 16, 16)  # real: flat faces that differ in colour
    checker = (torch.arange(16)[:, None] + torch.arange(16)[None, :]) % 2 * 2.0 - 1  # +-1, period 2
    phase = torch.randint(0, 2, (8, 1, 1, 1), generator=g) * 2.0 - 1
    noisy = 0.5 + 0.4 * phase * checker  # one grey face for everyone, with stripes of random phase
    assert std_loss(noisy, faces).item() < 0.5 * std_loss(torch.full_like(noisy, 0.5), faces).item()  # fooled
    assert std_loss(noisy, faces, pool=4).item() == pytest.approx(batch_std(faces, 4).item())  # not fooled
    assert batch_std(faces, 4).item() == pytest.approx(batch_std(faces).item())  # flat faces: pooling changes nothing
    with pytest.raises(ValueError, match="std_pool"):
        LossConfig(std_pool=0)


def test_presets_are_json_and_round_trip():
    for preset in LossConfig.PRESETS:
        cfg = LossConfig.from_preset(preset, feature_layers=list(range(12)), vgg_weights="some/file.safetensors")
        again = LossConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
        assert again == cfg
        assert sum(cfg.layer_weights) == pytest.approx(1.0)
    assert LossConfig.from_preset("l1").uses_vgg is False
    feature = LossConfig.from_preset("feature")
    assert feature.uses_vgg and feature.std_weight > 0 and len(feature.feature_layers) == 22
    with pytest.raises(ValueError, match="unknown loss preset"):
        LossConfig.from_preset("gan")
    with pytest.raises(ValueError, match="unknown loss config keys"):
        LossConfig.from_dict({**feature.to_dict(), "surprise": 1})


def test_subset_keeps_schedule_shape():
    full = layer_weights(22, 10)
    cfg = LossConfig.from_preset("feature", feature_layers=list(range(12)))
    ratios = [w / full[i] for i, w in zip(cfg.feature_layers, cfg.layer_weights) if full[i]]
    assert max(ratios) == pytest.approx(min(ratios))  # one common scale factor


def _random_vgg(max_layer=6):
    torch.manual_seed(0)
    return VGG19Features(max_layer=max_layer)


def uint8_batch(n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return (torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
            torch.randint(0, 256, (n, 3, 128, 128), dtype=torch.uint8, generator=g))


def test_feature_loss_is_the_sum_of_lambdas_for_the_fresh_generator_it_was_set_up_with():
    vgg = _random_vgg()
    cfg = LossConfig.from_preset("feature", feature_layers=[0, 1, 2, 3, 4, 5, 6])
    loss = FeatureLoss.from_config(cfg, vgg)
    eyes, faces = uint8_batch()
    torch.manual_seed(123)  # set_up's own seed decides the fresh generator, not the caller's RNG
    loss.set_up(eyes, faces, build_generator=EyeToFace, seed=0)
    assert loss.is_set_up
    torch.manual_seed(0)
    generator = EyeToFace().train()
    pred = generator(as_input(eyes))
    assert loss(pred, as_input(faces)).item() == pytest.approx(sum(cfg.layer_weights), rel=1e-5)
    # and it has a gradient for the generator
    loss(pred, faces).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in generator.parameters())


def test_feature_loss_state_survives_round_trip():
    vgg = _random_vgg()
    cfg = LossConfig.from_preset("feature", feature_layers=[1, 2, 3])
    a, b = FeatureLoss.from_config(cfg, vgg), FeatureLoss.from_config(cfg, vgg)
    a.set_up(*uint8_batch(2), build_generator=EyeToFace, seed=1)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.l_initial, b.l_initial) and b.is_set_up
    assert set(a.state_dict()) == {"l_initial"}  # the frozen VGG is not training state
    c = FeatureLoss.from_config(cfg, vgg)
    c.load_record(json.loads(json.dumps(a.record())))  # what config.json keeps
    assert torch.allclose(c.l_initial, a.l_initial)


def test_l1_preset_terms():
    loss = EyeToFaceLoss(LossConfig.from_preset("l1"))
    y = torch.rand(2, 3, 8, 8)
    terms = loss(y * 0, y)
    assert set(terms) == {"l1", "loss"}
    assert terms["loss"].item() == pytest.approx(y.mean().item())
    with pytest.raises(ValueError, match="needs a VGG19"):
        EyeToFaceLoss(LossConfig.from_preset("feature"))
