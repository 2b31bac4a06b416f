from collections import Counter

import numpy as np
import pytest
import torch

from eye2face_hub.ages import band_of, band_order
from eye2face_hub.data import (
    REASONS,
    VALIDATION,
    EyeFacePairs,
    crop,
    detect,
    held_out,
    held_out_split,
    load_pairs,
    pad_photo,
    pairs_from_photo,
    prepare,
    to_unit,
)

from .utkface import utkface_sample  # noqa: F401  (a fixture)


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


def test_a_set_with_no_photo_kept_loads_back_empty(tmp_path):
    from PIL import Image

    for name in ("a.png", "b.png"):
        Image.new("RGB", (120, 90), "gray").save(tmp_path / name)
    prepare(str(tmp_path), str(tmp_path / "none"))
    prepare(str(tmp_path), str(tmp_path / "none-split"), val_photos=1)
    assert len(load_pairs(str(tmp_path / "none"))) == 0
    assert len(load_pairs(str(tmp_path / "none-split"))) == len(held_out_split(str(tmp_path / "none-split"))) == 0


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


def test_held_out_photos_are_spread_over_the_names():
    n, n_val = 8280, 500
    held = sorted(held_out(["unknown"] * n, n_val))  # one group (CelebA): spread over all names
    assert len(held) == n_val and held[0] == 0
    assert max(b - a for a, b in zip(held, held[1:])) <= -(-n // n_val)  # no stretch of names left out
    assert held_out(["unknown"] * n, 0) == set()
    with pytest.raises(ValueError, match="at least one photo of each"):
        held_out(["unknown"] * 10, 10)


def test_held_out_takes_an_equal_share_of_each_age_band():
    groups = ["0-12"] * 300 + ["13-59"] * 600 + ["60+"] * 100  # names sort by age: bands are runs of names
    held = held_out(groups, 31)
    assert Counter(groups[i] for i in held) == {"0-12": 11, "13-59": 10, "60+": 10}
    adults = sorted(i for i in held if groups[i] == "13-59")
    assert adults[0] == 300 and adults[-1] >= 300 + 600 - 60  # spread over the whole band
    with pytest.raises(ValueError, match="at least one photo of each"):
        held_out(["0-12"] * 5 + ["60+"] * 100, 20)  # 10 of 5 children


def test_prepare_utkface_by_age_band_with_a_validation_split(utkface_sample, tmp_path):
    pairs, stats = prepare(str(utkface_sample), str(tmp_path / "pairs"), val_photos=12)
    names = sorted(p.name for p in utkface_sample.iterdir())
    assert set(pairs) == {"train", VALIDATION}
    train, val = (set(pairs[s]["source"]) for s in ("train", VALIDATION))
    assert train and val and not train & val  # never trained on
    assert {names[i] for i in held_out([band_of(n) for n in names], 12)} >= val
    # the counts per band and per split add up to the overall counts, and bands come from the names
    for breakdown in (stats.by_band, stats.by_split):
        assert {r: sum(g[r] for g in breakdown.values()) for r in REASONS} == dict(stats)
    assert list(stats.by_band) == band_order(band_of(n) for n in names)
    kept_by_band = Counter(band_of(s) for s in train | val)
    assert {b: c["kept"] for b, c in stats.by_band.items()} == {b: kept_by_band[b] for b in stats.by_band}
    assert stats.by_split[VALIDATION]["kept"] == len(val) and sum(stats.by_split[VALIDATION].values()) == 12
    record = stats.to_dict()
    assert record["photos"] == len(names) and record["pairs"] == 2 * stats["kept"]
    assert "| 0-12 | 13-59 | 60+ | all |" in stats.table()
    assert load_pairs(str(tmp_path / "pairs"), VALIDATION)["source"] == pairs[VALIDATION]["source"]
    assert held_out_split(str(tmp_path / "pairs"))["source"] == pairs[VALIDATION]["source"]


def test_landmark_check_drops_eye_boxes_off_the_eyes(tmp_path, astronaut_jpg, monkeypatch):
    import shutil

    shutil.copy(astronaut_jpg, tmp_path / "a.jpg")
    _, stats = prepare(str(tmp_path), None)
    assert stats["kept"] == 1
    far = np.array([[0.0, 0.0], [1.0, 1.0]])  # YuNet's eyes somewhere no Haar box is
    monkeypatch.setattr("eye2face_hub.landmarks.eye_landmarks", lambda rgb: far)
    pairs, stats = prepare(str(tmp_path), None)
    assert stats["kept"] == 0 and stats["eye_box_without_landmark"] == 1 and len(pairs) == 0
    _, stats = prepare(str(tmp_path), None, check_landmarks=False)  # Haar alone, the research's filter
    assert stats["kept"] == 1
    monkeypatch.setattr("eye2face_hub.landmarks.eye_landmarks", lambda rgb: np.zeros((0, 2)))
    assert prepare(str(tmp_path), None)[1]["no_landmark_face"] == 1


def test_padding_finds_faces_in_photos_cropped_tight(utkface_sample):
    rgb = np.zeros((200, 150, 3), np.uint8)
    assert pad_photo(rgb, 0.2).shape == (280, 230, 3) and pad_photo(rgb, 0) is rgb
    _, plain = prepare(str(utkface_sample), None)
    _, padded = prepare(str(utkface_sample), None, pad=0.2)
    print(f"\nUTKFace sample kept: {plain['kept']} of {sum(plain.values())}, padded by 20%: {padded['kept']}")
    assert padded["no_face"] < plain["no_face"] and padded["kept"] > plain["kept"]
