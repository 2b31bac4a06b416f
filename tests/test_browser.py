"""The Gradio app as a person uses it: a real chromium, driven by playwright, with a fake webcam showing a face.

Set EYE2FACE_SCREENSHOTS=docs to also save the README's screenshots there, on the bundled weights:
docs/screenshot.png (the results page) and docs/screenshot-phone.png (the same at a phone's width, 390 px).
Every test keeps its screenshots in its pytest tmp_path (printed with -s).
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

from tests.app_fixtures import (
    CHROMIUM,
    CHROMIUM_ARGS,
    ROOT,
    import_app,
    make_weights,
    read_png,
    served_app,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing (CI installs it: apt-get install chromium)"),
]

ASTRONAUT = skimage.data.astronaut()
TIMEOUT_MS = 60_000  # generous: CI runners are small; nothing here measures speed
SCREENSHOTS = os.environ.get("EYE2FACE_SCREENSHOTS")
app = import_app()
DEFAULT = [name for name, spec in app.MODELS.items() if spec.default and spec.eyes == 1]  # the research's pair
COLUMNS = 2 + len(DEFAULT)  # eye crop, each model, real face
BUNDLED = ROOT / "weights"
ON_BUNDLED = bool(SCREENSHOTS) and all((BUNDLED / s.folder / "model.safetensors").is_file()
                                       for s in app.MODELS.values() if not s.optional)
# The page's own comparison on the served weights: the research's pair, and a bundled two-eye model by default.
PAGE_TWO_EYES = ON_BUNDLED and any(s.default and s.eyes == 2 and (BUNDLED / s.folder / "model.safetensors").is_file()
                                   for s in app.MODELS.values())
PAGE_COLUMNS = COLUMNS + PAGE_TWO_EYES
PHOTO_ROWS = 2 + PAGE_TWO_EYES  # each eye, and "both eyes"
WIDTH = PAGE_COLUMNS * (app.TILE + app.GAP) - app.GAP


def comparison_size(rows: int = PHOTO_ROWS, columns: int = PAGE_COLUMNS) -> tuple[int, int]:
    return columns * (app.TILE + app.GAP) - app.GAP, app.HEADER + rows * (app.CAPTION + app.TILE)


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
    if ON_BUNDLED:
        weights = BUNDLED
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


def preview(page, selector: str) -> str | None:
    """The src of the input's preview image (None when empty)."""
    return page.evaluate("s => document.querySelector(s + ' .image-frame img')?.src ?? null", f"{selector}")


def wait_for_new_preview(page, selector: str, before: str | None):
    """Until the input shows an image other than `before`: only then does a click send the new one."""
    page.wait_for_function(
        "([s, before]) => { const i = document.querySelector(s + ' .image-frame img'); "
        "return i && i.src !== before && i.complete && i.naturalWidth > 0; }",
        arg=[selector, before],
    )


def upload(page, selector: str, path: Path):
    before = preview(page, selector)
    page.locator(f"{selector} input[type=file]").set_input_files(str(path))
    wait_for_new_preview(page, selector, before)


def screenshot(page, tmp_path: Path, name: str, full_page: bool = True) -> Path:
    path = tmp_path / name
    page.screenshot(path=path, full_page=full_page)
    print(f"screenshot: {path}")
    return path


def output_texts(page) -> dict[str, str]:
    """The visible text of every output on the page (a failed event puts an "Error" badge on each of its outputs)."""
    ids = ["comparison", "annotated", "download", "status", "eye-comparison", "eye-download", "eye-status"]
    return {i: page.locator(f"#{i}").inner_text() for i in ids if page.locator(f"#{i}").is_visible()}


def test_upload_a_photo_and_see_the_comparison(page, photos, tmp_path):
    assert "bundled" in page.locator("#weights").inner_text(), "the page should say which weights are loaded"
    if not SCREENSHOTS:  # the test weights hold no optional model
        assert "Not installed" in page.locator("#weights").inner_text()
        assert not page.locator("#models-to-compare").is_visible(), "nothing to add to the research's pair"
    assert page.locator("#download").is_disabled(), "nothing to download before a result"
    upload(page, "#photo", photos["astronaut"])
    page.click("#generate")
    assert loaded_size(page, "#comparison") == comparison_size()
    assert loaded_size(page, "#annotated") == ASTRONAUT.shape[1::-1]
    assert "left eye" in page.locator("#status").inner_text()

    page.wait_for_function("() => !document.querySelector('#download').disabled")
    with page.expect_download() as download:
        page.click("#download")
    shown = page.eval_on_selector("#comparison img", "i => i.src")
    assert download.value.suggested_filename.endswith(".png")
    assert Path(download.value.path()).read_bytes() == page.request.get(shown).body(), "the download is the comparison"
    read_png(download.value.path())

    shot = screenshot(page, tmp_path, "results.png")
    if SCREENSHOTS:
        shutil.copy(shot, Path(SCREENSHOTS) / "screenshot.png")


def test_after_the_cat_example_the_reason_stays_and_no_output_shows_an_error(page, photos, tmp_path):
    upload(page, "#photo", photos["astronaut"])
    page.click("#generate")
    loaded_size(page, "#comparison")  # an earlier result, which the refusal must clear
    before = preview(page, "#photo")
    page.get_by_text("chelsea the cat").click()  # the example without a human face
    wait_for_new_preview(page, "#photo", before)
    page.click("#generate")
    page.locator("#status").get_by_text("No face found").wait_for()
    page.wait_for_timeout(15_000)  # toasts are gone by now; the reason must not be
    status = page.locator("#status").inner_text()
    assert "No face found" in status and "No face was found" in status, status
    texts = output_texts(page)
    assert not [i for i, text in texts.items() if "Error" in text.split()], texts
    assert page.locator("#comparison img").count() == 0 and page.locator("#annotated img").count() == 0
    assert page.locator("#download").is_disabled()
    screenshot(page, tmp_path, "cat-after-15s.png")
    # and the page keeps working
    upload(page, "#photo", photos["astronaut"])
    page.click("#generate")
    assert loaded_size(page, "#comparison") == comparison_size()
    assert "No face found" not in page.locator("#status").inner_text()


def test_an_eye_crop_gives_every_models_face_and_a_refusal_replaces_it(page, tmp_path):
    Image.fromarray(ASTRONAUT[87:115, 188:216]).save(tmp_path / "my-eye.png")  # 28x28, as small as Haar finds them
    Image.fromarray(ASTRONAUT[88:92, 190:194]).save(tmp_path / "tiny.png")
    page.get_by_role("tab", name="I already have an eye crop").click()
    upload(page, "#eye-input", tmp_path / "my-eye.png")
    page.click("#generate-eye")
    assert loaded_size(page, "#eye-comparison") == comparison_size(rows=1, columns=COLUMNS - 1)
    assert "28x28" in page.locator("#eye-status").inner_text()
    upload(page, "#eye-input", tmp_path / "tiny.png")
    page.click("#generate-eye")
    page.locator("#eye-status").get_by_text("Not a usable image").wait_for()
    assert "28x28" not in page.locator("#eye-status").inner_text(), "the earlier result's text is stale"
    assert page.locator("#eye-comparison img").count() == 0
    assert not [i for i, text in output_texts(page).items() if "Error" in text.split()]


def test_live_webcam_streams_generated_faces(page):
    page.get_by_role("tab", name="Live webcam").click()
    start_camera(page, "#webcam")
    page.locator("#webcam").get_by_role("button", name="capture photo").click()  # "Record": start streaming
    width, height = loaded_size(page, "#live-comparison")
    assert width == WIDTH and height > app.TILE, "eye crop | each model's face | real face"
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
    assert loaded_size(page, "#comparison")[0] == WIDTH


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
    assert loaded_size(page, "#comparison") == comparison_size()
    assert loaded_size(page, "#annotated") == ASTRONAUT.shape[1::-1]


def test_on_a_phone_an_eye_and_its_faces_fit_on_one_screen(browser, url, photos, tmp_path):
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True,
                                  has_touch=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    try:
        page.goto(url)
        upload(page, "#photo", photos["astronaut"])
        page.click("#generate")
        loaded_size(page, "#comparison")
        page.eval_on_selector("#status", "e => e.scrollIntoView({block: 'start'})")  # the answer, as one reads it
        box = page.locator("#comparison img").bounding_box()
        scale = box["width"] / WIDTH
        assert 0 <= box["x"] and box["x"] + box["width"] <= 390, box
        # Every row (one eye: its caption, its crop, each model's face and the real face) and the header are on screen.
        assert 0 <= box["y"] and box["y"] + comparison_size()[1] * scale <= 844, box
        assert app.TILE * scale >= 60, f"each face is shown {app.TILE * scale:.0f} px wide: too small to see"
        assert page.evaluate("document.documentElement.scrollWidth") <= 390, "the page scrolls sideways"
        shot = screenshot(page, tmp_path, "phone.png", full_page=False)
        if SCREENSHOTS:
            shutil.copy(shot, Path(SCREENSHOTS) / "screenshot-phone.png")
    finally:
        context.close()


def test_a_person_adds_the_gan_models_and_sees_the_two_eye_row(browser, tmp_path_factory, photos, tmp_path):
    """With every optional model installed: the two-eye model's "both eyes" row by default, a GAN model's column
    when ticked, and in the eye-crop tab, two crops give the two-eye model's face."""
    weights = make_weights(tmp_path_factory.mktemp("all-weights"), optional=True)
    two_eyes = next(name for name, spec in app.MODELS.items() if spec.eyes == 2)
    with served_app(weights) as url:
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        try:
            page.goto(url)
            models = page.locator("#models").inner_text()
            assert all(spec.label in models and spec.about[:30] in models for spec in app.MODELS.values()), models
            choice = page.locator("#models-to-compare")
            assert choice.get_by_label(app.MODELS[two_eyes].label).is_checked()
            assert not choice.get_by_label("WGAN-GP").is_checked()
            upload(page, "#photo", photos["astronaut"])
            page.click("#generate")
            assert loaded_size(page, "#comparison") == comparison_size(rows=3, columns=COLUMNS + 1)
            assert "Both eyes, one face" in page.locator("#status").inner_text()
            first = page.eval_on_selector("#comparison img", "i => i.src")
            choice.get_by_label("WGAN-GP").check()
            page.click("#generate")
            page.wait_for_function("s => document.querySelector('#comparison img')?.src !== s", arg=first)
            assert loaded_size(page, "#comparison") == comparison_size(rows=3, columns=COLUMNS + 2)
            screenshot(page, tmp_path, "gan-and-two-eyes.png")

            (lx, ly, lw, lh), (rx, ry, rw, rh) = cv2_eyes()
            Image.fromarray(ASTRONAUT[ly : ly + lh, lx : lx + lw]).save(tmp_path / "left.png")
            Image.fromarray(ASTRONAUT[ry : ry + rh, rx : rx + rw]).save(tmp_path / "right.png")
            page.get_by_role("tab", name="I already have an eye crop").click()
            upload(page, "#eye-input", tmp_path / "left.png")
            upload(page, "#eye-input-right", tmp_path / "right.png")
            page.click("#generate-eye")
            # eye crop | L1 | feature | WGAN-GP | two-eye model; a row per crop and "both eyes"
            assert loaded_size(page, "#eye-comparison") == comparison_size(rows=3, columns=COLUMNS + 1)
            assert f"{lw}x{lh}" in page.locator("#eye-status").inner_text()
            screenshot(page, tmp_path, "two-eye-crops.png")
        finally:
            context.close()


def cv2_eyes():
    from eye2face_hub.data import detect

    return detect(ASTRONAUT).eyes
