"""Where the time goes: cProfile (Python level) and torch.profiler (operator level) over the benchmarked paths.

    python bench/profile_hotspots.py --out bench/results-profile.json [--targets request webcam dataprep train]

For each target, the functions with the most own time (cProfile tottime) and each one's share of the total;
for train, torch.profiler's operators by self CPU time for one feature-preset step (batch 16).
The findings and what was changed because of them are in bench/README.md.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

common.add_repo_to_path()

import torch  # noqa: E402


def top(profile: cProfile.Profile, n: int = 12) -> dict:
    st = pstats.Stats(profile, stream=io.StringIO())
    total = st.total_tt
    rows = sorted(st.stats.items(), key=lambda kv: -kv[1][2])[:n]  # (file, line, name) -> (cc, nc, tt, ct, callers)
    return {
        "total_s": round(total, 3),
        "top_own_time": [
            {"function": f"{Path(f).name}:{line}({name})" if f != "~" else name, "calls": nc,
             "own_s": round(tt, 3), "share": round(tt / total, 3)}
            for (f, line, name), (cc, nc, tt, ct, callers) in rows
        ],
    }


def profile_calls(fn, n: int) -> dict:
    fn()
    pr = cProfile.Profile()
    pr.enable()
    for _ in range(n):
        fn()
    pr.disable()
    return top(pr)


def request_target(n: int) -> dict:
    from bench_request import generate_fn, load_app

    app = load_app()
    blocks = app.create_app(env={}, weights_dir=common.weights_dir())
    fn = generate_fn(blocks)
    handlers = fn.fn.__self__
    photo = common.RESULTS / "astronaut-640x480.jpg"
    common.RESULTS.mkdir(parents=True, exist_ok=True)
    photo.write_bytes(common.test_photo_jpeg())
    payload = {"path": str(photo), "meta": {"_type": "gradio.FileData"}}

    def request():
        out = handlers.run(payload, "both")
        return [b.postprocess(v) for b, v in zip(fn.outputs, out)]

    return profile_calls(request, n)


def webcam_target(n: int) -> dict:
    from bench_webcam import _is_skip, frames
    from tests.app_fixtures import import_app

    app = import_app()
    blocks = app.create_app(env={}, weights_dir=common.weights_dir())
    fn = next(f for f in blocks.fns.values() if f.api_name == "live")
    handlers = fn.fn.__self__
    stream = iter(frames(n + 1))

    def step():
        out = handlers.live(next(stream), "both")
        return [b.postprocess(v) if not _is_skip(v) else v for b, v in zip(fn.outputs, out)]

    return profile_calls(step, n)


def dataprep_target(n: int) -> dict:
    import datasets

    from eye2face_hub.data import prepare

    datasets.disable_progress_bars()
    return profile_calls(lambda: prepare(str(common.CELEBA), None, num_proc=1, limit=n), 1)


def train_target(batch: int = 16) -> dict:
    from bench_train import build

    step, *_ = build("feature", batch, torch.device("cpu"), "bf16")
    step().item()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step().item()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    rows = sorted(events, key=lambda e: -e.self_cpu_time_total)[:15]
    return {"batch": batch, "preset": "feature", "mixed_precision": "bf16", "total_self_cpu_ms": round(total / 1000, 1),
            "top_ops": [{"op": e.key, "calls": e.count, "self_cpu_ms": round(e.self_cpu_time_total / 1000, 1),
                         "share": round(e.self_cpu_time_total / total, 3)} for e in rows]}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--targets", nargs="+", default=["request", "webcam", "dataprep", "train"])
    p.add_argument("--n", type=int, default=20, help="requests / frames profiled (data prep: 3 x n photos)")
    p.add_argument("--threads", type=int, default=1, help="torch threads for request and webcam (the app's default)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = {"bench": "profile", "machine": common.machine_info(args.threads)}
    for target in args.targets:
        t = time.perf_counter()
        if target == "request":
            result[target] = request_target(args.n)
        elif target == "webcam":
            result[target] = webcam_target(args.n)
        elif target == "dataprep":
            result[target] = dataprep_target(3 * args.n)
        elif target == "train":
            torch.set_num_threads(common.set_threads(None))
            result[target] = train_target()
            torch.set_num_threads(args.threads)
        result[target]["profile_wall_s"] = round(time.perf_counter() - t, 1)
    common.write_json(result, args.out)
    return result


if __name__ == "__main__":
    main()
