"""Face detection, the largest remaining cost of a request: eye2face_hub.data.detect against faster variants.

    python bench/bench_detect.py --out bench/results-detect.json [--photos 200]

Not a change to the library: the numbers for deciding one. detect() runs the Haar face cascade over the whole
photo (scaleFactor 1.1, minNeighbors 5, smallest face = 1/8 of the shorter side), then the eye cascade in the
top 60% of the largest face. OpenCV scans a pyramid level with a 1-pixel step once the level is scaled down
more than 2x, so a 640x480 photo, whose smallest face (60 px) is 2.5x the cascade's 24 px window, is scanned
densely at every level. The variants run the face cascade on a copy scaled down first (INTER_AREA), smallest
face scaled alike, and map the boxes back; the eyes are searched as before, in the full-resolution face box:
  current       eye2face_hub.data.detect
  face_half     the face cascade at 1/2 size (when the smallest face stays >= 24 px)
  face_min24    the face cascade at the size where the smallest face is the cascade's 24 px window
Reported: time per photo side by side (interleaved), and agreement with `current`: same status (kept, no face,
...), and for photos both keep, the IoU of the face box and of the eye boxes, on the 640x480 astronaut and on the
first N CelebA photos (256x256, where the smallest face is 32 px, so the scale-down is only 1.33x).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

WINDOW = 24  # haarcascade_frontalface_default's window


def detect_scaled(rgb: np.ndarray, mode: str):
    from eye2face_hub.data import Detection, _cascades

    face_cascade, eye_cascade = _cascades()
    gray = cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
    min_face = max(24, min(gray.shape) // 8)
    scale = {"face_half": 2.0, "face_min24": min_face / WINDOW}[mode]
    if min_face / scale < WINDOW or scale <= 1:
        scale = 1.0
    small = gray if scale == 1 else cv2.resize(gray, None, fx=1 / scale, fy=1 / scale, interpolation=cv2.INTER_AREA)
    m = max(WINDOW, int(round(min_face / scale)))
    found = face_cascade.detectMultiScale(small, 1.1, 5, minSize=(m, m))
    faces = [tuple(int(round(v * scale)) for v in b) for b in found]
    if not faces:
        return Detection([], [])
    fx, fy, fw, fh = max(faces, key=lambda b: b[2] * b[3])
    top = gray[fy : fy + int(fh * 0.6), fx : fx + fw]
    min_eye = max(8, fw // 10)
    eyes = eye_cascade.detectMultiScale(top, 1.1, 5, minSize=(min_eye, min_eye), maxSize=(fw // 2, fw // 2))
    return Detection(faces, sorted((int(x) + fx, int(y) + fy, int(w), int(h)) for x, y, w, h in eyes))


def iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = w * h
    return inter / (aw * ah + bw * bh - inter)


def agreement(ref, other) -> dict:
    same_status = [r.status == o.status for r, o in zip(ref, other)]
    both = [(r, o) for r, o in zip(ref, other) if r.status == o.status == "kept"]
    face_iou = [iou(r.face, o.face) for r, o in both]
    eye_iou = [iou(a, b) for r, o in both for a, b in zip(r.eyes, o.eyes)]
    return {"photos": len(ref), "same_status": round(float(np.mean(same_status)), 4), "both_kept": len(both),
            "face_iou_median": round(float(np.median(face_iou)), 3) if face_iou else None,
            "face_iou_min": round(float(np.min(face_iou)), 3) if face_iou else None,
            "eye_iou_median": round(float(np.median(eye_iou)), 3) if eye_iou else None,
            "kept_ref": sum(r.status == "kept" for r in ref), "kept_variant": sum(o.status == "kept" for o in other)}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", type=int, default=200)
    p.add_argument("--repeat", type=int, default=15)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    from eye2face_hub.data import detect, read_rgb
    from eye2face_hub.pipeline import load_photo

    variants = {"current": detect, "face_half": lambda im: detect_scaled(im, "face_half"),
                "face_min24": lambda im: detect_scaled(im, "face_min24")}
    astronaut = load_photo(common.test_photo_jpeg())
    celeba = [read_rgb(str(f)) for f in sorted(common.CELEBA.glob("*.jpg"))[: args.photos]]
    result = {"bench": "detect", "machine": common.machine_info(None), "sets": {}}
    for name, images, repeat in (("astronaut_640x480", [astronaut], args.repeat),
                                 (f"celeba_first_{len(celeba)}", celeba, 2)):
        dets = {v: [f(im) for im in images] for v, f in variants.items()}
        times = common.interleaved({v: (lambda f=f: [f(im) for im in images]) for v, f in variants.items()},
                                   repeat=repeat, warmup=1)
        per_photo = {v: common.stats(t, 1000 / len(images)) for v, t in times.items()}
        base = per_photo["current"]["median"]
        result["sets"][name] = {
            v: {"ms_per_photo": per_photo[v], "speedup": round(base / per_photo[v]["median"], 2),
                "agreement_with_current": agreement(dets["current"], dets[v])}
            for v in variants
        }
    common.write_json(result, args.out)
    return result


if __name__ == "__main__":
    main()
