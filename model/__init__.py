"""The network: DeepLabV3 with ASPP on torchvision backbones, weights, prediction.

Imports torch and the Qt-free ``annotation`` package, never Qt.
"""

from .aspp import ASPP, default_atrous_rates
from .deeplabv3 import ArchSpec, DeepLabV3, build_deeplabv3, build_from_spec
from .predictor import Prediction, PredictionError, Predictor
from .weights import (
    REGISTRY,
    LoadedModel,
    ModelMeta,
    WeightsError,
    WeightsUnavailableError,
    load_checkpoint,
    load_model,
    save_checkpoint,
)

__all__ = [
    "ASPP",
    "ArchSpec",
    "DeepLabV3",
    "LoadedModel",
    "ModelMeta",
    "Prediction",
    "PredictionError",
    "Predictor",
    "REGISTRY",
    "WeightsError",
    "WeightsUnavailableError",
    "build_deeplabv3",
    "build_from_spec",
    "default_atrous_rates",
    "load_checkpoint",
    "load_model",
    "save_checkpoint",
]
