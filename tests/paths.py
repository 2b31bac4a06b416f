"""Paths the tests share, and `need` to skip (with the reason) when ../shared is not beside the checkout."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CELEBA = SHARED / "data" / "celeba256"
VGG_FILE = SHARED / "vgg19" / "vgg19-caffe-conv1_1-conv3_4.safetensors"


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is missing: these tests need ../shared beside the checkout")
    return path
