"""Frozen ImageNet VGG19 in plain torch, returning the paper's 22 Keras-indexed layers.

Keras index: 0 input, 1 block1_conv1, 2 block1_conv2, 3 block1_pool, 4 block2_conv1, ...,
10 block3_conv4, 11 block3_pool, ..., 21 block5_pool. Conv layers are taken after their ReLU,
as Keras' VGG19 fuses the activation into the conv layer.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_VGG_WEIGHTS = "timm/vgg19.tv_in1k"

# torchvision/timm `features` layout: a number is a 3x3 conv (+ ReLU), "M" a 2x2 max-pool.
_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]
_BLOCK_SIZES = [2, 2, 4, 4, 4]
KERAS_LAYER_NAMES = ["input"] + [
    name
    for block, size in enumerate(_BLOCK_SIZES, start=1)
    for name in [f"block{block}_conv{i}" for i in range(1, size + 1)] + [f"block{block}_pool"]
]
N_LAYERS = len(KERAS_LAYER_NAMES)  # 22

# Preprocessing that each kind of weights was trained with; images come in as RGB in [0,1].
PREPROCESSING = {
    "caffe_bgr": {"scale": 255.0, "bgr": True, "mean": (103.939, 116.779, 123.68), "std": (1.0, 1.0, 1.0)},
    "torch_rgb": {"scale": 1.0, "bgr": False, "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)},
}


def _torch_index_of_keras_layer() -> list[int]:
    """For Keras layer k >= 1, the index in `features` whose output is that layer's activation."""
    indices, position = [], 0
    for v in _CFG:
        position += 1 if v == "M" else 2  # conv + ReLU
        indices.append(position - 1)
    return indices


_KERAS_TO_TORCH = _torch_index_of_keras_layer()
_TORCH_TO_KERAS = {t: k for k, t in enumerate(_KERAS_TO_TORCH, start=1)}


class MaxPool2x2(nn.Module):
    """VGG's 2x2, stride-2 max-pool.

    Under torch.compile it is written as a max over 2x2 blocks: the same values, and a pointwise backward,
    where inductor lowers max_pool2d's backward to a scatter that took 6% of the feature step on CPU. The
    gradient differs only where two inputs of a block tie, and it is the same total.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.compiler.is_compiling():
            return F.max_pool2d(x, 2)
        b, c, h, w = x.shape
        x = x[:, :, : h - h % 2, : w - w % 2]
        return x.unflatten(3, (w // 2, 2)).unflatten(2, (h // 2, 2)).amax(dim=(3, 5))


def _build_features(n_cfg: int) -> nn.Sequential:
    layers, channels = [], 3
    for v in _CFG[:n_cfg]:
        if v == "M":
            layers.append(MaxPool2x2())
        else:
            layers += [nn.Conv2d(channels, v, 3, padding=1), nn.ReLU(inplace=True)]
            channels = v
    return nn.Sequential(*layers)


def resolve_weights_file(weights: str | os.PathLike) -> str:
    """A local safetensors file, a local folder holding `model.safetensors`, or a Hub repo id."""
    weights = os.fspath(weights)
    if os.path.isfile(weights):
        return weights
    if os.path.isdir(weights):
        return os.path.join(weights, "model.safetensors")
    if weights.endswith(".safetensors") or weights.startswith((".", "/")):
        raise FileNotFoundError(f"VGG19 weights file not found: {weights}")
    from huggingface_hub import hf_hub_download

    return hf_hub_download(weights, "model.safetensors")


def _covered_layers(conv_indices: set[int]) -> int:
    """How many Keras layers (from 0) the available conv weights cover; a pool needs only its conv."""
    covered = 1  # the input
    for k, torch_idx in enumerate(_KERAS_TO_TORCH, start=1):
        is_pool = _CFG[k - 1] == "M"
        if not is_pool and torch_idx - 1 not in conv_indices:
            break
        covered = k + 1
    return covered


class VGG19Features(nn.Module):
    """Frozen VGG19 that returns the activations of the requested Keras-indexed layers."""

    def __init__(self, max_layer: int = N_LAYERS - 1, preprocessing: str = "torch_rgb"):
        super().__init__()
        if not 0 <= max_layer < N_LAYERS:
            raise ValueError(f"VGG19 layer must be in 0..{N_LAYERS - 1}, got {max_layer}")
        if preprocessing not in PREPROCESSING:
            raise ValueError(f"unknown preprocessing {preprocessing!r}; choose from {sorted(PREPROCESSING)}")
        self.max_layer = max_layer
        self.preprocessing = preprocessing
        p = PREPROCESSING[preprocessing]
        self.scale, self.bgr = p["scale"], p["bgr"]
        self.register_buffer("mean", torch.tensor(p["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(p["std"]).view(1, 3, 1, 1), persistent=False)
        self.features = _build_features(max_layer)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):
        return super().train(False)  # always eval: the backbone is a fixed measuring instrument

    def preprocess(self, rgb01: torch.Tensor) -> torch.Tensor:
        x = rgb01 * self.scale
        if self.bgr:
            x = x.flip(1)
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def forward(self, rgb01: torch.Tensor, layers: list[int]) -> list[torch.Tensor]:
        """Activations for `layers` (Keras indices), in the order given."""
        deepest = max(layers)
        if deepest > self.max_layer:
            raise ValueError(
                f"VGG19 layer {deepest} ({KERAS_LAYER_NAMES[deepest]}) was requested but this backbone was "
                f"loaded only up to layer {self.max_layer} ({KERAS_LAYER_NAMES[self.max_layer]})"
            )
        wanted = set(layers)
        x = self.preprocess(rgb01)
        acts = {0: x}
        stop = _KERAS_TO_TORCH[deepest - 1] if deepest > 0 else -1
        for i, module in enumerate(self.features):
            if i > stop:
                break
            x = module(x)
            if _TORCH_TO_KERAS.get(i) in wanted:
                acts[_TORCH_TO_KERAS[i]] = x
        return [acts[k] for k in layers]


def load_vgg19(
    weights: str | os.PathLike = DEFAULT_VGG_WEIGHTS, max_layer: int | None = None, preprocessing: str | None = None
) -> VGG19Features:
    """Load VGG19 `features.*` from a safetensors file (lazily, only what is needed).

    The preprocessing comes from the file's metadata (`preprocessing: caffe_bgr`) and defaults to the
    torchvision/timm convention (RGB, ImageNet mean/std). `max_layer=None` loads as deep as the
    weights go; a deeper `max_layer` than the weights cover is an error, never random weights.
    """
    from safetensors import safe_open

    path = resolve_weights_file(weights)
    with safe_open(path, framework="pt") as f:
        metadata = f.metadata() or {}
        conv_indices = {
            int(k.split(".")[1]) for k in f.keys() if k.startswith("features.") and k.endswith(".weight")
        }
        covered = _covered_layers(conv_indices)
        if max_layer is None:
            max_layer = covered - 1
        if max_layer >= covered:
            raise ValueError(
                f"{weights} holds VGG19 weights for layers 0..{covered - 1} "
                f"(up to {KERAS_LAYER_NAMES[covered - 1]}); layer {max_layer} ({KERAS_LAYER_NAMES[max_layer]}) "
                "needs deeper weights, e.g. the full VGG19 from the Hub (timm/vgg19.tv_in1k)"
            )
        model = VGG19Features(max_layer, preprocessing or metadata.get("preprocessing", "torch_rgb"))
        state = {name: f.get_tensor(f"features.{name}") for name in model.features.state_dict()}
    model.features.load_state_dict(state, strict=True)
    model.weights_source = os.fspath(weights)
    return model
