"""Photo in, faces out: find the face and eyes, crop each eye, and generate a face from it."""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
from PIL import Image, ImageOps

from .data import EYE_SIZE, FACE_SIZE, Box, crop, detect
from .model import EyeToFace

MAX_INPUT_PIXELS = 64_000_000  # larger files are refused before decoding (decompression bombs)
MAX_DETECT_SIDE = 1024  # photos are downscaled to this before detection: bounded memory and time


class Eye2FaceError(ValueError):
    """A problem with the input that a person can fix; the message says what to do."""


class InvalidImageError(Eye2FaceError):
    pass


class NoFaceError(Eye2FaceError):
    pass


class NoEyeError(Eye2FaceError):
    pass


def load_photo(photo: str | os.PathLike | bytes | Image.Image | np.ndarray) -> np.ndarray:
    """Any photo (path, bytes, PIL image or array; any mode, EXIF-rotated) -> upright uint8 RGB array."""
    if isinstance(photo, np.ndarray):
        photo = Image.fromarray(photo)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if isinstance(photo, Image.Image):
                image = photo
            elif isinstance(photo, bytes):
                if not photo:
                    raise InvalidImageError("the file is empty (0 bytes)")
                image = Image.open(io.BytesIO(photo))
            else:
                if os.path.getsize(photo) == 0:
                    raise InvalidImageError(f"{os.path.basename(photo)} is empty (0 bytes)")
                image = Image.open(photo)
            if image.width * image.height > MAX_INPUT_PIXELS:
                raise InvalidImageError(
                    f"the image is {image.width}x{image.height}; images over {MAX_INPUT_PIXELS // 1_000_000} megapixels "
                    "are refused"
                )
            image.draft("RGB", (MAX_DETECT_SIDE, MAX_DETECT_SIDE))  # JPEG: decode at reduced size, cheaply
            image = ImageOps.exif_transpose(image)
            rgb = _to_rgb8(image)
    except Eye2FaceError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise InvalidImageError(f"the image is too large to process safely ({e})") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise InvalidImageError(f"this file could not be read as an image ({type(e).__name__}: {e})") from None
    if min(rgb.shape[:2]) < EYE_SIZE:
        raise InvalidImageError(f"the image is {rgb.shape[1]}x{rgb.shape[0]} pixels; a face needs far more")
    scale = MAX_DETECT_SIDE / max(rgb.shape[:2])
    if scale < 1:
        rgb = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return rgb


def _to_rgb8(image: Image.Image) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16-bit / float grayscale: rescale, not clip
        a = np.asarray(image, dtype=np.float32)
        a = (a - a.min()) / max(float(a.max() - a.min()), 1e-6) * 255
        return np.repeat(a.astype(np.uint8)[..., None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return np.ascontiguousarray(np.asarray(image.convert("RGB")))


@dataclass
class EyeResult:
    side: str  # "left" or "right", by position in the photo
    box: Box
    eye: np.ndarray  # 32x32x3 uint8
    faces: dict[str, np.ndarray]  # model name -> 128x128x3 uint8


@dataclass
class PhotoResult:
    photo: np.ndarray  # upright RGB, as detected on
    face_box: Box
    real_face: np.ndarray  # 128x128x3 uint8 crop of the detected face
    eyes: list[EyeResult]
    notes: list[str] = field(default_factory=list)

    def annotated(self) -> np.ndarray:
        """The photo with the face box (green) and the eye boxes used (orange) drawn on it."""
        out = self.photo.copy()
        thickness = max(2, max(out.shape[:2]) // 300)
        x, y, w, h = self.face_box
        cv2.rectangle(out, (x, y), (x + w, y + h), (0, 200, 0), thickness)
        for r in self.eyes:
            x, y, w, h = r.box
            cv2.rectangle(out, (x, y), (x + w, y + h), (255, 140, 0), thickness)
            cv2.putText(out, r.side[0].upper(), (x, max(y - 4, 12)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 140, 0), 1)
        return out


def to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255)


def to_images(batch: torch.Tensor) -> list[np.ndarray]:
    return list((batch.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy())


class EyeToFacePipeline:
    """Generate faces from the eyes in a photo with one or more named models (e.g. "l1", "feature")."""

    def __init__(self, models: dict[str, EyeToFace]):
        if not models:
            raise ValueError("the pipeline needs at least one model")
        self.models = {name: m.eval() for name, m in models.items()}

    @classmethod
    def from_pretrained(cls, sources: dict[str, str], **kwargs) -> EyeToFacePipeline:
        return cls({name: EyeToFace.from_pretrained(src, **kwargs) for name, src in sources.items()})

    @torch.inference_mode()
    def generate(self, eyes: list[np.ndarray]) -> dict[str, list[np.ndarray]]:
        """Ready 32x32 RGB eye crops (other sizes are resized) -> faces per model."""
        eyes = [e if e.shape[:2] == (EYE_SIZE, EYE_SIZE) else cv2.resize(e, (EYE_SIZE, EYE_SIZE)) for e in eyes]
        x = to_tensor(eyes)
        return {name: to_images(model(x)) for name, model in self.models.items()}

    def __call__(self, photo, eyes: str = "both") -> PhotoResult:
        """Detect the face and eyes in `photo`, then generate a face from each chosen eye.

        `eyes`: "left", "right" or "both" (left and right by position in the photo).
        """
        if eyes not in ("left", "right", "both"):
            raise ValueError(f"eyes must be 'left', 'right' or 'both', got {eyes!r}")
        rgb = load_photo(photo)
        det = detect(rgb)
        notes = []
        if det.face is None:
            raise NoFaceError("no face was found: use a well-lit, frontal photo with the whole face visible")
        if len(det.faces) > 1:
            notes.append(f"{len(det.faces)} faces were found; the largest one is used")
        found = det.eyes
        if not found:
            raise NoEyeError("a face was found but no eye in it: try a sharper, frontal photo with open eyes")
        if len(found) > 2:  # the two largest detections are the likeliest true eyes
            found = sorted(sorted(found, key=lambda b: -b[2] * b[3])[:2])
            notes.append("more than two eye candidates were found; the two largest are used")
        sides = ["left", "right"] if len(found) == 2 else [self._side(found[0], det.face)]
        chosen = [(s, b) for s, b in zip(sides, found) if eyes in ("both", s)]
        if not chosen:
            raise NoEyeError(f"the {eyes} eye was not found; only the {sides[0]} eye was (try 'both')")
        crops = [crop(rgb, box, EYE_SIZE) for _, box in chosen]
        faces = self.generate(crops)
        results = [
            EyeResult(side, box, eye, {name: faces[name][i] for name in faces})
            for i, ((side, box), eye) in enumerate(zip(chosen, crops))
        ]
        return PhotoResult(rgb, det.face, crop(rgb, det.face, FACE_SIZE), results, notes)

    @staticmethod
    def _side(eye: Box, face: Box) -> str:
        return "left" if eye[0] + eye[2] / 2 < face[0] + face[2] / 2 else "right"


def comparison_grid(columns: list[list[np.ndarray]], labels: list[str], size: int = FACE_SIZE) -> np.ndarray:
    """One row per example, one labelled column per image kind (eye crops are scaled up, pixelated)."""
    header = 22
    rows = []
    for images in zip(*columns):
        tiles = [cv2.resize(im, (size, size), interpolation=cv2.INTER_NEAREST) for im in images]
        rows.append(np.concatenate(tiles, axis=1))
    grid = np.concatenate(rows, axis=0) if rows else np.zeros((0, size * len(labels), 3), np.uint8)
    top = np.full((header, size * len(labels), 3), 255, np.uint8)
    for i, label in enumerate(labels):
        cv2.putText(top, label, (i * size + 4, header - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([top, grid], axis=0)
