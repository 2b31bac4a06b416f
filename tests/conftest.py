"""Shared fixtures. Shared paths live in tests/paths.py, the trainer helper in tests/training_run.py."""

from pathlib import Path

import numpy as np
import pytest

from .paths import CELEBA, need


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="session")
def astronaut_jpg(tmp_path_factory, astronaut) -> Path:
    from PIL import Image

    path = tmp_path_factory.mktemp("photos") / "astronaut.jpg"
    Image.fromarray(astronaut).save(path, quality=95)
    return path


@pytest.fixture(scope="session")
def celeba_sample(tmp_path_factory) -> Path:
    """24 real CelebA photos in a temporary folder (never copied into the project)."""
    import shutil

    folder = tmp_path_factory.mktemp("celeba")
    for f in sorted(need(CELEBA).glob("*.jpg"))[:24]:
        shutil.copy(f, folder / f.name)
    return folder


@pytest.fixture(scope="session")
def prepared_pairs(tmp_path_factory, celeba_sample) -> Path:
    """A prepared pairs dataset (save_to_disk) from the CelebA sample."""
    from eye2face_hub.data import prepare

    out = tmp_path_factory.mktemp("pairs") / "pairs"
    pairs, _ = prepare(str(celeba_sample), str(out))
    assert len(pairs) > 4
    return out


@pytest.fixture(scope="session")
def pipe():
    """A pipeline of two small untrained one-eye models, "a" and "b": for detection, cropping and plumbing."""
    import torch

    from eye2face_hub import EyeToFace, EyeToFacePipeline

    torch.manual_seed(0)
    small = dict(encoder_widths=(4,), decoder_widths=(4,))
    return EyeToFacePipeline({"a": EyeToFace(latent_dim=4, **small), "b": EyeToFace(latent_dim=8, **small)})
