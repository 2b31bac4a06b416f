"""eye2face demo: a whole face from a crop of one eye, each model's face side by side (Gradio).

    python app.py        # http://127.0.0.1:$GRADIO_SERVER_PORT (default 7860)

Models: one entry per model in MODELS (a Hub repo or local folder named by its environment variable; when unset or
unreachable, one quick request and no retries, its folder bundled in weights/). Every handler loops over MODELS, so
a model is added with one entry there. Optional models (the GAN models and the two-eye model) may be missing: the
app runs without them and the page says so. The research's pair (L1 vs feature loss) is the default comparison;
a person, or an API call (`models`), adds the others. The same file runs as a Hugging Face Space. Everything else
(detection, cropping, generation) is eye2face_hub.

A request answers with one labelled comparison image, a lossless PNG: a row per eye used, with the eye crop, each
model's face and the real face, and with a two-eye model a last row, "both eyes", with its one face from both crops.
The page adds the photo with the boxes it found, a download button and a status that stays until the next
request; API clients get the boxes and the tile positions as JSON instead of the photo.
"""

from __future__ import annotations

import os

# Before gradio and huggingface_hub are imported: no telemetry and no version look-ups unless asked for.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import base64  # noqa: E402
import functools  # noqa: E402
import logging  # noqa: E402
import re  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Callable, Mapping  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import NamedTuple  # noqa: E402

import cv2  # noqa: E402
import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from gradio.context import LocalContext  # noqa: E402
from gradio.utils import get_upload_folder  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402

from eye2face_hub import (  # noqa: E402
    Eye2FaceError,
    load_generator,
    EyeToFacePipeline,
    InvalidImageError,
    NoEyeError,
    NoFaceError,
)
from eye2face_hub.data import EYE_SIZE, FACE_SIZE, MIN_EYE_CROP  # noqa: E402
from eye2face_hub.pipeline import MAX_DETECT_SIDE, PhotoResult, load_photo  # noqa: E402

log = logging.getLogger("eye2face.app")

ROOT = Path(__file__).resolve().parent
WEIGHTS_DIR = Path(os.environ.get("EYE2FACE_WEIGHTS_DIR") or ROOT / "weights")
EXAMPLES_DIR = ROOT / "examples"


class ModelSpec(NamedTuple):
    label: str  # what the person reads: the comparison's column header and the "weights loaded" line
    env_var: str  # names a Hub repo id or a folder to load instead of the bundled weights
    folder: str  # the bundled weights: a folder in WEIGHTS_DIR
    about: str = ""  # what the model is, in one line (the page lists it)
    preset: str | None = None  # the loss preset its config.json should name (None: the entry's name)
    eyes: int = 1  # eye crops per face: 1, or 2 (the left and right crops of one photo; its own row, "both eyes")
    optional: bool = False  # without weights the app runs without it and says so; a required one stops the start
    default: bool = True  # in the comparison a request gets when it names no models; else added on request


# The models the app can compare, in the order of the comparison's columns: adding a model is one entry here.
# The research's pair (L1 vs feature loss) is the default comparison; the page adds the two-eye model's row when
# it is installed, and a person (or an API call, `models=[...]`) adds the GAN models.
MODELS: dict[str, ModelSpec] = {
    "l1": ModelSpec("L1 loss", "EYE2FACE_L1_MODEL", "eye2face-l1",
                    "the research's baseline: a plain pixel (L1) loss, which gives blurry, average faces."),
    "feature": ModelSpec("feature loss", "EYE2FACE_FEATURE_MODEL", "eye2face-feature",
                         "the research's method: VGG19 feature loss plus a standard-deviation term, for sharper faces."),
    "wgan-gp": ModelSpec("WGAN-GP", "EYE2FACE_WGAN_GP_MODEL", "eye2face-wgan-gp",
                         "the research's GAN comparison: a conditional Wasserstein GAN with gradient penalty, "
                         "trained by its critic alone.", optional=True, default=False),
    "feature-gan": ModelSpec("feature + GAN", "EYE2FACE_FEATURE_GAN_MODEL", "eye2face-feature-gan",
                             "the research's future work: feature and standard-deviation loss plus an adversarial "
                             "term from a critic.", optional=True, default=False),
    "two-eyes": ModelSpec("two-eye model", "EYE2FACE_TWO_EYES_MODEL", "eye2face-two-eyes",
                          "both eyes in, one face out (the setting of Chen et al. 2018), feature loss: its face is "
                          "the \"both eyes\" row.", preset="feature", eyes=2, optional=True),
}
# Uploads, webcam snapshots and results are deleted from the server this long after they were written.
CACHE_SECONDS = max(1, int(os.environ.get("EYE2FACE_CACHE_SECONDS", "300")))
# Requests waiting beyond this many get Gradio's "queue is full" answer. 100 covers a burst of 50 visitors at once
# with room to spare; at the ~0.1-0.2 s a request takes on a 2-vCPU Space, the last in line waits 10-20 s.
QUEUE_SIZE = 100
EYE_CHOICES = [("Both eyes", "both"), ("Left eye", "left"), ("Right eye", "right")]  # left and right as seen in the photo
# Output PNGs (lossless at any setting): zlib level 1 with the run-length strategy, by OpenCV. On a 640x640 photo
# 21 ms and 566 kB, against 33 ms and 634 kB for Pillow at level 1 and 129 ms for Gradio's default (level 6).
PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
# The comparison image: TILE x TILE tiles GAP apart, under a HEADER of column labels; each row starts with a
# CAPTION line. Eye crops are scaled up with nearest neighbour (each pixel a block), faces are shown as generated.
TILE, GAP, HEADER, CAPTION = FACE_SIZE, 4, 24, 20
EYE_LABEL = "eye crop (32x32)"

ABOUT = """
**What it does.** A small convolutional autoencoder turns a 32x32 crop of **one eye** into a 128x128 face,
after *From an Eye to a Face* (Tse, Jok, Ng, Lee). Models with the same architecture are compared: one trained
with a plain **L1 (pixel) loss**, which gives blurry average faces, and one trained with a **feature loss** (differences
of VGG19 activations, plus a standard-deviation term), which gives sharper, more face-like results.
The app finds the face and the eyes with OpenCV Haar cascades, draws the boxes it used on the photo, and shows the
exact eye crop each face was generated from.

**Limits.** The models were trained on CelebA celebrity photos (near-frontal, well lit, aligned), so they do best on
similar photos and reproduce that data set's biases. One eye carries little information: the face is a plausible
guess at the average face that goes with such an eye, **not the real person's face**. Haar cascades miss faces that are
turned, small, dark or partly hidden, and sometimes take an eyebrow or a nostril for an eye.

**This is a research demo, not an identification tool.** Do not use it to identify, verify or judge anyone.
Photos, webcam frames and results are not kept: they are deleted from the server within {retention} of each request,
and they are not logged.
Trained weights: CelebA, non-commercial research use only.
"""

ABOUT = ABOUT.replace("{retention}", f"{-(-(CACHE_SECONDS + min(60, CACHE_SECONDS)) // 60)} minute(s)")

CSS = """
.pixelated img { image-rendering: pixelated; }
#comparison img, #live-comparison img { image-rendering: pixelated; }
"""


# ---------------------------------------------------------------------------------------------------------- models


class ModelMissing(FileNotFoundError):
    """Neither the environment variable nor the bundled folder gives a model; `reason`, for the page, says why the
    model the environment variable named could not be loaded ("" when it names none)."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def load_model(env_var: str, bundled: Path, env: Mapping[str, str] | None = None,
               eyes: int = 1) -> tuple[torch.nn.Module, str]:
    """The model named by `env_var` (Hub repo id or folder), else the bundled folder; and where it came from.

    load_generator builds the architecture config.json names; it checks the Hub with one short request and no retries (EYE2FACE_HUB_TIMEOUT) and
    uses the local Hub cache when the Hub cannot be reached; a repo it cannot load, or a model that does not take
    `eyes` eye crops, falls back to the bundled weights at once, and the UI says why. ModelMissing when neither
    gives a model.
    """
    env = os.environ if env is None else env
    wanted = env.get(env_var, "").strip()
    fallback = ""
    if wanted:
        kind = "folder" if Path(wanted).is_dir() else "Hub repo"
        try:
            return _taking(eyes, load_generator(wanted)), f"{kind} `{wanted}` (from {env_var})"
        except Exception as e:  # unreachable, missing, private, damaged: the bundled weights serve instead
            reason = f"{type(e).__name__}: {_whole_sentences(str(e))}".rstrip(": ")
            fallback = f"`{wanted}` from {env_var} could not be loaded ({reason})"
            log.warning("%s=%s could not be loaded (%s); using %s", env_var, wanted, reason, bundled)
    shown = bundled.relative_to(ROOT) if bundled.is_relative_to(ROOT) else bundled
    if not (bundled / "model.safetensors").is_file():
        raise ModelMissing(f"no model: set {env_var} to a Hub repo id or folder, or put weights in {bundled}"
                           + (f" ({fallback})" if fallback else ""), fallback)
    return _taking(eyes, load_generator(str(bundled))), f"bundled `{shown}`" + (f"; {fallback}" if fallback else "")


def _taking(eyes: int, model: torch.nn.Module) -> torch.nn.Module:
    """`model`, if it takes `eyes` eye crops per face (a one-eye model in the two-eye model's place would not)."""
    if getattr(model, "eyes", 1) != eyes:
        raise ValueError(f"it is a {_count(getattr(model, 'eyes', 1))}-eye model ({type(model).__name__}); "
                         f"this place needs a {_count(eyes)}-eye model")
    return model


def _count(n: int) -> str:
    return {1: "one", 2: "two"}.get(n, str(n))


def _whole_sentences(text: str, limit: int = 600) -> str:
    """`text` on one line; if longer than `limit`, cut at the end of a sentence, never in the middle of one."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    ends = [m.end() for m in re.finditer(r"[.;)](?=\s)", text[:limit])]
    return text[: ends[-1]] + " [...]" if ends else text


def load_pipeline(env: Mapping[str, str] | None = None, weights_dir: Path = WEIGHTS_DIR) -> tuple[EyeToFacePipeline, dict[str, str]]:
    """The pipeline of every model in MODELS that loads and, per model, a line saying which weights were loaded.

    An optional model that neither its environment variable nor its bundled folder gives is left out: its line
    then starts with NOT_INSTALLED and says why. A required one raises ModelMissing (a FileNotFoundError).
    """
    models, sources = {}, {}
    for name, spec in MODELS.items():
        try:
            models[name], sources[name] = load_model(spec.env_var, weights_dir / spec.folder, env, eyes=spec.eyes)
        except ModelMissing as e:
            if not spec.optional:
                raise
            sources[name] = NOT_INSTALLED + (f" ({e.reason})" if e.reason else "")
            continue
        preset = (models[name].loss_config or {}).get("preset")
        if preset and preset != (spec.preset or name):
            sources[name] += f" (warning: its config.json says it was trained with the {preset!r} preset)"
        elif not preset:
            sources[name] += " (its config.json does not say how it was trained)"
    return EyeToFacePipeline(models), sources


NOT_INSTALLED = "not installed"


# ---------------------------------------------------------------------------------------------- refusals, logging


class Refusal(Exception):
    """A request the app cannot serve: what the person reads (a title and a message) and a kind for the log."""

    def __init__(self, title: str, message: str, kind: str):
        super().__init__(message)
        self.title, self.message, self.kind = title, message, kind

    def for_api(self) -> gr.Error:
        """For API clients: an error with this title (gradio_client raises AppError); no traceback in the log."""
        return gr.Error(self.message, title=self.title, print_exception=False)

    def for_page(self) -> str:
        """For the page: the status area, where it stays until the next request."""
        return f"### ⚠️ {self.title}\n{self.message}"


# Error class -> (title, kind for the log). The kind, never the message (which may name the file), is logged.
REFUSALS = {InvalidImageError: ("Not a usable image", "invalid_image"), NoFaceError: ("No face found", "no_face"),
            NoEyeError: ("No eye found", "no_eye")}
INTERNAL = Refusal("Something went wrong", "The server could not process this request; please try again.", "internal")


def _refusal(e: Eye2FaceError) -> Refusal:
    title, kind = next((v for cls, v in REFUSALS.items() if isinstance(e, cls)), ("Cannot use this image", "unusable"))
    return Refusal(title, _sentence(str(e)), kind)


def _sentence(text: str) -> str:
    """A message as a sentence: capitalised unless it starts with a name ("empty.jpg is empty"), with a full stop."""
    if text.split(" ", 1)[0].isalpha():
        text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def _queue_wait_ms() -> float | None:
    """How long the request being served waited in Gradio's queue (None outside a queued event)."""
    try:
        blocks, event_id = LocalContext.blocks.get(None), LocalContext.event_id.get(None)
        event = blocks._queue.event_ids_to_events[event_id]  # Gradio's own record of the request
        return (time.monotonic() - event.enqueue_time) * 1000
    except Exception:  # not queued (called directly), or Gradio's internals moved: the log line says "-"
        return None


def _served(endpoint: str, work: Callable, *args):
    """work(*args), logging one line: endpoint, outcome (ok or the kind of error), milliseconds, queue wait.

    Never the input, the output or a file name. The person's errors become Refusals; anything else is logged with
    its traceback (not its message, which may hold a file name) and becomes the INTERNAL refusal.
    """
    waited = _queue_wait_ms()
    start = time.perf_counter()
    outcome = "ok"
    try:
        return work(*args)
    except Refusal as r:
        outcome = f"error:{r.kind}"
        raise
    except Eye2FaceError as e:
        r = _refusal(e)
        outcome = f"error:{r.kind}"
        raise r from None
    except Exception as e:
        outcome = "error:internal"
        log.error("%s failed: %s\n%s", endpoint, type(e).__name__, "".join(traceback.format_tb(e.__traceback__)).rstrip())
        raise INTERNAL from None
    finally:
        log.info("endpoint=%s outcome=%s ms=%.0f queue_wait_ms=%s", endpoint, outcome,
                 (time.perf_counter() - start) * 1000, "-" if waited is None else f"{waited:.0f}")


# ---------------------------------------------------------------------------------------------------------- images


def _photo_source(payload, what: str = "photo") -> str | bytes:
    """What the pipeline reads, from an image input that Gradio did not decode (preprocess=False).

    Gradio is left out of decoding so that a file that is not an image gets the pipeline's clear message
    (and EXIF rotation, alpha and 16-bit handling) rather than a generic processing error.
    """
    if payload is None:
        raise Refusal("Nothing to work on", f"Add a {what} first: upload one or paste one.", "no_input")
    if isinstance(payload, (str, Path)):
        return str(payload)
    url = payload.get("url") or ""
    if url.startswith("data:"):  # webcam frames come inline
        try:
            return base64.b64decode(url.partition(",")[2], validate=True)
        except ValueError:
            raise Refusal("Not a usable image", f"The {what} arrived damaged; please try again.", "damaged") from None
    path = payload.get("path")
    if not path:
        raise Refusal("Nothing to work on", f"The {what} did not reach the server; please add it again.", "no_input")
    if not os.path.exists(path):
        raise Refusal("Please add it again", f"This {what} is no longer on the server (files are deleted after "
                      f"{CACHE_SECONDS} s); add it again.", "expired")
    return path


@functools.lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


@functools.lru_cache(maxsize=64)
def _text_strip(text: str | tuple[str, ...], width: int, height: int) -> np.ndarray:
    """A white strip with `text` (a caption; or a label per column, for a tuple), drawn once and reused."""
    strip = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(strip)
    for x, label, room, color, size in (
        [(c * (TILE + GAP), label, TILE, (0, 0, 0), 14) for c, label in enumerate(text)] if isinstance(text, tuple)
        else [(0, text, width, (90, 90, 90), 13)]
    ):
        while size > 9 and draw.textlength(label, font=_font(size)) > room - 4:
            size -= 1
        while len(label) > 1 and draw.textlength(label, font=_font(size)) > room - 4:  # still too long: cut it
            label = label[:-2].rstrip() + "…"
        draw.text((x + 2, 3), label, fill=color, font=_font(size))
    strip = np.asarray(strip)
    strip.setflags(write=False)  # shared by every request
    return strip


def tile_origin(row: int, column: int) -> tuple[int, int]:
    """Where the tile of `row` and `column` starts (x, y) in a comparison image."""
    return column * (TILE + GAP), HEADER + row * (CAPTION + TILE) + CAPTION


def tile_boxes(rows: int, columns: int) -> list[list[list[int]]]:
    """[x, y, width, height] of every tile, per row and column: comparison[y:y + height, x:x + width] is one image."""
    return [[[*tile_origin(r, c), TILE, TILE] for c in range(columns)] for r in range(rows)]


def comparison_image(rows: list[tuple[str, list[np.ndarray | None]]], labels: list[str]) -> np.ndarray:
    """One labelled image: a header with a label per column, then per row a caption and one tile per column.

    Tiles smaller than TILE (eye crops) are scaled up with nearest neighbour, so every pixel stays visible and exact;
    a None tile stays blank (a column that has nothing for that row).
    """
    width = len(labels) * (TILE + GAP) - GAP
    canvas = np.full((HEADER + len(rows) * (CAPTION + TILE), width, 3), 255, np.uint8)
    canvas[:HEADER] = _text_strip(tuple(labels), width, HEADER)
    for r, (caption, tiles) in enumerate(rows):
        if len(tiles) != len(labels):
            raise ValueError(f"row {r} has {len(tiles)} tiles for {len(labels)} columns")
        y = tile_origin(r, 0)[1]
        canvas[y - CAPTION : y] = _text_strip(caption, width, CAPTION)
        for c, tile in enumerate(tiles):
            if tile is None:
                continue
            if tile.shape[:2] != (TILE, TILE):
                tile = cv2.resize(tile, (TILE, TILE), interpolation=cv2.INTER_NEAREST)
            x = tile_origin(r, c)[0]
            canvas[y : y + TILE, x : x + TILE] = tile
    return canvas


def _cache_png(image: np.ndarray, name: str) -> str:
    """`image` (RGB) as a PNG file in Gradio's cache (delete_cache removes it with the rest), in a folder of its own.

    Returned as a path, which Gradio serves as it is: no second encoding, and no other request ever writes to it.
    """
    ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), PNG_PARAMS)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    folder = Path(get_upload_folder()) / f"eye2face-{uuid.uuid4().hex}"
    folder.mkdir(parents=True)
    path = folder / name
    path.write_bytes(data.tobytes())
    return str(path)


def _bullets(lines: list[str]) -> str:
    return "\n".join(f"- {line}" for line in lines)


def _where(box) -> str:
    x, y, w, h = box
    return f"x={x}, y={y} ({w}x{h} px)"


# -------------------------------------------------------------------------------------------------------- handlers


def _as_seen(eye: np.ndarray) -> np.ndarray:
    """An eye crop at the 32x32 the models take, resized as the pipeline resizes it."""
    return cv2.resize(eye, (EYE_SIZE, EYE_SIZE)) if eye.shape[:2] != (EYE_SIZE, EYE_SIZE) else eye


def eye_pair_tile(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """The "both eyes" row's eye tile: the left and the right crop as the models see them, side by side and centred
    vertically, each of their pixels a 2x2 block."""
    half = TILE // 2
    tile = np.full((TILE, TILE, 3), 255, np.uint8)
    top = (TILE - half) // 2
    for i, eye in enumerate((left, right)):
        tile[top : top + half, i * half : (i + 1) * half] = cv2.resize(_as_seen(eye), (half, half),
                                                                         interpolation=cv2.INTER_NEAREST)
    return tile


BOTH_EYES_ROW = "both eyes"
BOTH_EYES_CAPTION = "both eyes, one face: the two-eye model, from the left and the right crop"
MODEL_CHOICE_KINDS = {"bad_choice", "not_installed", "no_model", "needs_two_eyes"}


class Handlers:
    """The handlers behind the page and its API, around one pipeline with the installed models of MODELS.

    Each endpoint has an API form (generate, generate_from_eye: a refusal raises gr.Error, which API clients get as
    an error with its title) and a page form (*_page: a refusal clears the earlier result and shows the reason in the
    status area, where it stays until the next request). The webcam stream never raises.

    A request may name the models to compare (`models`, names from MODELS); without, the page compares its default
    models (the research's pair and, when installed, the two-eye model's row) and the API the one-eye ones of them
    (the research's pair), so that API calls written before the extra models keep their answer.
    """

    def __init__(self, pipeline: EyeToFacePipeline, sources: dict[str, str]):
        required = {name for name, spec in MODELS.items() if not spec.optional}
        if not required <= set(pipeline.models) <= set(MODELS):
            raise ValueError(f"the app needs the models {sorted(required)} and knows {sorted(MODELS)}, "
                             f"got {sorted(pipeline.models)}")
        for name, model in pipeline.models.items():
            _taking(MODELS[name].eyes, model)
        self.pipeline = pipeline
        self.installed = [name for name in MODELS if name in pipeline.models]  # MODELS order
        self.sources = {name: sources[name] for name in self.installed}
        self.missing = {name: sources.get(name, NOT_INSTALLED) for name in MODELS if name not in pipeline.models}
        self.page_models = [name for name in self.installed if MODELS[name].default]
        self.api_models = [name for name in self.page_models if MODELS[name].eyes == 1]
        self.labels = [MODELS[name].label for name in self.api_models]
        self._pipelines: dict[tuple[str, ...], EyeToFacePipeline] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------------------------ the work

    def chosen(self, models, default: list[str]) -> list[str]:
        """The models a request names, in MODELS order (`default` when it names none); a refusal that says which
        names can be used for anything else."""
        if models is None:
            return default
        if isinstance(models, str):
            models = [models]
        installed = ", ".join(self.installed)
        if not isinstance(models, (list, tuple)) or not all(isinstance(m, str) for m in models):
            raise Refusal("Not a valid choice", f"Models: a list of model names, from {installed}.", "bad_choice")
        unknown = [m for m in models if m not in MODELS]
        if unknown:
            raise Refusal("Not a valid choice", f"There is no model {', '.join(map(repr, unknown))}: the models "
                          f"are {installed}.", "bad_choice")
        absent = [m for m in models if m not in self.pipeline.models]
        if absent:
            raise Refusal("Model not installed", f"{', '.join(f'{m} ({MODELS[m].label})' for m in absent)} "
                          f"{'is' if len(absent) == 1 else 'are'} not installed on this server; the installed models "
                          f"are {installed}.", "not_installed")
        if not models:
            raise Refusal("No model chosen", "Choose at least one model to compare.", "no_model")
        return [name for name in MODELS if name in models]

    def pipeline_for(self, names: list[str]) -> EyeToFacePipeline:
        """The pipeline of these models only (the same model objects): unchosen models cost nothing."""
        key = tuple(names)
        with self._lock:
            if key not in self._pipelines:
                self._pipelines[key] = EyeToFacePipeline({name: self.pipeline.models[name] for name in names})
            return self._pipelines[key]

    def photo_result(self, photo, eyes: str = "both", models=None) -> PhotoResult:
        """The pipeline's result for the chosen models (default: the page's)."""
        if eyes not in {value for _, value in EYE_CHOICES}:  # only API clients can send anything else
            raise Refusal("Not a valid choice", f"Which eye: one of {', '.join(v for _, v in EYE_CHOICES)}.", "bad_choice")
        names = self.chosen(models, self.page_models)
        return self.pipeline_for(names)(_photo_source(photo), eyes=eyes)

    def photo_table(self, result: PhotoResult) -> tuple[np.ndarray, list[str], list[str], list[str]]:
        """The comparison of `result` and its columns, rows and models (in column order).

        A row per eye used: the eye crop, each one-eye model's face (MODELS order), the real face. With a two-eye
        model's face, its column and a last row, "both eyes": the two crops it was given, its face, the real face.
        Tiles a row has nothing for are blank.
        """
        one = [name for name in MODELS if result.eyes and name in result.eyes[0].faces]
        two = [name for name in MODELS if name in result.both_eyes]
        rows = [(f"{r.side} eye (as seen in the photo)",
                 [r.eye, *(r.faces[n] for n in one), *[None] * len(two), result.real_face]) for r in result.eyes]
        row_names = [f"{r.side} eye" for r in result.eyes]
        if two:
            rows.append((BOTH_EYES_CAPTION, [eye_pair_tile(*result.both_eyes_crops), *[None] * len(one),
                                             *(result.both_eyes[n] for n in two), result.real_face]))
            row_names.append(BOTH_EYES_ROW)
        columns = [EYE_LABEL, *(MODELS[n].label for n in one + two), "real face"]
        return comparison_image(rows, columns), columns, row_names, one + two

    def photo_comparison(self, result: PhotoResult) -> np.ndarray:
        return self.photo_table(result)[0]

    def photo_details(self, result: PhotoResult, columns: list[str], rows: list[str], models: list[str]) -> dict:
        """For programs: the boxes (in pixels of the photo as analysed) and where each tile is in the comparison."""
        height, width = result.photo.shape[:2]
        return {"photo_size": [width, height], "face_box": list(result.face_box),
                "eyes": [{"side": r.side, "box": list(r.box)} for r in result.eyes],
                "rows": rows, "columns": columns, "models": models,
                "tiles": tile_boxes(len(rows), len(columns)), "notes": result.notes}

    def photo_status(self, result: PhotoResult) -> str:
        height, width = result.photo.shape[:2]
        scaled = max(height, width) >= MAX_DETECT_SIDE - 1
        both = [MODELS[n].label for n in MODELS if n in result.both_eyes]
        return _bullets([
            f"**Face found** at {_where(result.face_box)}; **eye crops used:** "
            + ", ".join(f"{r.side} eye at {_where(r.box)}" for r in result.eyes) + ".",
            *([(f"**Both eyes, one face:** the {' and '.join(both)}'s face from the left and the right eye "
                "crop (the last row).")] if both else []),
            f"Positions are in pixels of the photo as analysed, {width}x{height}"
            + (f" (larger photos are scaled down to {MAX_DETECT_SIDE} px on their longer side first)." if scaled else "."),
            *result.notes])

    def _photo_api(self, photo, eyes: str, models):
        result = self.photo_result(photo, eyes, self.chosen(models, self.api_models))
        comparison, *table = self.photo_table(result)
        return (_cache_png(comparison, "eye2face-comparison.png"), self.photo_details(result, *table),
                self.photo_status(result))

    def _photo_page(self, photo, eyes: str, models):
        result = self.photo_result(photo, eyes, models)
        return (_cache_png(self.photo_comparison(result), "eye2face-comparison.png"),
                _cache_png(result.annotated(), "eye2face-detections.png"), self.photo_status(result))

    def _eye(self, eye, right_eye, models, default: list[str]):
        """One eye crop (each one-eye model's face), or two: the left and the right crop of one photo (each one's
        faces, and the two-eye model's face from both)."""
        names = self.chosen(models, default)
        given = [p for p in (eye, right_eye) if p is not None] or [None]  # None: the refusal says what to add
        rgbs = [load_photo(_photo_source(p, "eye crop"), min_side=MIN_EYE_CROP) for p in given]
        one = [n for n in names if MODELS[n].eyes == 1]
        two = [n for n in names if MODELS[n].eyes == 2] if len(rgbs) == 2 else []
        if not one and not two:
            raise Refusal("Two eye crops needed", "The two-eye model makes one face from both eyes: add the crop of "
                          "the other eye as well, or choose a one-eye model.", "needs_two_eyes")
        pipe = self.pipeline_for(one + two)
        faces = pipe.generate(rgbs) if one else {}
        both = pipe.generate_from_both_eyes(*rgbs) if two else {}
        smalls = [_as_seen(rgb) for rgb in rgbs]
        sizes = [[rgb.shape[1], rgb.shape[0]] for rgb in rgbs]
        sides = ["left", "right"] if len(rgbs) == 2 else [None]
        notes = []
        for side, (w, h) in zip(sides, sizes):
            notes.append(f"The {side + ' eye ' if side else ''}crop is {w}x{h} px; the models see it at "
                         f"{EYE_SIZE}x{EYE_SIZE}.")
            if abs(h - w) > 0.2 * max(h, w):
                notes.append("It is far from square, so it was squashed: a square crop around one eye works best.")
        two_installed = [n for n in self.installed if MODELS[n].eyes == 2]
        if len(rgbs) == 1 and any(MODELS[n].eyes == 2 for n in names):
            notes.append("The two-eye model needs both eyes: add the crop of the other eye as well for its face.")
        elif len(rgbs) == 2 and not two:
            notes.append("Each crop got its own faces; the two-eye model (one face from both eyes) is "
                         + ("not chosen." if two_installed else "not installed here."))
        columns = [EYE_LABEL, *(MODELS[n].label for n in one + two)]
        if len(rgbs) == 1:
            (w, h), = sizes
            rows = [(f"your eye crop ({w}x{h} px), as the models see it", [smalls[0], *(faces[n][0] for n in one)])]
            row_names = ["eye crop"]
        else:
            rows = [(f"{side} eye crop ({w}x{h} px), as the models see it",
                     [small, *(faces[n][i] for n in one), *[None] * len(two)])
                    for i, (side, (w, h), small) in enumerate(zip(sides, sizes, smalls))]
            row_names = ["left eye", "right eye"]
            if two:
                rows.append((BOTH_EYES_CAPTION, [eye_pair_tile(*smalls), *[None] * len(one), *(both[n] for n in two)]))
                row_names.append(BOTH_EYES_ROW)
        details = {"crop_size": sizes[0], "crop_sizes": sizes, "rows": row_names, "columns": columns,
                   "models": one + two, "tiles": tile_boxes(len(rows), len(columns)), "notes": notes}
        return _cache_png(comparison_image(rows, columns), "eye2face-comparison.png"), details, _bullets(notes)

    # ---------------------------------------------------------------------------------------------- endpoints

    def generate(self, photo, eyes: str = "both", models: list[str] | None = None):
        """API /generate: photo -> the comparison PNG, the details (boxes, tile positions) as JSON, a status.

        `models`: names from MODELS; default the research's pair (`api_models`)."""
        try:
            return _served("generate", self._photo_api, photo, eyes, models)
        except Refusal as r:
            raise r.for_api() from None

    def generate_page(self, photo, eyes: str = "both", models: list[str] | None = None):
        """The page's "Generate faces": the comparison, the photo with its boxes, the download, a status.

        A refusal clears the earlier result and says why in the status."""
        try:
            comparison, annotated, status = _served("generate/page", self._photo_page, photo, eyes, models)
        except Refusal as r:
            return None, None, gr.DownloadButton(value=None, interactive=False), r.for_page()
        return comparison, annotated, gr.DownloadButton(value=comparison, interactive=True), status

    def generate_from_eye(self, eye, right_eye=None, models: list[str] | None = None):
        """API /generate_from_eye: a ready eye crop (and optionally the other eye's: left, then right) -> the
        comparison PNG (the 32x32 crop, each model's face), the details as JSON, a status."""
        try:
            return _served("generate_from_eye", self._eye, eye, right_eye, models, self.api_models)
        except Refusal as r:
            raise r.for_api() from None

    def generate_from_eye_page(self, eye, right_eye=None, models: list[str] | None = None):
        try:
            comparison, _, status = _served("generate_from_eye/page", self._eye, eye, right_eye, models, self.page_models)
        except Refusal as r:
            return None, gr.DownloadButton(value=None, interactive=False), r.for_page()
        return comparison, gr.DownloadButton(value=comparison, interactive=True), status

    def live(self, frame, eyes: str = "both", has_result: bool = False, models: list[str] | None = None):
        """One webcam frame -> the frame with boxes, the comparison, a status, whether a result is shown.

        A frame without a usable face keeps the last result (if any) and says so.
        """
        if frame is None:
            return gr.skip(), gr.skip(), "Waiting for the webcam...", has_result
        try:
            result = _served("live", self.photo_result, frame, eyes, models)
        except Refusal as r:
            if r.kind in MODEL_CHOICE_KINDS:
                return gr.skip(), gr.skip(), r.message, has_result
            what = {"no_face": "No face in the current frame", "no_eye": "No usable eye in the face in the current frame",
                    "internal": "This frame could not be processed"}.get(r.kind, "The current frame could not be read")
            then = ("; the result shown is from an earlier frame." if has_result
                    else ". Face the camera in good light, with your eyes open.")
            return gr.skip(), gr.skip(), what + then, has_result
        used = " and ".join(f"{r.side} eye" for r in result.eyes)
        both = " and one face from both eyes" if result.both_eyes else ""
        status = f"Face found; generated from the {used}{both}. " + " ".join(result.notes)
        return (_cache_png(result.annotated(), "eye2face-frame.png"),
                _cache_png(self.photo_comparison(result), "eye2face-comparison.png"), status.strip(), True)


# -------------------------------------------------------------------------------------------------------------- UI


def _weights_markdown(sources: dict[str, str], missing: dict[str, str] | None = None) -> str:
    """Which weights were loaded, per model; then, in one line, the optional models that are not installed."""
    text = "**Weights loaded.** " + "; ".join(f"{MODELS[name].label}: {src}" for name, src in sources.items()) + "."
    if missing:
        why = {name: line.removeprefix(NOT_INSTALLED).strip() for name, line in missing.items()}
        text += ("\n\n**Not installed** (optional, so not offered): "
                 + ", ".join(MODELS[name].label + (f" {why[name]}" if why[name] else "") for name in missing)
                 + "; each loads from its environment variable or its folder in the weights folder (README, "
                 "\"The app\").")
    return text


def _models_markdown(handlers: Handlers) -> str:
    """What each installed model is, one line each."""
    return "\n".join(f"- **{MODELS[name].label}**: {MODELS[name].about}" for name in handlers.installed)


def _image(label: str, buttons=("download", "fullscreen"), **kwargs) -> gr.Image:
    """An output image: the handlers write PNG files (lossless; Gradio's default would be lossy WebP)."""
    return gr.Image(label=label, type="filepath", format="png", interactive=False, buttons=list(buttons), **kwargs)


def _comparison(label: str, **kwargs) -> gr.Image:
    """A comparison image: it carries its own labels (no label over it), the download button is beneath it."""
    return _image(label, show_label=False, buttons=["fullscreen"], **kwargs)


def _download(**kwargs) -> gr.DownloadButton:
    return gr.DownloadButton("Download the comparison (PNG)", interactive=False, size="sm", **kwargs)


def build_demo(handlers: Handlers) -> gr.Blocks:
    examples = [p for p in (EXAMPLES_DIR / "astronaut.png", EXAMPLES_DIR / "chelsea-the-cat.png") if p.exists()]
    example_labels = {"astronaut": "astronaut", "chelsea-the-cat": "chelsea the cat (no human face: shows the message)"}
    eye_example = EXAMPLES_DIR / "astronaut-eye-crop.png"
    columns = " | ".join([EYE_LABEL, *handlers.labels, "real face"])
    with gr.Blocks(title="eye2face: a face from one eye", delete_cache=(min(60, CACHE_SECONDS), CACHE_SECONDS)) as blocks:
        gr.Markdown("# eye2face: a whole face from one eye\n" + " vs ".join(handlers.labels) + ", side by side. "
                    "A research demo: the faces are guesses, not the person.")
        gr.Markdown(_weights_markdown(handlers.sources, handlers.missing), elem_id="weights")
        gr.Markdown(_models_markdown(handlers), elem_id="models")
        choices = [(MODELS[name].label, name) for name in handlers.installed]
        # Shown when there is something to add to the research's pair; it applies to all three tabs.
        models = gr.CheckboxGroup(choices, value=handlers.page_models, label="Models to compare",
                                  info="The research's pair, L1 vs feature loss, is the default; tick others to add "
                                       "them (a column each; the two-eye model adds the \"both eyes\" row).",
                                  visible=any(MODELS[name].optional for name in handlers.installed),
                                  elem_id="models-to-compare")
        # The API's choice: without one, API calls get the research's pair, as before the extra models.
        api_models = gr.CheckboxGroup(choices, value=handlers.api_models, label="Models", visible=False)
        with gr.Tab("Photo"):
            with gr.Row():
                with gr.Column(scale=2, min_width=320):
                    photo = gr.Image(label="Photo with a face", sources=["upload", "webcam", "clipboard"],
                                     type="filepath", elem_id="photo", height=320)
                    eyes = gr.Radio(EYE_CHOICES, value="both", label="Which eye to generate from",
                                    info="Left and right as seen in the photo.", elem_id="eyes")
                    if examples:
                        gr.Examples([[str(p), "both"] for p in examples], [photo, eyes],
                                    example_labels=[example_labels.get(p.stem, p.stem) for p in examples])
                    button = gr.Button("Generate faces", variant="primary", elem_id="generate")
                    status = gr.Markdown("Add a photo (upload, webcam or paste) or pick an example, then press "
                                         "**Generate faces**.", label="Status", elem_id="status")
                with gr.Column(scale=3, min_width=320):
                    comparison = _comparison(f"Per eye: {columns}", elem_id="comparison")
                    download = _download(elem_id="download")
                    annotated = _image("Detections: face (green), eye crops used (orange)", elem_id="annotated")
            details = gr.JSON(label="Details: boxes, columns, tile positions", visible=False)
            button.click(handlers.generate_page, [photo, eyes, models], [comparison, annotated, download, status],
                         api_visibility="private", preprocess=False, concurrency_id="pipeline")
            # The API endpoint: no trigger on the page. One file to download (the comparison, which is also the
            # download); the boxes and the tile positions as JSON rather than the photo drawn on.
            gr.on([], handlers.generate, [photo, eyes, api_models], [comparison, details, status], api_name="generate",
                  preprocess=False, concurrency_id="pipeline")

        with gr.Tab("I already have an eye crop"):
            two_eyes = any(MODELS[name].eyes == 2 for name in handlers.installed)
            gr.Markdown(f"A crop around **one** eye, roughly square (like the example), at least {MIN_EYE_CROP}x"
                        f"{MIN_EYE_CROP} pixels; it is resized to the 32x32 the models take. Add the crop of the "
                        "other eye too (left and right as seen in the photo): each crop gets its faces, and "
                        + ("the two-eye model makes one face from both." if two_eyes
                           else "a two-eye model would make one face from both (none is installed here)."))
            with gr.Row():
                with gr.Column(scale=2, min_width=320):
                    with gr.Row():
                        eye_in = gr.Image(label="Eye crop (or the left one)", sources=["upload", "clipboard"],
                                          type="filepath", elem_id="eye-input", elem_classes="pixelated", height=240)
                        eye_right = gr.Image(label="Right eye crop (optional)", sources=["upload", "clipboard"],
                                             type="filepath", elem_id="eye-input-right", elem_classes="pixelated",
                                             height=240)
                    if eye_example.exists():
                        gr.Examples([[str(eye_example)]], [eye_in], example_labels=["astronaut eye crop"])
                    eye_button = gr.Button("Generate faces", variant="primary", elem_id="generate-eye")
                    eye_status = gr.Markdown("Add an eye crop, then press **Generate faces**.", label="Status",
                                             elem_id="eye-status")
                with gr.Column(scale=3, min_width=320):
                    eye_comparison = _comparison(" | ".join([EYE_LABEL, *handlers.labels]), elem_id="eye-comparison")
                    eye_download = _download(elem_id="eye-download")
            eye_button.click(handlers.generate_from_eye_page, [eye_in, eye_right, models],
                             [eye_comparison, eye_download, eye_status], api_visibility="private", preprocess=False,
                             concurrency_id="pipeline")
            gr.on([], handlers.generate_from_eye, [eye_in, eye_right, api_models], [eye_comparison, details, eye_status],
                  api_name="generate_from_eye", preprocess=False, concurrency_id="pipeline")

        with gr.Tab("Live webcam"):
            gr.Markdown("Allow the webcam and press *Record*: the faces follow the camera, a couple of times a second. "
                        "Frames are read in memory; results are deleted from the server within minutes.")
            with gr.Row():
                with gr.Column(scale=2, min_width=320):
                    webcam = gr.Image(label="Webcam", sources=["webcam"], streaming=True, type="filepath",
                                      webcam_options=gr.WebcamOptions(mirror=False), elem_id="webcam")
                    live_eyes = gr.Radio(EYE_CHOICES, value="both", label="Which eye to generate from",
                                         info="Left and right as seen in the frame.")
                    live_status = gr.Markdown("Press *Record* to start.", label="Status", elem_id="live-status")
                with gr.Column(scale=3, min_width=320):
                    live_comparison = _comparison(columns, elem_id="live-comparison")
                    live_annotated = _image("Detections", elem_id="live-annotated")
            has_result = gr.State(False)
            webcam.stream(handlers.live, [webcam, live_eyes, has_result, models],
                          [live_annotated, live_comparison, live_status, has_result], api_name="live",
                          preprocess=False, stream_every=0.5, time_limit=300, concurrency_limit=2,
                          show_progress="hidden")

        with gr.Accordion("About this demo: method, limits, privacy", open=False):
            gr.Markdown(ABOUT)
    return blocks


def launch(blocks: gr.Blocks, queue_size: int | None = None, **kwargs):
    """Serve on GRADIO_SERVER_NAME (default 127.0.0.1) and GRADIO_SERVER_PORT (default 7860), with a queue of
    `queue_size` waiting requests (default: EYE2FACE_QUEUE_SIZE, else QUEUE_SIZE)."""
    kwargs.setdefault("server_name", os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    queue_size = queue_size or int(os.environ.get("EYE2FACE_QUEUE_SIZE") or QUEUE_SIZE)
    return blocks.queue(max_size=max(1, queue_size)).launch(css=CSS, **kwargs)


def create_app(env: Mapping[str, str] | None = None, weights_dir: Path = WEIGHTS_DIR) -> gr.Blocks:
    torch.set_num_threads(int(os.environ.get("EYE2FACE_TORCH_THREADS", "1")))  # tiny model; threads fight on shared CPUs
    pipeline, sources = load_pipeline(env, weights_dir)
    for name, src in sources.items():
        log.info("%s (%s): %s", MODELS[name].label, name, src)
    return build_demo(Handlers(pipeline, sources))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    launch(create_app())
