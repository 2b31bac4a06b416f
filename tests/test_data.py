import numpy as np
import pytest
import torch

from eye2face_hub.data import REASONS, EyeFacePairs, crop, detect, load_pairs, pairs_from_photo, prepare, to_unit


def test_haar_on_a_real_face(astronaut):
    det = detect(astronaut)
    assert det.status == "kept", det
    (fx, fy, fw, fh), eyes = det.face, det.eyes
    assert len(eyes) == 2 and eyes[0][0] < eyes[1][0]  # left then right, by position
    for x, y, w, h in eyes:  # eyes lie in the upper part of the face box
        assert fx <= x and x + w <= fx + fw and fy <= y and y + h <= fy + fh * 0.6
    row = pairs_from_photo(astronaut)
    assert row["status"] == "kept" and all(row[k]["bytes"] for k in ("face", "left_eye", "right_eye"))
    assert crop(astronaut, det.face, 128).shape == (128, 128, 3)


def test_no_face_is_dropped_with_reason():
    flat = np.full((200, 200, 3), 128, np.uint8)
    assert detect(flat).status == "no_face"


def test_prepare_folder_with_a_corrupt_file(tmp_path, astronaut_jpg):
    import shutil

    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(astronaut_jpg, photos / "a.jpg")
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    from PIL import Image

    Image.new("RGB", (120, 90), "gray").save(photos / "blank.png")
    pairs, stats = prepare(str(photos), str(tmp_path / "out"))
    assert stats["kept"] == 1 and stats["unreadable"] == 1 and stats["no_face"] == 1
    assert set(stats) == set(REASONS)
    assert pairs.column_names == ["face", "left_eye", "right_eye", "source"]
    assert pairs[0]["source"] == "a.jpg"
    again = load_pairs(str(tmp_path / "out"))
    assert len(again) == 1 and again[0]["face"].size == (128, 128) and again[0]["left_eye"].size == (32, 32)


def test_prepare_empty_folder_is_clear(tmp_path):
    with pytest.raises(ValueError, match="no images"):
        prepare(str(tmp_path), None)


def test_yield_on_shared_celeba(celeba_sample, tmp_path):
    pairs, stats = prepare(str(celeba_sample), str(tmp_path / "pairs"), num_proc=2)
    total = sum(stats.values())
    print(f"\nHaar yield on {total} CelebA photos: kept {stats['kept']} ({stats['kept'] / total:.0%}), {dict(stats)}")
    assert total == len(list(celeba_sample.glob("*.jpg")))
    assert len(pairs) == stats["kept"]
    assert stats["kept"] >= total * 0.3  # near-frontal faces: most photos give two eyes


def test_pairs_dataset_gives_two_pairs_per_photo(prepared_pairs):
    rows = load_pairs(str(prepared_pairs))
    pairs = EyeFacePairs(rows, progress=False)
    assert len(pairs) == 2 * len(rows)
    eye0, face0 = pairs[0]
    eye1, face1 = pairs[1]
    assert eye0.dtype == torch.uint8 and eye0.shape == (3, 32, 32) and face0.shape == (3, 128, 128)
    assert torch.equal(face0, face1) and not torch.equal(eye0, eye1)  # left and right eye, same face
    unit = to_unit(face0)
    assert unit.dtype == torch.float32 and 0 <= unit.min() and unit.max() <= 1
