"""One training step (and the critic's), shared by the trainer and bench/.

The step is the method as written: generator forward, loss (L1, or VGG feature loss + std loss), backward,
Adam step. What makes it fast on a CPU changes no arithmetic of the method: uint8 batches scaled on the
device, every image tensor in channels_last, bf16 autocast, and the whole forward (generator + losses)
compiled as one function, so that inductor fuses the per-layer |a - b| means, ReLUs and casts.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .data import as_input
from .losses import EyeToFaceLoss, autocast, critic_terms


def native_bf16(device_type: str) -> bool:
    """Whether bf16 autocast runs in hardware here. A CPU needs avx512_bf16 or AMX; without them PyTorch emulates
    bf16, and the feature step ran 13-18x slower than in float32 (AVX2-only AMD EPYC, docs/training.md)."""
    return device_type != "cpu" or torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


class TrainingStep:
    """forward, loss, backward, optimizer step and zero_grad for one batch of uint8 (eyes, faces).

    `backward` is accelerate's (gradient accumulation, fp16 scaling) in the trainer, plain autograd elsewhere.
    With `compile=True` the forward and its backward are compiled on the first call (once per process and
    batch shape); a later call with another batch size compiles once more. `critic` (the plain module, not a
    DistributedDataParallel wrapper) scores the faces for an adversarial term; it is frozen during this step.
    """

    def __init__(
        self, model: nn.Module, criterion: EyeToFaceLoss, optimizer: torch.optim.Optimizer, *,
        mixed_precision: str | None = None, compile: bool = False, backward: Callable[[torch.Tensor], None] | None = None,
        critic: nn.Module | None = None,
    ):
        self.model, self.criterion, self.optimizer, self.critic = model, criterion, optimizer, critic
        self.mixed_precision = mixed_precision
        self.backward = backward or torch.Tensor.backward
        self.losses = torch.compile(self.forward_losses, dynamic=False) if compile else self.forward_losses

    def forward_losses(self, eyes: torch.Tensor, faces: torch.Tensor) -> dict[str, torch.Tensor]:
        eyes = as_input(eyes)
        with autocast(eyes.device.type, self.mixed_precision):
            return self.criterion(self.model(eyes).float(), as_input(faces), eye=eyes, critic=self.critic)

    def __call__(self, eyes: torch.Tensor, faces: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.critic is not None:
            self.critic.requires_grad_(False)
        terms = self.losses(eyes, faces)
        self.backward(terms["loss"])
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.critic is not None:
            self.critic.requires_grad_(True)
        return terms


class CriticStep:
    """One WGAN-GP critic update on a batch of uint8 (eyes, faces): the generator's faces (no gradient) against
    the real ones, loss = -wasserstein + lambda * gradient penalty (eye2face_hub.losses.critic_terms).

    Eager and in float32: the gradient penalty differentiates through a gradient, which torch.compile cannot
    (no double backward), and bf16 autocast was only 1.9x faster here while its parameter gradients differed
    from float32's by 33% (relative norm, a fresh critic, batch 64). It is most of a GAN step's time: a wgan-gp
    step takes ~3 s at batch 64 on one CPU thread, an l1 step 0.5 s on two. The interpolation weights come
    from the step's own seeded generator, checkpointed with `state_dict`, so that a resumed run draws what an
    uninterrupted one would (the global RNG is also drawn by data loaders when they start).
    """

    def __init__(self, critic: nn.Module, generator: nn.Module, optimizer: torch.optim.Optimizer, *,
                 penalty_weight: float = 10.0, mixed_precision: str | None = None, seed: int = 0,
                 backward: Callable[[torch.Tensor], None] | None = None):
        self.critic, self.generator, self.optimizer = critic, generator, optimizer
        self.penalty_weight, self.mixed_precision = penalty_weight, mixed_precision
        self.backward = backward or torch.Tensor.backward
        self.rng = torch.Generator().manual_seed(seed)

    def state_dict(self) -> dict:
        return {"rng": self.rng.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.rng.set_state(state["rng"])

    def __call__(self, eyes: torch.Tensor, faces: torch.Tensor) -> dict[str, torch.Tensor]:
        eyes, real = as_input(eyes), as_input(faces)
        with torch.no_grad(), autocast(eyes.device.type, self.mixed_precision):
            fake = self.generator(eyes).float()
        alpha = torch.rand(len(real), 1, 1, 1, generator=self.rng).to(real.device)
        terms = critic_terms(self.critic, real, fake, eyes, alpha)
        terms["critic_loss"] = self.penalty_weight * terms["gradient_penalty"] - terms["wasserstein"]
        self.backward(terms["critic_loss"])
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return terms
