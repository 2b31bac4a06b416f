"""Webcam stream: frames per second that app.py's streaming handler (Handlers.live) sustains.

    python -m bench.bench_webcam --out /tmp/webcam.json [--frames 60] [--threads 1]

Frames are 640x480 JPEG data: URLs, as Gradio's webcam streams them (canvas.toDataURL("image/jpeg")), of the
astronaut shifted by a few pixels from frame to frame. Each frame goes through Handlers.live (which writes the
annotated frame and the comparison as PNG) and Gradio's postprocessing of its outputs, back to back, one stream.
Reported: per-frame latency (median, p95, ...), fps = frames / wall time, and 1 / median latency.
Note: app.py asks the browser for a frame every `stream_every` seconds and the browser waits for each result
before it sends the next, so the fps a visitor sees is min(1 / stream_every, the handler's fps).
"""

from __future__ import annotations

import argparse
import base64
import io
import time

try:
    from bench import common  # python -m bench.bench_webcam
except ImportError:  # python bench/bench_webcam.py (bench/run_all.py)
    import common

common.add_repo_to_path()

import numpy as np  # noqa: E402
import torch  # noqa: E402


def frames(n: int) -> list[dict]:
    from PIL import Image
    from skimage import data

    base = np.asarray(Image.fromarray(data.astronaut()).resize((680, 510), Image.BILINEAR))
    out = []
    for i in range(n):
        dx, dy = int(20 + 15 * np.sin(i / 5)), int(15 + 10 * np.cos(i / 7))  # a slowly moving head
        frame = np.ascontiguousarray(base[dy:dy + 480, dx:dx + 640])
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, format="JPEG", quality=92)
        out.append({"url": "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode(), "path": None})
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=60)
    p.add_argument("--threads", type=int, default=1, help="torch threads (the app's default is 1)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    from tests.app_fixtures import import_app

    app = import_app()
    blocks = app.create_app(env={}, weights_dir=common.weights_dir())
    torch.set_num_threads(args.threads)
    fn = next(f for f in blocks.fns.values() if f.api_name == "live")
    handlers = fn.fn.__self__
    stream = frames(args.frames)

    def step(frame):
        out = handlers.live(frame, "both", True)
        return [value if _is_skip(value) or not hasattr(block, "postprocess") else block.postprocess(value)
                for block, value in zip(fn.outputs, out)]

    for f in stream[:3]:
        step(f)
    latencies, faces = [], 0
    t0 = time.perf_counter()
    for f in stream:
        t = time.perf_counter()
        out = step(f)
        latencies.append(time.perf_counter() - t)
        faces += not _is_skip(out[0])
    wall = time.perf_counter() - t0
    fps = len(stream) / wall
    stages = stage_times(app, handlers, fn, stream)
    stream_every = getattr(fn, "stream_every", None)
    result = {
        "bench": "webcam",
        "machine": common.machine_info(args.threads),
        "frames": len(stream),
        "frames_with_a_face": faces,
        "latency_ms": common.stats(latencies, 1000),
        "fps_sustained": round(fps, 2),
        "fps_from_median": round(1000 / common.stats(latencies, 1000)["median"], 2),
        "target_fps": 15,
        "target_met": fps >= 15,
        "stages_ms": {k: common.stats(v, 1000) for k, v in stages.items()},
        "app_stream_every_s": stream_every,
        "ui_fps_cap": round(1 / stream_every, 2) if stream_every else None,
    }
    common.write_json(result, args.out)
    return result


def stage_times(app, handlers, fn, stream) -> dict[str, list[float]]:
    """Per frame, Handlers.live's parts: decode (data: URL -> RGB), detect, crop + every model, assemble (boxes
    drawn, comparison), encode (the two output images to PNG files as the app serves them); and, for comparison only,
    encode_jpeg_what_if: the annotated frame as JPEG (quality 90) instead of PNG (not what the app does)."""
    from PIL import Image

    from eye2face_hub.data import EYE_SIZE, crop, detect
    from eye2face_hub.pipeline import load_photo

    pipe = handlers.pipeline
    out = {k: [] for k in ("decode", "detect", "crop_and_generate", "assemble", "encode", "encode_jpeg_what_if")}
    for frame in stream:
        s = time.perf_counter()
        rgb = load_photo(app._photo_source(frame))
        out["decode"].append(time.perf_counter() - s)
        s = time.perf_counter()
        det = detect(rgb)
        out["detect"].append(time.perf_counter() - s)
        s = time.perf_counter()
        pipe.generate([crop(rgb, box, EYE_SIZE) for box in det.eyes[:2]])
        out["crop_and_generate"].append(time.perf_counter() - s)
        result = pipe(rgb)  # not timed: the result to assemble
        s = time.perf_counter()
        annotated, comparison = result.annotated(), handlers.photo_comparison(result)
        out["assemble"].append(time.perf_counter() - s)
        s = time.perf_counter()
        app._cache_png(annotated, "frame.png"), app._cache_png(comparison, "comparison.png")
        out["encode"].append(time.perf_counter() - s)
        s = time.perf_counter()
        Image.fromarray(annotated).save(io.BytesIO(), format="JPEG", quality=90)
        out["encode_jpeg_what_if"].append(time.perf_counter() - s)
    return out


def _is_skip(value) -> bool:
    return isinstance(value, dict) and value.get("__type__") == "update" and len(value) == 1


if __name__ == "__main__":
    main()
