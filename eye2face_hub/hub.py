"""Generators on the Hub: one registry of architectures, and safe loading from folders and Hub repos.

Every generator class subclasses `GeneratorHub` and names its architecture (`arch`); save_pretrained writes
that name into config.json, and `load_generator` (or `GeneratorHub.from_pretrained`) builds the class it
names. config.json files written before `arch` existed are EyeToFace models.

Safe to point at untrusted repos: config.json is validated (size, keys, types, parameter count on the meta
device) before anything is allocated, only model.safetensors is read (pickles are refused, never downloaded),
and every failure is a ModelLoadError whose message says what to do.
"""

from __future__ import annotations

import inspect
import json
import os
import reprlib
from pathlib import Path
from typing import ClassVar

import torch
from huggingface_hub import PyTorchModelHubMixin

MAX_PARAMETERS = 50_000_000  # refuse configs that would not fit a demo Space, before allocating them
MAX_CONFIG_BYTES = 1_000_000  # a config.json is a few kB; a larger one is not ours
# Seconds for the one request that checks that the Hub can be reached before a download (no retries);
# EYE2FACE_HUB_TIMEOUT overrides it. Unreachable: the local cache is used, else HubUnreachableError.
HUB_TIMEOUT_S = 10.0
DEFAULT_ARCH = "eye_to_face"  # what a config.json without `arch` is
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


class ModelLoadError(Exception):
    """A model could not be loaded; the message says why and what to do."""


class ModelNotFoundError(ModelLoadError, FileNotFoundError):
    """No loadable model at that folder or Hub id (or not in the cache while offline)."""


class UnsafeCheckpointError(ModelNotFoundError):
    """Only a pickle checkpoint is there: unpickling can run arbitrary code, so it is never loaded."""


class ModelConfigError(ModelLoadError, ValueError):
    """config.json (or the arguments) do not describe a valid EyeToFace, or the weights do not match it."""


class HubUnreachableError(ModelLoadError, ConnectionError):
    """The Hub could not be reached and the model is not in the local cache."""


_TEMPLATE = Path(__file__).resolve().parent.parent / "model_card.md"
MODEL_CARD_TEMPLATE = _TEMPLATE.read_text() if _TEMPLATE.exists() else "---\n{{ card_data }}\n---\n\n# eye2face\n"

GENERATORS: dict[str, type[GeneratorHub]] = {}  # arch name -> generator class


class GeneratorHub(
    PyTorchModelHubMixin,
    library_name="eye2face_hub",
    repo_url="https://github.com/eye2face/eye2face_hub",
    license="other",
    pipeline_tag="image-to-image",
    tags=["eye2face", "face-generation", "feature-loss", "celeba"],
    model_card_template=MODEL_CARD_TEMPLATE,
):
    """Hub loading and saving for generators. A subclass sets `arch` and is registered under it.

    Its __init__ takes only JSON values, and `check_config(**init_args)` raises ModelConfigError for settings
    that cannot make a model, without allocating anything.
    """

    arch: ClassVar[str]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "arch" in cls.__dict__:
            GENERATORS[cls.arch] = cls

    @classmethod
    def check_config(cls, **config) -> None:
        """Raise ModelConfigError for settings that cannot make this model (a subclass checks its own)."""

    def untrained(self):
        """A freshly initialised generator of the same class and sizes (from the current RNG)."""
        sizes = {k: v for k, v in (self._hub_mixin_config or {}).items() if k not in ("loss_config", "training")}
        return type(self)(**sizes)

    def save_pretrained(self, save_directory, *, config: dict | None = None, **kwargs):
        config = {**(config if config is not None else self._hub_mixin_config or {}), "arch": self.arch}
        # the card's model-index is named after the folder, which push_to_hub names after the repo
        card = {"eyes": getattr(self, "eyes", 1), "model_name": Path(save_directory).name,
                **(kwargs.pop("model_card_kwargs", None) or {})}
        return super().save_pretrained(save_directory, config=config, model_card_kwargs=card, **kwargs)

    @classmethod
    def config_keys(cls) -> list[str]:
        """The keys a config.json may have: the arguments of __init__, and `arch`."""
        return ["arch", *(name for name in inspect.signature(cls.__init__).parameters if name != "self")]

    @classmethod
    def parameter_count(cls, config: dict) -> int:
        """Parameters of the model `config` describes, built on the meta device (nothing is allocated)."""
        with torch.device("meta"):
            return sum(p.numel() for p in cls(**config).parameters())

    @classmethod
    def class_for(cls, config: dict, source: str = "config.json") -> type[GeneratorHub]:
        """The registered class that `config` names (its `arch`); this class itself must be it or a base of it."""
        arch = config.get("arch", DEFAULT_ARCH)
        target = GENERATORS.get(arch) if isinstance(arch, str) else None
        if target is None:
            raise ModelConfigError(
                f"{source}: unknown architecture arch={reprlib.repr(arch)}; this eye2face_hub knows {sorted(GENERATORS)}. "
                "It was written by a newer eye2face_hub, or it is not an eye2face model."
            )
        if not issubclass(target, cls):
            raise ModelConfigError(
                f"{source} describes a {target.__name__} (arch={arch!r}), not a {cls.__name__}: "
                "load it with eye2face_hub.load_generator"
            )
        return target

    @classmethod
    def validate_config(cls, config, source: str = "config.json") -> dict:
        """Check a config.json's content as from_pretrained would use it; ModelConfigError says what is wrong."""
        if not isinstance(config, dict):
            raise ModelConfigError(f"{source} must hold a JSON object of model settings, got {type(config).__name__}")
        target = cls.class_for(config, source)
        keys = target.config_keys()
        unknown = sorted(str(k) for k in set(config) - set(keys))
        if unknown:
            raise ModelConfigError(
                f"{source} has unknown keys {reprlib.repr(unknown)}; a {target.__name__} config has only {keys}. "
                "It was written by another version of eye2face_hub, or it is not an eye2face model."
            )
        defaults = {k: p.default for k, p in inspect.signature(target.__init__).parameters.items() if k != "self"}
        settings = {**defaults, **{k: v for k, v in config.items() if k != "arch"}}
        try:
            target.check_config(**settings)
            size = target.parameter_count(settings)
        except ModelConfigError as e:
            raise ModelConfigError(f"{source}: {e}") from None
        except (TypeError, ValueError, RuntimeError) as e:  # settings that check_config let through
            raise ModelConfigError(f"{source}: these settings cannot build a {target.__name__} ({e})") from None
        if size > MAX_PARAMETERS:
            raise ModelConfigError(f"{source}: this configuration has {size:,} parameters, over the {MAX_PARAMETERS:,} limit")
        return config

    @classmethod
    def _load_as_pickle(cls, model, model_file, map_location, strict):
        raise UnsafeCheckpointError(
            f"refusing to load {model_file}: it is a pickle checkpoint, which can run arbitrary code. "
            "eye2face_hub loads model.safetensors only."
        )

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *,
        force_download: bool = False,
        token: str | bool | None = None,
        cache_dir: str | Path | None = None,
        local_files_only: bool = False,
        revision: str | None = None,
        **model_kwargs,
    ):
        """A model folder or Hub id with model.safetensors and config.json (see huggingface_hub's from_pretrained).

        Called on GeneratorHub (or through `load_generator`), it builds whichever registered class config.json
        names; called on a generator class, config.json must name that class. A Hub id is checked with one
        request (HUB_TIMEOUT_S, no retries); when the Hub cannot be reached the local cache is used, else
        HubUnreachableError.
        """
        model_id = os.fspath(pretrained_model_name_or_path)
        if os.path.isdir(model_id):
            config_file = os.path.join(model_id, "config.json")
            config_file = config_file if os.path.isfile(config_file) else None
        else:
            config_file, local_files_only = _hub_config_file(
                model_id, revision=revision, cache_dir=cache_dir, force_download=force_download, token=token,
                local_files_only=local_files_only,
            )
            force_download = force_download and not local_files_only
        source = f"config.json of {model_id}"
        config = read_json(config_file, source) if config_file is not None else {}
        cls.validate_config(config, source)
        target = cls.class_for(config, source)
        return super(GeneratorHub, target).from_pretrained(
            model_id, force_download=force_download, token=token, cache_dir=cache_dir,
            local_files_only=local_files_only, revision=revision, **model_kwargs,
        )

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        force_download: bool = False,
        local_files_only: bool = False,
        token: str | bool | None = None,
        map_location: str = "cpu",
        strict: bool = True,
        **model_kwargs,
    ):
        model_file = _weights_file(
            model_id, revision=revision, cache_dir=cache_dir, force_download=force_download, token=token,
            local_files_only=local_files_only,
        )
        model = cls(**model_kwargs)
        from safetensors import SafetensorError

        try:
            model = cls._load_as_safetensor(model, model_file, map_location, strict)
        except SafetensorError as e:
            raise ModelLoadError(
                f"{model_file} is damaged or not a safetensors file ({e}); download it again "
                "(force_download=True) or save the model again"
            ) from None
        except RuntimeError as e:  # missing, unexpected or differently shaped tensors
            lines = [line.strip() for line in str(e).splitlines() if line.strip()]
            raise ModelConfigError(
                f"the weights in {model_file} do not match config.json: {'; '.join(lines[1:4]) or lines[0]}"
            ) from None
        if not all(torch.isfinite(t).all() for t in model.state_dict().values() if t.is_floating_point()):
            raise ModelConfigError(f"the weights in {model_file} contain NaN or infinite values: training diverged")
        return model


def load_generator(source: str | os.PathLike, **kwargs):
    """Any eye2face generator from a folder or Hub id: the class its config.json names (see GeneratorHub)."""
    return GeneratorHub.from_pretrained(source, **kwargs)


def read_json(path: str | os.PathLike, source: str):
    """A config-sized JSON file (size-checked first); errors name `source` and say what is wrong."""
    size = os.path.getsize(path)
    if size > MAX_CONFIG_BYTES:
        raise ModelConfigError(f"{source} is {size:,} bytes; a model config is a few kB, so it is not one")
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ModelConfigError(f"{source} is not valid JSON ({str(e)[:200]})") from None


def _hub_timeout() -> float:
    try:
        return float(os.environ.get("EYE2FACE_HUB_TIMEOUT", HUB_TIMEOUT_S))
    except ValueError:
        return HUB_TIMEOUT_S


def _hub_config_file(model_id: str, *, revision, cache_dir, force_download, token, local_files_only) -> tuple[str | None, bool]:
    """config.json of a Hub model (None if the repo has none), and whether loading must go on from the cache only.

    One request with a short timeout tells whether the Hub can be reached; huggingface_hub alone would retry
    for minutes. Unreachable: the cached copy is used if there is one.
    """
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )
    from huggingface_hub.utils import validate_repo_id

    if os.path.exists(model_id):
        raise ModelNotFoundError(f"{model_id} is a file; pass the model folder that holds model.safetensors and config.json")
    try:
        validate_repo_id(model_id)
    except HFValidationError:
        raise ModelNotFoundError(f"{model_id}: no such model folder, and not a Hub repo id (namespace/name)") from None
    offline = local_files_only or constants.is_offline_mode()
    unreachable: Exception | None = None
    if not offline:
        try:
            get_hf_file_metadata(hf_hub_url(model_id, "config.json", revision=revision), token=token, timeout=_hub_timeout())
        except EntryNotFoundError:
            pass  # the repo is there but has no config.json: the defaults are used
        except RevisionNotFoundError:
            raise ModelNotFoundError(f"{model_id} has no revision {revision!r} on the Hub") from None
        except RepositoryNotFoundError:
            raise ModelNotFoundError(
                f"{model_id} is not a local folder, and the Hub has no model of that name (or it is private or "
                "gated: log in with `hf auth login` or pass token=)"
            ) from None
        except HfHubHTTPError as e:
            status = e.response.status_code if e.response is not None else None
            if status is not None and status < 500 and status != 429:
                raise ModelLoadError(f"the Hub refused to serve {model_id} ({str(e).splitlines()[0]})") from None
            unreachable = e
        except Exception as e:  # no network, DNS, refused, timed out, proxy: do not retry, fall back to the cache
            unreachable = e
    cache_only = offline or unreachable is not None
    try:
        return hf_hub_download(
            model_id, "config.json", revision=revision, cache_dir=cache_dir, force_download=force_download and not cache_only,
            token=token, local_files_only=cache_only,
        ), cache_only
    except LocalEntryNotFoundError:
        if unreachable is not None:
            reason = str(unreachable).splitlines()[0][:200] if str(unreachable) else ""
            raise HubUnreachableError(
                f"could not reach the Hugging Face Hub to download {model_id} ({type(unreachable).__name__}: {reason}), "
                "and it is not in the local cache. Check the network connection (and HTTPS_PROXY), "
                "or pass a local model folder."
            ) from None
        raise ModelNotFoundError(
            f"{model_id} is not in the local cache and downloads are off (HF_HUB_OFFLINE=1 or local_files_only=True): "
            "download it once while online, or pass a local model folder"
        ) from None
    except EntryNotFoundError:
        return None, cache_only


def _weights_file(model_id: str, *, revision, cache_dir, force_download, token, local_files_only) -> str:
    """model.safetensors of a folder or Hub repo. Pickle checkpoints are never looked for, downloaded or loaded."""
    if os.path.isdir(model_id):
        path = Path(model_id) / "model.safetensors"
        if path.is_file():
            return str(path)
        found = sorted(p.name for p in Path(model_id).iterdir())
        pickles = [name for name in found if name.endswith(_PICKLE_SUFFIXES)]
        if pickles:
            raise UnsafeCheckpointError(
                f"{model_id} has no model.safetensors, only the pickle checkpoint {', '.join(pickles)}: refusing to "
                "load it, as unpickling can run arbitrary code. eye2face_hub loads model.safetensors only "
                "(convert trusted weights with safetensors.torch.save_model)."
            )
        raise ModelNotFoundError(f"{model_id} has no model.safetensors (found: {', '.join(found) or 'nothing'})")

    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    try:
        return hf_hub_download(
            model_id, "model.safetensors", revision=revision, cache_dir=cache_dir, force_download=force_download,
            token=token, local_files_only=local_files_only,
        )
    except LocalEntryNotFoundError:
        cached_pickle = isinstance(try_to_load_from_cache(model_id, "pytorch_model.bin", cache_dir, revision), str)
        raise (UnsafeCheckpointError if cached_pickle else ModelNotFoundError)(
            f"model.safetensors of {model_id} is not in the local cache and cannot be downloaded now (offline, or the "
            "Hub cannot be reached)"
            + ("; only a pickle checkpoint (pytorch_model.bin) is cached, and pickles are never loaded" if cached_pickle else "")
        ) from None
    except EntryNotFoundError:
        raise UnsafeCheckpointError(
            f"{model_id} on the Hub has no model.safetensors. eye2face_hub loads safetensors only: pickle checkpoints "
            "such as pytorch_model.bin are never downloaded or loaded, as unpickling can run arbitrary code."
        ) from None
