"""Shared helpers for the benchmarks: timing statistics, machine info, paths, test inputs, bench weights.

Every bench script prints (and optionally writes) JSON. Timings are wall-clock (time.perf_counter) over
repeated runs after warm-up; statistics are median, p95, min, max. Comparisons are always measured side by
side in one process (interleaved rounds), so that the load of a shared machine affects both sides alike.
"""

from __future__ import annotations

import io
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path


REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
CELEBA = SHARED / "data" / "celeba256"
VGG_FILE = SHARED / "vgg19" / "vgg19-caffe-conv1_1-conv3_4.safetensors"
RESULTS = REPO / "bench" / "results"  # git-ignored scratch (bench weights, temporary outputs)
H200_BF16_DENSE_PEAK = 989e12  # FLOP/s, NVIDIA H200 SXM datasheet, dense BF16 tensor core (1,979 with sparsity)
PEAKS = {"H200": H200_BF16_DENSE_PEAK, "H100": 989e12, "A100": 312e12}  # dense bf16, by device-name substring


def set_threads(n: int | None) -> int:
    """Set torch intra-op threads explicitly (default: BENCH_THREADS, else all cores); returns the count used."""
    import torch

    n = n or int(os.environ.get("BENCH_THREADS", "0")) or os.cpu_count() or 1
    torch.set_num_threads(n)
    return n


def stats(samples: list[float], scale: float = 1.0, digits: int = 3) -> dict:
    """median / p95 / min / max / mean of samples (times `scale`, e.g. 1000 for ms) and the count."""
    xs = sorted(x * scale for x in samples)
    if not xs:
        return {"n": 0}
    p95 = xs[min(len(xs) - 1, int(round(0.95 * (len(xs) - 1))))]
    r = lambda v: round(v, digits)  # noqa: E731
    return {"median": r(statistics.median(xs)), "p95": r(p95), "min": r(xs[0]), "max": r(xs[-1]),
            "mean": r(statistics.fmean(xs)), "n": len(xs)}


def timeit(fn, repeat: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def interleaved(fns: dict, repeat: int, warmup: int = 2, inner: int = 1) -> dict[str, list[float]]:
    """Time several callables side by side: each round runs each once (order rotated), so load spikes hit all.

    Returns seconds per call (each sample is the mean of `inner` back-to-back calls)."""
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    out = {n: [] for n in names}
    for i in range(repeat):
        order = names[i % len(names):] + names[: i % len(names)]
        for n in order:
            t = time.perf_counter()
            for _ in range(inner):
                fns[n]()
            out[n].append((time.perf_counter() - t) / inner)
    return out


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def machine_info(torch_threads: int | None = None) -> dict:
    import cv2
    import torch

    flags = cpu_flags()
    info = {
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_features": sorted(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags),
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "torch_threads": torch_threads if torch_threads is not None else torch.get_num_threads(),
        "opencv_threads": cv2.getNumThreads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": _versions(),
        "cuda": torch.cuda.is_available(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "note": "a 2-core machine shared with other developers (training, test runs): see load_average_1_5_15",
    }
    try:
        import psutil

        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    return info


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("torch", "numpy", "opencv-python-headless", "pillow", "gradio", "gradio_client", "accelerate", "datasets"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def test_photo_jpeg(size=(640, 480), quality=90) -> bytes:
    """skimage.data.astronaut() resized to 640x480 and JPEG-encoded: the request bench's input."""
    from PIL import Image
    from skimage import data

    buf = io.BytesIO()
    Image.fromarray(data.astronaut()).resize(size, Image.BILINEAR).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def weights_dir() -> Path:
    """weights/ if the trained weights are there; else untrained models in bench/results/weights (never committed).

    Timing does not depend on the weights' values, only on the architecture."""
    bundled = REPO / "weights"
    if all((bundled / f"eye2face-{n}" / "model.safetensors").is_file() for n in ("l1", "feature")):
        return bundled
    folder = RESULTS / "weights"
    for preset in ("l1", "feature"):
        target = folder / f"eye2face-{preset}"
        if not (target / "model.safetensors").is_file():
            import torch

            from eye2face_hub import EyeToFace

            torch.manual_seed(0)
            EyeToFace(loss_config={"preset": preset}).eval().save_pretrained(target)
    return folder


def write_json(result: dict, out: str | None) -> None:
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")


def add_repo_to_path() -> None:
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
