"""The generator: a conv autoencoder from a 32x32 eye crop to a 128x128 face."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

EYE_SIZE = 32
FACE_SIZE = 128
MAX_PARAMETERS = 50_000_000  # refuse configs that would not fit a demo Space, before allocating them

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
        encoder_widths, decoder_widths = tuple(encoder_widths), tuple(decoder_widths)
        self._check_config(encoder_widths, latent_dim, decoder_widths)
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
    def _check_config(encoder_widths, latent_dim, decoder_widths):
        def positive_ints(name, values):
            if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
                raise ValueError(f"{name} must be a non-empty list of positive integers, got {list(values)}")

        positive_ints("encoder_widths", encoder_widths)
        positive_ints("decoder_widths", decoder_widths)
        positive_ints("latent_dim", (latent_dim,))
        if 2 ** len(encoder_widths) > EYE_SIZE:
            raise ValueError(f"{len(encoder_widths)} encoder blocks would shrink a {EYE_SIZE}px eye below 1px")
        if 2 ** len(decoder_widths) > FACE_SIZE:
            raise ValueError(f"{len(decoder_widths)} decoder blocks cannot start below 1px for a {FACE_SIZE}px face")
        size = (
            encoder_widths[-1] * (EYE_SIZE // 2 ** len(encoder_widths)) ** 2 * latent_dim
            + latent_dim * decoder_widths[0] * (FACE_SIZE // 2 ** len(decoder_widths)) ** 2
            + sum(9 * a * b for a, b in zip(encoder_widths, encoder_widths[1:]))
            + sum(16 * a * b for a, b in zip(decoder_widths, decoder_widths[1:]))
        )
        if size > MAX_PARAMETERS:
            raise ValueError(f"this configuration has about {size:,} parameters, over the {MAX_PARAMETERS:,} limit")

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
        raise ValueError(
            f"refusing to load {model_file}: it is a pickle checkpoint, which can run arbitrary code. "
            "eye2face_hub loads model.safetensors only."
        )

    @classmethod
    def _from_pretrained(cls, *, model_id: str, **kwargs):
        model_dir = Path(model_id)
        if model_dir.is_dir() and not (model_dir / "model.safetensors").is_file():
            found = ", ".join(sorted(p.name for p in model_dir.iterdir())) or "nothing"
            raise FileNotFoundError(f"{model_id} has no model.safetensors (found: {found})")
        kwargs.setdefault("strict", True)
        return super()._from_pretrained(model_id=model_id, **kwargs)

    @classmethod
    def read_config(cls, model_dir: str | Path) -> dict:
        """The config.json of a saved model folder."""
        return json.loads((Path(model_dir) / "config.json").read_text())
