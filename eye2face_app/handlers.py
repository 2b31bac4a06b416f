"""The functions behind the page and its API, around one pipeline of the installed models of MODELS.

Each endpoint has an API form (generate, generate_from_eye: a refusal raises gr.Error, which API clients get as an
error with its title) and a page form (*_page: a refusal clears the earlier result and shows the reason in the
status area, where it stays until the next request). The webcam stream never raises. A request may name the models
to compare (`models`, names from MODELS); without, it gets the default ones (MODELS' `default`) that are installed.
"""

from __future__ import annotations

import base64
import os
import threading
from pathlib import Path

import gradio as gr

from eye2face_hub import EyeToFacePipeline
from eye2face_hub.data import MIN_EYE_CROP
from eye2face_hub.pipeline import MAX_DETECT_SIDE, PhotoResult, load_photo

from .comparison import Comparison, cache_png, crops_comparison, photo_comparison
from .models import MODELS, NOT_INSTALLED, check_eyes
from .refusals import MODEL_CHOICE_KINDS, Refusal, logged

EYE_CHOICES = [("Both eyes", "both"), ("Left eye", "left"), ("Right eye", "right")]  # as seen in the photo
# Uploads, webcam snapshots and results are deleted from the server this long after they were written.
CACHE_SECONDS = max(1, int(os.environ.get("EYE2FACE_CACHE_SECONDS", "300")))


def photo_source(payload, what: str = "photo") -> str | bytes:
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
            raise Refusal("Not a usable image", f"The {what} arrived damaged; please try again.", "invalid_image") from None
    path = payload.get("path")
    if not path:
        raise Refusal("Nothing to work on", f"The {what} did not reach the server; please add it again.", "no_input")
    if not os.path.exists(path):
        raise Refusal("Please add it again", f"This {what} is no longer on the server (files are deleted after "
                      f"{CACHE_SECONDS} s); add it again.", "expired")
    return path


def bullets(lines: list[str]) -> str:
    return "\n".join(f"- {line}" for line in lines)


def box_text(box) -> str:
    """A box as the status shows it: where it starts and its size, in pixels."""
    x, y, w, h = box
    return f"x={x}, y={y} ({w}x{h} px)"


class Handlers:
    def __init__(self, pipeline: EyeToFacePipeline, sources: dict[str, str]):
        required = {name for name, spec in MODELS.items() if not spec.optional}
        if not required <= set(pipeline.models) <= set(MODELS):
            raise ValueError(f"the app needs the models {sorted(required)} and knows {sorted(MODELS)}, "
                             f"got {sorted(pipeline.models)}")
        for name, model in pipeline.models.items():
            check_eyes(model, MODELS[name].eyes)
        self.pipeline = pipeline
        self.installed = [name for name in MODELS if name in pipeline.models]  # MODELS order
        self.sources = {name: sources[name] for name in self.installed}
        self.missing = {name: sources.get(name, NOT_INSTALLED) for name in MODELS if name not in pipeline.models}
        self.default_models = [name for name in self.installed if MODELS[name].default]
        self._pipelines: dict[tuple[str, ...], EyeToFacePipeline] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------------------------ the work

    def chosen(self, models) -> list[str]:
        """The models a request names, in MODELS order (the default ones when it names none); a refusal that says
        which names can be used for anything else."""
        if models is None:
            return self.default_models
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

    def pipeline_for(self, models) -> EyeToFacePipeline:
        """The pipeline of the chosen models only (the same model objects): unchosen models cost nothing."""
        key = tuple(self.chosen(models))
        with self._lock:
            if key not in self._pipelines:
                self._pipelines[key] = EyeToFacePipeline({name: self.pipeline.models[name] for name in key})
            return self._pipelines[key]

    def photo_result(self, photo, eyes: str = "both", models=None) -> PhotoResult:
        if eyes not in {value for _, value in EYE_CHOICES}:  # only API clients can send anything else
            raise Refusal("Not a valid choice", f"Which eye: one of {', '.join(v for _, v in EYE_CHOICES)}.", "bad_choice")
        return self.pipeline_for(models)(photo_source(photo), eyes=eyes)

    def photo_status(self, result: PhotoResult) -> str:
        height, width = result.photo.shape[:2]
        scaled = max(height, width) >= MAX_DETECT_SIDE - 1
        both = [MODELS[n].label for n in MODELS if n in result.both_eyes]
        used = {r.box for r in result.eyes}
        also = [f"the {side} eye at {box_text(box)}" for side, box in zip(("left", "right"), result.both_eyes_boxes)
                if box not in used]
        return bullets([
            f"**Face found** at {box_text(result.face_box)}; **eye crops used:** "
            + ", ".join(f"{r.side} eye at {box_text(r.box)}" for r in result.eyes) + ".",
            *([f"**Both eyes, one face:** the {' and '.join(both)}'s face from the left and the right eye crop (the "
               "last row)" + (f"; it also used {also[0]}." if also else ".")] if both else []),
            f"Positions are in pixels of the photo as analysed, {width}x{height}"
            + (f" (larger photos are scaled down to {MAX_DETECT_SIDE} px on their longer side first)." if scaled else "."),
            *result.notes])

    def photo_details(self, result: PhotoResult, comparison: Comparison) -> dict:
        """For programs: the boxes (in pixels of the photo as analysed) and where each tile is in the comparison."""
        height, width = result.photo.shape[:2]
        return {"photo_size": [width, height], "face_box": list(result.face_box),
                "eyes": [{"side": r.side, "box": list(r.box)} for r in result.eyes],
                **comparison.details(), "notes": result.notes}

    def from_eye_crops(self, eye, right_eye, models) -> tuple[Comparison, dict, str]:
        """One eye crop (each one-eye model's face), or two: the left and the right crop of one photo (each one's
        faces, and each two-eye model's face from both)."""
        pipe = self.pipeline_for(models)
        given = [p for p in (eye, right_eye) if p is not None] or [None]  # None: the refusal says what to add
        rgbs = [load_photo(photo_source(p, "eye crop"), min_side=MIN_EYE_CROP) for p in given]
        made = pipe.from_eye_crops(rgbs)
        if not made.faces and not made.both_eyes:
            raise Refusal("Two eye crops needed", "The two-eye model makes one face from both eyes: add the crop of "
                          "the other eye as well, or choose a one-eye model.", "needs_two_eyes")
        sizes = [(rgb.shape[1], rgb.shape[0]) for rgb in rgbs]
        notes = []
        for side, (w, h) in zip(["left", "right"] if len(rgbs) == 2 else [None], sizes):
            notes.append(f"The {side + ' eye ' if side else ''}crop is {w}x{h} px; the models see it at 32x32.")
            if abs(h - w) > 0.2 * max(h, w):
                notes.append("It is far from square, so it was squashed: a square crop around one eye works best.")
        if len(rgbs) == 1 and pipe.two_eyes:
            notes.append("The two-eye model needs both eyes: add the crop of the other eye as well for its face.")
        elif len(rgbs) == 2 and not made.both_eyes:
            notes.append("Each crop got its own faces; the two-eye model (one face from both eyes) is "
                         + ("not chosen." if any(MODELS[n].eyes == 2 for n in self.installed) else "not installed here."))
        comparison = crops_comparison(made, sizes)
        details = {"crop_size": list(sizes[0]), "crop_sizes": [list(s) for s in sizes], **comparison.details(),
                   "notes": notes}
        return comparison, details, bullets(notes)

    def photo_api(self, photo, eyes: str, models) -> tuple[str, dict, str]:
        result = self.photo_result(photo, eyes, models)
        comparison = photo_comparison(result)
        return (cache_png(comparison.image(), "eye2face-comparison.png"), self.photo_details(result, comparison),
                self.photo_status(result))

    def photo_page(self, photo, eyes: str, models) -> tuple[str, str, gr.DownloadButton, str]:
        result = self.photo_result(photo, eyes, models)
        comparison = photo_comparison(result)
        return (comparison.html(), cache_png(result.annotated(), "eye2face-detections.png"), download(comparison),
                self.photo_status(result))

    def eye_crops_api(self, eye, right_eye, models) -> tuple[str, dict, str]:
        comparison, details, status = self.from_eye_crops(eye, right_eye, models)
        return cache_png(comparison.image(), "eye2face-comparison.png"), details, status

    def eye_crops_page(self, eye, right_eye, models) -> tuple[str, gr.DownloadButton, str]:
        comparison, _, status = self.from_eye_crops(eye, right_eye, models)
        return comparison.html(), download(comparison), status

    # ---------------------------------------------------------------------------------------------- endpoints

    def generate(self, photo, eyes: str = "both", models: list[str] | None = None):
        """API /generate: photo -> the comparison PNG, the details (boxes, tile positions) as JSON, a status."""
        try:
            return logged("generate", self.photo_api, photo, eyes, models)
        except Refusal as r:
            raise r.for_api() from None

    def generate_page(self, photo, eyes: str = "both", models: list[str] | None = None):
        """The page's "Generate faces": the comparison (HTML), the photo with its boxes, the download (the PNG), a
        status. A refusal clears the earlier result and says why in the status."""
        try:
            return logged("generate/page", self.photo_page, photo, eyes, models)
        except Refusal as r:
            return "", None, gr.DownloadButton(value=None, interactive=False), r.for_page()

    def generate_from_eye(self, eye, right_eye=None, models: list[str] | None = None):
        """API /generate_from_eye: a ready eye crop (and optionally the other eye's: left, then right) -> the
        comparison PNG (the 32x32 crop, each model's face), the details as JSON, a status."""
        try:
            return logged("generate_from_eye", self.eye_crops_api, eye, right_eye, models)
        except Refusal as r:
            raise r.for_api() from None

    def generate_from_eye_page(self, eye, right_eye=None, models: list[str] | None = None):
        try:
            return logged("generate_from_eye/page", self.eye_crops_page, eye, right_eye, models)
        except Refusal as r:
            return "", gr.DownloadButton(value=None, interactive=False), r.for_page()

    def live(self, frame, eyes: str = "both", has_result: bool = False, models: list[str] | None = None):
        """One webcam frame -> the frame with boxes, the comparison (HTML), a status, whether a result is shown.

        A frame without a usable face keeps the last result (if any) and says so.
        """
        if frame is None:
            return gr.skip(), gr.skip(), "Waiting for the webcam...", has_result
        try:
            result = logged("live", self.photo_result, frame, eyes, models)
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
        return (cache_png(result.annotated(), "eye2face-frame.png"), photo_comparison(result).html(), status.strip(),
                True)


def download(comparison: Comparison) -> gr.DownloadButton:
    """The download button, holding the comparison as a PNG with its labels drawn in."""
    return gr.DownloadButton(value=cache_png(comparison.image(), "eye2face-comparison.png"), interactive=True)
