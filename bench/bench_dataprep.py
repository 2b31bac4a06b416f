"""Data prep scaling: photos/s of eye2face_hub.data.prepare with 1 and 2 processes on a CelebA sample.

    python -m bench.bench_dataprep --out /tmp/dataprep.json [--photos 300] [--rounds 2] [--opencv-1-thread]

prepare() on the first N photos of ../shared/data/celeba256 (read in place), nothing saved; the settings alternate
(1, 2, 2, 1, ...). Per setting: wall s, photos/s, and CPU s (this process and its workers) / wall s, the cores the
run actually got, which on a shared machine bounds the speed-up. --opencv-1-thread: also OpenCV at 1 thread each.
"""

import argparse
import resource
import time

import cv2
import datasets

from bench import common
from eye2face_hub.data import prepare


def cpu_seconds() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def run_once(photos: int, num_proc: int, opencv_threads: int | None = None) -> dict:
    saved = cv2.getNumThreads()
    if opencv_threads:
        cv2.setNumThreads(opencv_threads)  # inherited by the forked worker processes
    c0, t0 = cpu_seconds(), time.perf_counter()
    try:
        _, stats = prepare(str(common.CELEBA), None, num_proc=num_proc, limit=photos)
    finally:
        cv2.setNumThreads(saved)
    return {"wall_s": time.perf_counter() - t0, "cpu_s": cpu_seconds() - c0, "kept": stats["kept"], "stats": dict(stats)}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", type=int, default=300)
    p.add_argument("--rounds", type=int, default=2, help="runs per setting, alternating")
    p.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    p.add_argument("--opencv-1-thread", action="store_true", help="also 1 and 2 processes, OpenCV at 1 thread each")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if not common.CELEBA.is_dir():
        raise SystemExit(f"{common.CELEBA} is missing: the data-prep bench needs ../shared beside the checkout")
    datasets.disable_progress_bars()
    settings = {f"num_proc_{n}": (n, None) for n in args.procs}
    if args.opencv_1_thread:
        settings |= {"num_proc_1_opencv_1_thread": (1, 1), "num_proc_2_opencv_1_thread": (2, 1)}
    runs = {name: [] for name in settings}
    run_once(20, 1)  # warm-up: imports, cascades, file cache
    for r in range(args.rounds):
        for name in (list(settings) if r % 2 == 0 else list(reversed(settings))):
            runs[name].append(run_once(args.photos, *settings[name]))
    per = {}
    for name, rs in runs.items():
        walls = [x["wall_s"] for x in rs]
        per[name] = {"wall_s": common.stats(walls), "photos_per_s": round(args.photos / common.stats(walls)["median"], 2),
                     "cpu_s_median": round(sorted(x["cpu_s"] for x in rs)[len(rs) // 2], 2),
                     "cores_used": round(sorted(x["cpu_s"] / x["wall_s"] for x in rs)[len(rs) // 2], 2),
                     "kept": rs[0]["kept"], "stats": rs[0]["stats"]}
    result = {"bench": "dataprep", "machine": common.machine_info(None),
              "photos": args.photos, "source": f"first {args.photos} files of ../shared/data/celeba256 (256x256 JPEG)",
              "rounds": args.rounds, "settings": per}
    if "num_proc_1" in per and "num_proc_2" in per:
        speedup = per["num_proc_1"]["wall_s"]["median"] / per["num_proc_2"]["wall_s"]["median"]
        result.update(speedup_2_vs_1=round(speedup, 2), target_speedup=1.8, target_met=speedup >= 1.8,
                      same_result=per["num_proc_1"]["stats"] == per["num_proc_2"]["stats"])
    common.write_json(result, args.out)
    return result


if __name__ == "__main__":
    main()
