"""Data pipeline: Haar cascades find one face and two eyes, YuNet's landmarks check the eyes; each kept photo gives
two (eye, face) pairs."""

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

from . import landmarks
from .ages import band_of, band_order

# The sample, defined once: a kept photo's 128x128 face and its eyes' 32x32 crops, left then right in the photo.
FACE_SIZE = 128
EYE_SIZE = 32
EYE_COLUMNS = ("left_eye", "right_eye")  # a prepared row's eye columns, in sample order
EYES_PER_PHOTO = len(EYE_COLUMNS)
MIN_EYE_CROP = 8  # pixels: the smallest eye crop accepted (detected eye boxes are often under EYE_SIZE)
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
# Why a photo is dropped; "kept" photos give two pairs. The last two are the landmark check's (landmarks.py).
REASONS = ("kept", "unreadable", "no_face", "several_faces", "fewer_than_2_eyes", "more_than_2_eyes",
           "no_landmark_face", "eye_box_without_landmark")
VALIDATION = "validation"  # the split of a prepared set that is held out, never trained on

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


def pad_photo(rgb: np.ndarray, pad: float) -> np.ndarray:
    """The photo with a border of `pad` times its longer side, its edge pixels repeated.

    Haar's face cascade needs some margin around a face: on photos cropped tight to the face (UTKFace's) it finds
    none in most of them, most often in children's and older people's.
    """
    border = round(pad * max(rgb.shape[:2]))
    return cv2.copyMakeBorder(rgb, border, border, border, border, cv2.BORDER_REPLICATE) if border else rgb


def pairs_from_photo(rgb: np.ndarray, check_landmarks: bool = True, pad: float = 0.0) -> dict:
    """One dataset row: status, and for kept photos the 128px face and the two 32px eyes as JPEG.

    With `check_landmarks`, a photo Haar keeps is dropped when its eye boxes do not each hold a YuNet eye landmark.
    With `pad`, everything is found and cropped in the photo padded by `pad_photo`.
    """
    rgb = pad_photo(rgb, pad)
    det = detect(rgb)
    status = det.status
    if status == "kept" and check_landmarks:
        status = landmarks.landmark_status(rgb, det.eyes)
    row = {"status": status, "face": None, **dict.fromkeys(EYE_COLUMNS)}
    if status == "kept":
        row["face"] = {"bytes": encode_jpeg(crop(rgb, det.face, FACE_SIZE)), "path": None}
        for key, box in zip(EYE_COLUMNS, det.eyes):
            row[key] = {"bytes": encode_jpeg(crop(rgb, box, EYE_SIZE)), "path": None}
    return row


def _prepare_row(example: dict, image_column: str, check_landmarks: bool, pad: float) -> dict:
    image = example[image_column]  # undecoded: {"bytes": ..., "path": ...}
    source = image.get("path") or ""
    try:
        rgb = read_rgb(image.get("bytes") or source)
    except Exception:  # any undecodable input is a dropped photo, counted, not a crash
        return {"status": "unreadable", "face": None, **dict.fromkeys(EYE_COLUMNS), "source": source}
    return {**pairs_from_photo(rgb, check_landmarks, pad), "source": os.path.basename(source)}


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


def is_prepared(path: str) -> bool:
    """Whether `path` is a folder of prepared pairs (saved by `prepare`), not of photos."""
    return os.path.isdir(path) and _is_dataset_dir(path) and {"face", *EYE_COLUMNS} <= set(load_pairs(path).column_names)


class Yield(Counter):
    """Photos per reason (kept, or why dropped); `by_band` and `by_split` hold the same counts per age band (from
    UTKFace-style file names; "unknown" otherwise) and per split."""

    def __init__(self, statuses: list[str], sources: list[str], splits: list[str]):
        super().__init__(dict.fromkeys(REASONS, 0))
        self.update(statuses)
        bands = [band_of(source) for source in sources]
        self.by_band = {band: _reasons(s for s, b in zip(statuses, bands) if b == band) for band in band_order(bands)}
        self.by_split = {split: _reasons(s for s, t in zip(statuses, splits) if t == split) for split in dict.fromkeys(splits)}

    def to_dict(self) -> dict:
        """yield.json: the overall counts (photos, pairs, each reason), then per age band and per split."""
        return {"photos": sum(self.values()), "pairs": EYES_PER_PHOTO * self["kept"], **self,
                "by_age_band": self.by_band, "by_split": self.by_split}

    def table(self) -> str:
        """Kept and dropped photos per reason, a column per age band (when names carry ages) and the total."""
        groups = {**(self.by_band if set(self.by_band) != {"unknown"} else {}), "all": dict(self)}
        rows = ["| | " + " | ".join(groups) + " |", "|---" * (len(groups) + 1) + "|",
                "| photos | " + " | ".join(str(sum(g.values())) for g in groups.values()) + " |"]
        for reason in REASONS:
            rows.append(f"| {reason.replace('_', ' ')} | "
                        + " | ".join(f"{g[reason]} ({g[reason] / max(sum(g.values()), 1):.1%})" for g in groups.values()) + " |")
        return "\n".join(rows)


def _reasons(statuses) -> dict[str, int]:
    counts = Counter(statuses)
    return {reason: counts[reason] for reason in REASONS}


def held_out(groups: list[str], n_val: int) -> set[int]:
    """Indices of n_val photos to hold out: as many from each group (age band) as the others, each group's spread
    evenly over its photos in file-name order.

    `groups[i]`: photo i's group. Equal shares, not the last files: UTKFace names start with the age, so its last
    500 files by name are all aged 8-9 or 89-99, and a share in proportion would leave a dozen kept photos aged 60+
    to judge that band by.
    """
    members = {group: [i for i, g in enumerate(groups) if g == group] for group in sorted(set(groups))}
    shares = [n_val // len(members) + (k < n_val % len(members)) for k in range(len(members))] if members else []
    if n_val < 0 or any(share >= len(m) for share, m in zip(shares, members.values()) if share):
        raise ValueError(f"cannot hold out {n_val} of {len(groups)} photos in {len(members)} group(s) "
                         "(at least one photo of each must stay for training)")
    return {m[(i * len(m)) // share] for share, m in zip(shares, members.values()) for i in range(share)}


def prepare(
    source: str,
    out: str | None = None,
    *,
    image_column: str = "image",
    split: str = "train",
    num_proc: int | None = None,
    limit: int | None = None,
    push_to_hub: str | None = None,
    check_landmarks: bool = True,
    val_photos: int = 0,
    pad: float = 0.0,
):
    """Run the Haar pipeline (and the landmark check) over photos, each padded by `pad` (pad_photo); returns
    (pairs, Yield).

    With `val_photos`, that many photos, an equal share of each age band spread over its file names (`held_out`),
    are a "validation" split, never trained on: pairs is then a DatasetDict of "train" and "validation", else one
    Dataset.
    """
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
        fn_kwargs={"image_column": image_column, "check_landmarks": check_landmarks, "pad": pad},
        remove_columns=photos.column_names,
        features=features,
        num_proc=num_proc if num_proc and num_proc > 1 and len(photos) > 1 else None,
        desc="Detecting faces and eyes",
    )
    validation = held_out([band_of(source) for source in rows["source"]], val_photos)
    splits = [VALIDATION if i in validation else "train" for i in range(len(rows))]
    stats = Yield(rows["status"], rows["source"], splits)

    def kept(split: str | None = None):
        # filter, not select: a set with no row saved from select([]) cannot be loaded back
        return rows.filter(lambda status, i: status == "kept" and split in (None, splits[i]), input_columns="status",
                           with_indices=True).remove_columns("status")

    pairs = datasets.DatasetDict({name: kept(name) for name in ("train", VALIDATION)}) if val_photos else kept()
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


def held_out_split(source: str):
    """The validation split a prepared set holds out (`prepare --val-photos`), or None when it has none."""
    import datasets

    if os.path.isdir(source):
        loaded = datasets.load_from_disk(source)
        return loaded.get(VALIDATION) if isinstance(loaded, datasets.DatasetDict) else None
    splits = datasets.get_dataset_split_names(source)
    return datasets.load_dataset(source, split=VALIDATION) if VALIDATION in splits else None


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


def as_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float in [0, 1]; (B, 3, H, W) in channels_last, the layout the mkldnn/cuDNN kernels want
    (a two-eye model lays out its (B, 2, 3, H, W) input itself)."""
    x = to_unit(images)
    return x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x
