"""Data prep scaling: photos/s of eye2face_hub.data.prepare with 1 and 2 processes on a CelebA sample.

    python bench/bench_dataprep.py --out bench/results-dataprep.json [--photos 300] [--rounds 2]

prepare(CelebA folder, limit=N, num_proc=1 or 2) on the first N photos of ../shared/data/celeba256 (read in
place, never copied), nothing saved. The two settings run alternately (1, 2, 2, 1, ...) so that a change in the
machine's load hits both. Reported per setting: wall seconds, photos/s, and the CPU seconds the run used
(this process and its worker processes): CPU s / wall s is how many cores the run actually got, which on a
shared machine bounds the speed-up of 2 processes.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def cpu_seconds() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def run_once(photos: int, num_proc: int, opencv_threads: int | None = None) -> dict:
    import cv2

    from eye2face_hub.data import prepare

    saved = cv2.getNumThreads()
    if opencv_threads:
        cv2.setNumThreads(opencv_threads)  # inherited by the forked worker processes
    c0, t0 = cpu_seconds(), time.perf_counter()
    try:
        pairs, stats = prepare(str(common.CELEBA), None, num_proc=num_proc, limit=photos)
    finally:
        cv2.setNumThreads(saved)
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    return {"wall_s": wall, "cpu_s": cpu, "kept": stats["kept"], "stats": dict(stats)}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", type=int, default=300)
    p.add_argument("--rounds", type=int, default=2, help="runs per setting, alternating")
    p.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    p.add_argument("--opencv-1-thread", action="store_true",
                   help="also run 1 and 2 processes with OpenCV limited to 1 thread each (side by side)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if not common.CELEBA.is_dir():
        raise SystemExit(f"{common.CELEBA} is missing: the data-prep bench needs ../shared beside the checkout")
    import datasets

    datasets.disable_progress_bars()
    import cv2

    settings = {f"num_proc_{n}": (n, None) for n in args.procs}
    if args.opencv_1_thread:
        settings["num_proc_1_opencv_1_thread"] = (1, 1)
        settings["num_proc_2_opencv_1_thread"] = (2, 1)
    runs = {name: [] for name in settings}
    run_once(20, 1)  # warm-up: imports, cascades, file cache
    for r in range(args.rounds):
        order = list(settings) if r % 2 == 0 else list(reversed(settings))
        for name in order:
            runs[name].append(run_once(args.photos, *settings[name]))
    per = {}
    for name, rs in runs.items():
        walls = [x["wall_s"] for x in rs]
        med = common.stats(walls)["median"]
        per[name] = {
            "wall_s": common.stats(walls),
            "photos_per_s": round(args.photos / med, 2),
            "cpu_s_median": round(sorted(x["cpu_s"] for x in rs)[len(rs) // 2], 2),
            "cores_used": round(sorted(x["cpu_s"] / x["wall_s"] for x in rs)[len(rs) // 2], 2),
            "kept": rs[0]["kept"],
            "stats": rs[0]["stats"],
        }
    result = {
        "bench": "dataprep",
        "machine": common.machine_info(None) | {"opencv_threads": cv2.getNumThreads()},
        "photos": args.photos,
        "source": f"first {args.photos} files of ../shared/data/celeba256 (256x256 JPEG)",
        "rounds": args.rounds,
        "settings": per,
    }
    if "num_proc_1" in per and "num_proc_2" in per:
        speedup = per["num_proc_1"]["wall_s"]["median"] / per["num_proc_2"]["wall_s"]["median"]
        result.update(speedup_2_vs_1=round(speedup, 2), target_speedup=1.8, target_met=speedup >= 1.8,
                      same_result=per["num_proc_1"]["stats"] == per["num_proc_2"]["stats"])
    common.write_json(result, args.out)
    return result


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
