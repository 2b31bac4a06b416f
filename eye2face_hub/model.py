"""The generator: a conv autoencoder from a 32x32 eye crop to a 128x128 face."""

from __future__ import annotations

import inspect
import json
import os
import reprlib
from pathlib import Path

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

EYE_SIZE = 32
FACE_SIZE = 128
MAX_PARAMETERS = 50_000_000  # refuse configs that would not fit a demo Space, before allocating them
MAX_CONFIG_BYTES = 1_000_000  # a config.json is a few kB; a larger one is not ours
# Seconds for the one request that checks that the Hub can be reached before a download (no retries);
# EYE2FACE_HUB_TIMEOUT overrides it. Unreachable: the local cache is used, else HubUnreachableError.
HUB_TIMEOUT_S = 10.0
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


def conv_block(c_in: int, c_out: int, groups: int = 2, transpose: bool = False) -> nn.Sequential:
    """`groups` x (conv + BatchNorm + LeakyReLU); the first conv halves (or, transposed, doubles) the size."""
    first = (
        nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=False)
        if transpose
        else nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False)
    )
    layers = [first, nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2, inplace=True)]
    for _ in range(groups - 1):
        layers += [nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2, inplace=True)]
    return nn.Sequential(*layers)


class EyeToFace(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="eye2face_hub",
    repo_url="https://github.com/eye2face/eye2face_hub",
    license="other",
    pipeline_tag="image-to-image",
    tags=["eye2face", "face-generation", "feature-loss", "celeba"],
    model_card_template=MODEL_CARD_TEMPLATE,
):
    """(B, 3, 32, 32) eye crops in [0, 1] -> (B, 3, 128, 128) faces in [0, 1].

    `loss_config` and `training` are not used by the network; they are recorded in config.json so that
    a Hub repo says how its weights were trained.
    """

    def __init__(
        self,
        encoder_widths: tuple[int, ...] = (32, 64, 128),
        latent_dim: int = 256,
        decoder_widths: tuple[int, ...] = (256, 128, 64, 32, 16),
        loss_config: dict | None = None,
        training: dict | None = None,
    ):
        super().__init__()
        self._check_config(encoder_widths, latent_dim, decoder_widths, loss_config, training)
        encoder_widths, decoder_widths = tuple(encoder_widths), tuple(decoder_widths)
        self.loss_config = loss_config
        self.training_info = training

        blocks, c_in = [], 3
        for i, width in enumerate(encoder_widths):
            blocks.append(conv_block(c_in, width, groups=1 if i == 0 else 2))
            c_in = width
        self.encoder = nn.Sequential(*blocks)
        self.enc_size = EYE_SIZE // 2 ** len(encoder_widths)
        self.to_latent = nn.Linear(c_in * self.enc_size**2, latent_dim)

        self.dec_size = FACE_SIZE // 2 ** (len(decoder_widths))
        self.from_latent = nn.Sequential(
            nn.Linear(latent_dim, decoder_widths[0] * self.dec_size**2),
            nn.LeakyReLU(0.2, inplace=True),
        )
        self.decoder = nn.Sequential(
            *[conv_block(c_in, c_out, transpose=True) for c_in, c_out in zip(decoder_widths, decoder_widths[1:])],
            conv_block(decoder_widths[-1], decoder_widths[-1], transpose=True),
        )
        self.to_rgb = nn.Conv2d(decoder_widths[-1], 3, 3, padding=1)
        self.decoder_widths = decoder_widths

    @staticmethod
    def _check_config(encoder_widths, latent_dim, decoder_widths, loss_config=None, training=None):
        """Raise ModelConfigError, before anything is allocated, for settings that cannot make a model."""

        def positive_ints(name, values):
            if not (
                isinstance(values, (list, tuple))
                and values
                and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values)
            ):
                raise ModelConfigError(f"{name} must be a non-empty list of positive integers, got {reprlib.repr(values)}")

        positive_ints("encoder_widths", encoder_widths)
        positive_ints("decoder_widths", decoder_widths)
        if not (isinstance(latent_dim, int) and not isinstance(latent_dim, bool) and latent_dim > 0):
            raise ModelConfigError(f"latent_dim must be a positive integer, got {reprlib.repr(latent_dim)}")
        for name, value in (("loss_config", loss_config), ("training", training)):
            if value is not None and not isinstance(value, dict):
                raise ModelConfigError(f"{name} must be a JSON object or null, got {type(value).__name__}")
        if EYE_SIZE >> len(encoder_widths) < 1:
            raise ModelConfigError(f"{len(encoder_widths)} encoder blocks would shrink a {EYE_SIZE}px eye below 1px")
        if FACE_SIZE >> len(decoder_widths) < 1:
            raise ModelConfigError(f"{len(decoder_widths)} decoder blocks cannot start below 1px for a {FACE_SIZE}px face")
        size = parameter_count(encoder_widths, latent_dim, decoder_widths)
        if size > MAX_PARAMETERS:
            raise ModelConfigError(f"this configuration has {size:,} parameters, over the {MAX_PARAMETERS:,} limit")

    @classmethod
    def config_keys(cls) -> list[str]:
        """The keys a config.json may have: the arguments of __init__."""
        return [name for name in inspect.signature(cls.__init__).parameters if name != "self"]

    @classmethod
    def validate_config(cls, config, source: str = "config.json") -> dict:
        """Check a config.json's content as from_pretrained would use it; ModelConfigError says what is wrong."""
        if not isinstance(config, dict):
            raise ModelConfigError(f"{source} must hold a JSON object of model settings, got {type(config).__name__}")
        keys = cls.config_keys()
        unknown = sorted(str(k) for k in set(config) - set(keys))
        if unknown:
            raise ModelConfigError(
                f"{source} has unknown keys {reprlib.repr(unknown)}; an eye2face model's config has only {keys}. "
                "It was written by another version of eye2face_hub, or it is not an eye2face model."
            )
        defaults = {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items() if k != "self"}
        try:
            cls._check_config(**{**defaults, **config})
        except ModelConfigError as e:
            raise ModelConfigError(f"{source}: {e}") from None
        return config

    def encode(self, eye: torch.Tensor) -> torch.Tensor:
        if eye.ndim != 4 or eye.shape[1:] != (3, EYE_SIZE, EYE_SIZE):
            raise ValueError(f"expected eye crops of shape (B, 3, {EYE_SIZE}, {EYE_SIZE}), got {tuple(eye.shape)}")
        return self.to_latent(self.encoder(eye).flatten(1))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        x = self.from_latent(z).view(-1, self.decoder_widths[0], self.dec_size, self.dec_size)
        return torch.sigmoid(self.to_rgb(self.decoder(x)))

    def forward(self, eye: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(eye))

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
    ) -> EyeToFace:
        """A model folder or Hub id with model.safetensors and config.json (see huggingface_hub's from_pretrained).

        Safe to point at untrusted repos: config.json is validated before anything is allocated and only
        safetensors are read (pickles are refused, never downloaded). A Hub id is checked with one request
        (HUB_TIMEOUT_S, no retries); when the Hub cannot be reached the local cache is used, else
        HubUnreachableError. Every failure is a ModelLoadError whose message says what to do.
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
        if config_file is not None:
            cls.validate_config(_read_json(config_file, f"config.json of {model_id}"), f"config.json of {model_id}")
        return super().from_pretrained(
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


def parameter_count(encoder_widths, latent_dim: int, decoder_widths) -> int:
    """The exact number of parameters of EyeToFace(encoder_widths, latent_dim, decoder_widths), without building it."""
    n, c_in = 0, 3
    for i, w in enumerate(encoder_widths):
        n += 9 * c_in * w + 2 * w  # stride-2 conv (no bias) + BatchNorm
        if i:
            n += 9 * w * w + 2 * w  # the second conv group
        c_in = w
    enc_size = EYE_SIZE // 2 ** len(encoder_widths)
    n += (c_in * enc_size**2 + 1) * latent_dim
    dec_size = FACE_SIZE // 2 ** len(decoder_widths)
    n += (latent_dim + 1) * decoder_widths[0] * dec_size**2
    for a, b in zip(decoder_widths, list(decoder_widths[1:]) + [decoder_widths[-1]]):
        n += 16 * a * b + 2 * b + 9 * b * b + 2 * b  # transposed conv + BatchNorm, conv + BatchNorm
    return n + 9 * decoder_widths[-1] * 3 + 3


def _read_json(path: str | os.PathLike, source: str):
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
