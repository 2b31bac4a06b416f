"""The conditional critic of the GAN comparison (WGAN-GP, Gulrajani et al. 2017): it scores a face given its eye.

Conditioning: the eye crop(s) are upsampled to the face's size (bilinear) and concatenated to the face as extra
channels, so that the critic judges the pair, not the face alone: a real face with another person's eye is
scored like a fake. Its size and style mirror the generator's decoder run backwards (stride-2 convs 16 -> 256
channels, 128 -> 4 px, then a linear score), with LeakyReLU and no BatchNorm: the gradient penalty is taken per
sample, which batch statistics would couple. Only generators are published; the critic lives in checkpoints.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .data import FACE_SIZE


class Critic(nn.Module):
    """(B, 3, 128, 128) faces and their eyes ((B, 3, 32, 32), or (B, 2, 3, 32, 32) for two) -> (B,) scores."""

    def __init__(self, eyes: int = 1, widths: tuple[int, ...] = (16, 32, 64, 128, 256)):
        super().__init__()
        layers, c_in = [], 3 + 3 * eyes
        for width in widths:
            layers += [nn.Conv2d(c_in, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True),
                       nn.Conv2d(width, width, 3, padding=1), nn.LeakyReLU(0.2, inplace=True)]
            c_in = width
        self.features = nn.Sequential(*layers)
        self.score = nn.Linear(c_in * (FACE_SIZE >> len(widths)) ** 2, 1)
        self.eyes = eyes

    def forward(self, face: torch.Tensor, eye: torch.Tensor) -> torch.Tensor:
        eye = eye.flatten(1, 2) if eye.ndim == 5 else eye
        eye = F.interpolate(eye, size=face.shape[-2:], mode="bilinear", align_corners=False)
        x = torch.cat([face, eye.to(face.dtype)], dim=1).contiguous(memory_format=torch.channels_last)
        return self.score(self.features(x).flatten(1)).squeeze(1)
