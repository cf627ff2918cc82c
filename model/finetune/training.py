"""The training loop: loss, optimizer and LR schedule, the warm-up step, and the epochs with validation.

It keeps the shape of torchvision's ``references/segmentation/train.py``
(cross-entropy with ``ignore_index=255``, optionally plus an auxiliary head's loss, poly LR
with a short warm-up), reports through ``report`` / ``should_stop`` callbacks,
and under torchrun trains each process on its own shard of every batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..cputrain import depthwise_in_fp32, phased_dilated_depthwise
from ..data import Augment, make_batch
from ..metrics import SegMetrics
from .config import FinetuneError, fold_in_at
from .evaluation import validate

if TYPE_CHECKING:
    from .prepare import RunSetup

#: Images per step when the config leaves it open. On the CPU 4 beats 8: a step costs
#: about half as much, so the same minutes make twice the updates, and on CamVid from
#: scratch that learns more from few images (bench/label_loop.py --batch-size 4 vs 8).
DEFAULT_BATCH = {"cpu": 4, "gpu": 8}

#: The best validated weights so far: (val mIoU, a CPU copy of the state dict, the metrics).
Best: TypeAlias = "tuple[float, dict[str, torch.Tensor], SegMetrics]"


def poly_lr(base_lr: float, fraction: float, warmup: float, power: float = 0.9) -> float:
    """Linear warm-up over the first ``warmup`` of the run, then poly decay to 0 at ``fraction`` 1."""
    fraction = min(max(fraction, 0.0), 1.0)
    if warmup > 0 and fraction < warmup:
        return base_lr * (0.1 + 0.9 * fraction / warmup)
    return base_lr * (1.0 - fraction) ** power


def seg_loss(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Cross-entropy ignoring 255; with ``weights`` a per-pixel weighted mean over labelled pixels.

    Logits smaller than the target are upsampled bilinearly first, in fp32 and
    NCHW: on the CPU, upsampling and log-softmax of bf16 channels-last maps took
    1.6x as long (88 vs 56 ms per head at batch 8, crop 320).
    """
    if logits.shape[-2:] != target.shape[-2:]:
        logits = F.interpolate(
            logits.float().contiguous(), size=target.shape[-2:], mode="bilinear", align_corners=False
        )
    logits = logits.float()
    if weights is None:
        return F.cross_entropy(logits, target, ignore_index=255)
    per_pixel = F.cross_entropy(logits, target, ignore_index=255, reduction="none")
    w = weights * (target != 255)
    return (per_pixel * w).sum() / w.sum().clamp(min=1.0)


def make_optimizer(
    params: list[nn.Parameter], name: str, *, lr: float, weight_decay: float, momentum: float
) -> torch.optim.Optimizer:
    """AdamW or SGD with fused kernels where this PyTorch has them for the parameters' device.

    The default implementation loops over the ~200 parameter tensors with a
    handful of small ops each; the fused one makes one pass. For DeepLabV3-MobileNetV3
    on a 2-core CPU an AdamW step took 81 ms plain and 17 ms fused, a noticeable
    share of a training step (same update up to float rounding).
    """
    if name == "adamw":
        cls: type[torch.optim.Optimizer] = torch.optim.AdamW
        kwargs: dict[str, Any] = {"lr": lr, "weight_decay": weight_decay}
    else:
        cls, kwargs = torch.optim.SGD, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay}
    try:
        return cls(params, fused=True, **kwargs)
    except (RuntimeError, ValueError, TypeError):  # no fused kernels for this device or dtype
        return cls(params, **kwargs)


def _is_oom(e: BaseException) -> bool:
    if isinstance(e, torch.OutOfMemoryError):
        return True
    text = str(e).lower()
    return isinstance(e, (RuntimeError, MemoryError)) and (
        "out of memory" in text or "can't allocate memory" in text or isinstance(e, MemoryError)
    )


def _oom_error(run: RunSetup) -> FinetuneError:
    device, config = run.device, run.config
    return FinetuneError(
        f"out of {'GPU ' if device.type == 'cuda' else ''}memory at batch size {config.batch_size} and crop "
        f"{config.crop}; try a smaller --batch-size or --crop (the project's models are unchanged)"
    )


def _cpu_state(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}


# --------------------------------------------------------------------------- the loop


@dataclass
class Trainer:
    """What the loop keeps between steps: the model it steps, the optimizer, the batches and the budget."""

    model: nn.Module  # run.net, or its DistributedDataParallel wrapper under torchrun
    own_group: bool  # this run started the process group, so it also ends it
    opt: torch.optim.Optimizer
    lr: float  # the peak learning rate of the schedule
    aug: Augment
    gen: torch.Generator
    local_bs: int  # images per step in this process
    steps_per_epoch: int
    epochs: int
    total_iters: int | None  # None with a time budget
    budget: float | None  # seconds, with --minutes
    fold_at: float = 1.0  # share of the run after which the val images are trained on too


@dataclass
class TrainOutcome:
    """What the loop did: per-epoch history, the best validated weights, and its clock readings."""

    history: list[dict[str, Any]]
    best: Best | None
    iterations: int
    stopped: bool  # should_stop() said so before the planned end
    train_t0: float
    eval_seconds: float
    folded: bool = False  # the val images joined training: keep the last weights, not the best validated


def _place_network(run: RunSetup) -> tuple[nn.Module, bool]:
    """Move the network to its device and layout in training mode; wrap it for DDP under torchrun.

    Returns the module to step and whether this run started the process group.
    """
    config, device = run.config, run.device
    torch.manual_seed(config.seed)
    net = run.net.to(device)
    if device.type == "cpu":
        # Only the modules' classes change; the saved copy gets plain ones back (plain_convs).
        phased_dilated_depthwise(net)
        if run.dtype == torch.bfloat16:
            depthwise_in_fp32(net)
    if config.channels_last:
        net = net.to(memory_format=torch.channels_last)
    net.train()
    run.net = net
    model: nn.Module = net
    own_group = False
    if run.distributed:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
            own_group = True
        model = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    return model, own_group


def start_training(run: RunSetup) -> Trainer:
    """Place the network, make the optimizer and the augmentation, and plan the steps and the budget."""
    model, own_group = _place_network(run)
    config, world = run.config, run.world
    assert config.batch_size is not None  # prepare_run fills it in
    lr = config.lr if config.lr is not None else (2e-3 if config.optimizer == "adamw" else 0.02)
    params = [p for p in run.net.parameters() if p.requires_grad]
    opt = make_optimizer(params, config.optimizer, lr=lr, weight_decay=config.weight_decay, momentum=config.momentum)

    aug = Augment(crop=config.crop, scale_range=tuple(config.scale_range), hflip=config.hflip, jitter=config.jitter)
    gen = torch.Generator().manual_seed(config.seed * 1000 + run.rank)
    # Each rank sees batch_size // world images per step, so the global batch stays the same.
    local_bs = config.batch_size // world
    if local_bs < 2:
        # BatchNorm after ASPP's global pooling sees one value per channel per image.
        raise FinetuneError(
            f"batch size {config.batch_size} gives {local_bs} image(s) per process; BatchNorm needs at least 2, "
            f"use --batch-size {2 * world} or more"
        )
    steps_per_epoch = max(1, math.ceil(len(run.samples_train) / config.batch_size))
    epochs = config.epochs if (config.epochs is not None or config.minutes is not None) else 30
    total_iters = epochs * steps_per_epoch if config.minutes is None else None
    budget = config.minutes * 60.0 if config.minutes is not None else None
    fold_at = fold_in_at(config, len(run.records))
    return Trainer(model, own_group, opt, lr, aug, gen, local_bs, steps_per_epoch, epochs, total_iters, budget, fold_at)


def warm_up(run: RunSetup, trainer: Trainer, report: Callable[[dict[str, Any]], None]) -> None:
    """One forward/backward before the clock starts.

    The first step pays one-off kernel set-up (oneDNN bf16 primitives take tens
    of seconds on some CPUs), which is not training time. An out-of-memory here
    is a FinetuneError naming the settings to lower.
    """
    report({"phase": "warmup"})
    net, device, config = run.net, run.device, run.config
    try:
        wx, wy, _ = make_batch(
            run.samples_train,
            [0] * trainer.local_bs,
            trainer.aug,
            torch.Generator().manual_seed(0),
            run.mean,
            run.std,
            per_image=run.per_image,
        )
        wx = wx.to(device).contiguous(memory_format=torch.channels_last) if config.channels_last else wx.to(device)
        with torch.autocast(device.type, dtype=run.dtype, enabled=run.dtype != torch.float32):
            wout = net(wx, upsample=False)
        seg_loss(wout["out"], wy.to(device), None).backward()
        trainer.opt.zero_grad(set_to_none=True)
        del wx, wy, wout
    except (torch.OutOfMemoryError, RuntimeError, MemoryError) as e:
        if _is_oom(e):
            raise _oom_error(run) from e
        raise


def _step(run: RunSetup, trainer: Trainer, indices: list[int], lr: float) -> torch.Tensor:
    """One optimisation step at learning rate ``lr`` on the training samples ``indices``; returns the loss."""
    config, device, dtype, opt, scaler = run.config, run.device, run.dtype, trainer.opt, run.scaler
    for g in opt.param_groups:
        g["lr"] = lr
    x, y, corr = make_batch(
        run.samples_train, indices, trainer.aug, trainer.gen, run.mean, run.std, per_image=run.per_image
    )
    x = x.to(device, non_blocking=True)
    if config.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = y.to(device, non_blocking=True)
    w = None
    if config.correction_weight > 1.0 and corr is not None:
        w = 1.0 + (config.correction_weight - 1.0) * corr.to(device).float()
    with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        out = trainer.model(x, upsample=False)
    loss = seg_loss(out["out"], y, w)
    if "aux" in out and config.aux_weight > 0:
        loss = loss + config.aux_weight * seg_loss(out["aux"], y, w)
    opt.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    else:
        loss.backward()
        opt.step()
    return loss


def train(
    run: RunSetup,
    trainer: Trainer,
    report: Callable[[dict[str, Any]], None],
    should_stop: Callable[[], bool],
    clock: Callable[[], float],
) -> TrainOutcome:
    """Train until the epochs or the minutes are used up, or a stop; validate at the ends of epochs.

    With ``epochs`` every epoch is validated; with ``minutes`` about ``evals``
    of them (and the last). Only rank 0 validates, and a stop seen by any rank
    stops all of them. An out-of-memory is a FinetuneError naming the settings
    to lower.
    """
    config, device, rank, world = run.config, run.device, run.rank, run.world
    budget, total_iters, epochs = trainer.budget, trainer.total_iters, trainer.epochs
    assert config.batch_size is not None  # prepare_run fills it in
    history: list[dict[str, Any]] = []
    best: Best | None = None
    iteration, epoch, stopped = 0, 0, False
    train_t0 = clock()
    last_eval_t = train_t0
    eval_seconds = 0.0

    def fraction_done() -> float:
        if budget is not None:
            return (clock() - train_t0 - eval_seconds) / budget
        return iteration / max(1, total_iters or 1)

    def agree_stop(local: bool) -> bool:
        if not run.distributed:
            return local
        import torch.distributed as dist

        flag = torch.tensor([1.0 if local else 0.0], device=device if device.type == "cuda" else "cpu")
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item() > 0)

    def validate_into(entry: dict[str, Any]) -> None:
        """Score the val images (rank 0), note the figures in ``entry`` and keep the best weights."""
        nonlocal best, eval_seconds, last_eval_t
        if rank != 0:
            return
        t_eval = clock()
        report({"phase": "eval", "epoch": epoch})
        metrics = validate(run)
        entry["val_miou"] = metrics.miou
        entry["val_pixel_accuracy"] = metrics.pixel_accuracy
        entry["per_class_iou"] = dict(zip(run.class_names, metrics.per_class_iou))
        if best is None or metrics.miou > best[0]:
            best = (metrics.miou, _cpu_state(run.net), metrics)
        eval_seconds += clock() - t_eval
        last_eval_t = clock()

    def fold_in(losses: list[float]) -> None:
        """Validate one last time, then train on the val images too (see config.fold_in_at)."""
        nonlocal folded, best
        entry: dict[str, Any] = {
            "epoch": epoch,
            "iteration": iteration,
            "train_loss": float(np.mean(losses)) if losses else None,
            "val_miou": None,
            "fold_in": True,
        }
        best = None  # the figure reported is this one: the weights just before the val images join
        validate_into(entry)
        entry["elapsed"] = clock() - train_t0
        history.append(entry)
        report({"phase": "epoch", **entry, "best_miou": best[0] if best else None})
        run.samples_train = run.samples_train + run.samples_val
        folded = True

    folded = False
    done = False
    try:
        while not done:
            epoch += 1
            perm = torch.randperm(
                len(run.samples_train), generator=torch.Generator().manual_seed(config.seed + epoch)
            ).tolist()
            losses: list[float] = []
            for step in range(trainer.steps_per_epoch):
                frac = fraction_done()
                if agree_stop(bool(should_stop()) if rank == 0 else False):
                    stopped, done = True, True
                    break
                if agree_stop(frac >= 1.0):
                    done = True
                    break
                if not folded and run.samples_val and agree_stop(frac >= trainer.fold_at):
                    fold_in(losses)
                cur_lr = poly_lr(trainer.lr, frac, config.warmup)
                chunk = [perm[(step * config.batch_size + j) % len(perm)] for j in range(config.batch_size)]
                mine = chunk[rank::world][: trainer.local_bs] or chunk[:1]
                loss = _step(run, trainer, mine, cur_lr)
                iteration += 1
                lv = float(loss.detach())
                if not math.isfinite(lv):
                    raise FinetuneError(f"the training loss became {lv} at step {iteration}; try a lower --lr")
                losses.append(lv)
                elapsed = clock() - train_t0
                report(
                    {
                        "phase": "train",
                        "epoch": epoch,
                        "epochs": None if budget else epochs,
                        "iteration": iteration,
                        "iterations": total_iters,
                        "fraction": min(1.0, fraction_done()),
                        "loss": lv,
                        "lr": cur_lr,
                        "elapsed": elapsed,
                        "it_per_s": iteration / max(1e-9, elapsed - eval_seconds),
                    }
                )
                if total_iters is not None and iteration >= total_iters:
                    done = True
                    break
            if not losses:
                break
            # Evaluate at the end of an epoch: every epoch with --epochs; about `evals` times with --minutes.
            now = clock()
            due = budget is None or done or (now - last_eval_t) >= budget / max(1, config.evals)
            entry: dict[str, Any] = {
                "epoch": epoch,
                "iteration": iteration,
                "train_loss": float(np.mean(losses)),
                "val_miou": None,
            }
            if run.samples_val and due and not stopped and not folded:
                validate_into(entry)
            entry["elapsed"] = clock() - train_t0
            history.append(entry)
            report({"phase": "epoch", **entry, "best_miou": best[0] if best else None})
    except (torch.OutOfMemoryError, RuntimeError, MemoryError) as e:
        if _is_oom(e):
            if device.type == "cuda":
                torch.cuda.empty_cache()
            raise _oom_error(run) from e
        raise
    return TrainOutcome(history, best, iteration, stopped, train_t0, eval_seconds, folded)
