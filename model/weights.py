"""Named models, torchvision's pretrained weights, and Atrous checkpoints.

Three kinds of thing can be passed wherever a model is asked for (``--model``):

* a registry name, e.g. ``deeplabv3_mobilenet_v3_large``: torchvision's
  pretrained DeepLabV3 (21 VOC classes), fetched through torchvision's weights
  API into its cache (``$TORCH_HOME/hub/checkpoints``) and read from there after;
* an Atrous checkpoint (``.pt``): the state dict plus :class:`ModelMeta`;
* a plain state dict saved from torchvision's DeepLabV3 builders
  (``torch.save(model.state_dict(), path)``); its architecture is inferred.

Every file is read with ``torch.load(weights_only=True)``: a file that needs
arbitrary pickled code to load is refused, never executed.
"""

from __future__ import annotations

import math
import os
import pickle
import urllib.error
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from annotation.atomic import atomic_open
from annotation.errors import AtrousReadError, AtrousWriteError
from annotation.masks import voc_colormap

from .deeplabv3 import BACKBONES, ArchSpec, DeepLabV3, build_from_spec

#: ImageNet normalisation, used by every torchvision backbone.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: How images are normalised before the network (``ModelMeta.normalisation``):
#: "dataset" subtracts ``mean`` and divides by ``std`` (the statistics of the data the
#: weights were trained on, ImageNet's for torchvision's); "image" uses each image's own
#: per-channel mean and std (see :func:`model.data.image_mean_std`).
NORM_DATASET = "dataset"
NORM_IMAGE = "image"
NORMALISATIONS = (NORM_DATASET, NORM_IMAGE)

CHECKPOINT_FORMAT = "atrous-checkpoint"
CHECKPOINT_VERSION = 1

#: The shorter-side sizes a checkpoint may ask images to be resized to: below 8 every image
#: shrinks to a few pixels (garbage masks, exit 0); past 4096 one image's activations outgrow
#: any machine. (finetune's ``--input-size`` starts at 32; its default, the images' median
#: short side, can be smaller.)
INPUT_SIZE_RANGE = (8, 4096)


class WeightsError(AtrousReadError):
    """A model could not be loaded: unknown name, missing or corrupt file, unsafe pickle."""


class WeightsUnavailableError(WeightsError):
    """Pretrained weights are neither in torchvision's cache nor downloadable."""


@dataclass
class ModelMeta:
    """What a model needs besides its weights to be used correctly.

    Preprocessing lives here, with the weights, never in the GUI: images are
    resized so the shorter side is ``input_size`` (``None``: native size), scaled
    to [0, 1] and normalised with ``mean``/``std`` (``normalisation`` "dataset") or
    with the image's own per-channel mean and std ("image"; checkpoints written
    before this field existed are "dataset").
    """

    arch: ArchSpec
    class_names: list[str]
    colours: list[tuple[int, int, int]]
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    input_size: int | None = 520
    normalisation: str = NORM_DATASET
    name: str = ""
    source: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.class_names) != self.arch.num_classes:
            raise ValueError(f"{len(self.class_names)} class names for a {self.arch.num_classes}-class model")
        if len(self.colours) != self.arch.num_classes:
            raise ValueError(f"{len(self.colours)} colours for a {self.arch.num_classes}-class model")
        if self.normalisation not in NORMALISATIONS:
            raise ValueError(
                f"unknown normalisation {self.normalisation!r}; expected one of {', '.join(NORMALISATIONS)}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain containers only (str/int/float/list/dict), so ``weights_only`` loading accepts it."""
        d = asdict(self)
        d["arch"] = asdict(self.arch)
        d["arch"]["atrous_rates"] = list(self.arch.atrous_rates)
        d["colours"] = [list(c) for c in self.colours]
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    def check_values(self) -> None:
        """Raise ValueError naming the first value no network can be built or run with
        (a damaged or hand-edited checkpoint), before anything is allocated."""
        a = self.arch
        lo, hi = INPUT_SIZE_RANGE
        bad_colour = next((c for c in self.colours if len(c) != 3 or not all(0 <= v <= 255 for v in c)), None)
        twice = [n for n in dict.fromkeys(self.class_names) if self.class_names.count(n) > 1]
        problems = [
            (a.backbone not in BACKBONES, f"backbone {a.backbone!r} is not one of {', '.join(BACKBONES)}"),
            (not 1 <= a.num_classes <= 255, f"{a.num_classes} classes; a model predicts 1..255"),
            (a.output_stride not in (8, 16), f"output stride {a.output_stride}; it must be 8 or 16"),
            (
                not a.atrous_rates or not all(1 <= r <= 1024 for r in a.atrous_rates),
                f"atrous rates {a.atrous_rates} must be 1..1024",
            ),
            (
                self.input_size is not None and not lo <= self.input_size <= hi,
                f"input size {self.input_size} is outside {lo}..{hi}",
            ),
            (
                len(self.mean) != 3 or not all(math.isfinite(v) for v in self.mean),
                f"mean {self.mean} is not three finite numbers",
            ),
            (
                len(self.std) != 3 or not all(math.isfinite(v) and v > 0 for v in self.std),
                f"std {self.std} is not three positive numbers",
            ),
            (bad_colour is not None, f"class colour {bad_colour} is not three values in 0..255"),
            (bool(twice), f"class name {twice[0] if twice else ''!r} appears twice"),
        ]
        for bad, what in problems:
            if bad:
                raise ValueError(what)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelMeta:
        a = dict(d["arch"])
        arch = ArchSpec(
            backbone=str(a["backbone"]),
            num_classes=int(a["num_classes"]),
            output_stride=int(a["output_stride"]),
            atrous_rates=tuple(int(r) for r in a["atrous_rates"]),
            aux_loss=bool(a["aux_loss"]),
        )
        meta = cls(
            arch=arch,
            class_names=[str(n) for n in d["class_names"]],
            colours=[tuple(int(v) for v in c) for c in d["colours"]],
            mean=tuple(float(v) for v in d.get("mean", IMAGENET_MEAN)),
            std=tuple(float(v) for v in d.get("std", IMAGENET_STD)),
            input_size=None if d.get("input_size") is None else int(d["input_size"]),
            normalisation=str(d.get("normalisation", NORM_DATASET)),
            name=str(d.get("name", "")),
            source=str(d.get("source", "")),
            history=list(d.get("history", [])),
        )
        meta.check_values()
        return meta


def default_colours(n: int) -> list[tuple[int, int, int]]:
    """VOC's colour map for the first ``n`` classes."""
    cmap = voc_colormap(256)
    return [tuple(int(v) for v in cmap[i % 255]) for i in range(n)]


@dataclass
class LoadedModel:
    """A network in eval mode and the metadata that says how to use it."""

    network: DeepLabV3
    meta: ModelMeta


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class RegistryEntry:
    """A named pretrained model: which torchvision weights and which architecture."""

    name: str
    backbone: str
    output_stride: int
    weights_enum: str  # attribute of torchvision.models.segmentation
    description: str

    def torchvision_weights(self) -> Any:
        from torchvision.models import segmentation

        return getattr(segmentation, self.weights_enum).COCO_WITH_VOC_LABELS_V1


# torchvision trains ResNet DeepLabV3 at output stride 8 and MobileNet at 16, both
# with rates (12, 24, 36); the entries rebuild exactly that so the weights fit.
REGISTRY: dict[str, RegistryEntry] = {
    e.name: e
    for e in (
        RegistryEntry(
            "deeplabv3_mobilenet_v3_large",
            "mobilenet_v3_large",
            16,
            "DeepLabV3_MobileNet_V3_Large_Weights",
            "torchvision DeepLabV3-MobileNetV3-Large, COCO subset with the 20 VOC classes (42 MB, fast)",
        ),
        RegistryEntry(
            "deeplabv3_resnet50",
            "resnet50",
            8,
            "DeepLabV3_ResNet50_Weights",
            "torchvision DeepLabV3-ResNet50, COCO subset with the 20 VOC classes (161 MB)",
        ),
        RegistryEntry(
            "deeplabv3_resnet101",
            "resnet101",
            8,
            "DeepLabV3_ResNet101_Weights",
            "torchvision DeepLabV3-ResNet101, COCO subset with the 20 VOC classes (233 MB)",
        ),
    )
}


def torchvision_cache_dir() -> Path:
    """Where torchvision keeps downloaded weights (honours ``$TORCH_HOME``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _registry_meta(entry: RegistryEntry) -> ModelMeta:
    tv_weights = entry.torchvision_weights()
    transforms = tv_weights.transforms()
    categories = list(tv_weights.meta["categories"])
    resize = transforms.resize_size
    input_size = int(resize[0]) if isinstance(resize, (list, tuple)) and resize else (int(resize) if resize else None)
    arch = ArchSpec(entry.backbone, len(categories), entry.output_stride, (12, 24, 36), True)
    return ModelMeta(
        arch=arch,
        class_names=categories,
        colours=default_colours(len(categories)),
        mean=tuple(float(v) for v in transforms.mean),
        std=tuple(float(v) for v in transforms.std),
        input_size=input_size,
        name=entry.name,
        source=f"torchvision {entry.weights_enum}.COCO_WITH_VOC_LABELS_V1",
    )


def load_registry_model(name: str, *, progress: bool = False) -> LoadedModel:
    """Load a registry model through torchvision's weights API and cache.

    Raises :class:`WeightsUnavailableError` (one sentence: what, where, what to do)
    when the file is not cached and cannot be downloaded.
    """
    entry = REGISTRY[name]
    tv_weights = entry.torchvision_weights()
    cached = torchvision_cache_dir() / os.path.basename(tv_weights.url)
    try:
        if not cached.is_file():
            # Download it ourselves: torch.hub announces "Downloading: ..." on stdout before it
            # even tries, which is noise offline (where our message below says what to do).
            _download_quietly(tv_weights.url, cached, progress=progress)
        state = tv_weights.get_state_dict(progress=progress, check_hash=True)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        reason = getattr(e, "reason", None) or e
        raise WeightsUnavailableError(
            f"Pretrained weights for {name!r} are not on this machine (looked for {cached}) and could not be "
            f"downloaded ({reason}); connect to the internet once so torchvision can cache them, "
            f"or pass a checkpoint file with --model PATH."
        ) from e
    except (RuntimeError, pickle.UnpicklingError, EOFError) as e:
        # A failed hash check, or a cached file that is not a readable checkpoint.
        raise WeightsUnavailableError(
            f"The cached weights for {name!r} at {cached} are damaged ({e}); delete that file and connect "
            f"to the internet once to download them again, or pass a checkpoint file with --model PATH."
        ) from e
    meta = _registry_meta(entry)
    network = build_from_spec(meta.arch)
    network.load_state_dict(state, strict=True)
    return LoadedModel(network.eval(), meta)


def _download_quietly(url: str, dest: Path, *, progress: bool) -> None:
    """Fetch ``url`` into torchvision's cache as torch.hub would (hash prefix checked, written
    to a temporary file and moved into place), without its announcement."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    match = torch.hub.HASH_REGEX.search(dest.name)
    torch.hub.download_url_to_file(url, str(dest), match.group(1) if match else None, progress=progress)


# --------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: str | os.PathLike[str], network: nn.Module, meta: ModelMeta) -> None:
    """Write an Atrous checkpoint atomically: ``{"format", "version", "meta", "state_dict"}``."""
    state = {k: v.detach().cpu() for k, v in network.state_dict().items()}
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "meta": meta.to_dict(),
        "state_dict": state,
    }
    try:
        with atomic_open(path) as fh:
            torch.save(payload, fh)
    except (OSError, RuntimeError) as e:  # atomic_open already reports its own failures as AtrousWriteError
        raise AtrousWriteError(f"Cannot write checkpoint {path}: {e}") from e


def _safe_load(path: Path) -> Any:
    if not path.exists():
        raise WeightsError(f"{path}: model file not found")
    if path.stat().st_size == 0:
        raise WeightsError(f"{path}: the model file is empty (0 bytes)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch words both cases "Weights only load failed"; only a refused
        # GLOBAL means the file wants to import code, anything else is damage.
        if "global" not in str(e).lower():
            raise WeightsError(f"{path}: not a readable PyTorch checkpoint (damaged or not a checkpoint)") from e
        raise WeightsError(
            f"{path}: refused to load, the file needs arbitrary Python code to unpickle (only tensors and plain "
            f"data are accepted); re-save it with torch.save(model.state_dict(), path)"
        ) from e
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise WeightsError(f"{path}: not a readable PyTorch checkpoint ({str(e).splitlines()[0]})") from e


def infer_arch(state: dict[str, torch.Tensor]) -> ArchSpec:
    """Guess a torchvision DeepLabV3 architecture from a plain state dict's keys and shapes."""
    if "classifier.4.weight" not in state or "classifier.0.convs.0.0.weight" not in state:
        raise ValueError("no DeepLabV3 head (classifier.0.convs..., classifier.4.weight) in the state dict")
    num_classes = int(state["classifier.4.weight"].shape[0])
    aux = any(k.startswith("aux_classifier.") for k in state)
    if any(k.startswith("backbone.layer4.") for k in state):
        layer3_blocks = {k.split(".")[2] for k in state if k.startswith("backbone.layer3.")}
        backbone = "resnet101" if len(layer3_blocks) > 6 else "resnet50"
        stride = 8  # torchvision's ResNet DeepLabV3; dilation does not change weight shapes
    elif "backbone.16.0.weight" in state:
        backbone, stride = "mobilenet_v3_large", 16
    else:
        raise ValueError("the backbone keys match neither ResNet-50/101 nor MobileNetV3-Large")
    n_rates = len({k.split(".")[3] for k in state if k.startswith("classifier.0.convs.")}) - 2
    if n_rates != 3:
        raise ValueError(f"the ASPP head has {n_rates} atrous branches; torchvision's has 3")
    return ArchSpec(backbone, num_classes, stride, (12, 24, 36), aux)


def load_checkpoint(path: str | os.PathLike[str], *, class_names: list[str] | None = None) -> LoadedModel:
    """Load an Atrous checkpoint or a plain torchvision DeepLabV3 state dict.

    ``class_names`` names the classes of a plain state dict (default ``class_0..``);
    for an Atrous checkpoint, the names stored with it win unless given.
    """
    path = Path(path)
    obj = _safe_load(path)
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        version = obj.get("version", 0)
        if not isinstance(version, int) or version > CHECKPOINT_VERSION:
            raise WeightsError(
                f"{path}: checkpoint version {version!r} is not one this Atrous reads (1..{CHECKPOINT_VERSION})"
            )
        try:
            meta = ModelMeta.from_dict(obj["meta"])
            state = obj["state_dict"]
        except (KeyError, TypeError, ValueError, OverflowError) as e:
            raise WeightsError(f"{path}: checkpoint metadata is incomplete or malformed ({e})") from e
        if not meta.source:
            meta.source = str(path)
    elif isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state = obj
        try:
            arch = infer_arch(state)
        except ValueError as e:
            raise WeightsError(f"{path}: not a DeepLabV3 state dict ({e})") from e
        meta = ModelMeta(
            arch=arch,
            class_names=[f"class_{i}" for i in range(arch.num_classes)],
            colours=default_colours(arch.num_classes),
            name=path.stem,
            source=str(path),
        )
    else:
        raise WeightsError(f"{path}: neither an Atrous checkpoint nor a DeepLabV3 state dict")
    if class_names is not None:
        if len(class_names) != meta.arch.num_classes:
            raise WeightsError(
                f"{path}: the model predicts {meta.arch.num_classes} classes but {len(class_names)} class names were given"
            )
        meta.class_names = list(class_names)
    network = build_from_spec(meta.arch)
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()
        raise WeightsError(
            f"{path}: weights do not fit the {meta.arch.backbone} DeepLabV3 they describe ({' '.join(first[:2])})"
        ) from e
    return LoadedModel(network.eval(), meta)


def load_model(spec: str | os.PathLike[str], *, class_names: list[str] | None = None) -> LoadedModel:
    """Load a model from a registry name or a checkpoint / state-dict path."""
    text = os.fspath(spec)
    if text in REGISTRY:
        loaded = load_registry_model(text)
        if class_names is not None:
            raise WeightsError(
                f"{text} predicts torchvision's 21 VOC classes; --classes applies to state-dict files only"
            )
        return loaded
    path = Path(text).expanduser()
    if path.exists():
        return load_checkpoint(path, class_names=class_names)
    raise WeightsError(f"{text!r} is neither a model name ({', '.join(REGISTRY)}) nor an existing checkpoint file")
