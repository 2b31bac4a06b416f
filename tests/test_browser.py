"""The Gradio app as a person uses it: a real chromium, driven by playwright, with a fake webcam showing a face.

Set EYE2FACE_SCREENSHOT=docs/screenshot.png to also save the results page there (the README's screenshot).
"""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
from PIL import Image

from eye2face_hub.data import EYE_SIZE, FACE_SIZE
from tests.app_fixtures import CHROMIUM, CHROMIUM_ARGS, ROOT, make_weights, read_png, served_app

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing (CI installs it: apt-get install chromium)"),
]

ASTRONAUT = skimage.data.astronaut()
TIMEOUT_MS = 60_000  # generous: CI runners are small; nothing here measures speed


def write_y4m(path: Path, rgb: np.ndarray, shifts=(0, 12, 24, 36, 24, 12), size=(640, 480), fps: int = 4) -> Path:
    """A looping fake-webcam video (YUV4MPEG2, 4:2:0) of `rgb`, moved sideways frame by frame.

    The frames differ so that a stream that keeps updating shows different results over time.
    """
    w, h = size
    face = cv2.resize(rgb, (h, h))
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for dx in shifts:
            frame = np.full((h, w, 3), 40, np.uint8)
            x = (w - h) // 2 - 36 + dx
            frame[:, x : x + h] = face
            f.write(b"FRAME\n" + cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420).tobytes())
    return path


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    """The app on small random test weights; on the repository's bundled weights when taking the README screenshot."""
    bundled = ROOT / "weights"
    if os.environ.get("EYE2FACE_SCREENSHOT") and (bundled / "eye2face-feature" / "model.safetensors").is_file():
        weights = bundled
    else:
        weights = make_weights(tmp_path_factory.mktemp("weights"))
    with served_app(weights) as url:
        yield url


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from playwright.sync_api import sync_playwright

    video = write_y4m(tmp_path_factory.mktemp("webcam") / "face.y4m", ASTRONAUT)
    fake_camera = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                   f"--use-file-for-fake-video-capture={video}"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS + fake_camera)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, url):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=url.rstrip("/"))
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    yield page
    context.close()


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("photos")
    Image.fromarray(ASTRONAUT).save(folder / "astronaut.jpg", quality=95)  # a typical upload: a JPEG
    Image.fromarray(skimage.data.chelsea()).save(folder / "cat.png")
    return {"astronaut": folder / "astronaut.jpg", "cat": folder / "cat.png"}


def loaded_size(page, selector: str) -> tuple[int, int]:
    """Waits until the image in `selector` has loaded; its natural (width, height)."""
    page.wait_for_function(
        "s => { const i = document.querySelector(s + ' img'); return i && i.complete && i.naturalWidth > 0; }",
        arg=selector,
    )
    return tuple(page.eval_on_selector(f"{selector} img", "i => [i.naturalWidth, i.naturalHeight]"))


def start_camera(page, selector: str):
    """Grant the (fake) webcam in the component and wait until its video plays."""
    page.locator(selector).get_by_text("Click to Access Webcam").click()
    page.wait_for_function(
        "s => { const v = document.querySelector(s + ' video'); return v && v.readyState >= 2 && v.videoWidth > 0; }",
        arg=selector,
    )


def upload(page, selector: str, path: Path):
    page.locator(f"{selector} input[type=file]").set_input_files(str(path))
    page.wait_for_selector(f"{selector} .image-frame img")  # the preview of the uploaded image


def test_upload_a_photo_and_see_both_faces(page, photos, tmp_path):
    assert "bundled" in page.locator("#weights").inner_text(), "the page should say which weights are loaded"
    upload(page, "#photo", photos["astronaut"])
    page.click("#generate")
    for side in ("left", "right"):
        assert loaded_size(page, f"#{side}-l1") == (FACE_SIZE, FACE_SIZE)
        assert loaded_size(page, f"#{side}-feature") == (FACE_SIZE, FACE_SIZE)
        assert loaded_size(page, f"#{side}-eye") == (EYE_SIZE, EYE_SIZE)
    assert loaded_size(page, "#real-face") == (FACE_SIZE, FACE_SIZE)
    assert loaded_size(page, "#annotated") == ASTRONAUT.shape[1::-1]
    assert "left eye" in page.locator("#status").inner_text()
    # The eye crop is shown large enough to see (pixelated), not as a 32 px speck.
    shown = page.eval_on_selector("#left-eye img", "i => [i.clientWidth, getComputedStyle(i).imageRendering]")
    assert shown[0] >= 96 and shown[1] == "pixelated", shown

    with page.expect_download() as download:
        page.click("#download")
    grid = read_png(download.value.path())
    assert grid.shape[1] == 4 * FACE_SIZE and grid.shape[0] > 2 * FACE_SIZE  # 4 columns, a row per eye

    page.screenshot(path=tmp_path / "results.png", full_page=True)
    if os.environ.get("EYE2FACE_SCREENSHOT"):
        shutil.copy(tmp_path / "results.png", os.environ["EYE2FACE_SCREENSHOT"])


def test_a_photo_without_a_face_gets_a_clear_message_and_the_page_keeps_working(page, photos):
    upload(page, "#photo", photos["cat"])
    page.click("#generate")
    page.get_by_text("No face was found").first.wait_for()
    upload(page, "#photo", photos["astronaut"])
    page.click("#generate")
    assert loaded_size(page, "#left-l1") == (FACE_SIZE, FACE_SIZE)


def test_an_eye_crop_gives_both_faces(page, tmp_path):
    Image.fromarray(ASTRONAUT[87:115, 188:216]).save(tmp_path / "my-eye.png")  # 28x28, as small as Haar finds them
    page.get_by_role("tab", name="I already have an eye crop").click()
    upload(page, "#eye-input", tmp_path / "my-eye.png")
    page.click("#generate-eye")
    assert loaded_size(page, "#eye-l1") == (FACE_SIZE, FACE_SIZE)
    assert loaded_size(page, "#eye-feature") == (FACE_SIZE, FACE_SIZE)
    assert loaded_size(page, "#eye-crop") == (EYE_SIZE, EYE_SIZE)


def test_live_webcam_streams_generated_faces(page):
    page.get_by_role("tab", name="Live webcam").click()
    start_camera(page, "#webcam")
    page.locator("#webcam").get_by_role("button", name="capture photo").click()  # "Record": start streaming
    width, height = loaded_size(page, "#live-grid")
    assert width == 4 * FACE_SIZE and height > FACE_SIZE, "eye crop | L1 face | feature face | real face"
    assert loaded_size(page, "#live-annotated")[0] > 0
    assert "Face found" in page.locator("#live-status").inner_text()
    # The fake camera moves the face: the detections keep changing while the stream runs.
    first = page.eval_on_selector("#live-annotated img", "i => i.src")
    page.wait_for_function("s => document.querySelector('#live-annotated img').src !== s", arg=first)


def test_a_webcam_snapshot_as_the_photo(page):
    page.locator("#photo").get_by_role("button", name="Capture from camera").click()
    start_camera(page, "#photo")
    page.locator("#photo").get_by_role("button", name="capture photo").click()
    page.wait_for_selector("#photo .image-frame img")  # the snapshot, uploaded
    page.click("#generate")
    assert loaded_size(page, "#left-l1") == (FACE_SIZE, FACE_SIZE)
    assert loaded_size(page, "#real-face") == (FACE_SIZE, FACE_SIZE)


def test_paste_a_photo_from_the_clipboard(page, tmp_path):
    Image.fromarray(ASTRONAUT).save(tmp_path / "copied.png")
    page.evaluate(
        """async b64 => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            await navigator.clipboard.write([new ClipboardItem({"image/png": new Blob([bytes], {type: "image/png"})})]);
        }""",
        base64.b64encode((tmp_path / "copied.png").read_bytes()).decode(),
    )
    page.locator("#photo").get_by_role("button", name="Paste from clipboard").click()
    page.wait_for_selector("#photo .image-frame img")
    page.click("#generate")
    assert loaded_size(page, "#right-feature") == (FACE_SIZE, FACE_SIZE)
    assert loaded_size(page, "#annotated") == ASTRONAUT.shape[1::-1]
