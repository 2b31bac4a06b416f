"""eye2face_hub: generate a whole face from a crop of one eye (Tse, Jok, Ng, Lee), on the Hugging Face Hub."""

from .hub import (
    GENERATORS,
    GeneratorHub,
    HubUnreachableError,
    ModelConfigError,
    ModelLoadError,
    ModelNotFoundError,
    UnsafeCheckpointError,
    load_generator,
)
from .losses import EyeToFaceLoss, FeatureLoss, LossConfig, layer_weights, std_loss
from .model import EyeToFace
from .pipeline import EyeToFacePipeline, Eye2FaceError, InvalidImageError, NoEyeError, NoFaceError
from .vgg import VGG19Features, load_vgg19

__all__ = [
    "EyeToFace",
    "GENERATORS",
    "GeneratorHub",
    "EyeToFaceLoss",
    "EyeToFacePipeline",
    "Eye2FaceError",
    "FeatureLoss",
    "HubUnreachableError",
    "InvalidImageError",
    "LossConfig",
    "ModelConfigError",
    "ModelLoadError",
    "ModelNotFoundError",
    "NoEyeError",
    "NoFaceError",
    "UnsafeCheckpointError",
    "VGG19Features",
    "layer_weights",
    "load_generator",
    "load_vgg19",
    "std_loss",
]
__version__ = "0.1.0"
