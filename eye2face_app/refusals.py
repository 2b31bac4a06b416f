"""What a person is told when a request cannot be served, and the one log line every request writes."""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable

import gradio as gr
from gradio.context import LocalContext

from eye2face_hub import Eye2FaceError, InvalidImageError, NoEyeError, NoFaceError

log = logging.getLogger("eye2face.app")

# Every kind of refusal, as the log's `outcome=error:<kind>` names it (docs/app.md lists them).
KINDS = ("invalid_image", "no_face", "no_eye", "unusable", "no_input", "expired", "bad_choice", "not_installed",
         "no_model", "needs_two_eyes", "internal")
# The refusals that are about the choice of models, not the photo (the webcam stream says them as they are).
MODEL_CHOICE_KINDS = {"bad_choice", "not_installed", "no_model", "needs_two_eyes"}


class Refusal(Exception):
    """A request the app cannot serve: what the person reads (a title and a message) and a kind for the log."""

    def __init__(self, title: str, message: str, kind: str):
        if kind not in KINDS:
            raise ValueError(f"unknown kind of refusal {kind!r}: add it to KINDS and docs/app.md")
        super().__init__(message)
        self.title, self.message, self.kind = title, message, kind

    def for_api(self) -> gr.Error:
        """For API clients: an error with this title (gradio_client raises AppError); no traceback in the log."""
        return gr.Error(self.message, title=self.title, print_exception=False)

    def for_page(self) -> str:
        """For the page: the status area, where it stays until the next request."""
        return f"### ⚠️ {self.title}\n{self.message}"


# The library's error class -> (title, kind). The kind, never the message (which may name the file), is logged.
TITLES = {InvalidImageError: ("Not a usable image", "invalid_image"), NoFaceError: ("No face found", "no_face"),
          NoEyeError: ("No eye found", "no_eye")}
INTERNAL = Refusal("Something went wrong", "The server could not process this request; please try again.", "internal")


def refusal_for(e: Eye2FaceError) -> Refusal:
    title, kind = next((v for cls, v in TITLES.items() if isinstance(e, cls)), ("Cannot use this image", "unusable"))
    return Refusal(title, sentence(str(e)), kind)


def sentence(text: str) -> str:
    """A message as a sentence: capitalised unless it starts with a name ("empty.jpg is empty"), with a full stop."""
    if text.split(" ", 1)[0].isalpha():
        text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def queue_wait_ms() -> float | None:
    """How long the request being served waited in Gradio's queue (None outside a queued event)."""
    try:
        blocks, event_id = LocalContext.blocks.get(None), LocalContext.event_id.get(None)
        event = blocks._queue.event_ids_to_events[event_id]  # Gradio's own record of the request
        return (time.monotonic() - event.enqueue_time) * 1000
    except Exception:  # not queued (called directly), or Gradio's internals moved: the log line says "-"
        return None


def logged(endpoint: str, work: Callable, *args):
    """work(*args), logging one line: endpoint, outcome (ok or the kind of error), milliseconds, queue wait.

    Never the input, the output or a file name. The person's errors become Refusals; anything else is logged with
    its traceback (not its message, which may hold a file name) and becomes the INTERNAL refusal.
    """
    waited = queue_wait_ms()
    start = time.perf_counter()
    outcome = "ok"
    try:
        return work(*args)
    except Refusal as r:
        outcome = f"error:{r.kind}"
        raise
    except Eye2FaceError as e:
        r = refusal_for(e)
        outcome = f"error:{r.kind}"
        raise r from None
    except Exception as e:
        outcome = "error:internal"
        log.error("%s failed: %s\n%s", endpoint, type(e).__name__, "".join(traceback.format_tb(e.__traceback__)).rstrip())
        raise INTERNAL from None
    finally:
        log.info("endpoint=%s outcome=%s ms=%.0f queue_wait_ms=%s", endpoint, outcome,
                 (time.perf_counter() - start) * 1000, "-" if waited is None else f"{waited:.0f}")
