"""Fine-tune DeepLabV3 on a project's corrected masks; each finished run is a new model version.

The loop keeps the shape of torchvision's ``references/segmentation/train.py``
(cross-entropy with ``ignore_index=255``, optionally plus an auxiliary head's loss, poly LR,
paired transforms, a bincount confusion matrix for val mIoU) but is typed and
reports through callbacks instead of print::

    result = finetune("my_project", on_progress=print, should_stop=lambda: False, minutes=5)
    result.checkpoint_path, result.version_id, result.best_miou

Fast on a CPU: data decoded once into RAM, bf16 autocast where the CPU has
native bf16 (AMP fp16/bf16 on CUDA), channels-last tensors.

Multi-GPU / multi-process: the same entry point runs under
``torchrun --nproc_per_node N -m model.finetune PROJECT [options]``; each process
trains on its own shard of every batch with DistributedDataParallel (NCCL on
CUDA, gloo on the CPU), rank 0 evaluates and saves, and a cancel or time-out
seen by any rank stops all of them.

The code is split by step: :mod:`.config` (settings, result, errors),
:mod:`.prepare` (classes, device, base model, network, data), :mod:`.training`
(loss, optimizer, LR schedule, the loop), :mod:`.evaluation` (val mIoU,
BatchNorm re-estimation), :mod:`.saving` (checkpoint and model version) and
:mod:`.runner` (:func:`finetune`). The names below are re-exported so
``from model.finetune import ...`` is the one import path. ``__main__`` is the
only module here that imports the CLI (for ``python -m model.finetune``); the
library never does, so ``model.cli`` can import it without a cycle.
"""

from .config import (
    TRAIN_STATUSES,
    FinetuneConfig,
    FinetuneError,
    FinetuneResult,
    _dist_info,
)
from .evaluation import BN_STAT_IMAGES, evaluate_samples, recompute_bn_stats
from .prepare import build_training_network, load_base, project_class_names
from .runner import finetune
from .training import DEFAULT_BATCH, make_optimizer, poly_lr, seg_loss

__all__ = [
    "BN_STAT_IMAGES",
    "DEFAULT_BATCH",
    "TRAIN_STATUSES",
    "FinetuneConfig",
    "FinetuneError",
    "FinetuneResult",
    "_dist_info",
    "build_training_network",
    "evaluate_samples",
    "finetune",
    "load_base",
    "make_optimizer",
    "poly_lr",
    "project_class_names",
    "recompute_bn_stats",
    "seg_loss",
]
