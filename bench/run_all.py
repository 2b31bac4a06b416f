"""Run the benches one after another, each in its own process (so that they do not compete for the cores); write
one results file with a summary of each bench's headline figures, also printed as a Markdown table.

    python -m bench.run_all --out bench/results.json     # everything (30-60 min on a shared 2-core machine)
    python -m bench.run_all --quick                      # fewer repeats, no torch.compile; to a temporary file
    python -m bench.run_all --only request --baseline /tmp/base   # only these entries; the round trip against a checkout
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import common
from bench.bench_request import summary_rows as request_rows

BENCHES = {  # name: (full arguments, quick arguments)
    "request": (["--repeat", "40"], ["--repeat", "8", "--burst", "10", "--load", "50"]),
    "generator": ([], ["--repeat", "5"]),
    "train": ([], ["--presets", "l1", "--repeat", "2", "--no-compile"]),
    "allocator": ([], ["--preset", "l1", "--variant", "eager", "--rounds", "1", "--repeat", "2"]),
    "dataprep": (["--photos", "300", "--rounds", "4", "--opencv-1-thread"], ["--photos", "100", "--rounds", "1"]),
}


def run(name: str, quick: bool, folder: Path, extra: list[str]) -> dict:
    out, started, t = folder / f"{name}.json", common.utc_now(), time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", f"bench.bench_{name}", *BENCHES[name][quick], *extra, "--out", str(out)],
                          cwd=common.REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = round(time.perf_counter() - t, 1)
    if proc.returncode != 0:
        return {"error": f"exit {proc.returncode}", "stderr_tail": proc.stderr[-3000:], "bench_wall_s": wall}
    return {"started_utc": started, "finished_utc": common.utc_now()} | json.loads(out.read_text()) | {"bench_wall_s": wall}


def summary(r: dict) -> list[dict]:
    rows = request_rows(r["request"]) if "server_side" in r.get("request", {}) else []

    def add(what, value, target="", met=None):
        rows.append({"what": what, "value": value, "target": target, "met": met})

    for g in r.get("generator", {}).get("runs", []):
        v, fast = g["variants"], g["fastest"]
        add(f"generator batch {g['batch']}, {g['torch_threads']} thread(s): images/s eager fp32 -> channels_last -> "
            f"fastest ({fast})", f"{v['eager_fp32']['images_per_s']} -> {v['channels_last']['images_per_s']} "
            f"({v['channels_last']['speedup_vs_eager_fp32']}x) -> {v[fast]['images_per_s']} ({v[fast]['speedup_vs_eager_fp32']}x)")
    for t in [t for t in r.get("train", {}).get("runs", []) if "ratio_to_feature" in t]:  # not runs before feature-id
        sps = t["samples_per_s"]
        add(f"training step, batch {t['batch']}, {t['mixed_precision']}: samples/s (compile s)",
            ", ".join(f"{n} {v} ({t['compile_s'].get(n, '-')})" for n, v in sps.items()))
        add("  each step over the feature step of its variant, same run", ", ".join(f"{n} {x}x" for n, x in t["ratio_to_feature"].items()))
        over = t["step_over_convolutions_alone"]
        add("  feature step over its convolutions alone", ", ".join(f"{n} {x}x" for n, x in over.items()),
            "<= 1.5x (compiled)", over["feature compiled"] <= 1.5 if "feature compiled" in over else None)
    a = r.get("allocator", {})
    if "jemalloc_speedup" in a:
        add(f"training step {a['preset']} ({a['variant']}): glibc -> jemalloc, ms per step (speed-up); "
            "minor page faults per step", f"{a['step_ms']['glibc']} -> {a['step_ms']['jemalloc']} "
            f"({a['jemalloc_speedup']}x); {a['minor_page_faults_per_step']['glibc']:,} -> "
            f"{a['minor_page_faults_per_step']['jemalloc']:,}")
    d = r.get("dataprep", {})
    if "speedup_2_vs_1" in d:
        for suffix, label, target in (("", "data prep", ">= 1.8x"), ("_opencv_1_thread", "  OpenCV at 1 thread", "")):
            one, two = d["settings"].get(f"num_proc_1{suffix}"), d["settings"].get(f"num_proc_2{suffix}")
            if one and two:
                ratio = one["wall_s"]["median"] / two["wall_s"]["median"]
                add(f"{label}: photos/s 1 process -> 2 (ratio; cores used)", f"{one['photos_per_s']} -> "
                    f"{two['photos_per_s']} ({ratio:.2f}x; {one['cores_used']} / {two['cores_used']})",
                    target, ratio >= 1.8 if target else None)
    for name, x in r.items():
        if "error" in x:
            add(f"{name}: failed (see its stderr_tail)", x["error"])
    return rows


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=None,
                   help="default bench/results.json; with --quick, eye2face-bench-quick.json in the temporary folder")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", nargs="+", choices=list(BENCHES), help="their entries replace those in an existing --out")
    p.add_argument("--baseline", type=Path, default=None, help="request: a checkout to compare the round trip with")
    args = p.parse_args(argv)
    out_path = args.out or (Path(tempfile.gettempdir()) / "eye2face-bench-quick.json" if args.quick
                            else common.REPO / "bench" / "results.json")
    started, results = common.utc_now(), {}
    with tempfile.TemporaryDirectory(prefix="eye2face-bench-") as folder:
        for name in args.only or BENCHES:
            print(f"[{time.strftime('%H:%M:%S')}] {name} ...", file=sys.stderr, flush=True)
            extra = ["--baseline", str(args.baseline)] if name == "request" and args.baseline else []
            results[name] = run(name, args.quick, Path(folder), extra)
            print(f"  {results[name].get('error', 'done')} in {results[name]['bench_wall_s']} s", file=sys.stderr)
    run_info = {"benches": list(results), "started_utc": started, "finished_utc": common.utc_now(), "quick": args.quick}
    if args.only and out_path.exists():
        out = json.loads(out_path.read_text())
        out["results"].update(results)
        out.setdefault("rerun", []).append(run_info)
    else:
        out = run_info | {"machine": common.machine_info(None), "results": results}
    out["summary"] = summary(out["results"])
    out_path.write_text(json.dumps(out, indent=2) + "\n")
    print("| what | figure | target | met |\n|---|---|---|---|")
    for row in out["summary"]:
        print(f"| {row['what']} | {row['value']} | {row['target']} | "
              f"{'' if row['met'] is None else 'yes' if row['met'] else '**no**'} |")
    return out


if __name__ == "__main__":
    main()
