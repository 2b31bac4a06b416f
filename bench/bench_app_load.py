"""The full app load run: 500 sequential /generate requests against `python app.py`, and its memory.

    python -m bench.bench_app_load --out /tmp/app-load.json [--requests 500]

The app runs as a Space would (python app.py on 127.0.0.1, a free GRADIO_SERVER_PORT, bundled weights, offline);
one gradio_client client sends the 640x480 JPEG photo and downloads the PNG output, request after request.
Reported: latency statistics over all requests and per block of 50, the server's resident memory (RSS, psutil)
after warm-up, every 50 requests, and at the end, and the growth from the first block to the end.
(tests/test_app_load.py runs a short variant of this in CI, with a bound; this one only measures.)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

try:
    from bench import common  # python -m bench.bench_app_load
except ImportError:  # python bench/bench_app_load.py (bench/run_all.py)
    import common

common.add_repo_to_path()

from tests.app_fixtures import app_process, offline_env  # noqa: E402


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=500)
    p.add_argument("--block", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    from gradio_client import Client, handle_file

    common.RESULTS.mkdir(parents=True, exist_ok=True)
    photo = common.RESULTS / "astronaut-640x480.jpg"
    photo.write_bytes(common.test_photo_jpeg())
    with tempfile.TemporaryDirectory(prefix="eye2face-bench-") as tmp, \
            app_process(offline_env(Path(tmp), common.weights_dir()), Path(tmp) / "app.log") as server:
        client = Client(server.url, verbose=False, analytics_enabled=False, download_files=str(Path(tmp) / "dl"))
        for _ in range(args.warmup):
            client.predict(handle_file(str(photo)), "both", api_name="/generate")
        rss = [{"after_requests": 0, "rss_mb": round(server.rss_mb(), 1)}]
        latencies, errors, blocks = [], [], []
        t0 = time.perf_counter()
        for i in range(1, args.requests + 1):
            t = time.perf_counter()
            try:
                client.predict(handle_file(str(photo)), "both", api_name="/generate")
                latencies.append(time.perf_counter() - t)
            except Exception as e:  # counted and reported
                errors.append(f"{type(e).__name__}: {e}"[:200])
            if i % args.block == 0:
                rss.append({"after_requests": i, "rss_mb": round(server.rss_mb(), 1)})
                blocks.append(common.stats(latencies[-args.block:], 1000)["median"])
        wall = time.perf_counter() - t0
        client.close()
    first_block = rss[1]["rss_mb"] if len(rss) > 1 else rss[0]["rss_mb"]
    result = {
        "bench": "app_load",
        "machine": common.machine_info(1),
        "requests": args.requests,
        "completed": len(latencies),
        "errors": len(errors),
        "error_examples": errors[:3],
        "latency_ms": common.stats(latencies, 1000),
        "median_ms_per_block": blocks,
        "requests_per_s": round(len(latencies) / wall, 2),
        "rss_mb": rss,
        "rss_growth_mb_after_warmup": round(rss[-1]["rss_mb"] - rss[0]["rss_mb"], 1),
        "rss_growth_mb_from_first_block": round(rss[-1]["rss_mb"] - first_block, 1),
    }
    common.write_json(result, args.out)
    return result


if __name__ == "__main__":
    main()
