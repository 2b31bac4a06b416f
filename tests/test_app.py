"""The Gradio app as a program uses it: gradio_client against the app served on loopback, and `python app.py`."""

from __future__ import annotations

import json
import os
import sys
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

from tests.app_fixtures import (
    ROOT, FakeHub, blur, free_port, import_app, make_model, make_weights, read_png, running_app, served_app,
)
from eye2face_hub import EyeToFace, EyeToFacePipeline
from eye2face_hub.data import EYE_SIZE, FACE_SIZE, crop, detect
from eye2face_hub.pipeline import comparison_grid

ASTRONAUT = skimage.data.astronaut()
GRID_LABELS = ["eye crop", "L1 loss", "feature loss", "real face"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return make_weights(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="module")
def reference(weights) -> EyeToFacePipeline:
    """The library pipeline on the same weights: what the app must return, pixel for pixel."""
    return EyeToFacePipeline.from_pretrained({name: str(weights / f"eye2face-{name}") for name in ("l1", "feature")})


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    """Test photos as files, as a person would upload them."""
    folder = tmp_path_factory.mktemp("photos")
    face_box = detect(ASTRONAUT).face
    x, y, w, h = face_box
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
    return paths


@pytest.fixture(scope="module")
def url(weights):
    """The app built on the test weights, served on loopback on a free port in this process."""
    with served_app(weights) as url:
        yield url


@pytest.fixture(scope="module")
def client(url, tmp_path_factory) -> Client:
    return Client(url, verbose=False, analytics_enabled=False, download_files=str(tmp_path_factory.mktemp("downloads")))


OUTPUTS = ["annotated", "left_eye", "left_l1", "left_feature", "right_eye", "right_l1", "right_feature", "real_face",
           "grid", "status"]


def generate(client: Client, photo: Path, eyes: str = "both") -> dict:
    return dict(zip(OUTPUTS, client.predict(handle_file(str(photo)), eyes, api_name="/generate"), strict=True))


def test_generate_api_returns_the_crops_and_both_faces(client, reference, photos):
    out = generate(client, photos["astronaut"])
    expected = reference(str(photos["astronaut"]), eyes="both")
    assert [r.side for r in expected.eyes] == ["left", "right"], "the astronaut photo should give both eyes"
    for r in expected.eyes:
        eye = read_png(out[f"{r.side}_eye"])
        assert eye.shape == (EYE_SIZE, EYE_SIZE, 3)
        np.testing.assert_array_equal(eye, r.eye)
        for model in ("l1", "feature"):
            face = read_png(out[f"{r.side}_{model}"])
            assert face.shape == (FACE_SIZE, FACE_SIZE, 3)
            np.testing.assert_array_equal(face, r.faces[model], err_msg=f"{r.side} eye, {model} model")
        assert not np.array_equal(read_png(out[f"{r.side}_l1"]), read_png(out[f"{r.side}_feature"]))
    assert not np.array_equal(read_png(out["left_l1"]), read_png(out["right_l1"])), "both eyes gave the same face"
    real = read_png(out["real_face"])
    assert real.shape == (FACE_SIZE, FACE_SIZE, 3)
    np.testing.assert_array_equal(real, expected.real_face)
    np.testing.assert_array_equal(read_png(out["annotated"]), expected.annotated())
    assert not np.array_equal(read_png(out["annotated"]), ASTRONAUT), "the boxes are not drawn"
    grid = comparison_grid(
        [[r.eye for r in expected.eyes], [r.faces["l1"] for r in expected.eyes],
         [r.faces["feature"] for r in expected.eyes], [expected.real_face] * 2],
        GRID_LABELS,
    )
    assert Path(out["grid"]).suffix == ".png"
    np.testing.assert_array_equal(read_png(out["grid"]), grid)
    assert "left eye" in out["status"] and "right eye" in out["status"]


@pytest.mark.parametrize("side", ["left", "right"])
def test_one_eye_only(client, reference, photos, side):
    out = generate(client, photos["astronaut"], eyes=side)
    (expected,) = reference(str(photos["astronaut"]), eyes=side).eyes
    other = {"left": "right", "right": "left"}[side]
    assert out[f"{other}_eye"] is None and out[f"{other}_l1"] is None and out[f"{other}_feature"] is None
    np.testing.assert_array_equal(read_png(out[f"{side}_eye"]), expected.eye)
    np.testing.assert_array_equal(read_png(out[f"{side}_l1"]), expected.faces["l1"])
    np.testing.assert_array_equal(read_png(out[f"{side}_feature"]), expected.faces["feature"])
    assert read_png(out["grid"]).shape[0] < read_png(generate(client, photos["astronaut"])["grid"]).shape[0]


@pytest.mark.parametrize(
    "photo, title, message",
    [
        ("text", "Not a usable image", "could not be read as an image"),
        ("cat", "No face found", "No face was found"),
        ("no_eyes", "No eye found", "no eye"),
    ],
)
def test_bad_input_gives_a_clear_error_and_the_app_keeps_serving(client, photos, photo, title, message):
    with pytest.raises(AppError) as error:
        generate(client, photos[photo])
    assert error.value.title == title
    assert message in error.value.message
    out = generate(client, photos["astronaut"])  # the next request is served as usual
    assert read_png(out["left_l1"]).shape == (FACE_SIZE, FACE_SIZE, 3)


def test_a_missing_eye_is_named(client, photos, tmp_path):
    """With only the photo's left eye detectable, asking for the right one says so."""
    x, y, w, h = detect(ASTRONAUT).face
    one_eye = blur(ASTRONAUT, (x + w // 2, y + h // 6, x + w, y + h // 2), 41)
    assert len(detect(one_eye).eyes) == 1, "test photo: exactly one eye should stay detectable"
    Image.fromarray(one_eye).save(tmp_path / "one-eye.png")
    with pytest.raises(AppError, match="right eye was not found"):
        generate(client, tmp_path / "one-eye.png", eyes="right")
    assert read_png(generate(client, tmp_path / "one-eye.png", eyes="left")["left_eye"]).shape == (EYE_SIZE, EYE_SIZE, 3)


def test_eye_crop_api(client, reference, tmp_path):
    eye = reference(ASTRONAUT).eyes[0].eye
    Image.fromarray(eye).save(tmp_path / "eye.png")
    crop_out, l1, feature, grid, status = client.predict(handle_file(str(tmp_path / "eye.png")),
                                                         api_name="/generate_from_eye")
    faces = reference.generate([eye])
    np.testing.assert_array_equal(read_png(crop_out), eye)
    np.testing.assert_array_equal(read_png(l1), faces["l1"][0])
    np.testing.assert_array_equal(read_png(feature), faces["feature"][0])
    np.testing.assert_array_equal(read_png(grid), comparison_grid([[eye], [faces["l1"][0]], [faces["feature"][0]]],
                                                                  GRID_LABELS[:3]))
    # A larger, non-square crop is resized to what the models take, and the person is told.
    Image.fromarray(np.asarray(Image.fromarray(ASTRONAUT[80:130, 180:270]))).save(tmp_path / "wide.png")
    crop_out, l1, _, _, status = client.predict(handle_file(str(tmp_path / "wide.png")), api_name="/generate_from_eye")
    assert read_png(crop_out).shape == (EYE_SIZE, EYE_SIZE, 3) and read_png(l1).shape == (FACE_SIZE, FACE_SIZE, 3)
    assert "90x50" in status and "square" in status
    # Eye crops smaller than the 32x32 the models take are fine (the detector's own boxes often are); tiny ones are not.
    Image.fromarray(ASTRONAUT[88:108, 190:210]).save(tmp_path / "small.png")
    crop_out, l1, _, _, status = client.predict(handle_file(str(tmp_path / "small.png")), api_name="/generate_from_eye")
    assert read_png(crop_out).shape == (EYE_SIZE, EYE_SIZE, 3) and "20x20" in status
    Image.fromarray(ASTRONAUT[88:92, 190:194]).save(tmp_path / "tiny.png")
    with pytest.raises(AppError, match="4x4 pixels"):
        client.predict(handle_file(str(tmp_path / "tiny.png")), api_name="/generate_from_eye")


def test_live_endpoint_frame_by_frame(weights):
    """The webcam stream handler: a frame with a face gives the grid; one without keeps the last result."""
    app = import_app()
    handlers = app.Handlers(*app.load_pipeline(env={}, weights_dir=weights))
    annotated, grid, status = handlers.live(data_url_frame(ASTRONAUT))
    assert annotated.shape == ASTRONAUT.shape and grid.shape[1] == 4 * FACE_SIZE
    assert "left eye and right eye" in status
    annotated, grid, status = handlers.live(data_url_frame(skimage.data.chelsea()))
    assert annotated == gr.skip() and grid == gr.skip() and "no face" in status.lower()


def data_url_frame(rgb: np.ndarray) -> dict:
    """A webcam frame as the browser streams it: an inline data: URL."""
    import base64
    import io

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return {"url": "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode(), "path": None}


# ------------------------------------------------------------------------------------------------ loading models


def test_models_load_from_the_bundled_folders_by_default(weights, reference):
    app = import_app()
    pipeline, sources = app.load_pipeline(env={}, weights_dir=weights)
    for name in ("l1", "feature"):
        assert sources[name].startswith("bundled") and f"eye2face-{name}" in sources[name]
        for a, b in zip(pipeline.models[name].state_dict().values(), reference.models[name].state_dict().values()):
            assert torch_equal(a, b)


def test_an_environment_variable_names_another_model(weights, tmp_path):
    app = import_app()
    other = make_model(tmp_path / "other-l1", "l1", seed=7)
    pipeline, sources = app.load_pipeline(env={"EYE2FACE_L1_MODEL": str(tmp_path / "other-l1")}, weights_dir=weights)
    assert "other-l1" in sources["l1"] and sources["feature"].startswith("bundled")
    assert torch_equal(pipeline.models["l1"].to_rgb.weight, other.to_rgb.weight)
    # A model whose config says it was trained with the other loss is loaded, with a warning in the UI.
    make_model(tmp_path / "actually-feature", "feature", seed=8)
    _, sources = app.load_pipeline(env={"EYE2FACE_L1_MODEL": str(tmp_path / "actually-feature")}, weights_dir=weights)
    assert "warning" in sources["l1"] and "'feature'" in sources["l1"]


def test_offline_falls_back_to_the_bundled_weights_without_a_request(weights, monkeypatch):
    import huggingface_hub

    app = import_app()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", lambda *a, **k: pytest.fail("a request while offline"))
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", _cache_only(huggingface_hub.hf_hub_download))
    _, sources = app.load_pipeline(env={"EYE2FACE_L1_MODEL": "eye2face/not-cached-here"}, weights_dir=weights)
    assert sources["l1"].startswith("bundled") and "eye2face/not-cached-here" in sources["l1"]


def _cache_only(download):
    def wrapper(*args, **kwargs):
        assert kwargs.get("local_files_only"), "a download was attempted while offline"
        return download(*args, **kwargs)

    return wrapper


def test_no_model_anywhere_is_a_clear_error(tmp_path):
    app = import_app()
    with pytest.raises(FileNotFoundError, match="EYE2FACE_L1_MODEL"):
        app.load_pipeline(env={}, weights_dir=tmp_path)


def test_bundled_weights_of_the_repository_load():
    if not (ROOT / "weights" / "eye2face-l1" / "model.safetensors").is_file():
        pytest.skip("weights/eye2face-l1 is not in this checkout yet (the trained weights are committed separately)")
    app = import_app()
    pipeline, sources = app.load_pipeline(env={}, weights_dir=ROOT / "weights")
    faces = pipeline.generate([ASTRONAUT[87:115, 188:216]])
    assert faces["l1"][0].shape == faces["feature"][0].shape == (FACE_SIZE, FACE_SIZE, 3)


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


# ---------------------------------------------------------------------------------------------------- examples


def test_examples_are_redistributable_images_and_work(weights):
    """Every example is a scikit-image photo (public domain / CC0) or a crop of one: never CelebA."""
    examples = ROOT / "examples"
    images = sorted(p.name for p in examples.iterdir() if p.suffix.lower() not in {".md", ".py"})
    assert images == ["astronaut-eye-crop.png", "astronaut.png", "chelsea-the-cat.png"], "document new examples' licence"
    np.testing.assert_array_equal(np.asarray(Image.open(examples / "astronaut.png").convert("RGB")), ASTRONAUT)
    np.testing.assert_array_equal(np.asarray(Image.open(examples / "chelsea-the-cat.png").convert("RGB")),
                                  skimage.data.chelsea())
    eye = np.asarray(Image.open(examples / "astronaut-eye-crop.png").convert("RGB"))
    np.testing.assert_array_equal(eye, crop(ASTRONAUT, detect(ASTRONAUT).eyes[0], EYE_SIZE))

    app = import_app()
    handlers = app.Handlers(*app.load_pipeline(env={}, weights_dir=weights))
    out = handlers.run(str(examples / "astronaut.png"), "both")
    assert all(face.shape == (FACE_SIZE, FACE_SIZE, 3) for face in (out[2], out[3], out[5], out[6]))
    with pytest.raises(gr.Error, match="No face"):  # the cat example shows what happens without a face
        handlers.run(str(examples / "chelsea-the-cat.png"), "both")
    assert handlers.run_eye(str(examples / "astronaut-eye-crop.png"))[1].shape == (FACE_SIZE, FACE_SIZE, 3)


# ----------------------------------------------------------------------------------- `python app.py`, as a Space


@pytest.fixture(scope="module")
def space(weights, tmp_path_factory):
    """`python app.py` as a Space runs it: Hub repos from the environment (a local fake Hub); one is down."""
    tmp = tmp_path_factory.mktemp("space")
    make_model(tmp / "hub-l1", "l1", seed=3)
    with FakeHub({"eye2face/l1-test": tmp / "hub-l1"}, failing=("eye2face/feature-down",)) as hub:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GRADIO_", "EYE2FACE_", "HF_"))}
        env.update(
            GRADIO_TEMP_DIR=str(tmp / "gradio"), HF_ENDPOINT=hub.url, HF_HOME=str(tmp / "hf"),
            EYE2FACE_WEIGHTS_DIR=str(weights), EYE2FACE_CACHE_SECONDS="8",
            EYE2FACE_L1_MODEL="eye2face/l1-test", EYE2FACE_FEATURE_MODEL="eye2face/feature-down",
        )
        with running_app([sys.executable, "app.py"], env, port, tmp / "app.log", start_timeout=180) as (url, proc):
            yield {"url": url, "port": port, "proc": proc, "hub": hub, "tmp": tmp}


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
    assert space["hub"].requests_to("eye2face/feature-down") == 1, "an unreachable repo must fail at once, not be retried"
    client = Client(space["url"], verbose=False, analytics_enabled=False, download_files=str(tmp_path))
    out = generate(client, photos["astronaut"])
    expected = EyeToFacePipeline(
        {"l1": EyeToFace.from_pretrained(str(space["tmp"] / "hub-l1")),
         "feature": EyeToFace.from_pretrained(str(weights / "eye2face-feature"))}
    )(str(photos["astronaut"]))
    np.testing.assert_array_equal(read_png(out["left_l1"]), expected.eyes[0].faces["l1"])
    np.testing.assert_array_equal(read_png(out["left_feature"]), expected.eyes[0].faces["feature"])


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
