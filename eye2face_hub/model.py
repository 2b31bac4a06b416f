"""The generator: a conv autoencoder from a 32x32 eye crop to a 128x128 face."""

from __future__ import annotations

import reprlib

import torch
from torch import nn

from .data import EYE_SIZE, FACE_SIZE
from .hub import GeneratorHub, ModelConfigError


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


class EyeToFace(nn.Module, GeneratorHub):
    """(B, 3, 32, 32) eye crops in [0, 1] -> (B, 3, 128, 128) faces in [0, 1].

    `loss_config` and `training` are not used by the network; they are recorded in config.json so that
    a Hub repo says how its weights were trained.
    """

    arch = "eye_to_face"
    eyes = 1  # eye crops per sample

    def __init__(
        self,
        encoder_widths: tuple[int, ...] = (32, 64, 128),
        latent_dim: int = 256,
        decoder_widths: tuple[int, ...] = (256, 128, 64, 32, 16),
        loss_config: dict | None = None,
        training: dict | None = None,
    ):
        super().__init__()
        self.check_config(encoder_widths, latent_dim, decoder_widths, loss_config, training)
        encoder_widths, decoder_widths = tuple(encoder_widths), tuple(decoder_widths)
        self.loss_config = loss_config
        self.training_info = training

        blocks, c_in = [], 3 * self.eyes
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

    @classmethod
    def check_config(cls, encoder_widths=(32, 64, 128), latent_dim=256, decoder_widths=(256, 128, 64, 32, 16),
                     loss_config=None, training=None) -> None:
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

    def encode(self, eye: torch.Tensor) -> torch.Tensor:
        if eye.ndim != 4 or eye.shape[1:] != (3, EYE_SIZE, EYE_SIZE):
            raise ValueError(
                f"expected eye crops of shape (B, 3, {EYE_SIZE}, {EYE_SIZE}), got {tuple(eye.shape)}"
                + (": this is a one-eye model, give it one eye per sample" if eye.ndim == 5 else "")
            )
        return self.to_latent(self.encoder(eye).flatten(1))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        x = self.from_latent(z).view(-1, self.decoder_widths[0], self.dec_size, self.dec_size)
        return torch.sigmoid(self.to_rgb(self.decoder(x)))

    def forward(self, eye: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(eye))


class TwoEyesToFace(EyeToFace):
    """(B, 2, 3, 32, 32) left and right eye crops of one photo -> (B, 3, 128, 128) faces, as Chen et al. (2018).

    The two crops enter as one 6-channel image (left eye's RGB, then the right's): the first conv sees both eyes
    at each position, so the encoder can relate them from its first layer. The decoder is EyeToFace's.
    """

    arch = "two_eyes_to_face"
    eyes = 2

    def encode(self, eyes: torch.Tensor) -> torch.Tensor:
        if eyes.ndim != 5 or eyes.shape[1:] != (2, 3, EYE_SIZE, EYE_SIZE):
            raise ValueError(
                f"expected left and right eye crops of shape (B, 2, 3, {EYE_SIZE}, {EYE_SIZE}), got {tuple(eyes.shape)}"
                + (": this is a two-eye model, give it both eyes of a photo" if eyes.ndim == 4 else "")
            )
        x = eyes.flatten(1, 2).contiguous(memory_format=torch.channels_last)
        return self.to_latent(self.encoder(x).flatten(1))
