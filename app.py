"""eye2face demo: a whole face from a crop of one eye, L1 loss vs feature loss side by side (Gradio).

    python app.py        # http://127.0.0.1:$GRADIO_SERVER_PORT (default 7860)

Models: the Hub repos (or local folders) named by EYE2FACE_L1_MODEL and EYE2FACE_FEATURE_MODEL; when unset or
unreachable (one quick request, no retries), the weights bundled in weights/eye2face-l1 and weights/eye2face-feature.
The same file runs as a Hugging Face Space. Everything else (detection, cropping, generation) is eye2face_hub.
"""

from __future__ import annotations

import os

# Before gradio and huggingface_hub are imported: no telemetry and no version look-ups unless asked for.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import base64  # noqa: E402
import io  # noqa: E402
import logging  # noqa: E402
import types  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Mapping  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from gradio.processing_utils import hash_bytes  # noqa: E402
from gradio.utils import get_upload_folder  # noqa: E402
from PIL import Image  # noqa: E402

from eye2face_hub import Eye2FaceError, EyeToFace, EyeToFacePipeline, InvalidImageError, NoEyeError, NoFaceError  # noqa: E402
from eye2face_hub.data import EYE_SIZE  # noqa: E402
from eye2face_hub.pipeline import comparison_grid, load_photo  # noqa: E402

log = logging.getLogger("eye2face.app")

ROOT = Path(__file__).resolve().parent
WEIGHTS_DIR = Path(os.environ.get("EYE2FACE_WEIGHTS_DIR") or ROOT / "weights")
EXAMPLES_DIR = ROOT / "examples"
# pipeline name -> (what the person reads, environment variable naming a Hub repo or folder, bundled folder)
MODELS = {
    "l1": ("L1 loss", "EYE2FACE_L1_MODEL", "eye2face-l1"),
    "feature": ("Feature loss", "EYE2FACE_FEATURE_MODEL", "eye2face-feature"),
}
# Uploads, webcam snapshots and results are deleted from the server this long after they were written.
CACHE_SECONDS = max(1, int(os.environ.get("EYE2FACE_CACHE_SECONDS", "300")))
MIN_EYE_CROP = 8  # pixels; the eye boxes the Haar detector finds in photos are often smaller than the 32 the models take
EYE_CHOICES = [("Both eyes", "both"), ("Left eye (as seen in the photo)", "left"), ("Right eye (as seen in the photo)", "right")]
# zlib level of the output PNGs: lossless at any level; 1 encodes several times faster than Pillow's default (6)
# for files 10-20% larger (bench/README.md).
PNG_COMPRESS_LEVEL = 1
ERROR_TITLES = {InvalidImageError: "Not a usable image", NoFaceError: "No face found", NoEyeError: "No eye found"}

ABOUT = """
**What it does.** A small convolutional autoencoder turns a 32x32 crop of **one eye** into a 128x128 face,
after *From an Eye to a Face* (Tse, Jok, Ng, Lee). Two models with the same architecture are compared: one trained
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
.pixelated img { image-rendering: pixelated; width: 128px; height: 128px; object-fit: contain; }
"""


# ---------------------------------------------------------------------------------------------------------- models


def load_model(env_var: str, bundled: Path, env: Mapping[str, str] | None = None) -> tuple[EyeToFace, str]:
    """The model named by `env_var` (Hub repo id or folder), else the bundled folder; and where it came from.

    EyeToFace.from_pretrained checks the Hub with one short request and no retries (EYE2FACE_HUB_TIMEOUT) and
    uses the local Hub cache when the Hub cannot be reached; a repo it cannot load falls back to the bundled
    weights at once, and the UI says why.
    """
    env = os.environ if env is None else env
    wanted = env.get(env_var, "").strip()
    fallback = ""
    if wanted:
        kind = "folder" if Path(wanted).is_dir() else "Hub repo"
        try:
            return EyeToFace.from_pretrained(wanted), f"{kind} `{wanted}` (from {env_var})"
        except Exception as e:  # unreachable, missing, private, damaged: the bundled weights serve instead
            reason = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}"
            fallback = f"; `{wanted}` from {env_var} could not be loaded ({reason})"
            log.warning("%s=%s could not be loaded (%s); using %s", env_var, wanted, reason, bundled)
    if not (bundled / "model.safetensors").is_file():
        raise FileNotFoundError(f"no model: set {env_var} to a Hub repo id or folder, or put weights in {bundled}")
    shown = bundled.relative_to(ROOT) if bundled.is_relative_to(ROOT) else bundled
    return EyeToFace.from_pretrained(str(bundled)), f"bundled `{shown}`{fallback}"


def load_pipeline(env: Mapping[str, str] | None = None, weights_dir: Path = WEIGHTS_DIR) -> tuple[EyeToFacePipeline, dict[str, str]]:
    """The two-model pipeline ("l1", "feature") and, per model, a line saying which weights were loaded."""
    models, sources = {}, {}
    for name, (_, env_var, folder) in MODELS.items():
        models[name], sources[name] = load_model(env_var, weights_dir / folder, env)
        preset = (models[name].loss_config or {}).get("preset")
        if preset and preset != name:
            sources[name] += f" (warning: its config.json says it was trained with the {preset!r} preset)"
        elif not preset:
            sources[name] += " (its config.json does not say how it was trained)"
    return EyeToFacePipeline(models), sources


# -------------------------------------------------------------------------------------------------------- handlers


def _photo_source(payload, what: str = "photo") -> str | bytes:
    """What the pipeline reads, from an image input that Gradio did not decode (preprocess=False).

    Gradio is left out of decoding so that a file that is not an image gets the pipeline's clear message
    (and EXIF rotation, alpha and 16-bit handling) rather than a generic processing error.
    """
    if payload is None:
        raise _error(f"Add a {what} first: upload one or paste one.", "Nothing to work on")
    if isinstance(payload, (str, Path)):
        return str(payload)
    url = payload.get("url") or ""
    if url.startswith("data:"):  # webcam frames come inline
        try:
            return base64.b64decode(url.partition(",")[2], validate=True)
        except ValueError:
            raise _error(f"The {what} arrived damaged; please try again.", "Not a usable image") from None
    path = payload.get("path")
    if not path:
        raise _error(f"The {what} did not reach the server; please add it again.", "Nothing to work on")
    if not os.path.exists(path):
        raise _error(f"This {what} is no longer on the server (files are deleted after {CACHE_SECONDS} s); add it again.",
                     "Please add it again")
    return path


def _error(message: str, title: str) -> gr.Error:
    """A message for the person in front of the page; not a server fault, so no traceback in the log."""
    return gr.Error(message, title=title, print_exception=False)


def _user_error(e: Eye2FaceError) -> gr.Error:
    message = str(e)
    return _error(message[:1].upper() + message[1:] + ".", ERROR_TITLES.get(type(e), "Cannot use this image"))


def _grid(result) -> np.ndarray:
    """The downloadable summary: one row per eye used, eye crop | L1 face | feature face | real face."""
    return comparison_grid(
        [[r.eye for r in result.eyes], [r.faces["l1"] for r in result.eyes],
         [r.faces["feature"] for r in result.eyes], [result.real_face] * len(result.eyes)],
        ["eye crop", "L1 loss", "feature loss", "real face"],
    )


def _save_png(image: np.ndarray, name: str) -> str:
    """A PNG file in Gradio's cache (so that `delete_cache` removes it with the rest) for a download button."""
    folder = Path(get_upload_folder()) / f"eye2face-{uuid.uuid4().hex}"
    folder.mkdir(parents=True)
    path = folder / name
    Image.fromarray(image).save(path, compress_level=PNG_COMPRESS_LEVEL)
    return str(path)


def _png_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buf.getvalue()


def _postprocess_png(image: gr.Image, value):
    """gr.Image.postprocess, with arrays written as PNG at PNG_COMPRESS_LEVEL into Gradio's cache as Gradio does.

    Gradio's own PNG encoding (Pillow's default zlib level 6) was half of a request's time (bench/README.md).
    (Set on the instance: a gr.Image subclass would make Gradio write an app.pyi stub beside app.py.)
    """
    if isinstance(value, np.ndarray) and value.dtype == np.uint8:
        data = _png_bytes(value)
        path = Path(image.GRADIO_CACHE) / hash_bytes(data) / "image.png"
        if path.exists():
            # Named by its content, so it is this image, and another request may be downloading it: never rewrite
            # it in place (Gradio does, and concurrent downloads of the same result then break off). Touch it, so
            # that delete_cache (by age) does not remove it before this request's download.
            try:
                os.utime(path)
            except OSError:
                pass
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            staging = path.with_name(f".image.png.{uuid.uuid4().hex}")
            staging.write_bytes(data)
            os.replace(staging, path)  # atomic: a reader sees the whole file or none
        value = str(path)
    return gr.Image.postprocess(image, value)


def _status(lines: list[str]) -> str:
    return "\n".join(f"- {line}" for line in lines)


class Handlers:
    """The handlers behind the UI and its API, around one pipeline."""

    def __init__(self, pipeline: EyeToFacePipeline, sources: dict[str, str]):
        if set(pipeline.models) != set(MODELS):
            raise ValueError(f"the app needs the models {sorted(MODELS)}, got {sorted(pipeline.models)}")
        self.pipeline = pipeline
        self.sources = sources

    def run(self, photo, eyes: str = "both"):
        """Photo -> boxes drawn on it; per eye (left, right): crop, L1 face, feature face; the real face; PNG grid."""
        try:
            result = self.pipeline(_photo_source(photo), eyes=eyes)
        except Eye2FaceError as e:
            raise _user_error(e) from None
        per_side = {r.side: r for r in result.eyes}
        rows = []
        for side in ("left", "right"):
            r = per_side.get(side)
            rows += [r.eye, r.faces["l1"], r.faces["feature"]] if r else [None, None, None]
        used = ", ".join(f"{r.side} eye at x={r.box[0]}, y={r.box[1]} ({r.box[2]}x{r.box[3]} px)" for r in result.eyes)
        status = _status([f"Face found at x={result.face_box[0]}, y={result.face_box[1]} "
                          f"({result.face_box[2]}x{result.face_box[3]} px); used: {used}.", *result.notes])
        return (result.annotated(), *rows, result.real_face, _save_png(_grid(result), "eye2face-results.png"), status)

    def run_eye(self, eye):
        """A ready eye crop -> the 32x32 crop the models see, the L1 face, the feature face; PNG grid."""
        try:
            rgb = load_photo(_photo_source(eye, "eye crop"), min_side=MIN_EYE_CROP)
        except Eye2FaceError as e:
            raise _user_error(e) from None
        faces = self.pipeline.generate([rgb])
        small = cv2.resize(rgb, (EYE_SIZE, EYE_SIZE)) if rgb.shape[:2] != (EYE_SIZE, EYE_SIZE) else rgb  # as generate does
        notes = [f"The crop is {rgb.shape[1]}x{rgb.shape[0]} px; the models see it at 32x32."]
        if abs(rgb.shape[0] - rgb.shape[1]) > 0.2 * max(rgb.shape[:2]):
            notes.append("It is far from square, so it was squashed: a square crop around one eye works best.")
        grid = comparison_grid([[small], [faces["l1"][0]], [faces["feature"][0]]], ["eye crop", "L1 loss", "feature loss"])
        return small, faces["l1"][0], faces["feature"][0], _save_png(grid, "eye2face-results.png"), _status(notes)

    def live(self, frame, eyes: str = "both"):
        """One webcam frame -> the frame with boxes and the comparison grid; a frame without a face keeps the last."""
        if frame is None:
            return gr.skip(), gr.skip(), "Waiting for the webcam..."
        try:
            result = self.pipeline(_photo_source(frame), eyes=eyes)
        except Eye2FaceError as e:
            title = ERROR_TITLES.get(type(e), "Cannot use this frame")
            return gr.skip(), gr.skip(), f"{title} in the current frame (showing the last result): {e}."
        used = " and ".join(f"{r.side} eye" for r in result.eyes)
        return result.annotated(), _grid(result), f"Face found; generated from the {used}. " + " ".join(result.notes)


# -------------------------------------------------------------------------------------------------------------- UI


def _weights_markdown(sources: dict[str, str]) -> str:
    return "**Weights loaded.** " + "; ".join(f"{MODELS[name][0]}: {src}" for name, src in sources.items()) + "."


def _image(label: str, **kwargs) -> gr.Image:
    """An output image, served as PNG (Gradio's default is lossy WebP), fast to encode (PNG_COMPRESS_LEVEL)."""
    image = gr.Image(label=label, format="png", interactive=False, buttons=["download", "fullscreen"], **kwargs)
    image.postprocess = types.MethodType(_postprocess_png, image)
    return image


def build_demo(handlers: Handlers) -> gr.Blocks:
    examples = [p for p in (EXAMPLES_DIR / "astronaut.png", EXAMPLES_DIR / "chelsea-the-cat.png") if p.exists()]
    eye_example = EXAMPLES_DIR / "astronaut-eye-crop.png"
    with gr.Blocks(title="eye2face: a face from one eye", delete_cache=(min(60, CACHE_SECONDS), CACHE_SECONDS)) as blocks:
        gr.Markdown("# eye2face: a whole face from one eye\nL1 loss vs feature loss, side by side. "
                    "A research demo: the faces are guesses, not the person.")
        gr.Markdown(_weights_markdown(handlers.sources), elem_id="weights")
        with gr.Tab("Photo"):
            with gr.Row():
                with gr.Column():
                    photo = gr.Image(label="Photo with a face", sources=["upload", "webcam", "clipboard"],
                                     type="filepath", elem_id="photo")
                    eyes = gr.Radio(EYE_CHOICES, value="both", label="Which eye to generate from", elem_id="eyes")
                    button = gr.Button("Generate faces", variant="primary", elem_id="generate")
                    if examples:
                        gr.Examples([[str(p), "both"] for p in examples], [photo, eyes],
                                    example_labels=[p.stem.replace("-", " ") for p in examples])
                with gr.Column():
                    annotated = _image("Detections: face (green), eyes used (orange)", elem_id="annotated")
                    status = gr.Markdown(label="Status", elem_id="status")
            outputs = [annotated]
            with gr.Row():
                with gr.Column(scale=3):
                    for side in ("left", "right"):
                        with gr.Row():
                            outputs += [
                                _image(f"{side.title()} eye crop (32x32, model input)", elem_id=f"{side}-eye",
                                       elem_classes="pixelated", height=200),
                                _image(f"{side.title()} eye: L1-loss face", elem_id=f"{side}-l1", height=200),
                                _image(f"{side.title()} eye: feature-loss face", elem_id=f"{side}-feature", height=200),
                            ]
                with gr.Column(scale=1):
                    outputs.append(_image("Real face (crop of the photo)", elem_id="real-face", height=200))
            download = gr.DownloadButton("Download the results (PNG grid)", elem_id="download")
            button.click(handlers.run, [photo, eyes], [*outputs, download, status], api_name="generate", preprocess=False)

        with gr.Tab("I already have an eye crop"):
            gr.Markdown(f"A crop around **one** eye, roughly square (like the example), at least {MIN_EYE_CROP}x"
                        f"{MIN_EYE_CROP} pixels; it is resized to the 32x32 the models take.")
            with gr.Row():
                with gr.Column():
                    eye_in = gr.Image(label="Eye crop", sources=["upload", "clipboard"], type="filepath",
                                      elem_id="eye-input", elem_classes="pixelated")
                    eye_button = gr.Button("Generate faces", variant="primary", elem_id="generate-eye")
                    if eye_example.exists():
                        gr.Examples([[str(eye_example)]], [eye_in], example_labels=["astronaut eye crop"])
                eye_out = [
                    _image("Eye crop as the models see it (32x32)", elem_id="eye-crop", elem_classes="pixelated", height=200),
                    _image("L1-loss face", elem_id="eye-l1", height=200),
                    _image("Feature-loss face", elem_id="eye-feature", height=200),
                ]
            eye_download = gr.DownloadButton("Download the results (PNG grid)")
            eye_status = gr.Markdown(label="Status", elem_id="eye-status")
            eye_button.click(handlers.run_eye, [eye_in], [*eye_out, eye_download, eye_status], api_name="generate_from_eye",
                             preprocess=False)

        with gr.Tab("Live webcam"):
            gr.Markdown("Allow the webcam and press *Record*: the faces follow the camera, a couple of times a second. "
                        "Frames are read in memory; results are deleted from the server within minutes.")
            with gr.Row():
                with gr.Column():
                    webcam = gr.Image(label="Webcam", sources=["webcam"], streaming=True, type="filepath",
                                      webcam_options=gr.WebcamOptions(mirror=False), elem_id="webcam")
                    live_eyes = gr.Radio(EYE_CHOICES, value="both", label="Which eye to generate from")
                with gr.Column():
                    live_annotated = _image("Detections", elem_id="live-annotated")
                    live_grid = _image("Eye crop | L1 loss | feature loss | real face", elem_id="live-grid", show_label=False)
                    live_status = gr.Markdown(label="Status", elem_id="live-status")
            webcam.stream(handlers.live, [webcam, live_eyes], [live_annotated, live_grid, live_status], api_name="live",
                          preprocess=False, stream_every=0.5, time_limit=300, concurrency_limit=2,
                          show_progress="hidden")

        with gr.Accordion("About this demo: method, limits, privacy", open=False):
            gr.Markdown(ABOUT)
    return blocks


def launch(blocks: gr.Blocks, **kwargs):
    """Serve on GRADIO_SERVER_NAME (default 127.0.0.1) and GRADIO_SERVER_PORT (default 7860)."""
    kwargs.setdefault("server_name", os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    return blocks.queue(max_size=int(os.environ.get("EYE2FACE_QUEUE_SIZE", "32"))).launch(css=CSS, **kwargs)


def create_app(env: Mapping[str, str] | None = None, weights_dir: Path = WEIGHTS_DIR) -> gr.Blocks:
    torch.set_num_threads(int(os.environ.get("EYE2FACE_TORCH_THREADS", "1")))  # tiny model; threads fight on shared CPUs
    pipeline, sources = load_pipeline(env, weights_dir)
    for name, src in sources.items():
        log.info("%s: %s", MODELS[name][0], src)
    return build_demo(Handlers(pipeline, sources))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    launch(create_app())
