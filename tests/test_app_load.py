"""`python app.py` under load, and what it touches: concurrent requests, memory over many requests, and
(with offline settings) no network connection but loopback and no photo written outside Gradio's cache.

The app runs in its own process with a Python audit hook (sys.addaudithook) that logs every socket connect,
name lookup, process start and file opened for writing; the tests read that log. The full 500-request
memory run belongs in bench/; here is a short one.
"""

from __future__ import annotations

import json
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from tests.app_fixtures import ROOT, app_process, make_weights, offline_env

pytestmark = pytest.mark.slow
psutil = pytest.importorskip("psutil", reason="psutil (in the test extras) measures the app's memory")
gradio_client = pytest.importorskip("gradio_client", reason="gradio_client (in the test extras) drives the app")
if not (ROOT / "app.py").exists():
    pytest.skip("app.py is not there", allow_module_level=True)

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
    # offline settings: bundled weights, no Hub, analytics off (app.py's default)
    env = offline_env(tmp, weights, TMPDIR=str(tmp / "tmp"), EYE2FACE_AUDIT_LOG=str(tmp / "audit.jsonl"))
    with app_process(env, tmp / "app.log", command=[sys.executable, "-c", AUDIT_HOOK]) as server:
        yield SimpleNamespace(url=server.url, proc=server.proc, tmp=tmp, ready=time.time(), photo=make_photo(tmp),
                              server=server)


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


def test_50_concurrent_clients_are_all_served(app):
    """A burst: 50 clients (each its own session, as 50 visitors) send a photo at the same moment; none fails."""
    clients = [client(app) for _ in range(50)]
    assert generate(clients[0], app.photo)  # warm
    process = psutil.Process(app.proc.pid)
    rss_before = process.memory_info().rss / 2**20
    results, barrier = [None] * 50, threading.Barrier(50)

    def one(i):
        barrier.wait()
        start = time.perf_counter()
        try:
            out = generate(clients[i], app.photo)
            results[i] = ("ok", time.perf_counter() - start, out)
        except Exception as e:  # gradio_client raises for an error answer; the message is what a program sees
            results[i] = ("error", time.perf_counter() - start, f"{type(e).__name__}: {e}")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    errors = sorted({msg for kind, _, msg in results if kind == "error"})
    seconds = sorted(t for kind, t, _ in results if kind == "ok")
    rss_after = process.memory_info().rss / 2**20
    if seconds:
        print(f"50 concurrent clients: {len(seconds)} served, latency p50 {statistics.median(seconds):.1f} s, "
              f"p95 {seconds[int(0.95 * (len(seconds) - 1))]:.1f} s, max {seconds[-1]:.1f} s; "
              f"server RSS {rss_before:.0f} -> {rss_after:.0f} MB")
    assert not errors, f"{len(errors)} of 50 failed: {errors[:3]}"
    for _, _, (comparison, details, status) in results:  # every client got the full answer
        assert comparison["path"].endswith(".png") and len(details["tiles"]) == 2 and "Face found" in status
    served = [line for line in app.server.log().splitlines() if "endpoint=generate outcome=ok" in line]
    assert len(served) >= 51, "the app should log one line per request"
    assert generate(clients[0], app.photo)  # and it still serves afterwards


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

    batch(100)  # warm-up: RSS settles only after ~100 requests (allocator arenas per thread, Gradio's caches)
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
