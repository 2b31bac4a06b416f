"""Where weights came from, in one place: a local weights file is recorded by its file name and sha256 (never its path
on one machine), and found again here by that name, with the hash checked.

VGG weights are found, in this order: `--vgg-weights`; the `EYE2FACE_VGG_WEIGHTS` environment variable; the path a
model recorded, if it exists here; the recorded file name in `../shared/vgg19/` beside the checkout (or beside the
current folder). FaceNet's weights are found by eye2face_hub.facenet.resolve_weights, and recorded the same way.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path


@functools.lru_cache(maxsize=8)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    st = os.stat(path)
    return _sha256(os.path.realpath(path), st.st_size, st.st_mtime_ns)


def portable_weights_reference(weights: str | os.PathLike) -> tuple[str, str | None]:
    """What a record says about weights (VGG, FaceNet): (name, sha256) that mean the same on any machine.

    A local safetensors file becomes its file name and its sha256; a local folder its folder name and the
    sha256 of its model.safetensors; anything else (a Hub repo id) stays as it is, with no hash.
    """
    weights = os.fspath(weights)
    if os.path.isfile(weights):
        return os.path.basename(weights), file_sha256(weights)
    if os.path.isfile(os.path.join(weights, "model.safetensors")):
        return os.path.basename(os.path.normpath(weights)), file_sha256(os.path.join(weights, "model.safetensors"))
    return weights, None


VGG_ENV = "EYE2FACE_VGG_WEIGHTS"
VGG_DEFAULT_DIRS = (Path(__file__).resolve().parents[2] / "shared" / "vgg19", Path("..") / "shared" / "vgg19")


class VGGWeightsNotFound(FileNotFoundError):
    """The VGG weights a model was trained with are not here (or a file by that name has another sha256)."""


def _is_local_reference(weights: str) -> bool:
    return weights.endswith(".safetensors") or weights.startswith((".", "/")) or os.path.exists(weights)


def find_vgg_weights(recorded: str, sha256: str | None = None, given: str | None = None) -> str:
    """A loadable VGG weights reference (a file, a folder or a Hub id) for the weights a model recorded.

    `recorded`: the model's loss_config.vgg_weights (a file name, an old absolute path, or a Hub id); `sha256`:
    its recorded hash, checked against the file found; `given`: `--vgg-weights`. Order: `given`, else
    $EYE2FACE_VGG_WEIGHTS (each a file, a folder holding the recorded file, or a Hub id; an explicit path that
    does not exist is an error, never skipped), else the recorded path as it is, else the recorded file name in
    ../shared/vgg19/ beside the checkout or beside the current folder.
    """
    name = os.path.basename(os.path.normpath(recorded)) if _is_local_reference(recorded) else None
    explicit = [(source, value) for source, value in (("--vgg-weights", given), (VGG_ENV, os.environ.get(VGG_ENV))) if value]
    if explicit:
        source, value = explicit[0]
        if name and os.path.isdir(value) and os.path.exists(os.path.join(value, name)):
            candidates = [os.path.join(value, name)]  # a folder that holds the recorded file
        elif os.path.exists(value) or not _is_local_reference(value):
            candidates = [value]  # a file, a model folder, or a Hub id
        else:
            raise VGGWeightsNotFound(f"VGG19 weights {value} ({source}) not found")
    elif name is None:
        return recorded  # a Hub id
    else:
        candidates = [recorded, *(str(folder / name) for folder in VGG_DEFAULT_DIRS)]
    for candidate in candidates:
        if not _is_local_reference(candidate):
            return candidate
        if not os.path.exists(candidate):
            continue
        file = os.path.join(candidate, "model.safetensors") if os.path.isdir(candidate) else candidate
        if sha256 and os.path.isfile(file) and file_sha256(file) != sha256:
            raise VGGWeightsNotFound(
                f"VGG19 weights {candidate} have sha256 {file_sha256(file)[:16]}..., not the {sha256[:16]}... recorded "
                f"for {recorded}: pass the weights the model was trained with (--vgg-weights PATH)"
            )
        return candidate
    hashed = f" (sha256 {sha256[:16]}...)" if sha256 else ""
    raise VGGWeightsNotFound(
        f"VGG19 weights {name}{hashed} not found at {', '.join(dict.fromkeys(candidates))}. "
        f"Pass --vgg-weights PATH (the file, or a folder holding it) or set {VGG_ENV}"
    )
