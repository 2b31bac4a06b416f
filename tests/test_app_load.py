"""`python app.py` under load, and what it touches: concurrent requests, memory over many requests, and
(with offline settings) no network connection but loopback and no photo written outside Gradio's cache.

The app runs in its own process with a Python audit hook (sys.addaudithook) that logs every socket connect,
name lookup, process start and file opened for writing; the tests read that log. The full 500-request
memory run belongs in bench/; here is a short one.
"""

from __future__ import annotations

import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from tests.app_fixtures import ROOT, free_port, make_weights, running_app

pytestmark = pytest.mark.slow
psutil = pytest.importorskip("psutil", reason="psutil (in the test extras) measures the app's memory")
gradio_client = pytest.importorskip("gradio_client", reason="gradio_client (in the test extras) drives the app")
if not (ROOT / "app.py").exists():
    pytest.skip("app.py is not there", allow_module_level=True)

QUEUE_SIZE = 32  # app.py's default (EYE2FACE_QUEUE_SIZE)
AUDIT_HOOK = r'''
import json, os, sys, time
_fd = os.open(os.environ["EYE2FACE_AUDIT_LOG"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
_EVENTS = {"socket.connect", "socket.sendto", "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr",
           "open", "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn"}
_WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

def _hook(event, args):
    if event not in _EVENTS:
        return
    if event == "open":
        path, mode, flags = args
        writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (isinstance(flags, int) and flags & _WRITE)
        if not writes or not isinstance(path, (str, bytes)):
            return
        args = [os.path.abspath(os.fsdecode(path))]
    elif event in ("socket.connect", "socket.sendto"):
        args = [repr(args[1])]
    else:
        args = [repr(a) for a in args]
    os.write(_fd, (json.dumps({"t": time.time(), "event": event, "args": args}) + "\n").encode())

sys.addaudithook(_hook)
sys.argv = ["app.py"]
import runpy
runpy.run_path("app.py", run_name="__main__")
'''


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("app-load")
    weights = make_weights(tmp / "weights")
    (tmp / "tmp").mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRADIO_", "EYE2FACE_", "HF_", "HUGGING_FACE"))}
    env.update(  # offline settings: bundled weights, no Hub, analytics off (app.py's default)
        GRADIO_TEMP_DIR=str(tmp / "gradio"), HF_HOME=str(tmp / "hf"), HF_HUB_OFFLINE="1",
        EYE2FACE_WEIGHTS_DIR=str(weights), TMPDIR=str(tmp / "tmp"),
        EYE2FACE_AUDIT_LOG=str(tmp / "audit.jsonl"), PYTHONUNBUFFERED="1",
    )
    with running_app([sys.executable, "-c", AUDIT_HOOK], env, port, tmp / "app.log", start_timeout=300) as (url, proc):
        yield SimpleNamespace(url=url, proc=proc, tmp=tmp, ready=time.time(), photo=make_photo(tmp))


def make_photo(folder: Path) -> Path:
    from skimage import data

    path = folder / "selfie-7d2e.png"
    Image.fromarray(data.astronaut()).save(path)
    return path


def client(app, **kwargs):
    return gradio_client.Client(app.url, verbose=False, analytics_enabled=False, download_files=False, **kwargs)


def generate(c, photo: Path):
    return c.predict(gradio_client.handle_file(str(photo)), "both", api_name="/generate")


def audit(app) -> list[dict]:
    return [json.loads(line) for line in (app.tmp / "audit.jsonl").read_text().splitlines()]


def test_50_concurrent_requests_succeed_or_hear_that_the_queue_is_full(app):
    c = client(app)
    assert generate(c, app.photo)  # warm

    def one(_):
        try:
            out = generate(c, app.photo)
            return ("ok", out)
        except Exception as e:  # gradio_client raises for an error answer; the message is what a program sees
            return ("error", f"{type(e).__name__}: {e}")

    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(one, range(50)))
    ok = [out for kind, out in results if kind == "ok"]
    errors = [msg for kind, msg in results if kind == "error"]
    print(f"50 concurrent requests: {len(ok)} served, {len(errors)} refused ({sorted(set(errors))[:1]})")
    assert all("queue is full" in msg.lower() for msg in errors), sorted(set(errors))
    assert len(ok) >= QUEUE_SIZE, f"only {len(ok)} of 50 served, {len(errors)} refused"
    for out in ok:  # every served request got the full answer: 9 images or files and a status line
        assert len(out) == 10 and "Face found at" in out[-1]
    assert generate(c, app.photo)  # and it still serves afterwards


def test_memory_does_not_grow_over_100_requests(app, tmp_path):
    process = psutil.Process(app.proc.pid)
    eye = tmp_path / "eye.png"
    Image.open(app.photo).crop((180, 80, 230, 130)).save(eye)
    text = tmp_path / "notes.png"
    text.write_text("not a photo")
    clients = [client(app) for _ in range(4)]

    def batch(n):
        def one(i):
            c = clients[i % len(clients)]
            if i % 5 == 3:  # errors must not leak either
                with pytest.raises(Exception, match="could not be read as an image"):
                    generate(c, text)
            elif i % 5 == 4:
                c.predict(gradio_client.handle_file(str(eye)), api_name="/generate_from_eye")
            else:
                generate(c, app.photo)

        with ThreadPoolExecutor(len(clients)) as pool:
            list(pool.map(one, range(n)))

    batch(20)  # warm-up: allocator pools, lazy imports, Gradio's caches
    before = process.memory_info().rss
    batch(100)
    growth = (process.memory_info().rss - before) / 2**20
    print(f"RSS {before / 2**20:.0f} MB before, growth over 100 requests: {growth:+.1f} MB")
    assert growth < 50, f"RSS grew {growth:.0f} MB over 100 requests"


def test_no_network_but_loopback_and_no_photo_outside_the_cache(app, tmp_path):
    c = client(app)
    generate(c, app.photo)
    c.predict(gradio_client.handle_file(str(app.photo)), api_name="/generate_from_eye")
    time.sleep(1)  # the audit log is written by the app process
    events = audit(app)
    assert any(e["event"] == "open" for e in events), "the audit hook logged nothing: the check would be blind"

    loopback = ("'127.", "('127.", "'::1'", "('::1'", "'localhost'", "None")
    network = [e for e in events if e["event"].startswith("socket.")]
    outside = [e for e in network if not e["args"][0].startswith(loopback)]
    assert not outside, f"connections or lookups beyond loopback: {outside[:5]}"
    assert not [e for e in events if e["event"] in ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn")]

    cache = str(app.tmp / "gradio")
    served = [e for e in events if e["event"] == "open" and e["t"] > app.ready]
    assert served, "no file was written while serving: Gradio should have stored the upload in its cache"
    print(f"audited: {len(network)} socket events, {len(served)} files written while serving")
    elsewhere = sorted({e["args"][0] for e in served if not (e["args"][0] + "/").startswith(cache + "/")} - {"/dev/null"})
    assert not elsewhere, f"files written outside GRADIO_TEMP_DIR while serving: {elsewhere[:10]}"
    # The photo's pixels are nowhere on disk but in Gradio's cache (which app.py empties after EYE2FACE_CACHE_SECONDS).
    original = np.asarray(Image.open(app.photo).convert("RGB"))
    for path in (app.tmp / "tmp").rglob("*"):
        if path.is_file():
            try:
                with Image.open(path) as im:
                    assert not np.array_equal(np.asarray(im.convert("RGB")), original), path
            except OSError:
                pass
