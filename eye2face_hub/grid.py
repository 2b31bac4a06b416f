"""The labelled comparison image: a header with a label per column, then per row an optional caption line and one
tile per column. The app's comparison, the trainer's samples, `evaluate`'s grid and the docs' figures all use it."""

from __future__ import annotations

import functools

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .data import FACE_SIZE

TILE, GAP, HEADER, CAPTION = FACE_SIZE, 4, 24, 20  # pixels: tile side, gap between columns, header, caption line


def tile_origin(row: int, column: int, caption: int = CAPTION) -> tuple[int, int]:
    """Where the tile of `row` and `column` starts (x, y), with caption lines `caption` pixels high."""
    return column * (TILE + GAP), HEADER + row * (caption + TILE) + caption


def tile_boxes(rows: int, columns: int, caption: int = CAPTION) -> list[list[list[int]]]:
    """[x, y, width, height] of every tile, per row and column: image[y:y + height, x:x + width] is one tile."""
    return [[[*tile_origin(r, c, caption), TILE, TILE] for c in range(columns)] for r in range(rows)]


def comparison_image(rows: list[tuple[str, list[np.ndarray | None]]], labels: list[str],
                     caption: int = CAPTION) -> np.ndarray:
    """Rows of (caption, one tile per label) -> one RGB image. Tiles smaller than TILE (eye crops) are scaled up with
    nearest neighbour, so every pixel stays visible and exact; a None tile stays blank. `caption=0`: no caption lines.
    """
    width = len(labels) * (TILE + GAP) - GAP
    canvas = np.full((HEADER + len(rows) * (caption + TILE), width, 3), 255, np.uint8)
    canvas[:HEADER] = _text_strip(tuple(labels), width, HEADER)
    for r, (text, tiles) in enumerate(rows):
        if len(tiles) != len(labels):
            raise ValueError(f"row {r} has {len(tiles)} tiles for {len(labels)} columns")
        y = tile_origin(r, 0, caption)[1]
        if caption:
            canvas[y - caption : y] = _text_strip(text, width, caption)
        for c, tile in enumerate(tiles):
            if tile is not None:
                if tile.shape[:2] != (TILE, TILE):
                    tile = cv2.resize(tile, (TILE, TILE), interpolation=cv2.INTER_NEAREST)
                canvas[y : y + TILE, c * (TILE + GAP) : c * (TILE + GAP) + TILE] = tile
    return canvas


def comparison_grid(columns: list[list[np.ndarray]], labels: list[str]) -> np.ndarray:
    """One labelled column per image kind, one row per example, no captions."""
    return comparison_image([("", list(row)) for row in zip(*columns)], labels, caption=0)


@functools.lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


@functools.lru_cache(maxsize=64)
def _text_strip(text: str | tuple[str, ...], width: int, height: int) -> np.ndarray:
    """A white strip with `text` (a caption; or a label per column, for a tuple), drawn once and reused."""
    strip = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(strip)
    for x, label, room, color, size in (
        [(c * (TILE + GAP), label, TILE, (0, 0, 0), 15) for c, label in enumerate(text)] if isinstance(text, tuple)
        else [(0, text, width, (90, 90, 90), 13)]
    ):
        while size > 9 and draw.textlength(label, font=_font(size)) > room - 4:
            size -= 1
        while len(label) > 1 and draw.textlength(label, font=_font(size)) > room - 4:  # still too long: cut it
            label = label[:-2].rstrip() + "…"
        draw.text((x + 2, 3), label, fill=color, font=_font(size))
    strip = np.asarray(strip)
    strip.setflags(write=False)  # shared by every caller
    return strip
