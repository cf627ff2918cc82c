"""Fine-tune DeepLabV3 on a project's corrected masks; each finished run is a new model version.

The loop keeps the shape of torchvision's ``references/segmentation/train.py``
(cross-entropy with ``ignore_index=255`` plus 0.5 x the auxiliary loss, poly LR,
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
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from annotation.atomic import atomic_write_bytes
from annotation.errors import AtrousError
from annotation.project import Project

from .cputrain import depthwise_in_fp32, keep_freed_memory, phased_dilated_depthwise, plain_convs
from .data import Augment, DataError, Sample, load_project_samples, make_batch, normalise_full, split_train_val
from .deeplabv3 import ArchSpec, DeepLabV3, build_deeplabv3, zero_init_residuals
from .metrics import ConfusionMatrix, SegMetrics
from .predictor import pick_device, pick_dtype
from .weights import (
    NORM_IMAGE, NORMALISATIONS, REGISTRY, LoadedModel, ModelMeta, WeightsError, load_model, save_checkpoint, torchvision_cache_dir,
)

MODELS_DIR = "models"
#: Statuses whose masks a person has checked; only these are trained on.
TRAIN_STATUSES = ("edited", "reviewed")
#: Images per step when the config leaves it open. On the CPU 4 beats 8: a step costs
#: about half as much, so the same minutes make twice the updates, and on CamVid from
#: scratch that learns more from few images (bench/label_loop.py --batch-size 4 vs 8).
DEFAULT_BATCH = {"cpu": 4, "gpu": 8}


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
    aux_weight: float = 0.5
    correction_weight: float = 1.0
    scale_range: tuple[float, float] = (0.75, 1.5)
    hflip: float = 0.5
    jitter: float = 0.2
    input_size: int | None = None
    normalisation: str | None = None
    val_fraction: float = 0.2
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


# --------------------------------------------------------------------------- helpers


def _dist_info() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def project_class_names(project: Project) -> tuple[list[str], list[tuple[int, int, int]]]:
    """Names and colours for indices 0..max (unused indices get placeholders)."""
    classes = project.classes()
    if not classes:
        raise FinetuneError(f"{project.root}: the project has no classes; add classes before fine-tuning")
    n = max(c.index for c in classes) + 1
    names = [f"__unused_{i}__" for i in range(n)]
    colours = [(0, 0, 0)] * n
    for c in classes:
        names[c.index] = c.name
        colours[c.index] = c.colour
    if len(classes) < 2:
        raise FinetuneError(
            f"{project.root}: the project has a single class ({classes[0].name!r}); a segmentation model needs at "
            f"least two (e.g. add a background class)"
        )
    return names, colours


def resolve_model_spec(project: Project, spec: str | None) -> str | None:
    """Turn ``v3`` / ``3`` (a project version) into its checkpoint path; other specs pass through.

    ``None`` gives the active version's checkpoint, or None when there is none.
    """
    if spec is None:
        active = project.active_model_version
        return None if active is None else _version_path(project, active.checkpoint_path)
    text = str(spec)
    key = text[1:] if text[:1] in "vV" else text
    if key.isdigit() and not Path(text).exists():
        for mv in project.model_versions():
            if mv.id == int(key):
                return _version_path(project, mv.checkpoint_path)
        raise FinetuneError(f"{project.root}: no model version {text} (see `models {project.root}`)")
    return text


def _version_path(project: Project, stored: str) -> str:
    if stored in REGISTRY:  # a registry model recorded as the source of pre-labels
        return stored
    p = Path(stored)
    return str(p if p.is_absolute() else project.root / p)


def load_base(project: Project, base: str | None, *, backbone: str = "mobilenet_v3_large", output_stride: int = 16) -> tuple[LoadedModel | None, str]:
    """The starting model and a description; ``(None, "random init")`` for a random init."""
    spec = resolve_model_spec(project, base) if base not in ("scratch", "random") else "scratch"
    if spec is None:
        name = "deeplabv3_mobilenet_v3_large"
        url = REGISTRY[name].torchvision_weights().url
        if (torchvision_cache_dir() / os.path.basename(url)).exists():
            spec = name
        else:
            return None, "random init (no active version, no cached pretrained weights)"
    if spec == "scratch":
        return None, "random init"
    loaded = load_model(spec)  # WeightsError (an AtrousReadError) for bad files or unknown names
    return loaded, spec


def build_training_network(
    base: LoadedModel | None, class_names: list[str], *, backbone: str, output_stride: int
) -> tuple[DeepLabV3, str]:
    """The network to train: the base's weights, heads rebuilt when the classes differ.

    Always has an auxiliary head (it helps training; the predictor drops it).
    """
    n = len(class_names)
    if base is None:
        net = build_deeplabv3(backbone=backbone, num_classes=n, output_stride=output_stride, atrous_rates=(12, 24, 36), aux_loss=True)
        zero_init_residuals(net)
        return net, "random init"
    arch = base.meta.arch
    net = build_deeplabv3(
        backbone=arch.backbone, num_classes=n, output_stride=arch.output_stride, atrous_rates=arch.atrous_rates, aux_loss=True
    )
    same = list(base.meta.class_names) == list(class_names)
    state = base.network.state_dict()
    if not same:
        # Keep backbone and ASPP, re-initialise the last 1x1 conv of each head.
        state = {k: v for k, v in state.items() if not (k.startswith("classifier.4.") or k.startswith("aux_classifier.4."))}
    missing, unexpected = net.load_state_dict(state, strict=False)
    bad = [k for k in missing if not (k.startswith("aux_classifier.") or k.startswith("classifier.4."))]
    if bad or unexpected:
        raise FinetuneError(f"the base model's weights do not fit a {arch.backbone} DeepLabV3 ({(bad + list(unexpected))[:3]})")
    note = "same classes" if same else f"heads rebuilt for {n} classes (base had {arch.num_classes})"
    return net, note


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
        logits = F.interpolate(logits.float().contiguous(), size=target.shape[-2:], mode="bilinear", align_corners=False)
    logits = logits.float()
    if weights is None:
        return F.cross_entropy(logits, target, ignore_index=255)
    per_pixel = F.cross_entropy(logits, target, ignore_index=255, reduction="none")
    w = weights * (target != 255)
    return (per_pixel * w).sum() / w.sum().clamp(min=1.0)


def make_optimizer(params: list[nn.Parameter], name: str, *, lr: float, weight_decay: float, momentum: float) -> torch.optim.Optimizer:
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
    return isinstance(e, (RuntimeError, MemoryError)) and ("out of memory" in text or "can't allocate memory" in text or isinstance(e, MemoryError))


@torch.no_grad()
def evaluate_samples(
    net: nn.Module, samples: list[Sample], num_classes: int, mean, std, device: torch.device,
    dtype: torch.dtype, channels_last: bool = True, per_image: bool = False,
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
    net: nn.Module, samples: list[Sample], mean, std, device: torch.device, dtype: torch.dtype,
    channels_last: bool = True, max_images: int = BN_STAT_IMAGES, batch_size: int = 4, per_image: bool = False,
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
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]  # noqa: SLF001
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
            if isinstance(m, nn.modules.dropout._DropoutNd):  # noqa: SLF001
                m.eval()
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches below
        for group in by_shape.values():
            for i in range(0, len(group), batch_size):
                x = torch.cat([normalise_full(smp, mean, std, per_image=per_image) for smp in group[i : i + batch_size]])
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


# --------------------------------------------------------------------------- the run


def finetune(
    project_or_config: FinetuneConfig | Project | str | os.PathLike[str],
    *,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    clock: Callable[[], float] = time.perf_counter,
    **overrides: Any,
) -> FinetuneResult:
    """Fine-tune on the project's ``edited``/``reviewed`` masks and save a new model version.

    Args:
        project_or_config: a :class:`FinetuneConfig`, an open :class:`Project`, or a project path.
        on_progress: called with a dict (see README, "Fine-tuning"): ``phase`` ("load", "train",
            "warmup", "eval", "epoch", "bn", "save", "done"). "load": ``images``, ``train``, ``val``, ``base``,
            ``heads``. "train" (every step): ``epoch``, ``epochs`` (None with minutes), ``iteration``,
            ``iterations`` (None with minutes), ``fraction`` (0..1 of the budget), ``loss``, ``lr``,
            ``elapsed``, ``it_per_s``. "epoch": ``epoch``, ``train_loss``, ``val_miou`` (None when not
            evaluated), ``per_class_iou``, ``best_miou``. "done": ``saved`` (path or None), ``version``, ``stopped``.
        should_stop: polled every step; when it returns True the run stops, keeps the best
            checkpoint so far as a (not activated) model version, and returns ``stopped=True``.
        clock: the time source for ``minutes`` and the reported rates (a benchmark that
            interleaves two trainings passes one that stops while the other runs).
        **overrides: FinetuneConfig fields (e.g. ``minutes=5``).

    Raises:
        FinetuneError (or another AtrousError) with a message for a person; the project's
        active model is then unchanged.
    """
    if isinstance(project_or_config, FinetuneConfig):
        config = replace(project_or_config, **overrides)
        project, own = None, True
    elif isinstance(project_or_config, Project):
        config = FinetuneConfig(project=str(project_or_config.root), **overrides)
        project, own = project_or_config, False
    else:
        config = FinetuneConfig(project=os.fspath(project_or_config), **overrides)
        project, own = None, True
    if project is None:
        project = Project.open(config.project)
    try:
        with keep_freed_memory():
            return _run(project, config, on_progress or (lambda d: None), should_stop or (lambda: False), clock)
    finally:
        if own:
            project.close()


def _check_config(c: FinetuneConfig) -> None:
    if c.epochs is not None and c.minutes is not None:
        raise FinetuneError("give either epochs or minutes, not both")
    if c.epochs is not None and c.epochs < 1:
        raise FinetuneError(f"epochs must be at least 1, got {c.epochs}")
    if c.minutes is not None and c.minutes <= 0:
        raise FinetuneError(f"minutes must be positive, got {c.minutes}")
    if c.batch_size is not None and c.batch_size < 1:
        raise FinetuneError(f"batch size must be at least 1, got {c.batch_size}")
    if c.crop < 32:
        raise FinetuneError(f"crop must be at least 32 pixels, got {c.crop}")
    if c.optimizer not in ("adamw", "sgd"):
        raise FinetuneError(f"unknown optimizer {c.optimizer!r}; use adamw or sgd")
    if c.correction_weight < 1:
        raise FinetuneError(f"correction weight must be >= 1, got {c.correction_weight}")
    if c.normalisation is not None and c.normalisation not in NORMALISATIONS:
        raise FinetuneError(f"unknown normalisation {c.normalisation!r}; use {' or '.join(NORMALISATIONS)}")


def _run(
    project: Project, config: FinetuneConfig, report: Callable[[dict[str, Any]], None], should_stop: Callable[[], bool],
    clock: Callable[[], float],
) -> FinetuneResult:
    _check_config(config)
    rank, world, local_rank = _dist_info()
    distributed = world > 1
    t_start = clock()
    class_names, colours = project_class_names(project)
    n_classes = len(class_names)
    records = project.images(list(config.statuses))
    records = [r for r in records if r.has_mask]
    if not records:
        raise FinetuneError(
            f"{project.root}: no images with status {' or '.join(config.statuses)} to train on; correct and save "
            f"some pre-labels first (or import labelled data)"
        )
    train_recs, val_recs = split_train_val(records, config.val_fraction, config.seed)

    # device / precision
    if distributed and config.device in ("auto", "cuda") and torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        try:
            device = pick_device(config.device)
        except AtrousError as e:
            raise FinetuneError(str(e)) from e
    try:
        dtype = pick_dtype(device, config.precision)
    except AtrousError as e:
        raise FinetuneError(str(e)) from e
    if device.type == "mps" and dtype == torch.float16:
        dtype = torch.float32  # MPS autocast for training is not worth the trouble
    if config.batch_size is None:
        config = replace(config, batch_size=DEFAULT_BATCH["cpu" if device.type == "cpu" else "gpu"])
    scaler = torch.amp.GradScaler("cuda") if (device.type == "cuda" and dtype == torch.float16) else None

    base, base_desc = load_base(project, config.base, backbone=config.backbone, output_stride=config.output_stride)
    torch.manual_seed(config.seed)  # a random init (and re-initialised heads) are reproducible
    net, head_note = build_training_network(base, class_names, backbone=config.backbone, output_stride=config.output_stride)
    mean = tuple(base.meta.mean) if base else (0.485, 0.456, 0.406)
    std = tuple(base.meta.std) if base else (0.229, 0.224, 0.225)
    input_size = config.input_size
    if input_size is None:
        if base is not None and base.meta.input_size:
            input_size = int(base.meta.input_size)
        else:
            input_size = int(min(520, np.median([min(r.width, r.height) for r in records])))
    normalisation = config.normalisation or (base.meta.normalisation if base is not None else NORM_IMAGE)
    per_image = normalisation == NORM_IMAGE
    report({"phase": "load", "images": len(records), "train": len(train_recs), "val": len(val_recs), "base": base_desc, "heads": head_note})

    def loading(i: int, n: int) -> None:
        # Under torchrun the ranks must agree; there a stop is only honoured in the training loop.
        if not distributed and should_stop():
            raise _Cancelled
        report({"phase": "load", "loaded": i, "of": n})

    try:
        samples_train = load_project_samples(project, train_recs, input_size=input_size, num_classes=n_classes, on_item=loading)
        samples_val = load_project_samples(project, val_recs, input_size=input_size, num_classes=n_classes, on_item=loading)
    except _Cancelled:
        report({"phase": "done", "saved": None, "stopped": True})
        return FinetuneResult(None, None, [], None, {}, True, False, 0, clock() - t_start, 0.0, config.to_dict())
    if not any(bool((s.mask != 255).any()) for s in samples_train):
        raise FinetuneError(f"{project.root}: every pixel of the training masks is void (255); nothing to learn from")

    torch.manual_seed(config.seed)
    net = net.to(device)
    if device.type == "cpu":
        # Only the modules' classes change; the saved copy gets plain ones back (plain_convs).
        phased_dilated_depthwise(net)
        if dtype == torch.bfloat16:
            depthwise_in_fp32(net)
    if config.channels_last:
        net = net.to(memory_format=torch.channels_last)
    net.train()
    model: nn.Module = net
    own_group = False
    if distributed:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
            own_group = True
        model = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)

    lr = config.lr if config.lr is not None else (2e-3 if config.optimizer == "adamw" else 0.02)
    params = [p for p in net.parameters() if p.requires_grad]
    opt = make_optimizer(params, config.optimizer, lr=lr, weight_decay=config.weight_decay, momentum=config.momentum)

    aug = Augment(crop=config.crop, scale_range=tuple(config.scale_range), hflip=config.hflip, jitter=config.jitter)  # type: ignore[arg-type]
    gen = torch.Generator().manual_seed(config.seed * 1000 + rank)
    # Each rank sees batch_size // world images per step, so the global batch stays the same.
    local_bs = config.batch_size // world
    if local_bs < 2:
        # BatchNorm after ASPP's global pooling sees one value per channel per image.
        raise FinetuneError(
            f"batch size {config.batch_size} gives {local_bs} image(s) per process; BatchNorm needs at least 2, "
            f"use --batch-size {2 * world} or more"
        )
    steps_per_epoch = max(1, math.ceil(len(samples_train) / config.batch_size))
    epochs = config.epochs if (config.epochs is not None or config.minutes is not None) else 30
    total_iters = epochs * steps_per_epoch if config.minutes is None else None
    budget = config.minutes * 60.0 if config.minutes is not None else None
    use_weights = config.correction_weight > 1.0

    # One forward/backward before the clock starts: the first step pays one-off kernel set-up
    # (oneDNN bf16 primitives take tens of seconds on some CPUs), which is not training time.
    report({"phase": "warmup"})
    try:
        wx, wy, _ = make_batch(samples_train, [0] * local_bs, aug, torch.Generator().manual_seed(0), mean, std, per_image=per_image)
        wx = wx.to(device).contiguous(memory_format=torch.channels_last) if config.channels_last else wx.to(device)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            wout = net(wx, upsample=False)
        seg_loss(wout["out"], wy.to(device), None).backward()
        opt.zero_grad(set_to_none=True)
        del wx, wy, wout
    except (torch.OutOfMemoryError, RuntimeError, MemoryError) as e:
        if _is_oom(e):
            raise FinetuneError(
                f"out of {'GPU ' if device.type == 'cuda' else ''}memory at batch size {config.batch_size} and crop "
                f"{config.crop}; try a smaller --batch-size or --crop (the project's models are unchanged)"
            ) from e
        raise

    history: list[dict[str, Any]] = []
    best: tuple[float, dict[str, torch.Tensor], SegMetrics] | None = None
    last_metrics: SegMetrics | None = None
    iteration, epoch, stopped = 0, 0, False
    train_t0 = clock()
    last_eval_t = train_t0
    eval_seconds = 0.0

    def fraction_done() -> float:
        if budget is not None:
            return (clock() - train_t0 - eval_seconds) / budget
        return iteration / max(1, total_iters or 1)

    def agree_stop(local: bool) -> bool:
        if not distributed:
            return local
        import torch.distributed as dist

        flag = torch.tensor([1.0 if local else 0.0], device=device if device.type == "cuda" else "cpu")
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item() > 0)

    done = False
    try:
        while not done:
            epoch += 1
            perm = torch.randperm(len(samples_train), generator=torch.Generator().manual_seed(config.seed + epoch)).tolist()
            losses: list[float] = []
            for step in range(steps_per_epoch):
                frac = fraction_done()
                if agree_stop(bool(should_stop()) if rank == 0 else False):
                    stopped, done = True, True
                    break
                if agree_stop(frac >= 1.0):
                    done = True
                    break
                cur_lr = poly_lr(lr, frac, config.warmup)
                for g in opt.param_groups:
                    g["lr"] = cur_lr
                chunk = [perm[(step * config.batch_size + j) % len(perm)] for j in range(config.batch_size)]
                mine = chunk[rank::world][:local_bs] or chunk[:1]
                x, y, corr = make_batch(samples_train, mine, aug, gen, mean, std, per_image=per_image)
                x = x.to(device, non_blocking=True)
                if config.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                y = y.to(device, non_blocking=True)
                w = None
                if use_weights and corr is not None:
                    w = 1.0 + (config.correction_weight - 1.0) * corr.to(device).float()
                with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                    out = model(x, upsample=False)
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
                iteration += 1
                lv = float(loss.detach())
                if not math.isfinite(lv):
                    raise FinetuneError(f"the training loss became {lv} at step {iteration}; try a lower --lr")
                losses.append(lv)
                elapsed = clock() - train_t0
                report({
                    "phase": "train", "epoch": epoch, "epochs": None if budget else epochs, "iteration": iteration,
                    "iterations": total_iters, "fraction": min(1.0, fraction_done()), "loss": lv, "lr": cur_lr,
                    "elapsed": elapsed, "it_per_s": iteration / max(1e-9, elapsed - eval_seconds),
                })
                if total_iters is not None and iteration >= total_iters:
                    done = True
                    break
            if not losses:
                break
            # Evaluate at the end of an epoch: every epoch with --epochs; about `evals` times with --minutes.
            now = clock()
            due = budget is None or done or (now - last_eval_t) >= budget / max(1, config.evals)
            entry: dict[str, Any] = {"epoch": epoch, "iteration": iteration, "train_loss": float(np.mean(losses)), "val_miou": None}
            if rank == 0 and samples_val and due and not stopped:
                t_eval = clock()
                report({"phase": "eval", "epoch": epoch})
                recompute_bn_stats(net, samples_train, mean, std, device, dtype, config.channels_last, per_image=per_image)
                last_metrics = evaluate_samples(
                    net, samples_val, n_classes, mean, std, device, dtype, config.channels_last, per_image=per_image
                )
                last_metrics.class_names = class_names
                entry["val_miou"] = last_metrics.miou
                entry["val_pixel_accuracy"] = last_metrics.pixel_accuracy
                entry["per_class_iou"] = dict(zip(class_names, last_metrics.per_class_iou))
                if best is None or last_metrics.miou > best[0]:
                    best = (last_metrics.miou, _cpu_state(net), last_metrics)
                eval_seconds += clock() - t_eval
                last_eval_t = clock()
            entry["elapsed"] = clock() - train_t0
            history.append(entry)
            report({"phase": "epoch", **entry, "best_miou": best[0] if best else None})
    except (torch.OutOfMemoryError, RuntimeError, MemoryError) as e:
        if _is_oom(e):
            if device.type == "cuda":
                torch.cuda.empty_cache()
            raise FinetuneError(
                f"out of {'GPU ' if device.type == 'cuda' else ''}memory at batch size {config.batch_size} and crop "
                f"{config.crop}; try a smaller --batch-size or --crop (the project's models are unchanged)"
            ) from e
        raise

    seconds = clock() - t_start
    train_seconds = max(1e-9, clock() - train_t0 - eval_seconds)
    it_per_s = iteration / train_seconds
    result = FinetuneResult(
        version_id=None, checkpoint_path=None, history=history, best_miou=best[0] if best else None,
        per_class_iou=dict(zip(class_names, best[2].per_class_iou)) if best else {}, stopped=stopped, activated=False,
        iterations=iteration, seconds=seconds, it_per_s=it_per_s, config=config.to_dict(),
    )
    if distributed:
        import torch.distributed as dist

        dist.barrier()
    if rank != 0:
        if own_group:
            import torch.distributed as dist

            dist.destroy_process_group()
        return result
    if iteration == 0:
        report({"phase": "done", "saved": None, "stopped": stopped})
        return result
    if stopped and best is None:
        report({"phase": "done", "saved": None, "stopped": True})
        return result  # cancelled before anything was validated: nothing worth keeping

    # Keep the best validated weights (their BatchNorm statistics were recomputed before
    # validation); without a val split, the last ones, with their statistics recomputed.
    if best is None:
        report({"phase": "bn"})
        recompute_bn_stats(net, samples_train, mean, std, device, dtype, config.channels_last, per_image=per_image)
    final = plain_convs(copy.deepcopy(net)).cpu().eval()
    if best is not None:
        final.load_state_dict(best[1])
    report({"phase": "save"})
    stamp = time.strftime("%Y%m%d-%H%M%S")
    models_dir = project.root / MODELS_DIR
    models_dir.mkdir(parents=True, exist_ok=True)
    stem = f"finetune-{stamp}"
    k = 1
    while (models_dir / f"{stem}.pt").exists():
        k += 1
        stem = f"finetune-{stamp}-{k}"
    ckpt = models_dir / f"{stem}.pt"
    summary = {
        "base": base_desc, "heads": head_note, "train_images": [r.id for r in train_recs], "val_images": [r.id for r in val_recs],
        "iterations": iteration, "seconds": round(seconds, 2), "it_per_s": round(it_per_s, 4), "stopped": stopped,
        "best_val_miou": result.best_miou, "per_class_iou": result.per_class_iou, "device": str(device),
        "precision": {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype], "world_size": world,
        "normalisation": normalisation,
    }
    meta = ModelMeta(
        arch=final.spec, class_names=class_names, colours=colours, mean=mean, std=std,  # type: ignore[arg-type]
        input_size=input_size, normalisation=normalisation, name=config.name or stem, source=f"finetuned on {project.root.name} from {base_desc}",
        history=[{"config": config.to_dict(), "summary": summary, "epochs": history}],
    )
    save_checkpoint(ckpt, final, meta)
    record = {"config": config.to_dict(), "history": history, **summary}
    atomic_write_bytes(models_dir / f"{stem}.json", json.dumps(record, indent=1).encode())
    version_id = project.add_model_version(config.name or stem, f"{MODELS_DIR}/{ckpt.name}", record)
    activated = False
    if config.activate and not stopped:
        project.active_model_version = version_id
        activated = True
    result.version_id, result.checkpoint_path, result.activated = version_id, ckpt, activated
    report({"phase": "done", "saved": str(ckpt), "version": version_id, "stopped": stopped, "best_miou": result.best_miou})
    if own_group:
        import torch.distributed as dist

        dist.destroy_process_group()
    return result


def _cpu_state(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}


def main(argv: list[str] | None = None) -> int:
    """``python -m model.finetune PROJECT [options]``: the entry point for ``torchrun``."""
    import sys

    from . import cli

    args = list(sys.argv[1:] if argv is None else argv)
    return cli.main_finetune(args)


if __name__ == "__main__":
    raise SystemExit(main())
