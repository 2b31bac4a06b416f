"""The comparison: its layout (a row per eye, a column per model) and its two renderings, a labelled PNG (the API's
answer and the download) and HTML for the page, whose labels are page text, readable at any screen width."""

from __future__ import annotations

import base64
import html
import uuid
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from gradio.utils import get_upload_folder

from eye2face_hub.grid import TILE, comparison_image, tile_boxes
from eye2face_hub.pipeline import CropFaces, PhotoResult

from .models import MODELS

EYE_LABEL = "eye crop (32x32)"
REAL_FACE = "real face"
BOTH_EYES_ROW = "both eyes"
BOTH_EYES_CAPTION = "both eyes, one face: the two-eye model, from the left and the right crop"
# Output PNGs (lossless at any setting): zlib level 1 with the run-length strategy, by OpenCV. On a 640x640 photo
# 21 ms and 566 kB, against 33 ms and 634 kB for Pillow at level 1 and 129 ms for Gradio's default (level 6).
PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
CSS = """
.e2f-comparison { display: grid; gap: 4px; max-width: 100%; }
.e2f-comparison .e2f-label { font-size: 0.875rem; font-weight: 600; line-height: 1.25; overflow-wrap: anywhere;
                             align-self: end; }
.e2f-comparison .e2f-caption { grid-column: 1 / -1; font-size: 0.875rem; color: var(--body-text-color-subdued);
                               margin-top: 6px; }
.e2f-comparison img { width: 100%; height: auto; aspect-ratio: 1; display: block; }
.e2f-comparison img.e2f-pixels { image-rendering: pixelated; }
"""


@dataclass
class EyeRow:
    name: str  # the row's name for programs ("left eye")
    caption: str  # what the person reads above it
    eye: np.ndarray  # the crop as the models saw it
    faces: dict[str, np.ndarray]  # one-eye model name -> its face


@dataclass
class Comparison:
    columns: list[str]  # the labels
    rows: list[tuple[str, list[np.ndarray | None]]]  # per row: its caption, a tile per column (None: blank)
    row_names: list[str]
    models: list[str]  # in column order

    def image(self) -> np.ndarray:
        return comparison_image(self.rows, self.columns)

    def details(self) -> dict:
        """For programs: the rows, columns and models, and where each tile is in the PNG ([x, y, width, height])."""
        return {"rows": self.row_names, "columns": self.columns, "models": self.models,
                "tiles": tile_boxes(len(self.rows), len(self.columns))}

    def html(self) -> str:
        """The page's rendering: the labels and captions as text, the tiles as inline PNGs scaled to the width."""
        cells = [f'<div class="e2f-label">{html.escape(label)}</div>' for label in self.columns]
        for caption, tiles in self.rows:
            cells.append(f'<div class="e2f-caption">{html.escape(caption)}</div>')
            for label, tile in zip(self.columns, tiles):
                cells.append("<div></div>" if tile is None else
                             f'<img alt="{html.escape(label)}" title="{html.escape(label)}" src="{data_url(tile)}"'
                             + (' class="e2f-pixels">' if tile.shape[0] < TILE else ">"))
        columns = f"repeat({len(self.columns)}, minmax(0, {TILE}px))"
        return f'<div class="e2f-comparison" style="grid-template-columns: {columns}">{"".join(cells)}</div>'


def layout(eyes: list[EyeRow], both: dict[str, np.ndarray], pair: list[np.ndarray],
           real_face: np.ndarray | None = None) -> Comparison:
    """A row per eye: its crop, each one-eye model's face (MODELS order), the real face if given. With two-eye
    models' faces, their columns and a last row, "both eyes": the two crops they were given, their faces."""
    one = [name for name in MODELS if eyes and name in eyes[0].faces]
    two = [name for name in MODELS if name in both]
    real = [] if real_face is None else [real_face]
    rows = [(e.caption, [e.eye, *(e.faces[n] for n in one), *[None] * len(two), *real]) for e in eyes]
    names = [e.name for e in eyes]
    if two:
        rows.append((BOTH_EYES_CAPTION, [eye_pair_tile(*pair), *[None] * len(one), *(both[n] for n in two), *real]))
        names.append(BOTH_EYES_ROW)
    columns = [EYE_LABEL, *(MODELS[n].label for n in one + two), *([REAL_FACE] if real else [])]
    return Comparison(columns, rows, names, one + two)


def photo_comparison(result: PhotoResult) -> Comparison:
    rows = [EyeRow(f"{r.side} eye", f"{r.side} eye (as seen in the photo)", r.eye, r.faces) for r in result.eyes]
    return layout(rows, result.both_eyes, result.both_eyes_crops, result.real_face)


def crops_comparison(made: CropFaces, sizes: list[tuple[int, int]]) -> Comparison:
    """`sizes`: each crop's (width, height) as given."""
    sides = ["left eye", "right eye"] if len(made.eyes) == 2 else ["eye crop"]
    rows = [EyeRow(side, f"{'your' if len(sizes) == 1 else side.split()[0]} eye crop ({w}x{h} px), as the models "
                   "see it", eye, {name: faces[i] for name, faces in made.faces.items()})
            for i, (side, (w, h), eye) in enumerate(zip(sides, sizes, made.eyes))]
    return layout(rows, made.both_eyes, made.eyes)


def eye_pair_tile(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """The "both eyes" row's eye tile: the left and the right 32x32 crop side by side and centred vertically, each
    of their pixels a 2x2 block."""
    half = TILE // 2
    tile = np.full((TILE, TILE, 3), 255, np.uint8)
    top = (TILE - half) // 2
    for i, eye in enumerate((left, right)):
        tile[top : top + half, i * half : (i + 1) * half] = cv2.resize(eye, (half, half), interpolation=cv2.INTER_NEAREST)
    return tile


def png_bytes(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), PNG_PARAMS)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return data.tobytes()


def data_url(image: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode()


def cache_png(image: np.ndarray, name: str) -> str:
    """`image` (RGB) as a PNG file in Gradio's cache (delete_cache removes it with the rest), in a folder of its own.

    Returned as a path, which Gradio serves as it is: no second encoding, and no other request ever writes to it.
    """
    folder = Path(get_upload_folder()) / f"eye2face-{uuid.uuid4().hex}"
    folder.mkdir(parents=True)
    path = folder / name
    path.write_bytes(png_bytes(image))
    return str(path)
