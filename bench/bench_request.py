"""Space request latency: a 640x480 JPEG photo in, both models' faces out as PNG.

    python bench/bench_request.py --out bench/results-request.json [--repeat 40] [--no-server]

1. In process, through the function the app's "Generate faces" button and its /generate API call
   (app.Handlers.run, preprocess=False as in the app) followed by Gradio's postprocessing of each output
   (gr.Image -> PNG in the cache, which is where the PNG encoding happens):
   end to end, and per stage: decode (load_photo), detect (Haar face + eyes), crop (eyes and real face),
   l1 and feature generator (tensor in, uint8 faces out), assemble (boxes drawn, comparison grid),
   encode (every output image to PNG, plus the downloadable grid file).
   "before" runs the same request as the code was before the speed-ups (Gradio's default PNG
   encoder, zlib level 6, and NCHW weights), side by side with "now" (interleaved), for the ratio.
2. Against a running app (python app.py on 127.0.0.1, a free GRADIO_SERVER_PORT) with gradio_client:
   1 client (sequential requests) and 4 concurrent clients; latency per request and requests/s.
   The client downloads the output PNGs, as a browser would (1 client: also without downloads, side by side).
The app runs torch with 1 thread (its default, EYE2FACE_TORCH_THREADS); this bench does the same.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

common.add_repo_to_path()

import torch  # noqa: E402

STAGES = ("decode", "detect", "crop", "l1_generator", "feature_generator", "assemble", "encode")


def load_app():
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from tests.app_fixtures import import_app

    return import_app()


def generate_fn(blocks):
    return next(f for f in blocks.fns.values() if f.api_name == "generate")


def in_process(repeat: int, photo: Path, threads: int) -> dict:
    import gradio as gr

    app = load_app()
    blocks = app.create_app(env={}, weights_dir=common.weights_dir())
    torch.set_num_threads(threads)  # create_app sets the app's default (1); the bench's choice wins
    fn = generate_fn(blocks)
    handlers = fn.fn.__self__
    payload = {"path": str(photo), "meta": {"_type": "gradio.FileData"}}
    pipe = handlers.pipeline

    def request_now():
        out = handlers.run(payload, "both")
        return [block.postprocess(value) for block, value in zip(fn.outputs, out)]

    # "before": NCHW copies of the models, Gradio's own gr.Image.postprocess (default PNG compression).
    before_pipe = type(pipe).__new__(type(pipe))
    before_pipe.models = {n: _nchw_copy(m) for n, m in pipe.models.items()}
    before_handlers = app.Handlers(before_pipe, handlers.sources)

    def request_before():
        with _png_level(app, 6):  # the downloadable grid, as _save_png wrote it before
            out = before_handlers.run(payload, "both")
            return [gr.Image.postprocess(b, v) if isinstance(b, gr.Image) else b.postprocess(v)
                    for b, v in zip(fn.outputs, out)]

    # Per stage, as EyeToFacePipeline.__call__ and Handlers.run do it (the astronaut gives exactly 2 eyes).
    from eye2face_hub.data import EYE_SIZE, FACE_SIZE, crop, detect
    from eye2face_hub.pipeline import EyeResult, PhotoResult, load_photo, to_images, to_tensor

    def staged() -> dict[str, float]:
        t = {}
        t0 = time.perf_counter()
        rgb = load_photo(str(photo))
        t1 = time.perf_counter()
        det = detect(rgb)
        t2 = time.perf_counter()
        boxes = det.eyes[:2]
        crops = [crop(rgb, box, EYE_SIZE) for box in boxes]
        real = crop(rgb, det.face, FACE_SIZE)
        t3 = time.perf_counter()
        faces = {}
        for name in ("l1", "feature"):
            s = time.perf_counter()
            with torch.inference_mode():
                faces[name] = to_images(pipe.models[name](to_tensor(crops)))
            t[f"{name}_generator"] = time.perf_counter() - s
        t4 = time.perf_counter()
        result = PhotoResult(rgb, det.face, real, [
            EyeResult(side, box, eye, {n: faces[n][i] for n in faces})
            for i, (side, box, eye) in enumerate(zip(("left", "right"), boxes, crops))])
        annotated, grid = result.annotated(), app._grid(result)
        rows = [x for r in result.eyes for x in (r.eye, r.faces["l1"], r.faces["feature"])]
        t5 = time.perf_counter()
        out = [annotated, *rows, real, app._save_png(grid, "eye2face-results.png"), "status"]
        for block, value in zip(fn.outputs, out):
            block.postprocess(value)
        t6 = time.perf_counter()
        t.update(decode=t1 - t0, detect=t2 - t1, crop=t3 - t2, assemble=t5 - t4, encode=t6 - t5)
        return t

    for _ in range(3):
        request_now(), request_before(), staged()
    e2e = common.interleaved({"now": request_now, "before": request_before}, repeat=repeat, warmup=1)
    stages = {s: [] for s in STAGES}
    for _ in range(repeat):
        for k, v in staged().items():
            stages[k].append(v)
    now, before = common.stats(e2e["now"], 1000), common.stats(e2e["before"], 1000)
    attribution = per_change(app, fn, handlers, before_handlers, payload, repeat)
    stage_stats = {k: common.stats(v, 1000) for k, v in stages.items()}
    return {
        "torch_threads": threads,
        "end_to_end_ms": now,
        "before_ms": before,
        "speedup_vs_before": round(before["median"] / now["median"], 2),
        "stages_ms": stage_stats,
        "sum_of_stage_medians_ms": round(sum(s["median"] for s in stage_stats.values()), 1),
        "per_change_ms": attribution,
        "target_p50_ms": 60,
        "target_met": now["median"] < 60,
    }


def per_change(app, fn, handlers, before_handlers, payload, repeat: int) -> dict:
    """Each speed-up on its own, side by side: encoding one request's outputs (Gradio's PNG writer vs the app's),
    and generating both models' faces for the two eyes (NCHW vs channels_last); and what the encoding is made of
    (each image as PNG at the app's level, and the annotated photo as JPEG for comparison: not what the app does)."""
    import io

    import gradio as gr
    from PIL import Image

    out = handlers.run(payload, "both")
    result = handlers.pipeline(payload["path"])
    grid = app._grid(result)
    crops = [r.eye for r in result.eyes]

    def encode_now():
        app._save_png(grid, "eye2face-results.png")
        return [b.postprocess(v) for b, v in zip(fn.outputs, out)]

    def encode_before():
        with _png_level(app, 6):
            app._save_png(grid, "eye2face-results.png")
            return [gr.Image.postprocess(b, v) if isinstance(b, gr.Image) else b.postprocess(v) for b, v in zip(fn.outputs, out)]

    def jpeg(a):
        Image.fromarray(a).save(io.BytesIO(), format="JPEG", quality=90)

    fns = {
        "encode_before": encode_before, "encode_now": encode_now,
        "generate_before_nchw": lambda: before_handlers.pipeline.generate(crops),
        "generate_now_channels_last": lambda: handlers.pipeline.generate(crops),
        "png_annotated_photo": lambda: app._png_bytes(out[0]),
        "png_grid": lambda: app._png_bytes(grid),
        "png_eyes_faces_real_face": lambda: [app._png_bytes(x) for x in out[1:8] if x is not None],
        "jpeg_annotated_photo_what_if": lambda: jpeg(out[0]),
    }
    samples = common.interleaved(fns, repeat=repeat, warmup=2)
    st = {k: common.stats(v, 1000) for k, v in samples.items()}
    st["encode_speedup"] = round(st["encode_before"]["median"] / st["encode_now"]["median"], 2)
    st["generate_speedup"] = round(st["generate_before_nchw"]["median"] / st["generate_now_channels_last"]["median"], 2)
    return st


def _nchw_copy(model):
    import copy

    return copy.deepcopy(model).to(memory_format=torch.contiguous_format).eval()


class _png_level:
    """Inside: app.PNG_COMPRESS_LEVEL set to `level` (where the app has it)."""

    def __init__(self, app, level: int):
        self.app, self.level = app, level

    def __enter__(self):
        self.saved = getattr(self.app, "PNG_COMPRESS_LEVEL", None)
        if self.saved is not None:
            self.app.PNG_COMPRESS_LEVEL = self.level

    def __exit__(self, *exc):
        if self.saved is not None:
            self.app.PNG_COMPRESS_LEVEL = self.saved


# ----------------------------------------------------------------------------------------------- served app


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServedApp:
    """`python app.py` in a subprocess on 127.0.0.1 and a free port, on the bench weights."""

    def __init__(self, extra_env: dict | None = None):
        self.tmp = tempfile.TemporaryDirectory(prefix="eye2face-bench-")
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GRADIO_", "EYE2FACE_"))}
        env.update(GRADIO_SERVER_PORT=str(self.port), GRADIO_TEMP_DIR=str(Path(self.tmp.name) / "gradio"),
                   EYE2FACE_WEIGHTS_DIR=str(common.weights_dir()), HF_HUB_OFFLINE="1", **(extra_env or {}))
        self.log = open(Path(self.tmp.name) / "app.log", "w+")
        self.proc = subprocess.Popen([sys.executable, "app.py"], cwd=common.REPO, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}/"

    def __enter__(self):
        deadline = time.monotonic() + 300
        while True:
            try:
                urllib.request.urlopen(self.url + "config", timeout=5)
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.log.seek(0)
                    raise RuntimeError(f"python app.py did not start:\n{self.log.read()[-3000:]}") from None
                time.sleep(0.5)

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
        self.tmp.cleanup()

    def rss_mb(self) -> float:
        import psutil

        return psutil.Process(self.proc.pid).memory_info().rss / 2**20

    def client(self, downloads: str):
        from gradio_client import Client

        return Client(self.url, verbose=False, analytics_enabled=False, download_files=downloads)


def client_requests(server: ServedApp, photo: Path, n_clients: int, per_client: int, warmup: int = 2) -> dict:
    from gradio_client import handle_file

    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    clients = [server.client(tempfile.mkdtemp(dir=server.tmp.name)) for _ in range(n_clients)]
    for c in clients[:1]:
        for _ in range(warmup):
            c.predict(handle_file(str(photo)), "both", api_name="/generate")
    barrier = threading.Barrier(n_clients)

    def worker(c):
        barrier.wait()
        for _ in range(per_client):
            t = time.perf_counter()
            try:
                c.predict(handle_file(str(photo)), "both", api_name="/generate")
            except Exception as e:  # counted, reported
                with lock:
                    errors.append(f"{type(e).__name__}: {e}"[:200])
                continue
            with lock:
                latencies.append(time.perf_counter() - t)

    threads = [threading.Thread(target=worker, args=(c,)) for c in clients]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    for c in clients:
        c.close()
    return {"clients": n_clients, "requests": len(latencies), "errors": len(errors), "error_examples": errors[:3],
            "latency_ms": common.stats(latencies, 1000), "requests_per_s": round(len(latencies) / wall, 2),
            "wall_s": wall, "_latencies": latencies}


def one_client(server: ServedApp, photo: Path, repeat: int) -> dict:
    """One client, sequential requests; with the output downloads (as a client/browser needs them) and without."""
    from gradio_client import Client, handle_file

    with_dl = server.client(tempfile.mkdtemp(dir=server.tmp.name))
    without = Client(server.url, verbose=False, analytics_enabled=False, download_files=False)
    call = lambda c: lambda: c.predict(handle_file(str(photo)), "both", api_name="/generate")  # noqa: E731
    samples = common.interleaved({"with_downloads": call(with_dl), "without_downloads": call(without)}, repeat, warmup=2)
    for c in (with_dl, without):
        c.close()
    out = {k: common.stats(v, 1000) for k, v in samples.items()}
    return {"clients": 1, "requests": repeat, "latency_ms": out["with_downloads"],
            "requests_per_s": round(1000 / out["with_downloads"]["median"], 2),
            "latency_ms_without_downloads": out["without_downloads"],
            "downloads": "the client fetches the 10 output files (9 PNGs and the grid) one after the other"}


def merge(runs: list[dict]) -> dict:
    lat = [x for r in runs for x in r["_latencies"]]
    wall = sum(r["wall_s"] for r in runs)
    return {"clients": runs[0]["clients"], "requests": len(lat), "errors": sum(r["errors"] for r in runs),
            "error_examples": [e for r in runs for e in r["error_examples"]][:3],
            "latency_ms": common.stats(lat, 1000), "requests_per_s": round(len(lat) / wall, 2), "wall_s": round(wall, 1)}


def served(repeat: int, photo: Path) -> dict:
    """1 client, then 4 concurrent clients against the app as it is (one /generate at a time: Gradio's default
    concurrency limit of 1) and, side by side in alternating rounds, against the app with
    GRADIO_DEFAULT_CONCURRENCY_LIMIT=2 (two requests at once, one per core)."""
    with ServedApp() as server, ServedApp({"GRADIO_DEFAULT_CONCURRENCY_LIMIT": "2"}) as server2:
        one = one_client(server, photo, repeat)
        rounds = 2
        per_round = max(1, repeat // 4 // rounds)
        four, four2 = [], []
        for _ in range(rounds):
            four.append(client_requests(server, photo, 4, per_round))
            four2.append(client_requests(server2, photo, 4, per_round))
        return {"one_client": one, "four_concurrent_clients": merge(four),
                "four_concurrent_clients_concurrency_limit_2": merge(four2),
                "server_rss_mb_after": round(server.rss_mb(), 1),
                "note": "the app's event queue runs one /generate at a time (Gradio's default concurrency_limit=1), "
                        "so 4 clients queue: latency grows; requests/s grows only as far as one client's uploads and "
                        "downloads overlap another's processing"}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=40)
    p.add_argument("--threads", type=int, default=1, help="torch threads in process (the app's default is 1)")
    p.add_argument("--no-server", action="store_true", help="skip the gradio_client part")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    common.RESULTS.mkdir(parents=True, exist_ok=True)
    photo = common.RESULTS / "astronaut-640x480.jpg"
    photo.write_bytes(common.test_photo_jpeg())
    result = {"bench": "request", "machine": common.machine_info(args.threads),
              "input": "skimage astronaut resized to 640x480, JPEG quality 90", "in_process": in_process(args.repeat, photo, args.threads)}
    if not args.no_server:
        result["gradio_client"] = served(args.repeat, photo)
    common.write_json(result, args.out)
    return result


if __name__ == "__main__":
    main()
