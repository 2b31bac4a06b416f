"""Space requests: a 640x640 photo with both eyes in, the research's pair of models' faces out, as a visitor or a
program sees them.

    python -m bench.bench_request --out /tmp/request.json [--repeat 40] [--burst 50] [--load 500] [--no-server]
        [--baseline DIR]   # DIR: a checkout of another revision, e.g. `git worktree add /tmp/base HEAD`

1. server_side, in process: /generate (Handlers.generate: detection, the models, the comparison as PNG), the page's
   button (generate_page: the comparison as HTML, its PNG download, the annotated photo), their parts, and a webcam
   frame (Handlers.live on a 640x480 JPEG data: URL, as browsers stream them); the frame rate the page asks for.
2. round_trip, with --baseline: the same /generate via gradio_client (downloads on) to `python app.py` of this checkout
   and of DIR, both on this checkout's weights, requests interleaved.
3. burst: `--burst` clients (one gradio_client.Client each) send one /generate at the same moment: failures, latency,
   queue wait and handler time as the server logged them, the server's RSS before, at peak and after.
4. load: `--load` sequential /generate from one client to a fresh server: latency, per block of 50 too; the RSS.
The app runs torch with 1 thread (its default); servers start through tests/app_fixtures.py, as in the tests.
"""

import argparse
import base64
import io
import os
import re
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from gradio_client import Client, handle_file
from PIL import Image
from skimage import data

from bench import common
from tests.app_fixtures import app_process, offline_env

PHOTO_SIZE = (640, 640)
MODELS = ["l1", "feature"]  # the research's pair: what every revision of the app serves


def server_side(photo: Path, frame: dict, repeat: int) -> dict:
    from app import build_demo
    from eye2face_app.comparison import cache_png, photo_comparison
    from eye2face_app.handlers import Handlers
    from eye2face_app.models import load_pipeline

    handlers = Handlers(*load_pipeline(env={}, weights_dir=common.WEIGHTS))
    torch.set_num_threads(1)
    payload = {"path": str(photo), "meta": {"_type": "gradio.FileData"}}
    result = handlers.photo_result(payload, "both", MODELS)
    assert len(result.eyes) == 2, "the bench photo must give both eyes"
    assert handlers.live(frame, "both", False, MODELS)[-1], "the webcam frame must give a face"
    comparison = photo_comparison(result)
    samples = common.interleaved({
        "api_generate": lambda: handlers.generate(payload, "both", MODELS),
        "page_generate": lambda: handlers.generate_page(payload, "both", MODELS),
        "detect_and_generate": lambda: handlers.photo_result(payload, "both", MODELS),
        "compose_comparison": lambda: photo_comparison(result).image(),
        "write_comparison_png": lambda: cache_png(comparison.image(), "c.png"),
        "comparison_html": lambda: comparison.html(),
        "write_annotated_photo_png": lambda: cache_png(result.annotated(), "a.png"),
        "webcam_frame": lambda: handlers.live(frame, "both", True, MODELS),
    }, repeat=repeat, warmup=3)
    ms = {k: common.stats(v, 1000) for k, v in samples.items()}
    every = next(f for f in build_demo(handlers).fns.values() if f.api_name == "live").stream_every
    return {"ms": ms, "torch_threads": 1, "models": MODELS, "comparison_html_kb": round(len(comparison.html()) / 1024),
            "webcam_fps_from_median": round(1000 / ms["webcam_frame"]["median"], 2),
            "webcam_stream_every_s": every, "webcam_ui_fps_cap": round(1 / every, 2) if every else None}


def _client(server, downloads: str | bool):
    return Client(server.url, verbose=False, analytics_enabled=False, download_files=downloads)


def _server(tmp: Path, name: str, **kwargs):
    return app_process(offline_env(tmp / name, common.WEIGHTS), tmp / f"{name}.log", **kwargs)


def _predict(client, photo: Path):
    return client.predict(handle_file(str(photo)), "both", MODELS, api_name="/generate")


def round_trip(photo: Path, repeat: int, tmp: Path, baseline: Path) -> dict:
    with _server(tmp, "this") as this, _server(tmp, "base", command=[sys.executable, str(baseline / "app.py")]) as base:
        clients = {"baseline": _client(base, str(tmp / "dl-base")), "this": _client(this, str(tmp / "dl-this"))}
        samples = common.interleaved({k: (lambda c=c: _predict(c, photo)) for k, c in clients.items()}, repeat, warmup=2)
        for c in clients.values():
            c.close()
        logged = {k: re.findall(r"endpoint=generate outcome=ok ms=(\d+)", s.log()) for k, s in (("this", this), ("baseline", base))}
    st = {k: common.stats(v, 1000) for k, v in samples.items()}
    return {
        "photo": f"skimage astronaut resized (bicubic) to {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]}, JPEG quality 90; both eyes",
        "baseline": str(baseline), "baseline_ms": st["baseline"], "this_ms": st["this"],
        "ratio_this_to_baseline_p50": round(st["this"]["median"] / st["baseline"]["median"], 3),
        "ratio_this_to_baseline_p95": round(st["this"]["p95"] / st["baseline"]["p95"], 3),
        "server_logged_ms": {k: common.stats([float(m) for m in v]) for k, v in logged.items()},
        "how": f"gradio_client.Client.predict(photo, 'both', {MODELS}, api_name='/generate'), downloads on; one request "
               "at a time, the two servers alternating (order rotated each round); server_logged_ms: the handler's "
               "time as each app logged it",
    }


def _timed(client, photo: Path, barrier: threading.Barrier | None = None) -> tuple[str, float | str]:
    if barrier:
        barrier.wait()
    t = time.perf_counter()
    try:
        _predict(client, photo)
        return "ok", time.perf_counter() - t
    except Exception as e:  # counted and reported
        return "error", f"{type(e).__name__}: {e}"[:200]


def _outcomes(results: list) -> tuple[list[float], dict]:
    ok, errors = [x for kind, x in results if kind == "ok"], [x for kind, x in results if kind == "error"]
    return ok, {"failures": len(errors), "error_examples": sorted(set(errors))[:3], "latency_ms": common.stats(ok, 1000)}


def burst(photo: Path, n: int, tmp: Path) -> dict:
    with _server(tmp, "burst") as server:
        clients = [_client(server, False) for _ in range(n)]
        _predict(clients[0], photo)  # warm
        time.sleep(1)
        rss_before, log_start, barrier = server.rss_mb(), len(server.log()), threading.Barrier(n)
        peak, done = [rss_before], threading.Event()

        def sample_rss():
            while not done.wait(0.05):
                peak.append(server.rss_mb())

        sampler = threading.Thread(target=sample_rss)
        sampler.start()
        t0 = time.perf_counter()
        with ThreadPoolExecutor(n) as pool:
            results = list(pool.map(lambda c: _timed(c, photo, barrier), clients))
        wall = time.perf_counter() - t0
        done.set()
        sampler.join()
        time.sleep(1)
        rss_after = server.rss_mb()
        logged = re.findall(r"endpoint=generate outcome=(\S+) ms=(\d+) queue_wait_ms=(\d+)", server.log()[log_start:])
        for c in clients:
            c.close()
    ok, outcome = _outcomes(results)
    return {
        "clients": n, "served": len(ok), **outcome, "wall_s": round(wall, 2), "requests_per_s": round(len(ok) / wall, 2),
        "server_logged": {"requests": len(logged), "outcomes": sorted({o for o, _, _ in logged}),
                          "handler_ms": common.stats([float(ms) for _, ms, _ in logged]),
                          "queue_wait_ms": common.stats([float(w) for _, _, w in logged])},
        "server_rss_mb": {"before": round(rss_before, 1), "peak": round(max(peak), 1), "after": round(rss_after, 1)},
        "how": f"{n} gradio_client.Client objects (downloads off), one /generate each, released together by a barrier",
    }


def load(photo: Path, n: int, tmp: Path, block: int = 50, warmup: int = 10) -> dict:
    with _server(tmp, "load") as server:
        client = _client(server, str(tmp / "dl-load"))
        for _ in range(warmup):
            _predict(client, photo)
        rss, results, t0 = [round(server.rss_mb(), 1)], [], time.perf_counter()
        for i in range(1, n + 1):
            results.append(_timed(client, photo))
            if i % block == 0 or i == n:
                rss.append(round(server.rss_mb(), 1))
        wall = time.perf_counter() - t0
        client.close()
    ok, outcome = _outcomes(results)
    return {
        "requests": n, "served": len(ok), **outcome, "requests_per_s": round(len(ok) / wall, 2),
        "median_ms_per_block": [common.stats(ok[i:i + block], 1000)["median"] for i in range(0, len(ok), block)],
        "server_rss_mb": {"after_warmup": rss[0], "after_each_block": rss[1:], "growth": round(rss[-1] - rss[0], 1)},
        "how": f"one gradio_client.Client (downloads on), {warmup} warm-up requests, then {n} /generate one after another",
    }


def summary_rows(r: dict) -> list[dict]:
    """The lines of results.json's summary for this bench."""
    rows, ss, ms = [], r["server_side"], r["server_side"]["ms"]

    def add(what, value, target="", met=None):
        rows.append({"what": what, "value": value, "target": target, "met": met})

    if "baseline_ms" in r.get("round_trip", {}):  # results.json may hold a run from before --baseline
        rt = r["round_trip"]
        old, new = rt["baseline_ms"], rt["this_ms"]
        add(f"request round trip via gradio_client (640x640 photo, both eyes, {' + '.join(MODELS)}): baseline "
            f"({rt['baseline']}) -> this checkout, p50 / p95 ms (ratio p50 / p95)", f"{old['median']:.0f} / "
            f"{old['p95']:.0f} -> {new['median']:.0f} / {new['p95']:.0f} ({rt['ratio_this_to_baseline_p50']} / "
            f"{rt['ratio_this_to_baseline_p95']})", "ratio <= 1", rt["ratio_this_to_baseline_p50"] <= 1)
    add("  server side, in process: /generate (API) / the page's Generate, p50 ms",
        f"{ms['api_generate']['median']:.0f} / {ms['page_generate']['median']:.0f}")
    if "webcam_frame" in ms:
        add("  webcam frame (Handlers.live, 640x480 JPEG), in process: p50 ms, frames/s; frames/s the page asks for",
            f"{ms['webcam_frame']['median']:.0f}, {ss['webcam_fps_from_median']}; {ss['webcam_ui_fps_cap']}")
    if "burst" in r:
        b = r["burst"]
        add(f"burst: {b['clients']} concurrent clients: failures; latency p50 / p95 / max s",
            f"{b['failures']}; {b['latency_ms']['median'] / 1000:.1f} / {b['latency_ms']['p95'] / 1000:.1f} / "
            f"{b['latency_ms']['max'] / 1000:.1f}", "0 failures", b["failures"] == 0)
        q, rss = b["server_logged"]["queue_wait_ms"], b["server_rss_mb"]
        add("  burst, server side: queue wait p50 / max s; server RSS before / peak / after MB",
            f"{q['median'] / 1000:.1f} / {q['max'] / 1000:.1f}; {rss['before']:.0f} / {rss['peak']:.0f} / {rss['after']:.0f}")
    if "load" in r:
        x, blocks = r["load"], r["load"]["median_ms_per_block"]
        add(f"load: {x['requests']} sequential requests: failures; p50 / p95 ms; block p50s ms; server RSS growth MB",
            f"{x['failures']}; {x['latency_ms']['median']:.0f} / {x['latency_ms']['p95']:.0f}; "
            f"{min(blocks, default=0):.0f}-{max(blocks, default=0):.0f}; {x['server_rss_mb']['growth']:+.1f}", "0 failures", x["failures"] == 0)
    return rows


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=40)
    p.add_argument("--burst", type=int, default=50, help="concurrent clients (0: skip)")
    p.add_argument("--load", type=int, default=500, help="sequential requests (0: skip)")
    p.add_argument("--no-server", action="store_true", help="only the in-process part")
    p.add_argument("--baseline", type=Path, default=None, help="a checkout to compare the round trip with")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    result = {"bench": "request", "started_utc": common.utc_now(), "machine": common.machine_info(1)}
    with tempfile.TemporaryDirectory(prefix="eye2face-bench-") as tmp:
        tmp = Path(tmp)
        os.environ["GRADIO_TEMP_DIR"] = str(tmp / "gradio")  # the in-process part's PNGs
        astronaut, photo, buf = Image.fromarray(data.astronaut()), tmp / "astronaut-640x640.jpg", io.BytesIO()
        astronaut.resize(PHOTO_SIZE, Image.BICUBIC).save(photo, quality=90)
        astronaut.resize((640, 480), Image.BILINEAR).save(buf, format="JPEG", quality=92)  # a webcam frame, as sent
        frame = {"url": "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode(), "path": None}
        result["server_side"] = server_side(photo, frame, args.repeat)
        if not args.no_server:
            result |= {"round_trip": round_trip(photo, args.repeat, tmp, args.baseline)} if args.baseline else {}
            result |= {"burst": burst(photo, args.burst, tmp)} if args.burst else {}
            result |= {"load": load(photo, args.load, tmp)} if args.load else {}
    result["finished_utc"] = common.utc_now()
    common.write_json(result, args.out)
    return result


if __name__ == "__main__":
    main()
