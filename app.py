"""eye2face demo: a whole face from a crop of one eye, each model's face side by side (Gradio; also a Hugging Face Space).

    python app.py        # http://127.0.0.1:$GRADIO_SERVER_PORT (default 7860)

The page; the rest of the app is the eye2face_app package (models, handlers, the comparison, refusals and logging)
and the library is eye2face_hub (detection, cropping, generation). docs/app.md tells how to configure and call it.
"""

from __future__ import annotations

import os

# Before gradio and huggingface_hub are imported: no telemetry and no version look-ups unless asked for.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import logging  # noqa: E402
from collections.abc import Mapping  # noqa: E402
from pathlib import Path  # noqa: E402

import gradio as gr  # noqa: E402
import torch  # noqa: E402

from eye2face_app import comparison  # noqa: E402
from eye2face_app.handlers import CACHE_SECONDS, EYE_CHOICES, Handlers  # noqa: E402
from eye2face_app.models import MODELS, ROOT, WEIGHTS_DIR, load_pipeline, models_markdown, weights_markdown  # noqa: E402
from eye2face_hub.data import MIN_EYE_CROP  # noqa: E402

log = logging.getLogger("eye2face.app")

EXAMPLES_DIR = ROOT / "examples"
# Requests waiting beyond this many get Gradio's "queue is full" answer. 100 covers a burst of 50 visitors at once
# with room to spare; at the ~0.1-0.2 s a request takes on a 2-vCPU Space, the last in line waits 10-20 s.
QUEUE_SIZE = 100

ABOUT = f"""
**What it does.** A small convolutional autoencoder turns a 32x32 crop of **one eye** into a 128x128 face,
after *From an Eye to a Face* (Tse, Jok, Ng, Lee). Models with the same architecture are compared: one trained
with a plain **L1 (pixel) loss**, which gives blurry average faces, and one trained with a **feature loss** (differences
of VGG19 activations, plus a standard-deviation term), which gives sharper, more face-like results.
The app finds the face and the eyes with OpenCV Haar cascades, draws the boxes it used on the photo, and shows the
exact eye crop each face was generated from.

**Limits.** The models were trained on CelebA celebrity photos (near-frontal, well lit, aligned), so they do best on
similar photos and reproduce that data set's biases: mostly young adults. The two-eye and the feature + identity
models were also trained on UTKFace (faces aged 0 to 116); they still give children and older people a younger
adult's face more often than not.
One eye carries little information: the face is a plausible guess at the average face that goes with such an eye,
**not the real person's face**. Haar cascades miss faces that are turned, small, dark or partly hidden, and sometimes
take an eyebrow or a nostril for an eye.

**This is a research demo, not an identification tool.** Do not use it to identify, verify or judge anyone.
Photos, webcam frames and results are not kept: they are deleted from the server within
{-(-(CACHE_SECONDS + min(60, CACHE_SECONDS)) // 60)} minute(s) of each request, and they are not logged.
Trained weights: CelebA (and UTKFace for the two-eye and the feature + identity models), both non-commercial research use only.
"""

CSS = comparison.CSS + """
.pixelated img { image-rendering: pixelated; }
.e2f-result .html-container { padding: 0 !important; }
@media (max-width: 480px) { .gradio-container .app { padding-left: 8px !important; padding-right: 8px !important; } }
"""


def _image(label: str, **kwargs) -> gr.Image:
    """An output image: the handlers write PNG files (lossless; Gradio's default would be lossy WebP)."""
    return gr.Image(label=label, type="filepath", format="png", interactive=False, buttons=["download", "fullscreen"],
                    **kwargs)


def _comparison(elem_id: str) -> gr.HTML:
    """The comparison on the page: its labels are page text (readable on a phone), its tiles inline PNGs."""
    return gr.HTML("", elem_id=elem_id, elem_classes="e2f-result", min_height=0)


def _download(**kwargs) -> gr.DownloadButton:
    return gr.DownloadButton("Download the comparison (PNG)", interactive=False, size="sm", **kwargs)


def build_demo(handlers: Handlers) -> gr.Blocks:
    examples = [p for p in (EXAMPLES_DIR / "astronaut.png", EXAMPLES_DIR / "chelsea-the-cat.png") if p.exists()]
    example_labels = {"astronaut": "astronaut", "chelsea-the-cat": "chelsea the cat (no human face: shows the message)"}
    eye_example = EXAMPLES_DIR / "astronaut-eye-crop.png"
    labels = [MODELS[name].label for name in handlers.default_models]
    with gr.Blocks(title="eye2face: a face from one eye", delete_cache=(min(60, CACHE_SECONDS), CACHE_SECONDS)) as blocks:
        gr.Markdown("# eye2face: a whole face from one eye\n" + ", ".join(labels) + ", side by side. "
                    "A research demo: the faces are guesses, not the person.")
        choices = [(MODELS[name].label, name) for name in handlers.installed]
        # Shown when there is something to add to the default comparison; it applies to all three tabs.
        models = gr.CheckboxGroup(choices, value=handlers.default_models, label="Models to compare (every tab)",
                                  visible=any(MODELS[name].optional for name in handlers.installed),
                                  elem_id="models-to-compare")
        details = gr.JSON(label="Details: boxes, columns, tile positions", visible=False)
        # The API's comparison: the PNG, with its labels drawn in; the page shows the HTML rendering instead.
        png = gr.Image(type="filepath", format="png", visible=False)
        with gr.Tab("Photo"):
            with gr.Row():
                with gr.Column(scale=2, min_width=320):
                    photo = gr.Image(label="Photo with a face", sources=["upload", "webcam", "clipboard"],
                                     type="filepath", elem_id="photo", height=320)
                    eyes = gr.Radio(EYE_CHOICES, value="both", label="Which eye to generate from",
                                    info="Left and right as seen in the photo.", elem_id="eyes")
                    button = gr.Button("Generate faces", variant="primary", elem_id="generate")
                    if examples:
                        gr.Examples([[str(p), "both"] for p in examples], [photo, eyes],
                                    example_labels=[example_labels.get(p.stem, p.stem) for p in examples])
                    status = gr.Markdown("Add a photo (upload, webcam or paste) or pick an example, then press "
                                         "**Generate faces**.", elem_id="status")
                with gr.Column(scale=3, min_width=320):
                    result = _comparison("comparison")
                    download = _download(elem_id="download")
                    annotated = _image("Detections: face (green), eye crops used (orange)", elem_id="annotated")
            button.click(handlers.generate_page, [photo, eyes, models], [result, annotated, download, status],
                         api_visibility="private", preprocess=False, concurrency_id="pipeline")
            # The API endpoint: no trigger on the page. One file (the comparison PNG); the boxes and the tile
            # positions as JSON rather than the photo drawn on.
            gr.on([], handlers.generate, [photo, eyes, models], [png, details, status], api_name="generate",
                  preprocess=False, concurrency_id="pipeline")

        with gr.Tab("Eye crop"):
            gr.Markdown(f"A crop around **one** eye, roughly square (like the example), at least {MIN_EYE_CROP}x"
                        f"{MIN_EYE_CROP} pixels; it is resized to the 32x32 the models take. Add the crop of the "
                        "other eye too (left and right as seen in the photo): each crop gets its faces, and "
                        + ("the two-eye model makes one face from both."
                           if any(MODELS[name].eyes == 2 for name in handlers.installed)
                           else "a two-eye model would make one face from both (none is installed here)."))
            with gr.Row():
                with gr.Column(scale=2, min_width=320):
                    with gr.Row():
                        eye_in = gr.Image(label="Eye crop (or the left one)", sources=["upload", "clipboard"],
                                          type="filepath", elem_id="eye-input", elem_classes="pixelated", height=240)
                        eye_right = gr.Image(label="Right eye crop (optional)", sources=["upload", "clipboard"],
                                             type="filepath", elem_id="eye-input-right", elem_classes="pixelated",
                                             height=240)
                    eye_button = gr.Button("Generate faces", variant="primary", elem_id="generate-eye")
                    if eye_example.exists():
                        gr.Examples([[str(eye_example)]], [eye_in], example_labels=["astronaut eye crop"])
                    eye_status = gr.Markdown("Add an eye crop, then press **Generate faces**.", elem_id="eye-status")
                with gr.Column(scale=3, min_width=320):
                    eye_result = _comparison("eye-comparison")
                    eye_download = _download(elem_id="eye-download")
            eye_button.click(handlers.generate_from_eye_page, [eye_in, eye_right, models],
                             [eye_result, eye_download, eye_status], api_visibility="private", preprocess=False,
                             concurrency_id="pipeline")
            gr.on([], handlers.generate_from_eye, [eye_in, eye_right, models], [png, details, eye_status],
                  api_name="generate_from_eye", preprocess=False, concurrency_id="pipeline")

        with gr.Tab("Webcam"):
            gr.Markdown("Allow the webcam and press *Record*: the faces follow the camera, a couple of times a second. "
                        "Frames are read in memory; results are deleted from the server within minutes.")
            with gr.Row():
                with gr.Column(scale=2, min_width=320):
                    webcam = gr.Image(label="Webcam", sources=["webcam"], streaming=True, type="filepath",
                                      webcam_options=gr.WebcamOptions(mirror=False), elem_id="webcam")
                    live_eyes = gr.Radio(EYE_CHOICES, value="both", label="Which eye to generate from",
                                         info="Left and right as seen in the frame.")
                    live_status = gr.Markdown("Press *Record* to start.", elem_id="live-status")
                with gr.Column(scale=3, min_width=320):
                    live_result = _comparison("live-comparison")
                    live_annotated = _image("Detections", elem_id="live-annotated")
            has_result = gr.State(False)
            webcam.stream(handlers.live, [webcam, live_eyes, has_result, models],
                          [live_annotated, live_result, live_status, has_result], api_name="live",
                          preprocess=False, stream_every=0.5, time_limit=300, concurrency_limit=2,
                          show_progress="hidden")

        gr.Markdown("## The models\n" + models_markdown(handlers.installed), elem_id="models")
        gr.Markdown(weights_markdown(handlers.sources, handlers.missing), elem_id="weights")
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
