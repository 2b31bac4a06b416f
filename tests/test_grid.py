"""The one comparison renderer: the app's comparison, the trainer's samples, evaluate's grid and the docs' figures."""

import numpy as np
import pytest

from eye2face_hub.data import EYE_SIZE, FACE_SIZE
from eye2face_hub.grid import CAPTION, GAP, HEADER, TILE, comparison_image, tile_boxes
from eye2face_hub.pipeline import comparison_grid


def eye_tile_holds(tile: np.ndarray, eye: np.ndarray):
    """An eye crop is shown scaled up with nearest neighbour: each of its pixels is an exact square block."""
    k = FACE_SIZE // EYE_SIZE
    np.testing.assert_array_equal(tile, np.repeat(np.repeat(eye, k, axis=0), k, axis=1))


def test_the_comparison_takes_any_number_of_rows_and_columns():
    """Rows of any length (a blank tile where a column has nothing for that row), labels that do not fit shrink."""
    face = np.random.default_rng(0).integers(0, 256, (FACE_SIZE, FACE_SIZE, 3), dtype=np.uint8)
    eye = face[::4, ::4]
    labels = ["eye", "a model with a long name, longer than its tile", "c", "d", "e"]
    image = comparison_image([("one", [eye, face, None, face, None]), ("two", [None, None, face, None, face])], labels)
    boxes = tile_boxes(2, 5)
    assert image.shape == (HEADER + 2 * (CAPTION + TILE), 5 * TILE + 4 * GAP, 3)
    for (r, c), expected in {(0, 1): face, (0, 3): face, (1, 2): face, (1, 4): face}.items():
        x, y, w, h = boxes[r][c]
        np.testing.assert_array_equal(image[y : y + h, x : x + w], expected)
    for r, c in [(0, 2), (0, 4), (1, 0), (1, 1), (1, 3)]:
        x, y, w, h = boxes[r][c]
        assert (image[y : y + h, x : x + w] == 255).all()
    eye_tile_holds(image[boxes[0][0][1] : boxes[0][0][1] + TILE, : TILE], eye)
    x = boxes[0][2][0]
    assert (image[: HEADER, x - GAP : x] == 255).all(), "a long label runs into the next column"
    with pytest.raises(ValueError, match="3 tiles for 5 columns"):
        comparison_image([("short", [eye, face, face])], labels)


def test_the_column_major_grid_has_no_captions_and_a_label_per_column():
    rng = np.random.default_rng(1)
    faces = [rng.integers(0, 256, (FACE_SIZE, FACE_SIZE, 3), dtype=np.uint8) for _ in range(3)]
    eyes = [f[::4, ::4] for f in faces]
    grid = comparison_grid([eyes, faces], ["eye", "face"])
    assert grid.shape == (HEADER + 3 * TILE, 2 * TILE + GAP, 3)
    for r, row in enumerate(tile_boxes(3, 2, caption=0)):
        (ex, ey, _, _), (fx, fy, w, h) = row
        eye_tile_holds(grid[ey : ey + h, ex : ex + w], eyes[r])
        np.testing.assert_array_equal(grid[fy : fy + h, fx : fx + w], faces[r])
    for x, _, w, _ in tile_boxes(1, 2)[0]:
        assert (grid[:HEADER, x : x + w] < 128).any(), "a column has no label"
