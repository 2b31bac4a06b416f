"""Shared by the benches: statistics (median, p95, min, max, mean of wall-clock times after warm-up), side-by-side
timing (interleaved rounds, so that the load of a shared machine affects all sides alike), machine info, paths."""

import json
import os
import platform
import statistics
import time
from importlib.metadata import distributions
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WEIGHTS = REPO / "weights"  # the bundled models (the app's default)
CELEBA = REPO.parent / "shared" / "data" / "celeba256"
VGG_FILE = REPO.parent / "shared" / "vgg19" / "vgg19-caffe-conv1_1-conv3_4.safetensors"
PACKAGES = ("torch", "numpy", "opencv-python-headless", "pillow", "gradio", "gradio_client", "accelerate", "datasets")


def stats(samples: list[float], scale: float = 1.0, digits: int = 3) -> dict:
    """median / p95 / min / max / mean of samples (times `scale`, e.g. 1000 for ms) and the count."""
    xs = sorted(x * scale for x in samples)
    if not xs:
        return {"n": 0}
    p95 = xs[min(len(xs) - 1, int(round(0.95 * (len(xs) - 1))))]
    return {k: round(v, digits) for k, v in (("median", statistics.median(xs)), ("p95", p95), ("min", xs[0]),
                                             ("max", xs[-1]), ("mean", statistics.fmean(xs)))} | {"n": len(xs)}


def interleaved(fns: dict, repeat: int, warmup: int = 2, inner: int = 1) -> dict[str, list[float]]:
    """Time several callables side by side: each round runs each once (order rotated), so load spikes hit all.

    Returns seconds per call (each sample is the mean of `inner` back-to-back calls)."""
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    out = {n: [] for n in names}
    for i in range(repeat):
        for n in names[i % len(names):] + names[: i % len(names)]:
            t = time.perf_counter()
            for _ in range(inner):
                fns[n]()
            out[n].append((time.perf_counter() - t) / inner)
    return out


def cpuinfo(key: str) -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith(key)), "")


def machine_info(torch_threads: int | None = None) -> dict:
    import cv2
    import psutil
    import torch

    versions = {(d.metadata["Name"] or "").lower(): d.version for d in distributions()}
    return {
        "cpu_model": cpuinfo("model name") or platform.processor() or platform.machine(),
        "logical_cpus": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_features": sorted({"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"} & set(cpuinfo("flags").split())),
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "torch_threads": torch_threads if torch_threads is not None else torch.get_num_threads(),
        "opencv_threads": cv2.getNumThreads(), "python": platform.python_version(), "platform": platform.platform(),
        "versions": {p: versions[p.lower()] for p in PACKAGES if p.lower() in versions},
        "cuda": torch.cuda.is_available(), "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "note": "a 2-core machine shared with other developers (training, test runs): see load_average_1_5_15",
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
    }


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def write_json(result: dict, out: str | None) -> None:
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")
