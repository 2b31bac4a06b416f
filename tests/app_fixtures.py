"""Helpers for the app tests and the app benches: small models, free ports, the app served in this process or
`python app.py` in its own process on a free port, a fake Hub. Imported by tests/ and bench/ (`tests.app_fixtures`,
from the repository root); nothing here needs pytest."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]


def import_app():
    """app.py from the repository root, whatever the current directory and sys.path."""
    if "app" in sys.modules and Path(sys.modules["app"].__file__).resolve() == ROOT / "app.py":
        return sys.modules["app"]
    spec = importlib.util.spec_from_file_location("app", ROOT / "app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["app"] = module
    spec.loader.exec_module(module)
    return module


@contextmanager
def served_app(weights: Path, **launch_kwargs):
    """The app on `weights`, served on loopback on a free port in this process; yields its URL."""
    app = import_app()
    blocks = app.create_app(env={}, weights_dir=weights)
    port = free_port()
    app.launch(blocks, server_port=port, prevent_thread_lock=True, quiet=True, **launch_kwargs)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        blocks.close()


def make_model(folder: Path, preset: str, seed: int, arch: str = "eye_to_face"):
    """A random generator of architecture `arch` (e.g. "two_eyes_to_face") whose output depends on its input, saved
    as a Hub-format folder.

    A freshly initialised generator gives an almost constant face (BatchNorm running statistics of 0 and 1);
    statistics from one batch of random eyes make the face vary with the eye, so that tests can tell which eye
    and which model an output came from.
    """
    from eye2face_hub import GENERATORS

    torch.manual_seed(seed)
    model = GENERATORS[arch](loss_config={"preset": preset})
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average: one batch sets the statistics
    model.train()
    with torch.no_grad():
        model(torch.rand(64, *([2] if model.eyes == 2 else []), 3, 32, 32))
    model.eval().save_pretrained(folder)
    return model


def make_weights(root: Path, optional: bool = False) -> Path:
    """A weights folder like the repository's, a different random model in each folder of the app's MODELS: the
    required ones, and with `optional` the optional ones too, each with the preset and the eyes its entry expects."""
    from eye2face_app.models import MODELS

    for seed, (name, spec) in enumerate(MODELS.items(), start=1):
        if optional or not spec.optional:
            make_model(root / spec.folder, spec.preset or name, seed=seed,
                       arch="two_eyes_to_face" if spec.eyes == 2 else "eye_to_face")
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_png(path) -> np.ndarray:
    """The pixels of a PNG file; fails on any other format (outputs must be lossless PNG, not WebP)."""
    with Image.open(path) as im:
        assert im.format == "PNG", f"{path} is {im.format}, not PNG"
        return np.asarray(im.convert("RGB"))


def blur(rgb: np.ndarray, box: tuple[int, int, int, int], kernel: int) -> np.ndarray:
    import cv2

    x0, y0, x1, y1 = box
    out = rgb.copy()
    out[y0:y1, x0:x1] = cv2.GaussianBlur(out[y0:y1, x0:x1], (kernel, kernel), 0)
    return out


class FakeHub:
    """A local stand-in for the Hub's file endpoint: HEAD/GET /{namespace}/{name}/resolve/{revision}/{file}.

    `repos` maps repo ids to a folder to serve or to {file name: bytes}; a missing repo answers 404 RepoNotFound,
    a missing file 404 EntryNotFound. `failing` repos answer 503 (a retryable error) to everything.
    `requests` records (method, repo id, file) of every request, so that tests can see what was asked and retries.
    Use it as a context manager, or call close().
    """

    def __init__(self, repos: dict[str, Path | dict[str, bytes]], failing: tuple[str, ...] = ()):
        self.repos, self.failing, self.requests = repos, set(failing), []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                self._answer(body=False)

            def do_GET(self):
                self._answer(body=True)

            def _answer(self, body: bool):
                parts = self.path.split("?")[0].strip("/").split("/")
                repo, file = "/".join(parts[:2]), "/".join(parts[4:])
                hub.requests.append((self.command, repo, file))
                if repo in hub.failing:
                    return self._status(503)
                if repo not in hub.repos or len(parts) < 5 or parts[2] != "resolve":
                    return self._status(404, {"X-Error-Code": "RepoNotFound"})
                commit = hashlib.sha1(repo.encode()).hexdigest()
                data = hub._file(repo, file)
                if data is None:
                    return self._status(404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit})
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("X-Repo-Commit", commit)
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def _status(self, code: int, headers: dict | None = None):
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _file(self, repo: str, file: str) -> bytes | None:
        source = self.repos[repo]
        if isinstance(source, dict):
            return source.get(file)
        path = Path(source) / file
        return path.read_bytes() if path.is_file() else None

    def requests_to(self, repo: str) -> int:
        return sum(r == repo for _, r, _ in self.requests)

    def files_asked(self, repo: str) -> set[str]:
        return {f for _, r, f in self.requests if r == repo}

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> FakeHub:
        return self

    def __exit__(self, *exc):
        self.close()


def clean_env(**settings: str) -> dict[str, str]:
    """This process's environment without any GRADIO_, EYE2FACE_ or Hub settings, plus `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRADIO_", "EYE2FACE_", "HF_", "HUGGING_FACE"))}
    return {**env, **settings}


def offline_env(tmp: Path, weights: Path, **settings: str) -> dict[str, str]:
    """The app as a Space runs it offline: the bundled `weights`, no Hub, its own Gradio cache in `tmp`."""
    return clean_env(GRADIO_TEMP_DIR=str(tmp / "gradio"), HF_HOME=str(tmp / "hf"), HF_HUB_OFFLINE="1",
                     EYE2FACE_WEIGHTS_DIR=str(weights), PYTHONUNBUFFERED="1", **settings)


@dataclass
class AppProcess:
    url: str
    port: int
    proc: subprocess.Popen
    log_path: Path

    def rss_mb(self) -> float:
        import psutil

        return psutil.Process(self.proc.pid).memory_info().rss / 2**20

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def app_process(env: dict[str, str], log_path: Path, command: list[str] | None = None, start_timeout: float = 300):
    """`command` (default: `python app.py`) in the repository root, serving on loopback on a free port.

    `env` is its whole environment (see offline_env); its output goes to `log_path`. Yields an AppProcess once it
    answers /config; raises RuntimeError with the end of its log if it exits or does not answer within
    `start_timeout` seconds. Stops it afterwards. The one way tests and benches start the app in a process.
    """
    port = free_port()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command or [sys.executable, "app.py"], cwd=ROOT,
                                env={**env, "GRADIO_SERVER_PORT": str(port)}, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            try:
                urllib.request.urlopen(url + "config", timeout=5)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the app did not start:\n{log_path.read_text(errors='replace')[-3000:]}") from None
                time.sleep(0.5)
        yield AppProcess(url, port, proc, log_path)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
