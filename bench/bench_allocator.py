"""The training step under glibc's malloc and under jemalloc, side by side: bench_train's step in a child process per
allocator, alternating rounds, so that the machine's load hits both alike.

    python -m bench.bench_allocator --out /tmp/allocator.json [--preset feature] [--rounds 2] [--repeat 4]

jemalloc is preloaded as the README's training command does (LD_PRELOAD, with MALLOC_CONF keeping freed pages for
reuse): glibc hands big activations back to the OS and page-faults them in again each step. Each child compiles its
step first (not timed). Figures per allocator: the median over its children of each child's median step, their
ratio, and the minor page faults per step. Needs jemalloc (Debian: apt-get install libjemalloc2).
"""

import argparse
import ctypes.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import common

JEMALLOC_CONF = "oversize_threshold:0,dirty_decay_ms:-1,muzzy_decay_ms:-1"  # as in the README's run command


def find_jemalloc() -> str:
    for path in ("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2", "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2"):
        if Path(path).is_file():
            return path
    name = ctypes.util.find_library("jemalloc")
    if not name:
        sys.exit("jemalloc not found: install it (Debian/Ubuntu: apt-get install libjemalloc2) and run again")
    return name


def child(env: dict, args, folder: Path, tag: str) -> dict:
    out = folder / f"{tag}.json"
    cmd = [sys.executable, "-m", "bench.bench_train", "--presets", args.preset, "--variants", args.variant,
           "--repeat", str(args.repeat), "--threads", str(args.threads), "--out", str(out)]
    proc = subprocess.run(cmd, cwd=common.REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        sys.exit(f"bench_train under {tag} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text())["runs"][0]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="feature", choices=["l1", "feature"])
    p.add_argument("--variant", default="compiled", choices=["eager", "compiled"])
    p.add_argument("--rounds", type=int, default=2, help="child processes per allocator, alternating")
    p.add_argument("--repeat", type=int, default=4, help="timed steps per child")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: BENCH_THREADS, else all cores)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    args.threads = args.threads or int(os.environ.get("BENCH_THREADS", "0")) or os.cpu_count() or 1
    base = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MALLOC_CONF")}
    envs = {"glibc": base, "jemalloc": base | {"LD_PRELOAD": find_jemalloc(), "MALLOC_CONF": JEMALLOC_CONF}}
    samples, batch = {name: [] for name in envs}, None
    faults = {name: [] for name in envs}
    with tempfile.TemporaryDirectory(prefix="eye2face-allocator-") as folder:
        for i in range(args.rounds):
            for name in (list(envs) if i % 2 == 0 else list(envs)[::-1]):
                print(f"round {i + 1}/{args.rounds}: {name}", file=sys.stderr, flush=True)
                run = child(envs[name], args, Path(folder), f"{name}-{i}")
                step = f"{args.preset} {args.variant}"
                samples[name].append(run["step_ms"][step]["median"])
                batch = run["batch"]
                faults[name].append(run["minor_page_faults_per_step"][step])
    median = {n: statistics.median(s) for n, s in samples.items()}
    result = {
        "bench": "allocator", "preset": args.preset, "variant": args.variant, "batch": batch, "mixed_precision": run["mixed_precision"],
        "rounds": args.rounds, "repeat": args.repeat, "jemalloc_conf": JEMALLOC_CONF,
        "step_ms_median_per_child": samples,
        "step_ms": {n: round(m, 1) for n, m in median.items()},
        "samples_per_s": {n: round(batch / (m / 1000), 2) for n, m in median.items()},
        "jemalloc_speedup": round(median["glibc"] / median["jemalloc"], 3),
        "minor_page_faults_per_step": {n: round(statistics.median(f)) for n, f in faults.items()},
        "machine": common.machine_info(args.threads),
    }
    common.write_json(result, args.out)
    return result


if __name__ == "__main__":
    main()
