"""Setting up a run: classes and images, device and precision, the base model, the network, the data.

The base model is picked through the one model resolver, :mod:`model.versions`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from annotation.errors import AtrousError
from annotation.project import ImageRecord, Project

from ..data import Sample, load_project_samples, split_train_val
from ..deeplabv3 import DeepLabV3, build_deeplabv3, zero_init_residuals
from ..predictor import pick_device, pick_dtype
from ..versions import DEFAULT_MODEL, ModelRef, resolve
from ..weights import NORM_IMAGE, REGISTRY, LoadedModel, load_model, torchvision_cache_dir
from .config import FinetuneConfig, FinetuneError, _Cancelled, _dist_info
from .training import DEFAULT_BATCH

# --------------------------------------------------------------------------- classes and the base model


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


def load_base(
    project: Project, base: str | None, *, backbone: str = "mobilenet_v3_large", output_stride: int = 16
) -> tuple[LoadedModel | None, str]:
    """The starting model and a description; ``(None, "random init")`` for a random init.

    ``base`` goes through the one model resolver (a registry name, a checkpoint file,
    a project version); None means the active version, else torchvision's pretrained
    weights when they are cached, else a random init.
    """
    if base in ("scratch", "random"):
        return None, "random init"
    ref = resolve(project, base, default=None)
    if ref is None:
        url = REGISTRY[DEFAULT_MODEL].torchvision_weights().url
        if not (torchvision_cache_dir() / os.path.basename(url)).exists():
            return None, "random init (no active version, no cached pretrained weights)"
        ref = ModelRef(DEFAULT_MODEL, None, DEFAULT_MODEL)
    loaded = load_model(ref.spec)  # WeightsError (an AtrousReadError) for bad files or unknown names
    return loaded, ref.spec


def build_training_network(
    base: LoadedModel | None, class_names: list[str], *, backbone: str, output_stride: int, aux: bool = True
) -> tuple[DeepLabV3, str]:
    """The network to train: the base's weights, heads rebuilt when the classes differ.

    ``aux``: with the auxiliary head (only the training loss reads it; the predictor drops it).
    """
    n = len(class_names)
    if base is None:
        net = build_deeplabv3(
            backbone=backbone, num_classes=n, output_stride=output_stride, atrous_rates=(12, 24, 36), aux_loss=aux
        )
        zero_init_residuals(net)
        return net, "random init"
    arch = base.meta.arch
    net = build_deeplabv3(
        backbone=arch.backbone,
        num_classes=n,
        output_stride=arch.output_stride,
        atrous_rates=arch.atrous_rates,
        aux_loss=aux,
    )
    same = list(base.meta.class_names) == list(class_names)
    state = base.network.state_dict()
    if not same:
        # Keep backbone and ASPP, re-initialise the last 1x1 conv of each head.
        state = {
            k: v for k, v in state.items() if not (k.startswith("classifier.4.") or k.startswith("aux_classifier.4."))
        }
    if not aux:
        state = {k: v for k, v in state.items() if not k.startswith("aux_classifier.")}
    missing, unexpected = net.load_state_dict(state, strict=False)
    bad = [k for k in missing if not (k.startswith("aux_classifier.") or k.startswith("classifier.4."))]
    if bad or unexpected:
        raise FinetuneError(
            f"the base model's weights do not fit a {arch.backbone} DeepLabV3 ({(bad + list(unexpected))[:3]})"
        )
    note = "same classes" if same else f"heads rebuilt for {n} classes (base had {arch.num_classes})"
    return net, note


# --------------------------------------------------------------------------- one run's set-up


@dataclass
class RunSetup:
    """What the set-up decided for one run; the training loop and the save read it.

    ``config`` has its open choices filled in (the batch size). ``net`` is the
    network being trained (the plain module, never the DistributedDataParallel
    wrapper). The samples are empty until :func:`load_samples`.
    """

    config: FinetuneConfig
    rank: int
    world: int
    device: torch.device
    dtype: torch.dtype
    scaler: torch.amp.GradScaler | None
    class_names: list[str]
    colours: list[tuple[int, int, int]]
    records: list[ImageRecord]
    train_recs: list[ImageRecord]
    val_recs: list[ImageRecord]
    net: DeepLabV3
    base_desc: str
    head_note: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_size: int
    normalisation: str
    samples_train: list[Sample] = field(default_factory=list)
    samples_val: list[Sample] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (image path, why) left out of the run

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def per_image(self) -> bool:
        """Whether each image is normalised by its own mean and std."""
        return self.normalisation == NORM_IMAGE


def _training_records(project: Project, config: FinetuneConfig) -> tuple[list[ImageRecord], list[tuple[str, str]]]:
    """The images with a mask and one of the statuses trained on, and the ones left out: (path, why).

    An image whose file is gone, unreadable, or changed size since it was labelled
    (header only: it would train on a mismatched pair) is left out and named; the
    run goes on with the rest (``check --repair`` fixes the project).
    """
    records = project.images(list(config.statuses))
    records = [r for r in records if r.has_mask]
    if not records:
        raise FinetuneError(
            f"{project.root}: no images with status {' or '.join(config.statuses)} to train on; correct and save "
            f"some pre-labels first (or import labelled data)"
        )
    from annotation.formats import check_image_fits

    usable, skipped = [], []
    for r in records:
        try:
            check_image_fits(project, r)
        except AtrousError as e:
            skipped.append((str(project.image_path(r)), str(e)))
        else:
            usable.append(r)
    if not usable:
        named = "; ".join(why for _, why in skipped[:3])
        raise FinetuneError(f"{project.root}: none of the {len(records)} labelled images can be read: {named}")
    return usable, skipped


def _device_and_precision(
    config: FinetuneConfig, distributed: bool, local_rank: int
) -> tuple[torch.device, torch.dtype]:
    """The device (under torchrun on CUDA: this process's GPU) and the compute dtype."""
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
    return device, dtype


def _preprocessing(
    config: FinetuneConfig, base: LoadedModel | None, records: list[ImageRecord]
) -> tuple[tuple[float, ...], tuple[float, ...], int, str]:
    """Mean, std, training scale and normalisation: the config's, else the base's, else a random init's."""
    mean = tuple(base.meta.mean) if base else (0.485, 0.456, 0.406)
    std = tuple(base.meta.std) if base else (0.229, 0.224, 0.225)
    input_size = config.input_size
    if input_size is None:
        if base is not None and base.meta.input_size:
            input_size = int(base.meta.input_size)
        else:
            input_size = int(min(520, np.median([min(r.width, r.height) for r in records])))
    normalisation = config.normalisation or (base.meta.normalisation if base is not None else NORM_IMAGE)
    return mean, std, input_size, normalisation


def prepare_run(project: Project, config: FinetuneConfig) -> RunSetup:
    """Classes, the train/val split, device and precision, the base model and the network to train.

    ``config`` must have passed the checks; the data is not loaded yet (see :func:`load_samples`).
    """
    rank, world, local_rank = _dist_info()
    class_names, colours = project_class_names(project)
    records, skipped = _training_records(project, config)
    train_recs, val_recs = split_train_val(records, config.val_fraction, config.seed)

    device, dtype = _device_and_precision(config, world > 1, local_rank)
    if config.batch_size is None:
        config = replace(config, batch_size=DEFAULT_BATCH["cpu" if device.type == "cpu" else "gpu"])
    scaler = torch.amp.GradScaler("cuda") if (device.type == "cuda" and dtype == torch.float16) else None

    base, base_desc = load_base(project, config.base, backbone=config.backbone, output_stride=config.output_stride)
    torch.manual_seed(config.seed)  # a random init (and re-initialised heads) are reproducible
    net, head_note = build_training_network(
        base, class_names, backbone=config.backbone, output_stride=config.output_stride, aux=config.aux_weight > 0
    )
    mean, std, input_size, normalisation = _preprocessing(config, base, records)
    return RunSetup(
        config=config,
        rank=rank,
        world=world,
        device=device,
        dtype=dtype,
        scaler=scaler,
        class_names=class_names,
        colours=colours,
        records=records,
        train_recs=train_recs,
        val_recs=val_recs,
        net=net,
        base_desc=base_desc,
        head_note=head_note,
        mean=mean,
        std=std,
        input_size=input_size,
        normalisation=normalisation,
        skipped=skipped,
    )


def load_samples(
    run: RunSetup, project: Project, report: Callable[[dict[str, Any]], None], should_stop: Callable[[], bool]
) -> None:
    """Decode the train and val images into ``run``'s samples, reporting each one.

    Raises _Cancelled when ``should_stop`` says so (not under torchrun, where
    the ranks must agree: there a stop is only honoured in the training loop),
    and FinetuneError when every training pixel is void.
    """

    def loading(i: int, n: int) -> None:
        if not run.distributed and should_stop():
            raise _Cancelled
        report({"phase": "load", "loaded": i, "of": n})

    def bad(rec: ImageRecord, why: str) -> None:
        run.skipped.append((str(project.image_path(rec)), why))

    size, n = run.input_size, run.n_classes
    run.samples_train = load_project_samples(
        project, run.train_recs, input_size=size, num_classes=n, on_item=loading, on_bad=bad
    )
    run.samples_val = load_project_samples(
        project, run.val_recs, input_size=size, num_classes=n, on_item=loading, on_bad=bad
    )
    loaded = {s.image_id for s in run.samples_train + run.samples_val}
    run.train_recs = [r for r in run.train_recs if r.id in loaded]
    run.val_recs = [r for r in run.val_recs if r.id in loaded]
    if not run.samples_train and run.samples_val:
        # Every image of the train side was unreadable: the val images are all there is to learn from.
        run.samples_train, run.samples_val = run.samples_val, []
        run.train_recs, run.val_recs = run.val_recs, []
    if not run.samples_train:
        named = "; ".join(why for _, why in run.skipped[:3])
        raise FinetuneError(f"{project.root}: none of the labelled images can be read: {named}")
    if not any(bool((s.mask != 255).any()) for s in run.samples_train):
        raise FinetuneError(f"{project.root}: every pixel of the training masks is void (255); nothing to learn from")
