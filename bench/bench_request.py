"""Space requests: a 640x640 photo with both eyes in, both models' faces out, as a visitor or a program sees them.

    python -m bench.bench_request --out /tmp/request.json [--repeat 40] [--burst 50] [--merge bench/results.json]

1. server_side: in process, what /generate runs (app.Handlers.generate: detection, both models, the comparison
   written as PNG) and what the page's button runs (Handlers.generate_page: also the annotated photo as PNG), end to
   end and in parts.
2. round_trip: through gradio_client against two servers started side by side, requests interleaved:
   - "old_layout": /generate as it was before issue #11 (the annotated photo; per eye the crop and each model's
     face; the real face: 8 images; the PNG grid as a file; a status text; PNGs by Pillow at level 1), served by a
     Blocks built here on today's pipeline (`--serve-old-layout`), so that detection and generation cost the same;
   - "new_layout": `python app.py` (the comparison image as PNG, the boxes and tile positions as JSON, a status).
   The client downloads every output file, as gradio_client does by default. Medians, p95 and the ratio.
3. burst: `--burst` clients (each its own gradio_client.Client, created first) send one /generate each at the same
   moment to `python app.py`: failures, latency (p50 / p95 / max), the queue wait and handler time the server logged,
   and the server's memory (RSS) before, at its peak during the burst, and after.
The app runs torch with 1 thread (its default, EYE2FACE_TORCH_THREADS).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

try:
    from bench import common  # python -m bench.bench_request
except ImportError:  # python bench/bench_request.py (bench/run_all.py)
    import common

common.add_repo_to_path()

from tests.app_fixtures import app_process, import_app, offline_env  # noqa: E402

PHOTO_SIZE = (640, 640)


def photo_file(folder: Path) -> Path:
    from PIL import Image
    from skimage import data

    path = folder / "astronaut-640x640.jpg"
    Image.fromarray(data.astronaut()).resize(PHOTO_SIZE, Image.BICUBIC).save(path, quality=90)
    return path


# ----------------------------------------------------------------------------------------------- in process


def server_side(photo: Path, repeat: int) -> dict:
    import torch

    app = import_app()
    handlers = app.Handlers(*app.load_pipeline(env={}, weights_dir=common.weights_dir()))
    torch.set_num_threads(1)
    payload = {"path": str(photo), "meta": {"_type": "gradio.FileData"}}
    result = handlers.photo_result(payload)
    assert len(result.eyes) == 2, "the bench photo must give both eyes"
    comparison = handlers.photo_comparison(result)
    samples = common.interleaved({
        "api_generate": lambda: handlers.generate(payload),
        "page_generate": lambda: handlers.generate_page(payload),
        "detect_and_generate": lambda: handlers.photo_result(payload),
        "compose_comparison": lambda: handlers.photo_comparison(result),
        "write_comparison_png": lambda: app._cache_png(comparison, "c.png"),
        "write_annotated_photo_png": lambda: app._cache_png(result.annotated(), "a.png"),
    }, repeat=repeat, warmup=3)
    return {"ms": {k: common.stats(v, 1000) for k, v in samples.items()}, "torch_threads": 1}


# ------------------------------------------------------------------------------------------ the old layout


def old_layout_blocks():
    """/generate as app.py served it before issue #11: its outputs, and its PNG writer (Pillow, zlib level 1, a file
    per image in Gradio's cache), on today's pipeline (app.Handlers.photo_result), so that detection and generation
    cost the same on both sides."""
    import uuid

    import gradio as gr
    from PIL import Image

    from eye2face_hub.pipeline import comparison_grid

    app = import_app()
    handlers = app.Handlers(*app.load_pipeline())
    names = list(app.MODELS)

    def png(image, name="image.png"):
        folder = Path(app.get_upload_folder()) / uuid.uuid4().hex
        folder.mkdir(parents=True)
        Image.fromarray(image).save(folder / name, compress_level=1)
        return str(folder / name)

    def run(photo, eyes="both"):
        result = handlers.photo_result(photo, eyes)
        per_side = {r.side: r for r in result.eyes}
        rows = []
        for side in ("left", "right"):
            r = per_side.get(side)
            rows += [png(x) for x in (r.eye, *(r.faces[n] for n in names))] if r else [None] * (1 + len(names))
        grid = comparison_grid([[r.eye for r in result.eyes], *([r.faces[n] for r in result.eyes] for n in names),
                                [result.real_face] * len(result.eyes)], ["eye crop", *handlers.labels, "real face"])
        return (png(result.annotated()), *rows, png(result.real_face), png(grid, "eye2face-results.png"),
                app._bullets([f"Face found at {app._where(result.face_box)}.", *result.notes]))

    with gr.Blocks() as blocks:
        photo, eyes = gr.Image(type="filepath"), gr.Radio(["both", "left", "right"], value="both")
        outputs = [gr.Image(format="png") for _ in range(2 + 2 * (1 + len(names)))] + [gr.DownloadButton(), gr.Markdown()]
        gr.Button().click(run, [photo, eyes], outputs, api_name="generate", preprocess=False)
    return blocks


# ------------------------------------------------------------------------------------------- through clients


def _client(server, downloads: str | bool):
    from gradio_client import Client

    return Client(server.url, verbose=False, analytics_enabled=False, download_files=downloads)


def round_trip(photo: Path, repeat: int, tmp: Path) -> dict:
    from gradio_client import handle_file

    weights = common.weights_dir()
    old_cmd = [sys.executable, "-m", "bench.bench_request", "--serve-old-layout"]
    with app_process(offline_env(tmp / "new", weights), tmp / "new.log") as new, \
            app_process(offline_env(tmp / "old", weights), tmp / "old.log", command=old_cmd) as old:
        clients = {"old_layout": _client(old, str(tmp / "dl-old")), "new_layout": _client(new, str(tmp / "dl-new"))}
        outputs = {k: len(c.predict(handle_file(str(photo)), "both", api_name="/generate")) for k, c in clients.items()}
        samples = common.interleaved(
            {k: (lambda c=c: c.predict(handle_file(str(photo)), "both", api_name="/generate")) for k, c in clients.items()},
            repeat=repeat, warmup=2)
        for c in clients.values():
            c.close()
        logged = re.findall(r"endpoint=generate outcome=ok ms=(\d+)", new.log())
    st = {k: common.stats(v, 1000) for k, v in samples.items()}
    return {
        "photo": f"skimage astronaut resized (bicubic) to {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]}, JPEG quality 90; both eyes, both models",
        "outputs_per_request": outputs,
        "old_layout_ms": st["old_layout"], "new_layout_ms": st["new_layout"],
        "ratio_new_to_old_p50": round(st["new_layout"]["median"] / st["old_layout"]["median"], 3),
        "ratio_new_to_old_p95": round(st["new_layout"]["p95"] / st["old_layout"]["p95"], 3),
        "target_ratio": 0.5, "target_met": st["new_layout"]["median"] <= 0.5 * st["old_layout"]["median"],
        "new_layout_server_ms": common.stats([float(m) for m in logged]),
        "how": "gradio_client.Client.predict(..., api_name='/generate'), downloads on; one request at a time, "
               "old and new alternating (order rotated each round); the old layout is served by "
               "`python -m bench.bench_request --serve-old-layout` (its outputs and PNG writer, today's pipeline); "
               "new_layout_server_ms: the handler's time as the app logged it",
    }


def burst(photo: Path, n: int, tmp: Path) -> dict:
    from gradio_client import handle_file

    with app_process(offline_env(tmp / "burst", common.weights_dir()), tmp / "burst.log") as server:
        clients = [_client(server, False) for _ in range(n)]
        clients[0].predict(handle_file(str(photo)), "both", api_name="/generate")  # warm
        time.sleep(1)
        rss_before = server.rss_mb()
        log_start = len(server.log())
        results: list = [None] * n
        barrier = threading.Barrier(n)

        def one(i):
            barrier.wait()
            t = time.perf_counter()
            try:
                clients[i].predict(handle_file(str(photo)), "both", api_name="/generate")
                results[i] = ("ok", time.perf_counter() - t)
            except Exception as e:  # counted and reported
                results[i] = ("error", f"{type(e).__name__}: {e}"[:200])

        peak, done = [rss_before], threading.Event()

        def sample_rss():
            while not done.wait(0.05):
                peak.append(server.rss_mb())

        sampler = threading.Thread(target=sample_rss)
        sampler.start()
        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        done.set()
        sampler.join()
        time.sleep(1)
        rss_after = server.rss_mb()
        logged = re.findall(r"endpoint=generate outcome=(\S+) ms=(\d+) queue_wait_ms=(\d+)", server.log()[log_start:])
        for c in clients:
            c.close()
    ok = [x for kind, x in results if kind == "ok"]
    errors = [x for kind, x in results if kind == "error"]
    return {
        "clients": n, "served": len(ok), "failures": len(errors), "error_examples": sorted(set(errors))[:3],
        "latency_ms": common.stats(ok, 1000), "wall_s": round(wall, 2), "requests_per_s": round(len(ok) / wall, 2),
        "server_logged": {"requests": len(logged), "outcomes": sorted({o for o, _, _ in logged}),
                          "handler_ms": common.stats([float(ms) for _, ms, _ in logged]),
                          "queue_wait_ms": common.stats([float(w) for _, _, w in logged])},
        "server_rss_mb": {"before": round(rss_before, 1), "peak": round(max(peak), 1), "after": round(rss_after, 1)},
        "how": f"{n} gradio_client.Client objects (downloads off), one /generate each, released together by a barrier",
    }


# --------------------------------------------------------------------------------------------------------- main


def summary_rows(r: dict) -> list[dict]:
    """The lines of results.json's summary for this bench."""
    rows = []

    def add(what, value, target="", met=None):
        rows.append({"what": what, "value": value, "target": target, "met": met})

    ms = r["server_side"]["ms"]
    if "round_trip" in r:
        rt = r["round_trip"]
        old, new = rt["old_layout_ms"], rt["new_layout_ms"]
        add("request round trip via gradio_client (640x640 photo, both eyes, both models): old layout -> new, "
            "p50 / p95 ms (ratio p50 / p95)", f"{old['median']:.0f} / {old['p95']:.0f} -> {new['median']:.0f} / "
            f"{new['p95']:.0f} ({rt['ratio_new_to_old_p50']} / {rt['ratio_new_to_old_p95']})", "ratio <= 0.5",
            rt["target_met"])
    add("  server side, in process: /generate (API) / the page's Generate, p50 ms",
        f"{ms['api_generate']['median']:.0f} / {ms['page_generate']['median']:.0f}")
    if "burst" in r:
        b = r["burst"]
        add(f"burst: {b['clients']} concurrent clients: failures; latency p50 / p95 / max s",
            f"{b['failures']}; {b['latency_ms']['median'] / 1000:.1f} / {b['latency_ms']['p95'] / 1000:.1f} / "
            f"{b['latency_ms']['max'] / 1000:.1f}", "0 failures", b["failures"] == 0)
        q, rss = b["server_logged"]["queue_wait_ms"], b["server_rss_mb"]
        add("  burst, server side: queue wait p50 / max s; server RSS before / peak / after MB",
            f"{q['median'] / 1000:.1f} / {q['max'] / 1000:.1f}; {rss['before']:.0f} / {rss['peak']:.0f} / {rss['after']:.0f}")
    return rows


def merge(result: dict, path: Path) -> None:
    """Put `result` in results.json as results.request, its lines first in the summary (replacing the request
    bench's earlier lines), and a line in its rerun list."""
    results = json.loads(path.read_text())
    results["results"]["request"] = result
    kept, dropping = [], False
    for row in results.get("summary", []):
        dropping = row["what"].startswith("request") or (dropping and row["what"].startswith("  "))
        if not dropping:
            kept.append(row)
    results["summary"] = summary_rows(result) + kept
    results.setdefault("rerun", []).append({"benches": ["request"], "started_utc": result["started_utc"],
                                            "finished_utc": result["finished_utc"]})
    path.write_text(json.dumps(results, indent=2) + "\n")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=40)
    p.add_argument("--burst", type=int, default=50, help="concurrent clients (0: skip)")
    p.add_argument("--no-server", action="store_true", help="only the in-process part")
    p.add_argument("--serve-old-layout", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", default=None)
    p.add_argument("--merge", type=Path, default=None, help="also write the result into this results.json")
    args = p.parse_args(argv)
    if args.serve_old_layout:
        import logging

        logging.basicConfig(level=logging.INFO)
        import_app().launch(old_layout_blocks())
        return {}
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="eye2face-bench-") as tmp:
        tmp = Path(tmp)
        os.environ["GRADIO_TEMP_DIR"] = str(tmp / "gradio")  # the in-process part's PNGs
        photo = photo_file(tmp)
        result = {"bench": "request", "started_utc": started, "machine": common.machine_info(1),
                  "server_side": server_side(photo, args.repeat)}
        if not args.no_server:
            result["round_trip"] = round_trip(photo, args.repeat, tmp)
            if args.burst:
                result["burst"] = burst(photo, args.burst, tmp)
    result["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    common.write_json(result, args.out)
    if args.merge:
        merge(result, args.merge)
    return result


if __name__ == "__main__":
    main()
