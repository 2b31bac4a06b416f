"""The Gradio app as a person uses it: a real chromium, driven by playwright, with a fake webcam showing a face, on a
desktop (1280x900) and on a phone (390x844).

Set EYE2FACE_SCREENSHOTS=docs to also save the README's screenshots there, on the bundled weights:
docs/screenshot.png (the results page) and docs/screenshot-phone.png (the same on a phone, 390 px wide).
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

from eye2face_app.comparison import EYE_LABEL, REAL_FACE
from eye2face_app.models import MODELS
from eye2face_hub.grid import CAPTION, GAP, HEADER, TILE
from tests.app_fixtures import CHROMIUM, CHROMIUM_ARGS, ROOT, make_weights, read_png, served_app

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing (CI installs it: apt-get install chromium)"),
]

ASTRONAUT = skimage.data.astronaut()
TIMEOUT_MS = 60_000  # generous: CI runners are small; nothing here measures speed
SCREENSHOTS = os.environ.get("EYE2FACE_SCREENSHOTS")
DESKTOP, PHONE = {"width": 1280, "height": 900}, {"width": 390, "height": 844}
MIN_LABEL_PX = 11  # the smallest text height, in CSS pixels, that a person reads without zooming
TABS = ["Photo", "Eye crop", "Webcam"]
BUNDLED = ROOT / "weights"
ON_BUNDLED = bool(SCREENSHOTS) and all((BUNDLED / s.folder / "model.safetensors").is_file()
                                       for s in MODELS.values() if not s.optional)
# The default comparison on the served weights: the required models, and on the bundled weights the installed
# default optional ones (the two-eye model, with its "both eyes" row).
SERVED = [n for n, s in MODELS.items() if not s.optional or (ON_BUNDLED and (BUNDLED / s.folder / "model.safetensors").is_file())]
DEFAULT = [n for n in SERVED if MODELS[n].default]
ONE_EYE = [n for n in DEFAULT if MODELS[n].eyes == 1]
PAGE_COLUMNS = [EYE_LABEL, *(MODELS[n].label for n in DEFAULT), REAL_FACE]
PHOTO_ROWS = 2 + (len(DEFAULT) > len(ONE_EYE))  # each eye, and "both eyes"


def comparison_size(rows: int = PHOTO_ROWS, columns: int = len(PAGE_COLUMNS)) -> tuple[int, int]:
    """The comparison PNG's (width, height)."""
    return columns * (TILE + GAP) - GAP, HEADER + rows * (CAPTION + TILE)


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
    context = browser.new_context(viewport=DESKTOP, accept_downloads=True)
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
    """Waits until the image in `selector` has loaded; its natural (width, height), read in the same check (a live
    stream may swap the image for one still loading in between)."""
    size = page.wait_for_function(
        "s => { const i = document.querySelector(s + ' img'); "
        "return i && i.complete && i.naturalWidth > 0 && [i.naturalWidth, i.naturalHeight]; }",
        arg=selector,
    )
    return tuple(size.json_value())


def shown_comparison(page, selector: str, previous: str | None = None) -> dict:
    """Waits until `selector` shows a comparison (other than `previous`, its html) whose tiles have loaded; its column
    labels, row captions, tiles, html and, per label and caption, the rendered height of its smallest text line in
    CSS pixels and whether anything covers it."""
    page.wait_for_function(
        """([s, previous]) => { const c = document.querySelector(s + ' .e2f-comparison');
            return c && c.outerHTML !== previous && [...c.querySelectorAll('img')].every(i => i.complete && i.naturalWidth > 0); }""",
        arg=[selector, previous],
    )
    return page.eval_on_selector(f"{selector} .e2f-comparison", """c => {
        const texts = [...c.querySelectorAll('.e2f-label, .e2f-caption')].map(e => {
            e.scrollIntoView({block: 'center'});
            const range = document.createRange();
            range.selectNodeContents(e);
            const lines = [...range.getClientRects()].filter(r => r.width > 0);
            const box = e.getBoundingClientRect();
            const hit = document.elementFromPoint(box.x + box.width / 2, box.y + Math.min(box.height / 2, 8));
            return {text: e.textContent, kind: e.className, height: Math.min(...lines.map(r => r.height)),
                    covered: !(hit && e.contains(hit))};
        });
        return {labels: texts.filter(t => t.kind === 'e2f-label'), captions: texts.filter(t => t.kind === 'e2f-caption'),
                tiles: c.querySelectorAll('img').length, html: c.outerHTML,
                width: c.getBoundingClientRect().width, right: c.getBoundingClientRect().right};
    }""")


def labels_are_readable(shown: dict, columns: list[str] = PAGE_COLUMNS, rows: int = PHOTO_ROWS):
    assert [t["text"] for t in shown["labels"]] == columns and len(shown["captions"]) == rows
    heights = {t["text"]: round(t["height"], 1) for t in shown["labels"] + shown["captions"]}
    print(f"text heights, CSS px: smallest {min(heights.values())}, largest {max(heights.values())}")
    small = [(text, height) for text, height in heights.items() if height < MIN_LABEL_PX]
    assert not small, f"text under {MIN_LABEL_PX} CSS px: {small}"
    covered = [t["text"] for t in shown["labels"] + shown["captions"] if t["covered"]]
    assert not covered, f"something covers {covered}"


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


def downloaded_png(page, button: str) -> np.ndarray:
    page.wait_for_function("s => !document.querySelector(s).disabled", arg=button)
    with page.expect_download() as download:
        page.click(button)
    assert download.value.suggested_filename.endswith(".png")
    return read_png(download.value.path())


def test_upload_a_photo_and_see_the_comparison_with_readable_labels(page, photos, tmp_path):
    assert "bundled" in page.locator("#weights").inner_text(), "the page should say which weights are loaded"
    if not SCREENSHOTS:  # the test weights hold no optional model
        assert "Not installed" in page.locator("#weights").inner_text()
        assert not page.locator("#models-to-compare").is_visible(), "nothing to add to the default comparison"
    assert page.locator("#download").is_disabled(), "nothing to download before a result"
    upload(page, "#photo", photos["astronaut"])
    page.click("#generate")
    shown = shown_comparison(page, "#comparison")
    labels_are_readable(shown)
    two_eye_tiles = (PHOTO_ROWS - 2) * (2 + len(DEFAULT) - len(ONE_EYE))  # the pair of crops, each face, the real face
    assert shown["tiles"] == 2 * (len(ONE_EYE) + 2) + two_eye_tiles, "blank only where a model has nothing for a row"
    assert loaded_size(page, "#annotated") == ASTRONAUT.shape[1::-1]
    assert "left eye" in page.locator("#status").inner_text()
    png = downloaded_png(page, "#download")  # the PNG keeps its labels: ink over every column
    assert png.shape[1::-1] == comparison_size()
    for c in range(len(PAGE_COLUMNS)):
        assert (png[:HEADER, c * (TILE + GAP) : c * (TILE + GAP) + TILE] < 128).any(), f"column {c} has no label"
    page.evaluate("window.scrollTo(0, 0)")
    shot = screenshot(page, tmp_path, "results.png", full_page=False)
    if SCREENSHOTS:
        shutil.copy(shot, Path(SCREENSHOTS) / "screenshot.png")


def test_after_the_cat_example_the_reason_stays_and_no_output_shows_an_error(page, photos, tmp_path):
    upload(page, "#photo", photos["astronaut"])
    page.click("#generate")
    shown_comparison(page, "#comparison")  # an earlier result, which the refusal must clear
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
    labels_are_readable(shown_comparison(page, "#comparison"))
    assert "No face found" not in page.locator("#status").inner_text()


def test_an_eye_crop_gives_every_models_face_and_a_refusal_replaces_it(page, tmp_path):
    Image.fromarray(ASTRONAUT[87:115, 188:216]).save(tmp_path / "my-eye.png")  # 28x28, as small as Haar finds them
    Image.fromarray(ASTRONAUT[88:92, 190:194]).save(tmp_path / "tiny.png")
    page.get_by_role("tab", name="Eye crop").click()
    upload(page, "#eye-input", tmp_path / "my-eye.png")
    page.click("#generate-eye")
    labels_are_readable(shown_comparison(page, "#eye-comparison"), [EYE_LABEL, *(MODELS[n].label for n in ONE_EYE)], 1)
    assert "28x28" in page.locator("#eye-status").inner_text()
    assert downloaded_png(page, "#eye-download").shape[1::-1] == comparison_size(rows=1, columns=1 + len(ONE_EYE))
    upload(page, "#eye-input", tmp_path / "tiny.png")
    page.click("#generate-eye")
    page.locator("#eye-status").get_by_text("Not a usable image").wait_for()
    assert "28x28" not in page.locator("#eye-status").inner_text(), "the earlier result's text is stale"
    assert page.locator("#eye-comparison img").count() == 0
    assert not [i for i, text in output_texts(page).items() if "Error" in text.split()]


def test_live_webcam_streams_generated_faces(page):
    page.get_by_role("tab", name="Webcam").click()
    start_camera(page, "#webcam")
    page.locator("#webcam").get_by_role("button", name="capture photo").click()  # "Record": start streaming
    labels_are_readable(shown_comparison(page, "#live-comparison"))
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
    assert len(shown_comparison(page, "#comparison")["labels"]) == len(PAGE_COLUMNS)


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
    labels_are_readable(shown_comparison(page, "#comparison"))
    assert loaded_size(page, "#annotated") == ASTRONAUT.shape[1::-1]


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_every_tab_is_one_tap_away_and_the_upload_box_on_the_first_screen(browser, url, viewport):
    context = browser.new_context(viewport=viewport, is_mobile=viewport == PHONE, has_touch=viewport == PHONE)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    try:
        page.goto(url)
        page.locator("#photo").wait_for()
        assert page.locator("#photo").bounding_box()["y"] < viewport["height"] - 150, "the upload box is below the fold"
        for name, shows in zip(TABS, ["#photo", "#eye-input", "#webcam"]):
            tab = page.get_by_role("tab", name=name, exact=True)
            assert tab.is_visible(), f"the tab {name!r} is hidden (behind a menu?)"
            tab.click()
            page.locator(shows).wait_for(state="visible")
        assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"], "the page scrolls sideways"
    finally:
        context.close()


def test_on_a_phone_the_comparison_labels_are_readable_and_an_eye_and_its_faces_fit(browser, url, photos, tmp_path):
    context = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    try:
        page.goto(url)
        upload(page, "#photo", photos["astronaut"])
        page.click("#generate")
        shown = shown_comparison(page, "#comparison")
        labels_are_readable(shown)
        assert shown["right"] <= PHONE["width"], shown["right"]
        tile = page.locator("#comparison .e2f-comparison img").first.bounding_box()
        assert tile["width"] >= 60, f"each face is shown {tile['width']:.0f} px wide: too small to see"
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], "the page scrolls sideways"
        page.eval_on_selector("#comparison", "e => e.scrollIntoView({block: 'start'})")  # the answer, as one reads it
        box = page.locator("#comparison .e2f-comparison").bounding_box()
        header = page.locator("#comparison .e2f-label").first.bounding_box()
        assert box["y"] >= 0 and header["y"] >= 0
        first_row_end = page.locator("#comparison .e2f-comparison img").nth(len(ONE_EYE) + 1).bounding_box()
        assert first_row_end["y"] + first_row_end["height"] <= PHONE["height"], "an eye and its faces do not fit"
        shot = screenshot(page, tmp_path, "phone.png", full_page=False)
        if SCREENSHOTS:
            shutil.copy(shot, Path(SCREENSHOTS) / "screenshot-phone.png")
    finally:
        context.close()


def test_a_person_adds_the_gan_models_and_sees_the_two_eye_row(browser, tmp_path_factory, photos, tmp_path):
    """With every optional model installed: the two-eye model's "both eyes" row by default, a GAN model's column
    when ticked, and in the eye-crop tab, two crops give the two-eye model's face."""
    weights = make_weights(tmp_path_factory.mktemp("all-weights"), optional=True)
    (two_eyes,) = [name for name, spec in MODELS.items() if spec.eyes == 2]
    def columns(*added: str) -> list[str]:  # the default models' and the added ones', in the order of MODELS
        return [spec.label for name, spec in MODELS.items() if spec.default or name in added]

    with served_app(weights) as url:
        context = browser.new_context(viewport=DESKTOP)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        try:
            page.goto(url)
            models = page.locator("#models").inner_text()
            assert all(spec.label in models and spec.about[:30] in models for spec in MODELS.values()), models
            choice = page.locator("#models-to-compare")
            assert choice.get_by_label(MODELS[two_eyes].label).is_checked()
            assert not choice.get_by_label("WGAN-GP").is_checked()
            upload(page, "#photo", photos["astronaut"])
            page.click("#generate")
            shown = shown_comparison(page, "#comparison")
            labels_are_readable(shown, [EYE_LABEL, *columns(), REAL_FACE], 3)
            assert "Both eyes, one face" in page.locator("#status").inner_text()
            choice.get_by_label("WGAN-GP").check()
            page.click("#generate")
            labels_are_readable(shown_comparison(page, "#comparison", shown["html"]),
                                [EYE_LABEL, *columns("wgan-gp"), REAL_FACE], 3)
            screenshot(page, tmp_path, "gan-and-two-eyes.png")

            (lx, ly, lw, lh), (rx, ry, rw, rh) = cv2_eyes()
            Image.fromarray(ASTRONAUT[ly : ly + lh, lx : lx + lw]).save(tmp_path / "left.png")
            Image.fromarray(ASTRONAUT[ry : ry + rh, rx : rx + rw]).save(tmp_path / "right.png")
            page.get_by_role("tab", name="Eye crop").click()
            upload(page, "#eye-input", tmp_path / "left.png")
            upload(page, "#eye-input-right", tmp_path / "right.png")
            page.click("#generate-eye")
            # the eye crop, the default models and WGAN-GP; a row per crop and "both eyes"
            labels_are_readable(shown_comparison(page, "#eye-comparison"), [EYE_LABEL, *columns("wgan-gp")], 3)
            assert f"{lw}x{lh}" in page.locator("#eye-status").inner_text()
            screenshot(page, tmp_path, "two-eye-crops.png")
        finally:
            context.close()


def cv2_eyes():
    from eye2face_hub.data import detect

    return detect(ASTRONAUT).eyes
