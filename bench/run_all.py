"""Run every benchmark of issue #6 and write one JSON file with a summary against the targets.

    python bench/run_all.py --out bench/results.json            # everything (about 30-60 min on a loaded 2-core box)
    python bench/run_all.py --quick --out /tmp/results.json     # fewer repeats, no torch.compile, 100 app requests

Each bench runs in its own process (bench/bench_*.py, each also runnable alone with --out), one after the other,
so that they do not compete for the two cores. Prints a Markdown table of the figures against the targets.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import common  # noqa: E402

BENCHES = {
    # name: (script, full arguments, quick arguments)
    "request": ("bench_request.py", ["--repeat", "40"], ["--repeat", "12"]),
    "generator": ("bench_generator.py", [], ["--no-compile", "--repeat", "5"]),
    "webcam": ("bench_webcam.py", ["--frames", "60"], ["--frames", "20"]),
    "train": ("bench_train.py", [], ["--steps", "2"]),
    "dataprep": ("bench_dataprep.py", ["--photos", "300", "--rounds", "4", "--opencv-1-thread"],
                 ["--photos", "100", "--rounds", "1"]),
    "app_load": ("bench_app_load.py", ["--requests", "500"], ["--requests", "100"]),
    "detect": ("bench_detect.py", ["--photos", "200"], ["--photos", "40", "--repeat", "5"]),
    "profile": ("profile_hotspots.py", ["--n", "20"], ["--n", "5"]),
}


def run(name: str, quick: bool, folder: Path) -> dict:
    script, full, fast = BENCHES[name]
    out = folder / f"{name}.json"
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, str(HERE / script), *(fast if quick else full), "--out", str(out)],
                          cwd=common.REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = round(time.perf_counter() - t, 1)
    if proc.returncode != 0:
        return {"error": f"exit {proc.returncode}", "stderr_tail": proc.stderr[-3000:], "bench_wall_s": wall}
    result = json.loads(out.read_text())
    result["bench_wall_s"] = wall
    return result


def summary(r: dict) -> list[dict]:
    rows = []

    def add(what, value, target="", met=None):
        rows.append({"what": what, "value": value, "target": target, "met": met})

    if "in_process" in r.get("request", {}):
        ip = r["request"]["in_process"]
        add("request, both models, in process: p50 / p95 ms", f"{ip['end_to_end_ms']['median']:.0f} / {ip['end_to_end_ms']['p95']:.0f}",
            "p50 < 60 ms", ip["end_to_end_ms"]["median"] < 60)
        add("  same request before the speed-ups: p50 ms (ratio)", f"{ip['before_ms']['median']:.0f} ({ip['speedup_vs_before']}x)")
        add("  stages p50 ms", ", ".join(f"{k} {v['median']:.1f}" for k, v in ip["stages_ms"].items()))
        pc = ip.get("per_change_ms")
        if pc:
            add("  per change, side by side: encode before -> now; generate NCHW -> channels_last (ms)",
                f"{pc['encode_before']['median']:.1f} -> {pc['encode_now']['median']:.1f} ({pc['encode_speedup']}x); "
                f"{pc['generate_before_nchw']['median']:.1f} -> {pc['generate_now_channels_last']['median']:.1f} "
                f"({pc['generate_speedup']}x)")
            add("  encode made of (ms): PNG annotated photo / grid / eyes+faces+real face; JPEG photo (what-if)",
                f"{pc['png_annotated_photo']['median']:.1f} / {pc['png_grid']['median']:.1f} / "
                f"{pc['png_eyes_faces_real_face']['median']:.1f}; {pc['jpeg_annotated_photo_what_if']['median']:.1f}")
    gc = r.get("request", {}).get("gradio_client")
    if gc:
        for key, label in (("one_client", "1 client"), ("four_concurrent_clients", "4 concurrent clients"),
                           ("four_concurrent_clients_concurrency_limit_2", "4 clients, app at concurrency 2 (not adopted)")):
            c = gc.get(key)
            if not c:
                continue
            add(f"request via gradio_client, {label}: p50 / p95 ms, req/s",
                f"{c['latency_ms']['median']:.0f} / {c['latency_ms']['p95']:.0f}, {c['requests_per_s']}")
        nd = gc["one_client"].get("latency_ms_without_downloads")
        if nd:
            add("  1 client without downloading the 10 output files: p50 / p95 ms", f"{nd['median']:.0f} / {nd['p95']:.0f}")
    for run_ in r.get("generator", {}).get("runs", []):
        v = run_["variants"]
        cl = v.get("channels_last", {})
        add(f"generator batch {run_['batch']}, {run_['torch_threads']} thread(s): images/s eager fp32 -> channels_last "
            f"-> fastest ({run_['fastest']})",
            f"{v['eager_fp32']['images_per_s']} -> {cl.get('images_per_s')} ({cl.get('speedup_vs_eager_fp32')}x) -> "
            f"{v[run_['fastest']]['images_per_s']} ({run_['fastest_speedup_vs_eager_fp32']}x)")
    if "fps_sustained" in r.get("webcam", {}):
        w = r["webcam"]
        add("webcam handler fps (1 stream)", w["fps_sustained"], ">= 15 fps", w["target_met"])
        add("  webcam fps the UI asks for (1 / stream_every)", w["ui_fps_cap"])
        if "stages_ms" in w:
            add("  webcam stages p50 ms", ", ".join(f"{k} {v['median']:.1f}" for k, v in w["stages_ms"].items()))
    for run_ in r.get("train", {}).get("runs", []):
        add(f"training {run_['preset']} ({run_['device']}, {run_['mixed_precision']}): samples/s", run_["samples_per_s"])
        if "mfu" in run_:
            add(f"  MFU / paper recipe minutes on {run_['gpu']}", f"{run_['mfu']} / {run_['paper_recipe_minutes']}",
                "< 10 min", run_["target_met"])
    proj = r.get("train", {}).get("h200_projection_not_measured", {}).get("feature")
    if proj:
        add("paper recipe on one H200 (feature): projected, not measured: minutes at 10% / 30% MFU",
            f"{proj['minutes_at_mfu_0.1']} / {proj['minutes_at_mfu_0.3']} (needs MFU >= {proj['mfu_needed_for_10_minutes']})",
            "< 10 min", None)
    d = r.get("dataprep", {})
    if "speedup_2_vs_1" in d:
        s = d["settings"]
        add("data prep photos/s 1 proc -> 2 procs (ratio)",
            f"{s['num_proc_1']['photos_per_s']} -> {s['num_proc_2']['photos_per_s']} ({d['speedup_2_vs_1']}x; cores used "
            f"{s['num_proc_1']['cores_used']} / {s['num_proc_2']['cores_used']})", ">= 1.8x", d["target_met"])
        if "num_proc_2_opencv_1_thread" in s and "num_proc_1_opencv_1_thread" in s:
            one, two = s["num_proc_1_opencv_1_thread"], s["num_proc_2_opencv_1_thread"]
            add("  OpenCV at 1 thread per process: photos/s 1 proc -> 2 procs (ratio; cores used)",
                f"{one['photos_per_s']} -> {two['photos_per_s']} ({one['wall_s']['median'] / two['wall_s']['median']:.2f}x; "
                f"{one['cores_used']} / {two['cores_used']})")
    for set_name, variants in r.get("detect", {}).get("sets", {}).items():
        for v in ("face_half", "face_min24"):
            x = variants[v]
            add(f"detection variant {v} on {set_name} (not adopted): speed-up, same status, face IoU p50",
                f"{x['speedup']}x, {x['agreement_with_current']['same_status']:.1%}, "
                f"{x['agreement_with_current']['face_iou_median']}")
    for target in ("request", "webcam", "dataprep"):
        top = r.get("profile", {}).get(target, {}).get("top_own_time", [])[:3]
        if top:
            add(f"profile {target}: top own time", ", ".join(f"{t['function']} {t['share']:.0%}" for t in top))
    a = r.get("app_load", {})
    if "rss_mb" in a:
        add(f"app load: {a['completed']}/{a['requests']} requests, p50 ms, RSS growth MB after warm-up",
            f"{a['latency_ms']['median']:.0f}, {a['rss_growth_mb_after_warmup']}")
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| what | figure | target | met |", "|---|---|---|---|"]
    for row in rows:
        met = "" if row["met"] is None else ("yes" if row["met"] else "**no**")
        lines.append(f"| {row['what']} | {row['value']} | {row['target']} | {met} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bench/results.json")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", nargs="+", choices=list(BENCHES), default=list(BENCHES))
    p.add_argument("--update", action="store_true",
                   help="replace only the benches run (--only) in an existing --out file and redo its summary")
    args = p.parse_args(argv)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    results = {}
    with tempfile.TemporaryDirectory(prefix="eye2face-bench-") as folder:
        for name in args.only:
            print(f"[{time.strftime('%H:%M:%S')}] {name} ...", file=sys.stderr, flush=True)
            results[name] = run(name, args.quick, Path(folder))
            print(f"[{time.strftime('%H:%M:%S')}] {name}: {results[name].get('error', 'done')} "
                  f"({results[name]['bench_wall_s']} s)", file=sys.stderr, flush=True)
    finished = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if args.update and Path(args.out).exists():
        out = json.loads(Path(args.out).read_text())
        out["results"].update(results)
        out.setdefault("rerun", []).append({"benches": list(results), "started_utc": started, "finished_utc": finished})
    else:
        out = {"started_utc": started, "finished_utc": finished, "quick": args.quick, "machine": common.machine_info(None),
               "results": results}
    rows = out["summary"] = summary(out["results"])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(markdown(rows))
    return out


if __name__ == "__main__":
    main()
