"""Validation of a network being trained: mIoU on whole images, and BatchNorm re-estimation."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from ..data import Sample, normalise_full
from ..metrics import ConfusionMatrix, SegMetrics

if TYPE_CHECKING:
    from .prepare import RunSetup


@torch.no_grad()
def evaluate_samples(
    net: nn.Module,
    samples: list[Sample],
    num_classes: int,
    mean,
    std,
    device: torch.device,
    dtype: torch.dtype,
    channels_last: bool = True,
    per_image: bool = False,
) -> SegMetrics:
    """mIoU of ``net`` on whole samples at the training scale."""
    was_training = net.training
    net.eval()
    cm = ConfusionMatrix(num_classes)
    try:
        for s in samples:
            x = normalise_full(s, mean, std, per_image=per_image).to(device)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                out = net(x)["out"]
            cm.update(s.mask, out.argmax(1)[0].cpu())
    finally:
        net.train(was_training)
    return cm.compute()


#: Whole training images used to re-estimate BatchNorm statistics (see :func:`recompute_bn_stats`).
BN_STAT_IMAGES = 64


@torch.no_grad()
def recompute_bn_stats(
    net: nn.Module,
    samples: list[Sample],
    mean,
    std,
    device: torch.device,
    dtype: torch.dtype,
    channels_last: bool = True,
    max_images: int = BN_STAT_IMAGES,
    batch_size: int = 4,
    per_image: bool = False,
) -> None:
    """Re-estimate every BatchNorm's running mean and variance on whole training images.

    The running statistics gathered during training lag behind weights that
    are still moving fast, and they come from augmented crops with dropout on;
    inference sees whole images with dropout off. From scratch the gap is
    large: on CamVid a model whose stale statistics gave 0.01 held-out mIoU
    gave 0.34 after this pass (same weights). So before each validation and
    before saving, the statistics are recomputed as an exact average over up to
    ``max_images`` whole images (evenly spaced), with dropout off.
    """
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns or not samples:
        return
    step = max(1, len(samples) / max_images)
    chosen = [samples[int(i * step)] for i in range(min(len(samples), max_images))]
    by_shape: dict[tuple[int, ...], list[Sample]] = {}
    for smp in chosen:
        by_shape.setdefault(tuple(smp.image.shape), []).append(smp)
    modes = {m: m.training for m in net.modules()}
    momenta = {m: m.momentum for m in bns}
    try:
        net.train()
        for m in net.modules():
            if isinstance(m, nn.modules.dropout._DropoutNd):
                m.eval()
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches below
        for group in by_shape.values():
            for i in range(0, len(group), batch_size):
                x = torch.cat(
                    [normalise_full(smp, mean, std, per_image=per_image) for smp in group[i : i + batch_size]]
                )
                if x.shape[0] == 1:
                    # Training-mode BatchNorm after the global pooling needs two values per
                    # channel; a mirrored copy is a view training also shows.
                    x = torch.cat([x, x.flip(-1)])
                x = x.to(device)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                    net(x)
    finally:
        for m, momentum in momenta.items():
            m.momentum = momentum
        for m, training in modes.items():
            m.training = training


def validate(run: RunSetup) -> SegMetrics:
    """Re-estimate the BatchNorm statistics on the training images, then score the val images.

    The statistics are recomputed first because the ones gathered while training
    lag behind the weights (see :func:`recompute_bn_stats`); the weights kept
    as the best are the ones scored here, with these statistics.
    """
    net, device, dtype, per_image = run.net, run.device, run.dtype, run.per_image
    recompute_bn_stats(
        net, run.samples_train, run.mean, run.std, device, dtype, run.config.channels_last, per_image=per_image
    )
    metrics = evaluate_samples(
        net,
        run.samples_val,
        run.n_classes,
        run.mean,
        run.std,
        device,
        dtype,
        run.config.channels_last,
        per_image=per_image,
    )
    metrics.class_names = run.class_names
    return metrics
