"""eye2face_hub: generate a whole face from a crop of one eye (Tse, Jok, Ng, Lee), on the Hugging Face Hub."""

from .losses import EyeToFaceLoss, FeatureLoss, LossConfig, layer_weights, std_loss
from .model import EyeToFace, HubUnreachableError, ModelConfigError, ModelLoadError, ModelNotFoundError, UnsafeCheckpointError
from .pipeline import EyeToFacePipeline, Eye2FaceError, InvalidImageError, NoEyeError, NoFaceError
from .vgg import VGG19Features, load_vgg19

__all__ = [
    "EyeToFace",
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
    "load_vgg19",
    "std_loss",
]
__version__ = "0.1.0"
