"""The Gradio app as a program uses it: gradio_client against the app served on loopback, `python app.py`, and the
handlers behind the page called directly."""

from __future__ import annotations

import base64
import io
import json
import logging
import re
import threading
import time
import urllib.request
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import skimage.data
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from eye2face_app.comparison import EYE_LABEL, photo_comparison
from eye2face_app.handlers import Handlers
from eye2face_app.models import MODELS, NOT_INSTALLED, ModelSpec, load_pipeline, weights_markdown, whole_sentences
from eye2face_app.refusals import KINDS, sentence
from eye2face_hub import EyeToFace, EyeToFacePipeline
from eye2face_hub.data import EYE_SIZE, FACE_SIZE, crop, detect
from eye2face_hub.grid import CAPTION, GAP, HEADER, TILE
from eye2face_hub.pipeline import resize_eye
from tests.app_fixtures import (
    ROOT,
    FakeHub,
    app_process,
    blur,
    clean_env,
    make_model,
    make_weights,
    read_png,
    served_app,
)

ASTRONAUT = skimage.data.astronaut()
# The models every app has; the optional ones (GAN presets, the two-eye model) have their own tests below, on
# weights that hold them (make_weights(..., optional=True)). `weights` holds only these, as weights/ does today.
REQUIRED = {name: spec for name, spec in MODELS.items() if not spec.optional}


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return make_weights(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="module")
def reference(weights) -> EyeToFacePipeline:
    """The library pipeline on the same weights: what the app must return, pixel for pixel."""
    return EyeToFacePipeline.from_pretrained({name: str(weights / spec.folder) for name, spec in REQUIRED.items()})


@pytest.fixture(scope="module")
def handlers(weights):
    return Handlers(*load_pipeline(env={}, weights_dir=weights))


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    """Test photos as files, as a person would upload them."""
    folder = tmp_path_factory.mktemp("photos")
    x, y, w, h = detect(ASTRONAUT).face
    eyes_band = (x, y + h // 6, x + w, y + h // 2)
    files = {
        "astronaut": ASTRONAUT,
        "cat": skimage.data.chelsea(),  # no human face
        "no_eyes": blur(ASTRONAUT, eyes_band, 41),  # the face is still found, the eyes are not
    }
    paths = {}
    for name, rgb in files.items():
        Image.fromarray(rgb).save(folder / f"{name}.png")
        paths[name] = folder / f"{name}.png"
    (folder / "notes.txt").write_text("this is not a photo\n")
    paths["text"] = folder / "notes.txt"
    (folder / "empty.jpg").write_bytes(b"")
    paths["empty"] = folder / "empty.jpg"
    return paths


@pytest.fixture(scope="module")
def url(weights):
    """The app built on the test weights, served on loopback on a free port in this process."""
    with served_app(weights) as url:
        yield url


def new_client(url: str, tmp_path_factory) -> Client:
    return Client(url, verbose=False, analytics_enabled=False, download_files=str(tmp_path_factory.mktemp("downloads")))


@pytest.fixture(scope="module")
def client(url, tmp_path_factory) -> Client:
    return new_client(url, tmp_path_factory)


def generate(client: Client, photo: Path, eyes: str = "both") -> dict:
    comparison, details, status = client.predict(handle_file(str(photo)), eyes, api_name="/generate")
    return {"comparison": comparison, "details": details, "status": status}


def tiles(comparison: str, details: dict) -> list[dict[str, np.ndarray]]:
    """The comparison PNG cut where the API's details say its tiles are: per row, column label -> image."""
    image = read_png(comparison)
    return [{label: image[y : y + h, x : x + w] for label, (x, y, w, h) in zip(details["columns"], row, strict=True)}
            for row in details["tiles"]]


def model_columns() -> list[str]:
    return [spec.label for spec in REQUIRED.values()]


def eye_tile_holds(tile: np.ndarray, eye: np.ndarray):
    """The eye crop is shown scaled up with nearest neighbour: each of its pixels is an exact square block."""
    assert eye.shape == (EYE_SIZE, EYE_SIZE, 3)
    k = FACE_SIZE // EYE_SIZE
    np.testing.assert_array_equal(tile, np.repeat(np.repeat(eye, k, axis=0), k, axis=1))


# -------------------------------------------------------------------------------------------------- /generate


def test_generate_api_returns_each_eye_crop_each_models_face_and_the_real_face(client, reference, photos):
    out = generate(client, photos["astronaut"])
    expected = reference(str(photos["astronaut"]), eyes="both")
    assert [r.side for r in expected.eyes] == ["left", "right"], "the astronaut photo should give both eyes"
    details = out["details"]
    assert details["columns"] == [EYE_LABEL, *model_columns(), "real face"]
    assert details["models"] == list(REQUIRED) and details["rows"] == ["left eye", "right eye"]
    assert details["face_box"] == list(expected.face_box)
    assert [e["box"] for e in details["eyes"]] == [list(r.box) for r in expected.eyes]
    assert details["photo_size"] == list(ASTRONAUT.shape[1::-1])
    rows = tiles(out["comparison"], details)
    for row, r in zip(rows, expected.eyes, strict=True):
        eye_tile_holds(row[EYE_LABEL], r.eye)
        for name, spec in REQUIRED.items():
            np.testing.assert_array_equal(row[spec.label], r.faces[name], err_msg=f"{r.side} eye, {name} model")
        np.testing.assert_array_equal(row["real face"], expected.real_face)
    faces = [row[label] for row in rows for label in model_columns()]
    assert len({f.tobytes() for f in faces}) == len(faces), "two models or two eyes gave the same face"
    header = read_png(out["comparison"])[: HEADER]
    for x, _, w, _ in details["tiles"][0]:
        assert (header[:, x : x + w] < 128).any(), "a column has no label"
    assert Path(out["comparison"]).suffix == ".png"
    assert "left eye" in out["status"] and "right eye" in out["status"]


@pytest.mark.parametrize("side", ["left", "right"])
def test_one_eye_only(client, reference, photos, side):
    out = generate(client, photos["astronaut"], eyes=side)
    (expected,) = reference(str(photos["astronaut"]), eyes=side).eyes
    assert out["details"]["rows"] == [f"{side} eye"]
    (row,) = tiles(out["comparison"], out["details"])
    eye_tile_holds(row[EYE_LABEL], expected.eye)
    for name, spec in REQUIRED.items():
        np.testing.assert_array_equal(row[spec.label], expected.faces[name])


@pytest.mark.parametrize(
    "photo, title, message",
    [
        ("text", "Not a usable image", "could not be read as an image"),
        ("cat", "No face found", "No face was found"),
        ("no_eyes", "No eye found", "no eye"),
        ("empty", "Not a usable image", "empty.jpg is empty"),  # a file name keeps its case
    ],
)
def test_bad_input_gives_api_clients_a_clear_error_and_the_app_keeps_serving(client, photos, photo, title, message):
    with pytest.raises(AppError) as error:
        generate(client, photos[photo])
    assert error.value.title == title
    assert message in error.value.message
    out = generate(client, photos["astronaut"])  # the next request is served as usual
    assert len(out["details"]["tiles"]) == 2


def test_an_invalid_choice_of_eye_is_refused(client, photos):
    with pytest.raises(AppError) as error:
        generate(client, photos["astronaut"], eyes="third")
    assert error.value.title == "Not a valid choice" and "both, left, right" in error.value.message


@pytest.fixture(scope="module")
def one_eye_photo(tmp_path_factory) -> Path:
    """The astronaut with only her left eye detectable."""
    x, y, w, h = detect(ASTRONAUT).face
    one_eye = blur(ASTRONAUT, (x + w // 2, y + h // 6, x + w, y + h // 2), 41)
    assert len(detect(one_eye).eyes) == 1, "test photo: exactly one eye should stay detectable"
    path = tmp_path_factory.mktemp("one-eye") / "one-eye.png"
    Image.fromarray(one_eye).save(path)
    return path


def test_a_missing_eye_is_named(client, one_eye_photo):
    """With only the photo's left eye detectable, asking for the right one says so."""
    with pytest.raises(AppError, match="right eye was not found"):
        generate(client, one_eye_photo, eyes="right")
    assert generate(client, one_eye_photo, eyes="left")["details"]["rows"] == ["left eye"]


def test_eye_crop_api(client, reference, tmp_path):
    eye = reference(ASTRONAUT).eyes[0].eye
    Image.fromarray(eye).save(tmp_path / "eye.png")
    comparison, details, status = client.predict(handle_file(str(tmp_path / "eye.png")), api_name="/generate_from_eye")
    assert details["columns"] == [EYE_LABEL, *model_columns()] and details["crop_size"] == [EYE_SIZE, EYE_SIZE]
    (row,) = tiles(comparison, details)
    faces = reference.generate([eye])
    eye_tile_holds(row[EYE_LABEL], eye)
    for name, spec in REQUIRED.items():
        np.testing.assert_array_equal(row[spec.label], faces[name][0])
    # A larger, non-square crop is resized to what the models take, and the person is told.
    Image.fromarray(ASTRONAUT[80:130, 180:270]).save(tmp_path / "wide.png")
    comparison, details, status = client.predict(handle_file(str(tmp_path / "wide.png")), api_name="/generate_from_eye")
    (row,) = tiles(comparison, details)
    assert row[EYE_LABEL].shape == (FACE_SIZE, FACE_SIZE, 3) and "90x50" in status and "square" in status
    # Eye crops smaller than the 32x32 the models take are fine (the detector's own boxes often are); tiny ones are not.
    Image.fromarray(ASTRONAUT[88:108, 190:210]).save(tmp_path / "small.png")
    _, details, status = client.predict(handle_file(str(tmp_path / "small.png")), api_name="/generate_from_eye")
    assert details["crop_size"] == [20, 20] and "20x20" in status
    Image.fromarray(ASTRONAUT[88:92, 190:194]).save(tmp_path / "tiny.png")
    with pytest.raises(AppError, match="4x4 pixels"):
        client.predict(handle_file(str(tmp_path / "tiny.png")), api_name="/generate_from_eye")


def test_each_request_logs_one_line_without_file_names(client, photos, tmp_path, caplog):
    selfie = tmp_path / "selfie-4f1c.png"
    Image.open(photos["astronaut"]).save(selfie)
    caplog.set_level(logging.INFO)
    generate(client, selfie)
    with pytest.raises(AppError):
        generate(client, photos["cat"])
    with pytest.raises(AppError):
        generate(client, photos["empty"])
    lines = [r.getMessage() for r in caplog.records if r.name == "eye2face.app"]
    pattern = r"endpoint=generate outcome=(\S+) ms=\d+ queue_wait_ms=\d+"
    assert [m.group(1) for line in lines if (m := re.fullmatch(pattern, line))] == \
        ["ok", "error:no_face", "error:invalid_image"], lines
    server_side = [r.getMessage() for r in caplog.records if not r.name.startswith("httpx")]  # httpx: the client
    for name in ("selfie-4f1c", "chelsea", "cat.png", "empty.jpg", str(tmp_path)):
        assert not [m for m in server_side if name in m], f"{name} in the log"


def test_a_full_queue_is_a_clear_message(weights, photos, monkeypatch):
    """Beyond the queue's size, requests are refused with Gradio's "queue is full" message, not left hanging."""
    slow = Handlers.photo_result

    def photo_result(self, *args):
        time.sleep(0.5)  # hold the one running request, so that the queue fills
        return slow(self, *args)

    monkeypatch.setattr(Handlers, "photo_result", photo_result)
    with served_app(weights, queue_size=2) as url:
        clients = [Client(url, verbose=False, analytics_enabled=False, download_files=False) for _ in range(8)]
        results, barrier = [None] * 8, threading.Barrier(8)

        def one(i):
            barrier.wait()
            try:
                clients[i].predict(handle_file(str(photos["astronaut"])), "both", api_name="/generate")
                results[i] = "ok"
            except Exception as e:
                results[i] = str(e)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    refused = [r for r in results if r != "ok"]
    assert refused and len(refused) < 8, results
    assert all("queue is full" in r.lower() for r in refused), refused


# ---------------------------------------------------------------------------------------------------- the page


def test_the_page_shows_the_result_the_photo_with_its_boxes_and_enables_the_download(handlers, reference, photos):
    shown, annotated, download, status = handlers.generate_page(str(photos["astronaut"]))
    expected = reference(str(photos["astronaut"]))
    np.testing.assert_array_equal(read_png(annotated), expected.annotated())
    assert not np.array_equal(read_png(annotated), ASTRONAUT), "the boxes are not drawn"
    comparison = photo_comparison(expected)
    assert shown == comparison.html() and download.interactive is True
    np.testing.assert_array_equal(read_png(download.value["path"]), comparison.image())  # the labels drawn in
    assert "Face found" in status and "as analysed, 512x512." in status


def test_the_page_shows_the_labels_as_text_and_each_tile_as_a_lossless_image(handlers, reference, photos):
    shown = handlers.generate_page(str(photos["astronaut"]))[0]
    comparison = photo_comparison(reference(str(photos["astronaut"])))
    labels = re.findall(r'<div class="e2f-label">([^<]*)</div>', shown)
    assert labels == comparison.columns and comparison.row_names == ["left eye", "right eye"]
    images = re.findall(r'<img alt="([^"]*)" title="[^"]*" src="data:image/png;base64,([^"]*)"', shown)
    tiles = [(label, tile) for _, row in comparison.rows for label, tile in zip(comparison.columns, row) if tile is not None]
    assert [label for label, _ in images] == [label for label, _ in tiles]
    for (_, data), (_, tile) in zip(images, tiles):
        np.testing.assert_array_equal(read_png(io.BytesIO(base64.b64decode(data))), tile)


def test_the_status_says_when_positions_refer_to_a_scaled_down_copy(handlers, tmp_path):
    Image.fromarray(ASTRONAUT).resize((1600, 1600), Image.BICUBIC).save(tmp_path / "large.png")
    _, details, status = handlers.generate(str(tmp_path / "large.png"))
    assert details["photo_size"] == [1024, 1024]
    assert "as analysed, 1024x1024 (larger photos are scaled down to 1024 px" in status


@pytest.mark.parametrize("photo, title", [("cat", "No face found"), ("text", "Not a usable image"),
                                          ("no_eyes", "No eye found"), (None, "Nothing to work on")])
def test_the_page_keeps_a_refusal_in_the_status_and_clears_the_outputs(handlers, photos, photo, title):
    comparison, annotated, download, status = handlers.generate_page(str(photos[photo]) if photo else None)
    assert comparison == "" and annotated is None
    assert download.value is None and download.interactive is False
    assert title in status and len(status) > len(title) + 20, status


def test_the_eye_crop_page_replaces_an_earlier_result_with_the_refusal(handlers, tmp_path):
    Image.fromarray(ASTRONAUT[87:115, 188:216]).save(tmp_path / "eye.png")
    comparison, download, status = handlers.generate_from_eye_page(str(tmp_path / "eye.png"))
    assert comparison and download.interactive and "28x28" in status
    Image.fromarray(ASTRONAUT[88:92, 190:194]).save(tmp_path / "tiny.png")
    comparison, download, status = handlers.generate_from_eye_page(str(tmp_path / "tiny.png"))
    assert comparison == "" and download.interactive is False
    assert "Not a usable image" in status and "4x4" in status and "28x28" not in status


def test_live_endpoint_frame_by_frame(handlers, reference):
    """The webcam stream: a frame with a face gives the comparison; one without keeps the last result, if any."""
    _, _, status, has_result = handlers.live(data_url_frame(skimage.data.chelsea()), "both", False)
    assert not has_result and "No face in the current frame" in status and "earlier frame" not in status
    assert "photo" not in status
    annotated, comparison, status, has_result = handlers.live(data_url_frame(ASTRONAUT), "both", has_result)
    expected = reference(ASTRONAUT)
    np.testing.assert_array_equal(read_png(annotated), expected.annotated())
    assert comparison == photo_comparison(expected).html()
    assert has_result and "left eye and right eye" in status
    annotated, comparison, status, has_result = handlers.live(data_url_frame(skimage.data.chelsea()), "both", has_result)
    assert annotated == gr.skip() and comparison == gr.skip() and has_result
    assert "No face in the current frame" in status and "earlier frame" in status


def data_url_frame(rgb: np.ndarray) -> dict:
    """A webcam frame as the browser streams it: an inline data: URL."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return {"url": "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode(), "path": None}


def test_adding_a_model_is_one_entry_in_models(weights, tmp_path, photos, monkeypatch):
    """A third model: one MODELS entry and its weights; the comparison gains a column, nothing else changes."""
    for spec in REQUIRED.values():
        (tmp_path / spec.folder).symlink_to(weights / spec.folder)
    third = make_model(tmp_path / "eye2face-third", "third", seed=5)
    monkeypatch.setitem(MODELS, "third", ModelSpec("third model", "EYE2FACE_THIRD_MODEL", "eye2face-third"))
    handlers = Handlers(*load_pipeline(env={}, weights_dir=tmp_path))
    comparison, details, _ = handlers.generate(str(photos["astronaut"]))
    assert details["columns"] == [EYE_LABEL, *model_columns(), "third model", "real face"]
    result = EyeToFacePipeline({"third": third})(str(photos["astronaut"]))
    for row, r in zip(tiles(comparison, details), result.eyes, strict=True):
        np.testing.assert_array_equal(row["third model"], r.faces["third"])
    assert "third model" in weights_markdown(handlers.sources)


def test_messages_read_as_sentences():
    assert sentence("no face was found: use a photo") == "No face was found: use a photo."
    assert sentence("empty.jpg is empty (0 bytes)") == "empty.jpg is empty (0 bytes)."
    long = "First sentence. " * 10 + "Second one, " + "very " * 200 + "long."
    cut = whole_sentences(long, limit=600)
    assert cut.endswith("First sentence. [...]") and len(cut) < 600


# --------------------------------------------------------------- the optional models: GAN presets, the two-eye model

OPTIONAL = [name for name, spec in MODELS.items() if spec.optional]
GANS = [name for name in OPTIONAL if "GAN" in MODELS[name].label]  # wgan-gp, feature-gan: added on request
DEFAULT = [name for name, spec in MODELS.items() if spec.default]  # compared when a request names no models
(TWO_EYES,) = [name for name, spec in MODELS.items() if spec.eyes == 2]


def label(name: str) -> str:
    return MODELS[name].label


@pytest.fixture(scope="module")
def all_weights(tmp_path_factory) -> Path:
    """Random weights for every model of MODELS, the optional ones included."""
    return make_weights(tmp_path_factory.mktemp("all-weights"), optional=True)


@pytest.fixture(scope="module")
def all_reference(all_weights) -> EyeToFacePipeline:
    return EyeToFacePipeline.from_pretrained({name: str(all_weights / spec.folder) for name, spec in MODELS.items()})


@pytest.fixture(scope="module")
def all_handlers(all_weights):
    return Handlers(*load_pipeline(env={}, weights_dir=all_weights))


@pytest.fixture(scope="module")
def all_url(all_weights):
    with served_app(all_weights) as url:
        yield url


@pytest.fixture(scope="module")
def all_client(all_url, tmp_path_factory) -> Client:
    return new_client(all_url, tmp_path_factory)


def blank(tile: np.ndarray) -> bool:
    return bool((tile == 255).all())


def eye_pair_holds(tile: np.ndarray, left: np.ndarray, right: np.ndarray):
    """The "both eyes" row's eye tile: the two 32x32 crops side by side, centred vertically, each pixel a 2x2 block."""
    half, k = FACE_SIZE // 2, FACE_SIZE // 2 // EYE_SIZE
    expected = np.full((FACE_SIZE, FACE_SIZE, 3), 255, np.uint8)
    top = (FACE_SIZE - half) // 2
    expected[top : top + half, :half] = np.repeat(np.repeat(left, k, axis=0), k, axis=1)
    expected[top : top + half, half:] = np.repeat(np.repeat(right, k, axis=0), k, axis=1)
    np.testing.assert_array_equal(tile, expected)


def test_the_app_serves_the_extra_models_through_the_api(all_client, all_reference, photos, tmp_path):
    """The GAN models join the comparison when an API call names them, pixel for pixel the library's faces; a call
    that names no models gets the default comparison."""
    astronaut = handle_file(str(photos["astronaut"]))
    comparison, details, _ = all_client.predict(astronaut, "both", [*REQUIRED, *GANS], api_name="/generate")
    expected = all_reference(str(photos["astronaut"]))
    assert details["models"] == [*REQUIRED, *GANS] and details["rows"] == ["left eye", "right eye"]
    assert details["columns"] == [EYE_LABEL, *model_columns(), "WGAN-GP", "feature + GAN", "real face"]
    rows = tiles(comparison, details)
    for row, r in zip(rows, expected.eyes, strict=True):
        eye_tile_holds(row[EYE_LABEL], r.eye)
        for name in details["models"]:
            np.testing.assert_array_equal(row[label(name)], r.faces[name], err_msg=f"{r.side} eye, {name} model")
    faces = [row[label(name)].tobytes() for row in rows for name in details["models"]]
    assert len(set(faces)) == len(faces), "two models or two eyes gave the same face"

    comparison, details, _ = all_client.predict(astronaut, "right", ["feature-gan"], api_name="/generate")
    assert details["columns"] == [EYE_LABEL, "feature + GAN", "real face"] and details["rows"] == ["right eye"]
    (row,) = tiles(comparison, details)
    (right,) = all_reference(str(photos["astronaut"]), eyes="right").eyes  # the same batch as the app's: one crop
    np.testing.assert_array_equal(row["feature + GAN"], right.faces["feature-gan"])

    _, details, _ = all_client.predict(astronaut, "both", api_name="/generate")  # the default models, as on the page
    assert details["models"] == DEFAULT and details["rows"] == ["left eye", "right eye", "both eyes"]
    assert details["columns"] == [EYE_LABEL, *map(label, DEFAULT), "real face"]

    eye = expected.eyes[0].eye
    Image.fromarray(eye).save(tmp_path / "eye.png")
    comparison, details, _ = all_client.predict(handle_file(str(tmp_path / "eye.png")), models=GANS,
                                                api_name="/generate_from_eye")
    assert details["columns"] == [EYE_LABEL, "WGAN-GP", "feature + GAN"]
    (row,) = tiles(comparison, details)
    faces = all_reference.generate([eye])
    for name in GANS:
        np.testing.assert_array_equal(row[label(name)], faces[name][0])


def test_the_api_returns_the_two_eye_face_for_the_astronaut_photo(all_client, all_reference, photos):
    """A last row, "both eyes": the two crops the two-eye model was given and its face; blank where the one-eye
    models have nothing for it, as the two-eye model has nothing for the per-eye rows."""
    astronaut = handle_file(str(photos["astronaut"]))
    comparison, details, status = all_client.predict(astronaut, "both", [*REQUIRED, TWO_EYES], api_name="/generate")
    expected = all_reference(str(photos["astronaut"]))
    assert set(expected.both_eyes) == {TWO_EYES}
    assert details["rows"] == ["left eye", "right eye", "both eyes"] and details["models"] == [*REQUIRED, TWO_EYES]
    assert details["columns"] == [EYE_LABEL, *model_columns(), label(TWO_EYES), "real face"]
    left, right, both = tiles(comparison, details)
    np.testing.assert_array_equal(both[label(TWO_EYES)], expected.both_eyes[TWO_EYES])
    eye_pair_holds(both[EYE_LABEL], expected.eyes[0].eye, expected.eyes[1].eye)
    np.testing.assert_array_equal(both["real face"], expected.real_face)
    assert all(blank(both[column]) for column in model_columns())
    for row, r in ((left, expected.eyes[0]), (right, expected.eyes[1])):
        assert blank(row[label(TWO_EYES)])
        for name in REQUIRED:
            np.testing.assert_array_equal(row[label(name)], r.faces[name])
    one_eye_faces = [row[column].tobytes() for row in (left, right) for column in model_columns()]
    assert both[label(TWO_EYES)].tobytes() not in one_eye_faces
    assert "Both eyes, one face" in status

    # One eye chosen: its row, and the two-eye face, still from both crops.
    comparison, details, _ = all_client.predict(astronaut, "right", [TWO_EYES], api_name="/generate")
    assert details["rows"] == ["right eye", "both eyes"]
    assert details["columns"] == [EYE_LABEL, label(TWO_EYES), "real face"]
    right, both = tiles(comparison, details)
    eye_tile_holds(right[EYE_LABEL], expected.eyes[1].eye) and blank(right[label(TWO_EYES)])
    eye_pair_holds(both[EYE_LABEL], expected.eyes[0].eye, expected.eyes[1].eye)
    np.testing.assert_array_equal(both[label(TWO_EYES)], expected.both_eyes[TWO_EYES])


def test_when_only_one_eye_is_found_the_page_says_why_there_is_no_two_eye_face(all_handlers, one_eye_photo):
    _, _, download, status = all_handlers.generate_page(str(one_eye_photo))  # the default models
    assert "only the left eye was found, so there is no two-eye face: it needs both eyes" in status
    one_eye_models = [name for name in DEFAULT if MODELS[name].eyes == 1]
    columns = 2 + len(one_eye_models)
    assert read_png(download.value["path"]).shape[:2] == (HEADER + CAPTION + TILE, columns * TILE + (columns - 1) * GAP), \
        "one row (the left eye) and no two-eye column: the eye crop, the one-eye models, the real face"
    _, details, status = all_handlers.generate(str(one_eye_photo), "both", [TWO_EYES, "feature"])
    assert details["rows"] == ["left eye"] and label(TWO_EYES) not in details["columns"]
    assert any("no two-eye face" in note for note in details["notes"]) and "no two-eye face" in status


def test_with_one_eye_chosen_the_status_and_the_boxes_name_both_crops_the_two_eye_model_used(all_handlers, photos):
    result = all_handlers.photo_result(str(photos["astronaut"]), "left", ["feature", TWO_EYES])
    (left,) = result.eyes
    right = next(box for box in result.both_eyes_boxes if box != left.box)
    status = all_handlers.photo_status(result)
    x, y, w, h = right
    assert "eye crops used:** left eye at" in status and f"also used the right eye at x={x}, y={y} ({w}x{h} px)" in status
    drawn = result.annotated() != result.photo
    assert drawn[y, x : x + w].any(), "the right eye's box, used by the two-eye model, is not drawn"
    result = all_handlers.photo_result(str(photos["astronaut"]), "left", ["feature"])
    assert "right eye" not in all_handlers.photo_status(result)
    assert not (result.annotated() != result.photo)[y, x : x + w].any(), "a box drawn for an eye nothing used"


def test_every_endpoint_takes_the_same_models_input_so_defaults_agree(all_url):
    config = json.load(urllib.request.urlopen(all_url + "config", timeout=10))
    by_id = {c["id"]: c for c in config["components"]}
    models_inputs = {}
    for dep in config["dependencies"]:
        if dep.get("api_name") in ("generate", "generate_from_eye", "live"):
            (choice,) = [i for i in dep["inputs"] if by_id[i]["type"] == "checkboxgroup"]
            models_inputs[dep["api_name"]] = choice
    assert len(models_inputs) == 3 and len(set(models_inputs.values())) == 1, models_inputs
    assert by_id[models_inputs["live"]]["props"]["value"] == DEFAULT


def test_the_eye_crop_api_takes_two_crops_for_the_two_eye_model(all_client, all_reference, tmp_path):
    (lx, ly, lw, lh), (rx, ry, rw, rh) = detect(ASTRONAUT).eyes
    left, right = ASTRONAUT[ly : ly + lh, lx : lx + lw], ASTRONAUT[ry : ry + rh, rx : rx + rw]  # 28x28, 27x27
    Image.fromarray(left).save(tmp_path / "left.png")
    Image.fromarray(right).save(tmp_path / "right.png")
    left_file, right_file = handle_file(str(tmp_path / "left.png")), handle_file(str(tmp_path / "right.png"))
    comparison, details, status = all_client.predict(left_file, right_file, ["feature", TWO_EYES],
                                                     api_name="/generate_from_eye")
    assert details["rows"] == ["left eye", "right eye", "both eyes"]
    assert details["columns"] == [EYE_LABEL, label("feature"), label(TWO_EYES)]
    assert details["crop_sizes"] == [[lw, lh], [rw, rh]] and f"{lw}x{lh}" in status and f"{rw}x{rh}" in status
    rows = tiles(comparison, details)
    faces = all_reference.generate([left, right])
    as_seen = [resize_eye(left), resize_eye(right)]
    for i, row in enumerate(rows[:2]):
        eye_tile_holds(row[EYE_LABEL], as_seen[i])
        np.testing.assert_array_equal(row[label("feature")], faces["feature"][i])
        assert blank(row[label(TWO_EYES)])
    np.testing.assert_array_equal(rows[2][label(TWO_EYES)], all_reference.generate_from_both_eyes(left, right)[TWO_EYES])
    eye_pair_holds(rows[2][EYE_LABEL], *as_seen)
    assert blank(rows[2][label("feature")])

    # One crop: the two-eye model alone cannot make a face; beside a one-eye model, the status says what to add.
    with pytest.raises(AppError) as error:
        all_client.predict(left_file, None, [TWO_EYES], api_name="/generate_from_eye")
    assert error.value.title == "Two eye crops needed" and "other eye" in error.value.message
    _, details, status = all_client.predict(left_file, models=["l1", TWO_EYES], api_name="/generate_from_eye")
    assert details["rows"] == ["eye crop"] and details["columns"] == [EYE_LABEL, label("l1")]
    assert "The two-eye model needs both eyes" in status


def test_the_page_compares_its_default_models_and_the_ones_a_person_adds(all_handlers, all_reference, photos):
    """The page: the default models (the research's pair and the two-eye row) unless the person chooses otherwise, in
    all three tabs."""
    photo = str(photos["astronaut"])
    assert all_handlers.default_models == DEFAULT
    default = photo_comparison(EyeToFacePipeline({n: all_reference.models[n] for n in all_handlers.default_models})(photo))
    shown, _, download, status = all_handlers.generate_page(photo)
    assert shown == default.html()
    columns = 2 + len(DEFAULT)  # the eye crop, each default model, the real face
    assert read_png(download.value["path"]).shape[:2] == (HEADER + 3 * (CAPTION + TILE), columns * TILE + (columns - 1) * GAP)
    _, _, download, _ = all_handlers.generate_page(photo, "both", ["l1", "wgan-gp"])
    assert read_png(download.value["path"]).shape[:2] == (HEADER + 2 * (CAPTION + TILE), 4 * TILE + 3 * GAP)
    shown, _, download, status = all_handlers.generate_page(photo, "both", [])
    assert shown == "" and not download.interactive and "No model chosen" in status

    _, shown, status, _ = all_handlers.live(data_url_frame(ASTRONAUT), "both", False, all_handlers.default_models)
    assert shown == default.html()
    assert "one face from both eyes" in status
    _, _, status, has_result = all_handlers.live(data_url_frame(ASTRONAUT), "both", False, [])
    assert not has_result and "Choose at least one model" in status

    left, right = (str(ROOT / "examples" / "astronaut-eye-crop.png"),) * 2
    _, _, status = all_handlers.generate_from_eye_page(left, right)
    assert "Each crop got its own faces" not in status
    _, _, status = all_handlers.generate_from_eye_page(left, right, ["feature"])
    assert "the two-eye model (one face from both eyes) is not chosen" in status


def page_config(url: str) -> dict[str, dict]:
    """The served page's components by elem_id: their properties, as the browser gets them."""
    config = json.load(urllib.request.urlopen(url + "config", timeout=10))
    return {c["props"]["elem_id"]: c["props"] for c in config["components"] if c.get("props", {}).get("elem_id")}


def test_the_page_says_what_each_model_is_and_which_optional_ones_are_not_installed(url, all_url):
    page = page_config(url)  # the required models only, as weights/ is today
    assert "**Not installed** (optional" in page["weights"]["value"]
    not_installed = page["weights"]["value"].split("**Not installed**")[1]
    assert "\n" not in not_installed.strip(), "one line"
    assert all(label(name) in not_installed for name in OPTIONAL) and not any(label(n) in not_installed for n in REQUIRED)
    assert [line.split("**")[1] for line in page["models"]["value"].splitlines()[1:]] == model_columns()
    assert page["models-to-compare"]["visible"] is False, "nothing to add to the research's pair"

    page = page_config(all_url)
    assert "Not installed" not in page["weights"]["value"]
    lines = page["models"]["value"].splitlines()[1:]
    assert [line.split("**")[1] for line in lines] == [label(name) for name in MODELS]
    assert all(MODELS[name].about in line and len(line) < 200 for name, line in zip(MODELS, lines))
    choice = page["models-to-compare"]
    assert choice["visible"] is not False and choice["value"] == DEFAULT
    assert [value for _, value in choice["choices"]] == list(MODELS)


@pytest.mark.parametrize("models, title, message", [
    (["wgan-gp"], "Model not installed",
     "wgan-gp (WGAN-GP) is not installed on this server; the installed models are l1, feature."),
    (["l1", "nonsense"], "Not a valid choice", "There is no model 'nonsense': the models are l1, feature."),
    ([], "No model chosen", "Choose at least one model"),
])
def test_a_model_the_app_cannot_serve_is_refused_clearly(client, photos, models, title, message):
    with pytest.raises(AppError) as error:
        client.predict(handle_file(str(photos["astronaut"])), "both", models, api_name="/generate")
    assert error.value.title == title and message in error.value.message


def test_optional_models_load_when_there_and_are_left_out_when_not(weights, all_weights, tmp_path):
    pipeline, sources = load_pipeline(env={}, weights_dir=weights)
    handlers = Handlers(pipeline, sources)
    assert list(pipeline.models) == list(REQUIRED) and handlers.installed == list(REQUIRED)
    assert handlers.missing == {name: NOT_INSTALLED for name in OPTIONAL}
    # Named by their environment variables but unusable (missing; a one-eye model in the two-eye model's place):
    # still left out, and the page says why.
    env = {"EYE2FACE_WGAN_GP_MODEL": str(tmp_path / "nowhere"), "EYE2FACE_TWO_EYES_MODEL": str(weights / "eye2face-l1")}
    pipeline, sources = load_pipeline(env=env, weights_dir=weights)
    assert list(pipeline.models) == list(REQUIRED)
    assert "nowhere" in sources["wgan-gp"] and "could not be loaded" in sources["wgan-gp"]
    assert "it is a one-eye model" in sources[TWO_EYES]
    handlers = Handlers(pipeline, sources)
    line = weights_markdown(handlers.sources, handlers.missing)
    assert "WGAN-GP (`" in line and "nowhere" in line and "one-eye model" in line
    # Named by its environment variable and usable: in, and the page says where from.
    env = {"EYE2FACE_FEATURE_GAN_MODEL": str(all_weights / "eye2face-feature-gan")}
    pipeline, sources = load_pipeline(env=env, weights_dir=weights)
    assert list(pipeline.models) == [*REQUIRED, "feature-gan"] and "EYE2FACE_FEATURE_GAN_MODEL" in sources["feature-gan"]
    # All bundled: all in, each with the preset its entry expects (the two-eye model's is "feature-id"): no warning.
    pipeline, sources = load_pipeline(env={}, weights_dir=all_weights)
    assert list(pipeline.models) == list(MODELS) and not [s for s in sources.values() if "warning" in s]
    assert pipeline.models[TWO_EYES].eyes == 2 and all(pipeline.models[n].eyes == 1 for n in (*REQUIRED, *GANS))
    # A two-eye model in a one-eye model's place is refused: the bundled one serves, and the page says why.
    _, sources = load_pipeline(env={"EYE2FACE_L1_MODEL": str(all_weights / MODELS[TWO_EYES].folder)}, weights_dir=weights)
    assert sources["l1"].startswith("bundled") and "it is a two-eye model" in sources["l1"]


# ------------------------------------------------------------------------------------------------ loading models


def test_models_load_from_the_bundled_folders_by_default(weights, reference):
    pipeline, sources = load_pipeline(env={}, weights_dir=weights)
    for name, spec in REQUIRED.items():
        assert sources[name].startswith("bundled") and spec.folder in sources[name]
        for a, b in zip(pipeline.models[name].state_dict().values(), reference.models[name].state_dict().values()):
            assert torch_equal(a, b)


def test_an_environment_variable_names_another_model(weights, tmp_path):
    other = make_model(tmp_path / "other-l1", "l1", seed=7)
    pipeline, sources = load_pipeline(env={"EYE2FACE_L1_MODEL": str(tmp_path / "other-l1")}, weights_dir=weights)
    assert "other-l1" in sources["l1"] and sources["feature"].startswith("bundled")
    assert torch_equal(pipeline.models["l1"].to_rgb.weight, other.to_rgb.weight)
    # A model whose config says it was trained with the other loss is loaded, with a warning in the UI.
    make_model(tmp_path / "actually-feature", "feature", seed=8)
    _, sources = load_pipeline(env={"EYE2FACE_L1_MODEL": str(tmp_path / "actually-feature")}, weights_dir=weights)
    assert "warning" in sources["l1"] and "'feature'" in sources["l1"]


def test_offline_falls_back_to_the_bundled_weights_without_a_request(weights, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", lambda *a, **k: pytest.fail("a request while offline"))
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", _cache_only(huggingface_hub.hf_hub_download))
    _, sources = load_pipeline(env={"EYE2FACE_L1_MODEL": "eye2face/not-cached-here"}, weights_dir=weights)
    assert sources["l1"].startswith("bundled") and "eye2face/not-cached-here" in sources["l1"]


def _cache_only(download):
    def wrapper(*args, **kwargs):
        assert kwargs.get("local_files_only"), "a download was attempted while offline"
        return download(*args, **kwargs)

    return wrapper


def test_no_model_anywhere_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="EYE2FACE_L1_MODEL"):
        load_pipeline(env={}, weights_dir=tmp_path)


def test_bundled_weights_of_the_repository_load():
    if not (ROOT / "weights" / "eye2face-l1" / "model.safetensors").is_file():
        pytest.skip("weights/eye2face-l1 is not in this checkout yet (the trained weights are committed separately)")
    pipeline, sources = load_pipeline(env={}, weights_dir=ROOT / "weights")
    bundled = [name for name, spec in MODELS.items() if (ROOT / "weights" / spec.folder / "model.safetensors").is_file()]
    assert list(pipeline.models) == bundled, sources  # every bundled folder loads,
    assert not [s for s in sources.values() if "warning" in s], sources  # with the preset its entry expects
    faces = pipeline.generate([ASTRONAUT[87:115, 188:216]])
    assert set(REQUIRED) <= set(faces) and all(faces[name][0].shape == (FACE_SIZE, FACE_SIZE, 3) for name in faces)


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


# ---------------------------------------------------------------------------------------------------- examples


def test_examples_are_redistributable_images_and_work(handlers):
    """Every example is a scikit-image photo (public domain / CC0) or a crop of one: never CelebA."""
    examples = ROOT / "examples"
    images = sorted(p.name for p in examples.iterdir() if p.suffix.lower() not in {".md", ".py"})
    assert images == ["astronaut-eye-crop.png", "astronaut.png", "chelsea-the-cat.png"], "document new examples' licence"
    np.testing.assert_array_equal(np.asarray(Image.open(examples / "astronaut.png").convert("RGB")), ASTRONAUT)
    np.testing.assert_array_equal(np.asarray(Image.open(examples / "chelsea-the-cat.png").convert("RGB")),
                                  skimage.data.chelsea())
    eye = np.asarray(Image.open(examples / "astronaut-eye-crop.png").convert("RGB"))
    np.testing.assert_array_equal(eye, crop(ASTRONAUT, detect(ASTRONAUT).eyes[0], EYE_SIZE))

    _, details, _ = handlers.generate(str(examples / "astronaut.png"), "both")
    assert details["rows"] == ["left eye", "right eye"]
    with pytest.raises(gr.Error, match="No face"):  # the cat example shows what happens without a face
        handlers.generate(str(examples / "chelsea-the-cat.png"), "both")
    assert handlers.generate_from_eye(str(examples / "astronaut-eye-crop.png"))[1]["crop_size"] == [EYE_SIZE, EYE_SIZE]


# ----------------------------------------------------------------------------------- `python app.py`, as a Space


@pytest.fixture(scope="module")
def space(weights, tmp_path_factory):
    """`python app.py` as a Space runs it: Hub repos from the environment (a local fake Hub); one is down."""
    tmp = tmp_path_factory.mktemp("space")
    make_model(tmp / "hub-l1", "l1", seed=3)
    with FakeHub({"eye2face/l1-test": tmp / "hub-l1"}, failing=("eye2face/feature-down",)) as hub:
        env = clean_env(
            GRADIO_TEMP_DIR=str(tmp / "gradio"), HF_ENDPOINT=hub.url, HF_HOME=str(tmp / "hf"),
            EYE2FACE_WEIGHTS_DIR=str(weights), EYE2FACE_CACHE_SECONDS="8",
            EYE2FACE_L1_MODEL="eye2face/l1-test", EYE2FACE_FEATURE_MODEL="eye2face/feature-down",
        )
        with app_process(env, tmp / "app.log", start_timeout=180) as server:
            yield {"url": server.url, "port": server.port, "proc": server.proc, "hub": hub, "tmp": tmp}


def test_python_app_py_serves_on_loopback_only(space):
    import psutil

    listening = [c.laddr for c in psutil.Process(space["proc"].pid).net_connections("inet") if c.status == "LISTEN"]
    assert listening and all(addr.ip == "127.0.0.1" for addr in listening), listening
    assert space["port"] in {addr.port for addr in listening}


def test_python_app_py_has_analytics_off(space):
    config = json.load(urllib.request.urlopen(space["url"] + "config", timeout=10))
    assert config["analytics_enabled"] is False


def test_python_app_py_loads_hub_models_and_falls_back_fast(space, weights, photos, tmp_path):
    config = json.load(urllib.request.urlopen(space["url"] + "config", timeout=10))
    shown = json.dumps(config)
    assert "Hub repo `eye2face/l1-test`" in shown, "the UI should say the L1 model came from the Hub"
    assert "bundled `" in shown and "eye2face/feature-down" in shown, "the UI should say why the bundled one is used"
    reason = re.search(r"`eye2face/feature-down` from EYE2FACE_FEATURE_MODEL could not be loaded \((.+?)\)\.(?:\\n|\")", shown)
    assert reason and reason.group(1).rstrip().endswith((".", ")", "]")), "the reason is cut mid-sentence"
    assert space["hub"].requests_to("eye2face/feature-down") == 1, "an unreachable repo must fail at once, not be retried"
    client = Client(space["url"], verbose=False, analytics_enabled=False, download_files=str(tmp_path))
    out = generate(client, photos["astronaut"])
    expected = EyeToFacePipeline(
        {"l1": EyeToFace.from_pretrained(str(space["tmp"] / "hub-l1")),
         "feature": EyeToFace.from_pretrained(str(weights / "eye2face-feature"))}
    )(str(photos["astronaut"]))
    left = tiles(out["comparison"], out["details"])[0]
    np.testing.assert_array_equal(left[MODELS["l1"].label], expected.eyes[0].faces["l1"])
    np.testing.assert_array_equal(left[MODELS["feature"].label], expected.eyes[0].faces["feature"])


def test_python_app_py_does_not_keep_uploaded_photos(space, tmp_path):
    selfie = tmp_path / "selfie-4f1c.png"
    Image.fromarray(ASTRONAUT).save(selfie)
    client = Client(space["url"], verbose=False, analytics_enabled=False, download_files=str(tmp_path / "dl"))
    generate(client, selfie)
    cache = space["tmp"] / "gradio"

    def kept():
        return [p for p in cache.rglob("*") if p.is_file() and p.name == selfie.name]

    assert kept(), f"the upload should land in GRADIO_TEMP_DIR ({cache}) while it is used"
    deadline = time.monotonic() + 90
    while kept() and time.monotonic() < deadline:
        time.sleep(1)
    assert not kept(), "the uploaded photo is still on the server"
