"""The settings, result and errors of a fine-tune run, and the checks on the settings."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from annotation.errors import AtrousError

from ..weights import NORMALISATIONS

#: Statuses whose masks a person has checked; only these are trained on.
TRAIN_STATUSES = ("edited", "reviewed")


class FinetuneError(AtrousError):
    """A fine-tune run cannot start or cannot go on (no data, out of memory, bad base...)."""


class _Cancelled(Exception):
    """should_stop() said so while the data was loading."""


@dataclass
class FinetuneConfig:
    """Everything a run needs; stored with the model version it produces.

    ``base``: ``None`` (the project's active version, else torchvision's pretrained
    MobileNet when cached, else a random init with identity residual blocks, see
    :func:`model.deeplabv3.zero_init_residuals`), ``"scratch"``, a registry name, a
    checkpoint path, or a project version (``"v3"`` or ``"3"``).
    Either ``epochs`` or ``minutes`` bounds the run (default 30 epochs).
    ``correction_weight`` > 1 up-weights the pixels a person changed in the pre-label.
    ``input_size``: training scale (shorter side); default the base model's, or for
    a random init the median shorter side of the images, at most 520. It is
    stored in the checkpoint, so pre-labelling resizes the same way.
    ``normalisation``: "dataset" (the base's mean/std, ImageNet's for a random init)
    or "image" (each image's own per-channel mean and std); default the base's, and
    "image" for a random init. Stored in the checkpoint like ``input_size``.
    """

    project: str
    base: str | None = None
    epochs: int | None = None
    minutes: float | None = None
    batch_size: int | None = None  # default: 4 on the CPU, 8 on a GPU (see DEFAULT_BATCH)
    crop: int = 320
    optimizer: str = "adamw"
    lr: float | None = None  # default: 2e-3 for AdamW, 0.02 for SGD
    weight_decay: float = 1e-4
    momentum: float = 0.9
    warmup: float = 0.03  # share of the run with a linear LR warm-up
    # The auxiliary head's loss weight; 0 (the default) builds no aux head at all: on unseen
    # CamVid sequences it did not help, and it cost a tenth of a CPU step (docs/finetuning.md).
    aux_weight: float = 0.0
    correction_weight: float = 1.0
    scale_range: tuple[float, float] = (0.75, 1.5)
    hflip: float = 0.5
    jitter: float = 0.4  # colour jitter strength; 0.4 generalised best to unseen scenes (docs/finetuning.md)
    input_size: int | None = None
    normalisation: str | None = None
    val_fraction: float = 0.2
    fold_in: float | None = None  # when the val images join training (share of the run); see fold_in_at()
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    channels_last: bool = True
    backbone: str = "mobilenet_v3_large"  # for a random init
    output_stride: int = 16
    statuses: tuple[str, ...] = TRAIN_STATUSES
    activate: bool = True  # make the new version the active one when the run finishes
    name: str = ""
    evals: int = 8  # with --minutes: about this many val evaluations over the run (plus the last)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["scale_range"] = list(self.scale_range)
        d["statuses"] = list(self.statuses)
        return d


@dataclass
class FinetuneResult:
    """What a run produced. ``version_id``/``checkpoint_path`` are None when nothing was saved."""

    version_id: int | None
    checkpoint_path: Path | None
    history: list[dict[str, Any]]
    best_miou: float | None
    per_class_iou: dict[str, float | None]
    stopped: bool  # cancelled (should_stop) before the planned end
    activated: bool
    iterations: int
    seconds: float
    it_per_s: float
    config: dict[str, Any] = field(default_factory=dict)


#: Projects with fewer trained-on images than this fold their val images into training
#: (at :data:`FOLD_IN_AT` of the run) unless the config says otherwise: holding a fifth of
#: a small project out costs more than the figure tells (docs/finetuning.md).
SMALL_PROJECT = 200
FOLD_IN_AT = 0.75


def fold_in_at(config: FinetuneConfig, n_images: int) -> float:
    """The share of the run after which the val images are trained on too (1.0: never).

    Before that point the run validates on them as usual; the last validation is taken
    just before they join, and that is the held-out figure the run reports. The weights
    saved are then the last ones, which have learnt from every image.
    """
    if config.fold_in is not None:
        return float(config.fold_in)
    return FOLD_IN_AT if n_images < SMALL_PROJECT else 1.0


def _dist_info() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def _check_config(c: FinetuneConfig) -> None:
    if c.epochs is not None and c.minutes is not None:
        raise FinetuneError("give either epochs or minutes, not both")
    if c.epochs is not None and c.epochs < 1:
        raise FinetuneError(f"epochs must be at least 1, got {c.epochs}")
    if c.minutes is not None and c.minutes <= 0:
        raise FinetuneError(f"minutes must be positive, got {c.minutes}")
    if c.batch_size is not None and c.batch_size < 1:
        raise FinetuneError(f"batch size must be at least 1, got {c.batch_size}")
    if not (math.isfinite(c.aux_weight) and c.aux_weight >= 0):
        raise FinetuneError(f"aux weight must be a number >= 0, got {c.aux_weight}")
    if c.crop < 32:
        raise FinetuneError(f"crop must be at least 32 pixels, got {c.crop}")
    if c.optimizer not in ("adamw", "sgd"):
        raise FinetuneError(f"unknown optimizer {c.optimizer!r}; use adamw or sgd")
    if c.correction_weight < 1:
        raise FinetuneError(f"correction weight must be >= 1, got {c.correction_weight}")
    if c.normalisation is not None and c.normalisation not in NORMALISATIONS:
        raise FinetuneError(f"unknown normalisation {c.normalisation!r}; use {' or '.join(NORMALISATIONS)}")
    if c.lr is not None and not (math.isfinite(c.lr) and c.lr > 0):
        raise FinetuneError(f"learning rate must be a positive number, got {c.lr}")
    if c.minutes is not None and not math.isfinite(c.minutes):
        raise FinetuneError(f"minutes must be a finite number, got {c.minutes}")
    if c.fold_in is not None and not (math.isfinite(c.fold_in) and 0 < c.fold_in <= 1):
        raise FinetuneError(f"fold-in must be in (0, 1] (1: never train on the val images), got {c.fold_in}")
    if c.input_size is not None and c.input_size < 32:
        raise FinetuneError(f"input size must be at least 32 pixels, got {c.input_size}")
