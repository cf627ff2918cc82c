"""The network: DeepLabV3 with ASPP on torchvision backbones, weights, prediction.

Imports torch and the Qt-free ``annotation`` package, never Qt.

``import model`` (and ``from model import cli``) stays cheap: the names below
are loaded from their submodules on first use (PEP 562), so the command line's
``--help``, ``info``, ``import`` and ``export`` and the app's first window do not
pay for importing torch. ``from model import Predictor`` works as before.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what a type checker and an IDE see; at run time __getattr__ loads these
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

#: public name -> the submodule that defines it.
_LAZY: dict[str, str] = {
    "ASPP": "aspp",
    "default_atrous_rates": "aspp",
    "ArchSpec": "deeplabv3",
    "DeepLabV3": "deeplabv3",
    "build_deeplabv3": "deeplabv3",
    "build_from_spec": "deeplabv3",
    "Prediction": "predictor",
    "PredictionError": "predictor",
    "Predictor": "predictor",
    "REGISTRY": "weights",
    "LoadedModel": "weights",
    "ModelMeta": "weights",
    "WeightsError": "weights",
    "WeightsUnavailableError": "weights",
    "load_checkpoint": "weights",
    "load_model": "weights",
    "save_checkpoint": "weights",
}

__all__ = [  # the same names as _LAZY (tests/test_startup.py checks); written out for linters
    "ASPP",
    "REGISTRY",
    "ArchSpec",
    "DeepLabV3",
    "LoadedModel",
    "ModelMeta",
    "Prediction",
    "PredictionError",
    "Predictor",
    "WeightsError",
    "WeightsUnavailableError",
    "build_deeplabv3",
    "build_from_spec",
    "default_atrous_rates",
    "load_checkpoint",
    "load_model",
    "save_checkpoint",
]


def __getattr__(name: str) -> Any:
    # Only called for names not found normally. An unknown name must raise
    # AttributeError: `from model import cli` relies on it to fall back to
    # importing the submodule.
    try:
        submodule = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f".{submodule}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
