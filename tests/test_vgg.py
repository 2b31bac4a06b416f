import pytest
import torch
from safetensors.torch import save_file

from eye2face_hub.vgg import KERAS_LAYER_NAMES, N_LAYERS, VGG19Features, load_vgg19

from .paths import VGG_FILE, need


def test_keras_layer_names():
    assert N_LAYERS == 22
    assert KERAS_LAYER_NAMES[0] == "input"
    assert KERAS_LAYER_NAMES[10] == "block3_conv4"
    assert KERAS_LAYER_NAMES[11] == "block3_pool"
    assert KERAS_LAYER_NAMES[21] == "block5_pool"


def test_shapes_of_all_22_layers():
    vgg = VGG19Features()
    feats = vgg(torch.rand(1, 3, 64, 64), list(range(22)))
    channels = [3, 64, 64, 64, 128, 128, 128, 256, 256, 256, 256, 256] + [512] * 10
    sizes = [64, 64, 64, 32, 32, 32, 16, 16, 16, 16, 16, 8, 8, 8, 8, 8, 4, 4, 4, 4, 4, 2]
    assert [f.shape[1] for f in feats] == channels
    assert [f.shape[-1] for f in feats] == sizes
    assert not any(p.requires_grad for p in vgg.parameters())
    vgg.train()
    assert not vgg.training  # a frozen measuring instrument stays in eval mode


def test_shared_caffe_weights():
    vgg = load_vgg19(need(VGG_FILE))
    assert vgg.max_layer == 11 and vgg.preprocessing == "caffe_bgr"
    # BGR, 0-255, mean-subtracted: a pure red image becomes (B, G, R) = (-103.939, -116.779, 255 - 123.68)
    red = torch.zeros(1, 3, 4, 4)
    red[:, 0] = 1
    x = vgg.preprocess(red)[0, :, 0, 0]
    assert torch.allclose(x, torch.tensor([-103.939, -116.779, 255 - 123.68]))
    conv1 = vgg.features[0].weight
    assert conv1.abs().sum() > 0 and conv1.shape == (64, 3, 3, 3)
    with pytest.raises(ValueError, match="layers 0..11"):
        load_vgg19(VGG_FILE, max_layer=12)
    with pytest.raises(ValueError, match="loaded only up to layer 11"):
        vgg(torch.rand(1, 3, 32, 32), [15])


@pytest.mark.parametrize("preprocessing", ["torch_rgb", "caffe_bgr"])
def test_generated_file_round_trip(tmp_path, preprocessing):
    torch.manual_seed(1)
    reference = VGG19Features(max_layer=6)
    state = {f"features.{k}": v for k, v in reference.features.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(2, 2)  # ignored: only features.* are read
    metadata = {"preprocessing": preprocessing} if preprocessing == "caffe_bgr" else None
    path = tmp_path / "model.safetensors"
    save_file(state, str(path), metadata=metadata)
    vgg = load_vgg19(tmp_path)  # a folder holding model.safetensors, as a Hub snapshot
    assert vgg.preprocessing == preprocessing
    assert vgg.max_layer == 6  # block2_pool: the covered depth of conv1_1..conv2_2
    x = torch.rand(2, 3, 32, 32)
    reference_same = VGG19Features(max_layer=6, preprocessing=preprocessing)
    reference_same.features.load_state_dict(reference.features.state_dict())
    for a, b in zip(vgg(x, [1, 4, 6]), reference_same(x, [1, 4, 6])):
        assert torch.equal(a, b)
    rgb, bgr = VGG19Features(0, "torch_rgb").preprocess(x), VGG19Features(0, "caffe_bgr").preprocess(x)
    assert not torch.allclose(rgb, bgr)


def test_missing_file_is_clear():
    with pytest.raises(FileNotFoundError, match="not found"):
        load_vgg19("/nonexistent/vgg.safetensors")
