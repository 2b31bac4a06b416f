"""The models the app can compare (MODELS: one entry a model) and how each loads: an environment variable naming a Hub
repo or a folder, else its folder bundled in the weights folder."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import torch

from eye2face_hub import EyeToFacePipeline, load_generator

log = logging.getLogger("eye2face.app")

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS_DIR = Path(os.environ.get("EYE2FACE_WEIGHTS_DIR") or ROOT / "weights")
NOT_INSTALLED = "not installed"


class ModelSpec(NamedTuple):
    label: str  # what the person reads: the comparison's column header and the "weights loaded" line
    env_var: str  # names a Hub repo id or a folder to load instead of the bundled weights
    folder: str  # the bundled weights: a folder in WEIGHTS_DIR
    about: str = ""  # what the model is, in one line (the page lists it)
    preset: str | None = None  # the loss preset its config.json should name (None: the entry's name)
    eyes: int = 1  # eye crops per face: 1, or 2 (the left and right crops of one photo; its own row, "both eyes")
    optional: bool = False  # without weights the app runs without it and says so; a required one stops the start
    default: bool = True  # compared when a request names no models; else added on request


# In the order of the comparison's columns. The research's pair (L1 vs feature loss) and the two-eye model's row are
# the default comparison, on the page and through the API (a sixth column leaves a phone's faces under 60 px wide);
# a person or an API call (`models=[...]`) adds the others.
MODELS: dict[str, ModelSpec] = {
    "l1": ModelSpec("L1 loss", "EYE2FACE_L1_MODEL", "eye2face-l1",
                    "the research's baseline: a plain pixel (L1) loss, which gives blurry, average faces."),
    "feature": ModelSpec("feature loss", "EYE2FACE_FEATURE_MODEL", "eye2face-feature",
                         "the research's method: VGG19 feature loss plus a standard-deviation term, for sharper faces."),
    "feature-id": ModelSpec("feature + identity", "EYE2FACE_FEATURE_ID_MODEL", "eye2face-feature-id-allages",
                            "the research's future work: the feature model continued with a face recogniser's "
                            "(FaceNet) identity loss, also on UTKFace's faces of all ages.",
                            preset="feature-id", optional=True, default=False),
    "wgan-gp": ModelSpec("WGAN-GP", "EYE2FACE_WGAN_GP_MODEL", "eye2face-wgan-gp",
                         "the research's GAN comparison: a conditional Wasserstein GAN with gradient penalty, "
                         "trained by its critic alone.", optional=True, default=False),
    "feature-gan": ModelSpec("feature + GAN", "EYE2FACE_FEATURE_GAN_MODEL", "eye2face-feature-gan",
                             "the research's future work: feature and standard-deviation loss plus an adversarial "
                             "term from a critic.", optional=True, default=False),
    "two-eyes": ModelSpec("two-eye model", "EYE2FACE_TWO_EYES_MODEL", "eye2face-two-eyes-id-allages",
                          "both eyes in, one face out (Chen et al. 2018), feature plus identity (FaceNet) loss, "
                          "also trained on UTKFace's faces of all ages: its face is the \"both eyes\" row.",
                          preset="feature-id", eyes=2, optional=True),
}


class ModelMissing(FileNotFoundError):
    """Neither the environment variable nor the bundled folder gives a model; `reason`, for the page, says why the
    model the environment variable named could not be loaded ("" when it names none)."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def load_model(env_var: str, bundled: Path, env: Mapping[str, str] | None = None,
               eyes: int = 1) -> tuple[torch.nn.Module, str]:
    """The model named by `env_var` (Hub repo id or folder), else the bundled folder; and where it came from.

    load_generator checks the Hub with one short request and no retries (EYE2FACE_HUB_TIMEOUT) and uses the local Hub
    cache when the Hub cannot be reached; a repo it cannot load, or a model that does not take `eyes` eye crops,
    falls back to the bundled weights at once, and the page says why. ModelMissing when neither gives a model.
    """
    env = os.environ if env is None else env
    wanted = env.get(env_var, "").strip()
    fallback = ""
    if wanted:
        kind = "folder" if Path(wanted).is_dir() else "Hub repo"
        try:
            return check_eyes(load_generator(wanted), eyes), f"{kind} `{wanted}` (from {env_var})"
        except Exception as e:  # unreachable, missing, private, damaged: the bundled weights serve instead
            reason = f"{type(e).__name__}: {whole_sentences(str(e))}".rstrip(": ")
            fallback = f"`{wanted}` from {env_var} could not be loaded ({reason})"
            log.warning("%s=%s could not be loaded (%s); using %s", env_var, wanted, reason, bundled)
    shown = bundled.relative_to(ROOT) if bundled.is_relative_to(ROOT) else bundled
    if not (bundled / "model.safetensors").is_file():
        raise ModelMissing(f"no model: set {env_var} to a Hub repo id or folder, or put weights in {bundled}"
                           + (f" ({fallback})" if fallback else ""), fallback)
    return check_eyes(load_generator(str(bundled)), eyes), f"bundled `{shown}`" + (f"; {fallback}" if fallback else "")


def check_eyes(model: torch.nn.Module, eyes: int) -> torch.nn.Module:
    """`model`, if it takes `eyes` eye crops per face (a one-eye model in the two-eye model's place would not)."""
    if getattr(model, "eyes", 1) != eyes:
        count = {1: "one", 2: "two"}
        raise ValueError(f"it is a {count.get(getattr(model, 'eyes', 1))}-eye model ({type(model).__name__}); "
                         f"this place needs a {count.get(eyes, eyes)}-eye model")
    return model


def whole_sentences(text: str, limit: int = 600) -> str:
    """`text` on one line; if longer than `limit`, cut at the end of a sentence, never in the middle of one."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    ends = [m.end() for m in re.finditer(r"[.;)](?=\s)", text[:limit])]
    return text[: ends[-1]] + " [...]" if ends else text


def load_pipeline(env: Mapping[str, str] | None = None,
                  weights_dir: Path = WEIGHTS_DIR) -> tuple[EyeToFacePipeline, dict[str, str]]:
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


def weights_markdown(sources: dict[str, str], missing: dict[str, str] | None = None) -> str:
    """Which weights were loaded, per model; then, in one line, the optional models that are not installed."""
    text = "**Weights loaded.** " + "; ".join(f"{MODELS[name].label}: {src}" for name, src in sources.items()) + "."
    if missing:
        why = {name: line.removeprefix(NOT_INSTALLED).strip() for name, line in missing.items()}
        text += ("\n\n**Not installed** (optional, so not offered): "
                 + ", ".join(MODELS[name].label + (f" {why[name]}" if why[name] else "") for name in missing)
                 + "; each loads from its environment variable or its folder in the weights folder (docs/app.md).")
    return text


def models_markdown(installed: list[str]) -> str:
    """What each installed model is, one line each."""
    return "\n".join(f"- **{MODELS[name].label}**: {MODELS[name].about}" for name in installed)
