"""Photo in, faces out: find the face and eyes, crop each eye, and generate a face from it."""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
from PIL import Image

from . import landmarks
from .data import EYE_SIZE, FACE_SIZE, Box, crop, detect
from .grid import comparison_grid  # noqa: F401  (the trainer and evaluate import it from here)
from .hub import load_generator

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


# Formats a photo may come in. Restricting Pillow to these keeps untrusted uploads away from its rarer parsers
# (and from EPS, which runs Ghostscript). JPEG includes the multi-picture (MPO) JPEGs of many cameras and phones.
PHOTO_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
_ORIENTATION = {  # EXIF orientation -> the transpose that makes the photo upright
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def load_photo(photo: str | os.PathLike | bytes | Image.Image | np.ndarray, *, min_side: int = EYE_SIZE) -> np.ndarray:
    """Any photo (path, bytes, file object, PIL image or array; any mode, EXIF-rotated) -> upright uint8 RGB array.

    At most MAX_DETECT_SIDE pixels on its longer side, at least `min_side` on its shorter one (lower it for
    ready eye crops, which can be smaller than EYE_SIZE). Anything that is not a usable photo raises
    InvalidImageError with a message for people: unreadable, damaged or empty files, unsupported formats,
    images too small for a face, and images over MAX_INPUT_PIXELS (refused from the header, before decoding).
    """
    if photo is None:
        raise InvalidImageError("no photo was given: upload a photo of a face")
    if isinstance(photo, np.ndarray):
        photo = _array_to_image(photo)
    if not isinstance(photo, (str, os.PathLike, bytes, bytearray, memoryview, Image.Image)) and not hasattr(photo, "read"):
        raise TypeError(f"a photo is a path, bytes, a file object, a PIL image or an array, not {type(photo).__name__}")
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb warning fires above ~89 MP; our lower limit below refuses with the image's size.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = _open(photo)
            w, h = image.size
            if w * h > MAX_INPUT_PIXELS:
                raise InvalidImageError(
                    f"the image is {w}x{h} pixels ({w * h / 1e6:.0f} megapixels); images over "
                    f"{MAX_INPUT_PIXELS // 1_000_000} megapixels are refused: scale it down first"
                )
            if min(w, h) < min_side:
                need = "a face needs far more" if min_side >= EYE_SIZE else f"at least {min_side}x{min_side} are needed"
                raise InvalidImageError(f"the image is {w}x{h} pixels; {need}")
            image.draft("RGB", (MAX_DETECT_SIDE, MAX_DETECT_SIDE))  # JPEG: decode at reduced size, cheaply
            image.load()
            # After loading (TIFF turns itself upright on load), before downscaling (which drops EXIF).
            orientation = image.getexif().get(0x0112, 1)
            rgb = _to_rgb8(image, factor=max(image.size) // MAX_DETECT_SIDE)
            del image
    except Eye2FaceError:
        raise
    except Image.DecompressionBombError:
        raise InvalidImageError(
            f"the image is far too large to process safely; images over {MAX_INPUT_PIXELS // 1_000_000} "
            "megapixels are refused"
        ) from None
    except Image.UnidentifiedImageError:
        raise InvalidImageError(
            "this file could not be read as an image: it is not a " + ", ".join(PHOTO_FORMATS[:-1]) + " or TIFF file"
        ) from None
    except FileNotFoundError as e:
        raise InvalidImageError(f"no such file: {e.filename}") from None
    except MemoryError:
        raise InvalidImageError("there is not enough memory to read this image: use a smaller photo") from None
    except Exception as e:  # a damaged file can fail anywhere in a decoder: always the same clear answer
        reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise InvalidImageError(f"this file could not be read as an image; it is damaged or incomplete ({reason})") from None
    if orientation in _ORIENTATION:
        rgb = np.ascontiguousarray(np.asarray(Image.fromarray(rgb).transpose(_ORIENTATION[orientation])))
    scale = MAX_DETECT_SIDE / max(rgb.shape[:2])
    if scale < 1:
        rgb = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    if min(rgb.shape[:2]) < 1:
        raise InvalidImageError(f"the image is {rgb.shape[1]}x{rgb.shape[0]} pixels after scaling; a face needs far more")
    return rgb


def _open(photo) -> Image.Image:
    if isinstance(photo, Image.Image):
        return photo
    if isinstance(photo, (bytes, bytearray, memoryview)):
        if not len(photo):
            raise InvalidImageError("the file is empty (0 bytes)")
        return Image.open(io.BytesIO(photo), formats=PHOTO_FORMATS)
    if hasattr(photo, "read"):
        return Image.open(photo, formats=PHOTO_FORMATS)
    if os.path.isdir(photo):
        raise InvalidImageError(f"{os.fspath(photo)} is a folder, not a photo")
    if os.path.getsize(photo) == 0:
        raise InvalidImageError(f"{os.path.basename(photo)} is empty (0 bytes)")
    return Image.open(photo, formats=PHOTO_FORMATS)


def _array_to_image(a: np.ndarray) -> Image.Image:
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))):
        raise InvalidImageError(f"an image array must be HxW, HxWx3 (RGB) or HxWx4 (RGBA); got shape {a.shape}")
    if a.dtype == np.uint16 and a.ndim == 2:
        return Image.fromarray(np.ascontiguousarray(a))  # 16-bit grayscale
    if a.dtype != np.uint8:
        raise InvalidImageError(
            f"an image array must hold uint8 values 0-255, got {a.dtype}; e.g. convert with (a * 255).astype(np.uint8)"
        )
    return Image.fromarray(np.ascontiguousarray(a))


def _to_rgb8(image: Image.Image, factor: int = 1) -> np.ndarray:
    """8-bit RGB of any mode; `factor` >= 2 shrinks the image that many times first (box filter), in Pillow."""
    if image.mode in ("1", "P", "PA"):  # palette and 1-bit images cannot be reduced as they are
        transparent = image.mode == "PA" or "transparency" in image.info
        image = image.convert("RGBA" if transparent else "RGB" if image.mode != "1" else "L")
    elif image.mode.startswith("I;16"):
        image = image.convert("I")
    if factor >= 2:
        image = image.reduce(factor)
    if image.mode in ("I", "F"):  # 16/32-bit or float grayscale: rescale, not clip
        a = np.nan_to_num(np.asarray(image, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        a = (a - a.min()) / max(float(a.max() - a.min()), 1e-6) * 255
        return np.repeat(a.astype(np.uint8)[..., None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "La", "RGBa"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.ascontiguousarray(np.asarray(image))


@dataclass
class EyeResult:
    side: str  # "left" or "right", by position in the photo
    box: Box
    eye: np.ndarray  # 32x32x3 uint8
    faces: dict[str, np.ndarray]  # model name -> 128x128x3 uint8


@dataclass
class CropFaces:
    """Faces from ready eye crops: each one-eye model's face per crop and, from two crops (the left and the right eye
    of one photo), each two-eye model's one face from both."""

    eyes: list[np.ndarray]  # the crops at 32x32, as the models saw them
    faces: dict[str, list[np.ndarray]]  # one-eye model name -> a 128x128x3 face per crop
    both_eyes: dict[str, np.ndarray] = field(default_factory=dict)  # two-eye model name -> 128x128x3 face


@dataclass
class PhotoResult:
    photo: np.ndarray  # upright RGB, as detected on
    face_box: Box
    real_face: np.ndarray  # 128x128x3 uint8 crop of the detected face
    eyes: list[EyeResult]  # the eyes asked for
    notes: list[str] = field(default_factory=list)
    both_eyes: dict[str, np.ndarray] = field(default_factory=dict)  # two-eye model name -> 128x128x3 uint8
    both_eyes_crops: list[np.ndarray] = field(default_factory=list)  # the [left, right] 32x32 crops they were given
    both_eyes_boxes: list[Box] = field(default_factory=list)  # and where those crops are in the photo

    def annotated(self) -> np.ndarray:
        """The photo with the face box (green) and every eye box used (orange) drawn on it."""
        out = self.photo.copy()
        thickness = max(2, max(out.shape[:2]) // 300)
        x, y, w, h = self.face_box
        cv2.rectangle(out, (x, y), (x + w, y + h), (0, 200, 0), thickness)
        boxes = {r.box: r.side for r in self.eyes}
        if self.both_eyes:
            boxes.update(zip(self.both_eyes_boxes, ("left", "right")))
        for (x, y, w, h), side in boxes.items():
            cv2.rectangle(out, (x, y), (x + w, y + h), (255, 140, 0), thickness)
            cv2.putText(out, side[0].upper(), (x, max(y - 4, 12)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 140, 0), 1)
        return out


def to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255)


def to_images(batch: torch.Tensor) -> list[np.ndarray]:
    return list((batch.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy())


class EyeToFacePipeline:
    """Generate faces from the eyes in a photo with one or more named models (e.g. "l1", "feature").

    One-eye models (`model.eyes == 1`) make a face from each eye; two-eye models (`model.eyes == 2`) make one
    face from both eyes of the photo (`PhotoResult.both_eyes`), when both are found.
    """

    def __init__(self, models: dict[str, torch.nn.Module]):
        if not models:
            raise ValueError("the pipeline needs at least one model")
        # channels_last (NHWC) weights: the CPU's (oneDNN) convolutions run about 1.5x faster than NCHW on this
        # model; outputs equal NCHW ones up to float rounding (a pixel may differ by 1/255); bench/README.md.
        # The models are converted in place.
        self.models = {name: m.eval().to(memory_format=torch.channels_last) for name, m in models.items()}
        self.one_eye = {name: m for name, m in self.models.items() if getattr(m, "eyes", 1) == 1}
        self.two_eyes = {name: m for name, m in self.models.items() if getattr(m, "eyes", 1) == 2}

    @classmethod
    def from_pretrained(cls, sources: dict[str, str], **kwargs) -> EyeToFacePipeline:
        return cls({name: load_generator(src, **kwargs) for name, src in sources.items()})

    @torch.inference_mode()
    def generate(self, eyes: list[np.ndarray]) -> dict[str, list[np.ndarray]]:
        """Ready RGB eye crops (resized to 32x32) -> a face per crop from each one-eye model."""
        if not self.one_eye:
            raise ValueError("this pipeline has only two-eye models: use generate_from_both_eyes(left, right)")
        x = to_tensor([resize_eye(e) for e in eyes])
        return {name: to_images(model(x)) for name, model in self.one_eye.items()}

    @torch.inference_mode()
    def generate_from_both_eyes(self, left: np.ndarray, right: np.ndarray) -> dict[str, np.ndarray]:
        """The left and right eye crops of one photo (resized to 32x32) -> one face from each two-eye model."""
        if not self.two_eyes:
            raise ValueError("this pipeline has no two-eye model: use generate([eye]) for one eye at a time")
        x = to_tensor([resize_eye(left), resize_eye(right)])[None]
        return {name: to_images(model(x))[0] for name, model in self.two_eyes.items()}

    def from_eye_crops(self, crops: list[np.ndarray]) -> CropFaces:
        """One eye crop, or two (the left and the right eye of one photo) -> every face the models can make from them.

        Each one-eye model makes a face per crop; each two-eye model makes one face from two crops, and none from one.
        """
        if len(crops) not in (1, 2):
            raise ValueError(f"give one eye crop, or the left and the right one; got {len(crops)}")
        eyes = [resize_eye(c) for c in crops]
        faces = self.generate(eyes) if self.one_eye else {}
        both = self.generate_from_both_eyes(*eyes) if self.two_eyes and len(eyes) == 2 else {}
        return CropFaces(eyes, faces, both)

    def __call__(self, photo, eyes: str = "both") -> PhotoResult:
        """Detect the face and eyes in `photo`, then generate a face from each chosen eye.

        `eyes`: "left", "right" or "both" (left and right by position in the photo). Two-eye models always take both
        eyes when both are found.
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
        # The eye cascade fires on nostrils (close-ups of small children): YuNet's eye landmarks must fall in each box.
        checked = landmarks.landmark_status(rgb, found)
        if checked == "eye_box_without_landmark":
            raise NoEyeError("what was found as an eye is not an eye (the landmark detector, YuNet, puts no eye there): "
                             "try a photo where the face is smaller in the frame and both eyes are open")
        if checked == "no_landmark_face":
            notes.append("the landmark detector (YuNet) found no face here, so the eye boxes could not be checked")
        sides = ["left", "right"] if len(found) == 2 else [self._side(found[0], det.face)]
        if eyes not in ("both", *sides):
            raise NoEyeError(f"the {eyes} eye was not found; only the {sides[0]} eye was (try 'both')")
        made = self.from_eye_crops([crop(rgb, box, EYE_SIZE) for box in found])
        results = [EyeResult(side, box, eye, {name: faces[i] for name, faces in made.faces.items()})
                   for i, (side, box, eye) in enumerate(zip(sides, found, made.eyes)) if eyes in ("both", side)]
        if self.two_eyes and not made.both_eyes:
            notes.append(f"only the {sides[0]} eye was found, so there is no two-eye face: it needs both eyes")
        pair = made.eyes if made.both_eyes else []
        return PhotoResult(rgb, det.face, crop(rgb, det.face, FACE_SIZE), results, notes, made.both_eyes, pair,
                           list(found) if made.both_eyes else [])

    @staticmethod
    def _side(eye: Box, face: Box) -> str:
        return "left" if eye[0] + eye[2] / 2 < face[0] + face[2] / 2 else "right"


def resize_eye(eye: np.ndarray) -> np.ndarray:
    """An eye crop at the EYE_SIZE x EYE_SIZE the models take (bilinear, as in training's data preparation)."""
    return eye if eye.shape[:2] == (EYE_SIZE, EYE_SIZE) else cv2.resize(eye, (EYE_SIZE, EYE_SIZE))
