"""Data pipeline: Haar cascades find one face and two eyes; each kept photo gives two (eye, face) pairs."""

from __future__ import annotations

import io
import os
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image, ImageOps

# The sample, defined once: a kept photo's 128x128 face and its eyes' 32x32 crops, left then right in the photo.
FACE_SIZE = 128
EYE_SIZE = 32
EYE_COLUMNS = ("left_eye", "right_eye")  # a prepared row's eye columns, in sample order
EYES_PER_PHOTO = len(EYE_COLUMNS)
MIN_EYE_CROP = 8  # pixels: the smallest eye crop accepted (detected eye boxes are often under EYE_SIZE)
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
# Why a photo is dropped; "kept" photos give two pairs.
REASONS = ("kept", "unreadable", "no_face", "several_faces", "fewer_than_2_eyes", "more_than_2_eyes")

Box = tuple[int, int, int, int]  # x, y, w, h in photo pixels


@lru_cache(maxsize=None)
def _cascades() -> tuple[cv2.CascadeClassifier, cv2.CascadeClassifier]:
    # One pair per process: CascadeClassifier cannot be pickled into `Dataset.map` workers.
    root = Path(cv2.data.haarcascades)
    face = cv2.CascadeClassifier(str(root / "haarcascade_frontalface_default.xml"))
    eye = cv2.CascadeClassifier(str(root / "haarcascade_eye.xml"))
    if face.empty() or eye.empty():
        raise RuntimeError(f"OpenCV's Haar cascades are missing from {root}")
    return face, eye


@dataclass
class Detection:
    faces: list[Box]
    eyes: list[Box]  # of the largest face, sorted left to right in the photo

    @property
    def face(self) -> Box | None:
        return max(self.faces, key=lambda b: b[2] * b[3]) if self.faces else None

    @property
    def status(self) -> str:
        if not self.faces:
            return "no_face"
        if len(self.faces) > 1:
            return "several_faces"
        if len(self.eyes) < 2:
            return "fewer_than_2_eyes"
        if len(self.eyes) > 2:
            return "more_than_2_eyes"
        return "kept"


def detect(rgb: np.ndarray) -> Detection:
    """Faces in the photo, and eyes searched in the upper part of the largest face.

    Looking for eyes only where eyes can be (the top 60% of the face box) avoids nostrils and
    mouth corners that the eye cascade fires on over the whole photo.
    """
    face_cascade, eye_cascade = _cascades()
    gray = cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
    min_face = max(24, min(gray.shape) // 8)
    faces = [tuple(map(int, b)) for b in face_cascade.detectMultiScale(gray, 1.1, 5, minSize=(min_face, min_face))]
    if not faces:
        return Detection([], [])
    fx, fy, fw, fh = max(faces, key=lambda b: b[2] * b[3])
    top = gray[fy : fy + int(fh * 0.6), fx : fx + fw]
    min_eye = max(8, fw // 10)
    eyes = eye_cascade.detectMultiScale(top, 1.1, 5, minSize=(min_eye, min_eye), maxSize=(fw // 2, fw // 2))
    eyes = sorted((int(x) + fx, int(y) + fy, int(w), int(h)) for x, y, w, h in eyes)
    return Detection(faces, eyes)


def crop(rgb: np.ndarray, box: Box, size: int) -> np.ndarray:
    x, y, w, h = box
    return cv2.resize(rgb[y : y + h, x : x + w], (size, size), interpolation=cv2.INTER_LINEAR)


def encode_jpeg(rgb: np.ndarray, quality: int = 95) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def read_rgb(source: str | os.PathLike | bytes) -> np.ndarray:
    """An upright 8-bit RGB array from a file path or encoded bytes (EXIF rotation applied)."""
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))


def pairs_from_photo(rgb: np.ndarray) -> dict:
    """One dataset row: status, and for kept photos the 128px face and the two 32px eyes as JPEG."""
    det = detect(rgb)
    row = {"status": det.status, "face": None, **dict.fromkeys(EYE_COLUMNS)}
    if det.status == "kept":
        row["face"] = {"bytes": encode_jpeg(crop(rgb, det.face, FACE_SIZE)), "path": None}
        for key, box in zip(EYE_COLUMNS, det.eyes):
            row[key] = {"bytes": encode_jpeg(crop(rgb, box, EYE_SIZE)), "path": None}
    return row


def _prepare_row(example: dict, image_column: str) -> dict:
    image = example[image_column]  # undecoded: {"bytes": ..., "path": ...}
    source = image.get("path") or ""
    try:
        rgb = read_rgb(image.get("bytes") or source)
    except Exception:  # any undecodable input is a dropped photo, counted, not a crash
        return {"status": "unreadable", "face": None, **dict.fromkeys(EYE_COLUMNS), "source": source}
    return {**pairs_from_photo(rgb), "source": os.path.basename(source)}


def load_photos(source: str, image_column: str = "image", split: str = "train", limit: int | None = None):
    """A `datasets.Dataset` of undecoded photos from an image folder or anything `load_dataset` reads."""
    import datasets

    if os.path.isdir(source) and not _is_dataset_dir(source):
        files = sorted(str(p) for p in Path(source).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise ValueError(f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) found in {source}")
        photos = datasets.Dataset.from_dict({image_column: [{"bytes": None, "path": f} for f in files[:limit]]})
        return photos.cast_column(image_column, datasets.Image(decode=False))
    photos = datasets.load_dataset(source, split=split)
    if image_column not in photos.column_names:
        raise ValueError(f"{source} has no column {image_column!r} (columns: {photos.column_names})")
    if limit is not None:
        photos = photos.select(range(min(limit, len(photos))))
    return photos.cast_column(image_column, datasets.Image(decode=False))


def _is_dataset_dir(path: str) -> bool:
    return (Path(path) / "dataset_info.json").exists() or (Path(path) / "dataset_dict.json").exists()


def prepare(
    source: str,
    out: str | None = None,
    *,
    image_column: str = "image",
    split: str = "train",
    num_proc: int | None = None,
    limit: int | None = None,
    push_to_hub: str | None = None,
):
    """Run the Haar pipeline over photos; returns (pairs dataset, Counter of statuses)."""
    import datasets

    photos = load_photos(source, image_column, split, limit)
    features = datasets.Features(
        {
            "face": datasets.Image(),
            **{column: datasets.Image() for column in EYE_COLUMNS},
            "source": datasets.Value("string"),
            "status": datasets.Value("string"),
        }
    )
    rows = photos.map(
        _prepare_row,
        fn_kwargs={"image_column": image_column},
        remove_columns=photos.column_names,
        features=features,
        num_proc=num_proc if num_proc and num_proc > 1 and len(photos) > 1 else None,
        desc="Detecting faces and eyes",
    )
    stats = Counter({reason: 0 for reason in REASONS})
    stats.update(rows["status"])
    pairs = rows.filter(lambda s: s == "kept", input_columns="status").remove_columns("status")
    if out:
        pairs.save_to_disk(out)
    if push_to_hub:
        pairs.push_to_hub(push_to_hub)
    return pairs, stats


def load_pairs(source: str, split: str = "train"):
    """A prepared pairs dataset from `prepare`: a folder saved to disk, or a Hub dataset id."""
    import datasets

    if os.path.isdir(source):
        loaded = datasets.load_from_disk(source)
        return loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
    return datasets.load_dataset(source, split=split)


def _decode(images: list) -> torch.Tensor:
    arrays = [np.asarray(im.convert("RGB")) for im in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


class EyeFacePairs(torch.utils.data.Dataset):
    """Decoded uint8 (eyes, face) samples of prepared photo rows; scale with `to_unit` on the device.

    With `eyes=1` (one-eye models) each photo gives EYES_PER_PHOTO samples: sample i is eye i % EYES_PER_PHOTO
    of photo `photo(i)`, shape (3, 32, 32). With `eyes=2` (two-eye models) each photo gives one sample: its
    eyes stacked, shape (2, 3, 32, 32). Decoding once up front keeps the training loop fed without JPEG work.
    """

    def __init__(self, rows, batch_size: int = 512, progress: bool = True, eyes: int = 1):
        from tqdm.auto import tqdm

        if eyes not in (1, EYES_PER_PHOTO):
            raise ValueError(f"a sample holds 1 or {EYES_PER_PHOTO} eyes, not {eyes}")
        faces, photo_eyes = [], []
        for start in tqdm(range(0, len(rows), batch_size), desc="Decoding pairs", disable=not progress):
            batch = rows[start : start + batch_size]
            faces.append(_decode(batch["face"]))
            photo_eyes.append(torch.stack([_decode(batch[column]) for column in EYE_COLUMNS], 1))
        if not faces:
            raise ValueError("the pairs dataset is empty")
        self.faces, self.photo_eyes, self.eyes_per_sample = torch.cat(faces), torch.cat(photo_eyes), eyes
        self.samples_per_photo = EYES_PER_PHOTO // eyes

    def __len__(self) -> int:
        return len(self.faces) * self.samples_per_photo

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        photo = self.photo(i)
        eyes = self.photo_eyes[photo] if self.eyes_per_sample == EYES_PER_PHOTO else self.photo_eyes[photo, i % EYES_PER_PHOTO]
        return eyes, self.faces[photo]

    def photo(self, i: int | torch.Tensor) -> int | torch.Tensor:
        """The photo (row) that sample i comes from."""
        return i // self.samples_per_photo

    def one_per_photo(self, n: int | None = None) -> list[int]:
        """Indices of the first sample of each of the first n photos."""
        return list(range(0, len(self), self.samples_per_photo))[:n]


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [0, 1]."""
    return images.float().div_(255)
