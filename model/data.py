"""Training data: a project's corrected images, a stable train/val split, paired transforms.

Everything is decoded once and kept in RAM as uint8 tensors at the training
scale (shorter side ``input_size``), because a project's corrected images are
few and small next to the cost of a training step; each step then only does the
paired augmentation in torch on the CPU, in the reference script's order
(``references/segmentation/presets.py``): random scale, pad with 255, random
crop, horizontal flip, then light colour jitter on the image alone. Masks are
resized with NEAREST and padded with 255 (void) so padding never becomes a class.

Normalisation is either the weights' dataset mean/std or, for models trained
from a random init, each image's own per-channel mean and std
(:func:`image_mean_std`), taken over the whole image at the training scale
(never the crop), exactly as the Predictor takes it over the whole image it
predicts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from annotation.errors import AtrousError
from annotation.layout import prelabel_path as _prelabel_path
from annotation.masks import VOID, read_mask_png
from annotation.project import ImageRecord, Project

#: The smallest per-channel standard deviation that per-image normalisation divides by
#: (in [0, 1] units, about five grey levels), so a nearly flat image or channel is not
#: blown up into noise.
MIN_IMAGE_STD = 0.02


def image_mean_std(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image's per-channel mean and standard deviation, for per-image normalisation.

    ``images``: (N, 3, H, W) or (3, H, W), any dtype, values in 0..255. Returns
    (mean, std) in [0, 1] units shaped (..., 3, 1, 1), std at least
    :data:`MIN_IMAGE_STD`. Why per image: a model trained from scratch for a few
    hundred steps learns the brightness of the scenes it saw, and a darker scene
    (CamVid's dusk frames) then looks like nothing it knows; removing each
    image's own mean and contrast takes that difference away (figures in
    docs/finetuning.md).
    """
    std, mean = torch.std_mean(images.float(), dim=(-2, -1), keepdim=True)
    return mean / 255.0, (std / 255.0).clamp_min(MIN_IMAGE_STD)


class DataError(AtrousError):
    """The project's data cannot be used for training (no labelled images, bad masks...)."""


@dataclass
class Sample:
    """One training image at the training scale.

    ``image``: (3, H, W) uint8. ``mask``: (H, W) uint8 class indices, 255 = void.
    ``corrected``: (H, W) bool, the pixels a person changed in the pre-label
    (None when there was no pre-label: every pixel was labelled by hand).
    """

    image: torch.Tensor
    mask: torch.Tensor
    corrected: torch.Tensor | None = None
    image_id: int = -1
    _stats: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False, compare=False)

    def mean_std(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole image's per-channel mean and std, (3, 1, 1) each (see :func:`image_mean_std`)."""
        if self._stats is None:
            self._stats = image_mean_std(self.image)
        return self._stats


def prelabel_path(project: Project, image_id: int) -> Path:
    """Where the pre-label of an image is kept (``PROJECT/prelabels/<id>.png``)."""
    return _prelabel_path(project.root, image_id)


#: With a working size, the longer side is at most this many times ``input_size``: a 1x5000
#: strip scaled to a 520-pixel shorter side would be 520x2,600,000 (28 GB of activations).
MAX_ASPECT = 8


def scaled_size(h: int, w: int, input_size: int | None) -> tuple[int, int]:
    """The size the network sees: shorter side ``input_size``, aspect kept, the longer side at most
    ``MAX_ASPECT * input_size``; native when None. Training and the Predictor both use this rule."""
    if not input_size:
        return h, w
    s = min(input_size / min(h, w), MAX_ASPECT * input_size / max(h, w))
    return max(1, round(h * s)), max(1, round(w * s))


def make_sample(
    image: np.ndarray,
    mask: np.ndarray,
    *,
    input_size: int | None,
    prelabel: np.ndarray | None = None,
    num_classes: int | None = None,
    image_id: int = -1,
) -> Sample:
    """Build a :class:`Sample` from arrays, resized to the training scale.

    Mask values ``>= num_classes`` (labels the class list does not know) become void.
    """
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    image = image[:, :, :3]
    h, w = mask.shape
    if image.shape[:2] != (h, w):
        raise DataError(f"image {image_id}: mask is {w}x{h} but the image is {image.shape[1]}x{image.shape[0]}")
    m = torch.from_numpy(np.array(mask, dtype=np.uint8, copy=True))  # own, writable memory
    if num_classes is not None:
        m = torch.where(m >= num_classes, torch.tensor(VOID, dtype=torch.uint8), m)
    corrected = None
    if prelabel is not None and prelabel.shape == mask.shape:
        corrected = torch.from_numpy(prelabel != mask) & (m != VOID)
    x = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).permute(2, 0, 1)
    th, tw = scaled_size(h, w, input_size)
    if (th, tw) != (h, w):
        x = F.interpolate(x[None], size=(th, tw), mode="bilinear", align_corners=False, antialias=True)[0]
        x = x.round().clamp(0, 255).to(torch.uint8) if x.dtype != torch.uint8 else x
        m = F.interpolate(m[None, None].float(), size=(th, tw), mode="nearest")[0, 0].to(torch.uint8)
        if corrected is not None:
            corrected = F.interpolate(corrected[None, None].float(), size=(th, tw), mode="nearest")[0, 0].bool()
    return Sample(x.contiguous(), m.contiguous(), corrected, image_id)


def split_train_val(
    records: Sequence[ImageRecord], val_fraction: float, seed: int = 0
) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """A seeded split that is stable as a project grows.

    Each image goes to val when a hash of (seed, its content hash) falls below
    ``val_fraction``, so an image stays on the same side in every later run and
    a model fine-tuned again from an earlier version has never trained on its
    val images. With two or more images and ``val_fraction > 0``, at least one
    is in val and at least one in train.
    """
    if not 0 <= val_fraction < 1:
        raise DataError(f"val fraction must be in [0, 1), got {val_fraction}")
    recs = sorted(records, key=lambda r: r.id)
    if val_fraction == 0 or len(recs) < 2:
        return recs, []

    def u(r: ImageRecord) -> float:
        digest = hashlib.sha256(f"{seed}:{r.sha256}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    scores = {r.id: u(r) for r in recs}
    val = [r for r in recs if scores[r.id] < val_fraction]
    if not val:
        val = [min(recs, key=lambda r: scores[r.id])]
    if len(val) == len(recs):
        val.remove(max(val, key=lambda r: scores[r.id]))
    val_ids = {r.id for r in val}
    return [r for r in recs if r.id not in val_ids], val


def load_project_samples(
    project: Project,
    records: Sequence[ImageRecord],
    *,
    input_size: int | None,
    num_classes: int,
    on_item: Callable[[int, int], None] | None = None,
    on_bad: Callable[[ImageRecord, str], None] | None = None,
) -> list[Sample]:
    """Decode images, masks and pre-labels of ``records`` into :class:`Sample` objects.

    An image or mask that cannot be read raises, or with ``on_bad`` is passed to it
    with the reason and left out.
    """
    out: list[Sample] = []
    for i, rec in enumerate(records):
        try:
            mask = project.read_mask(rec.id)
            if mask is None:
                raise DataError(f"{rec.path}: has status {rec.status} but no mask")
            image = project.load_image(rec.id)
        except AtrousError as e:
            if on_bad is None:
                raise
            on_bad(rec, str(e))
            if on_item is not None:
                on_item(i + 1, len(records))
            continue
        pre = None
        pp = prelabel_path(project, rec.id)
        if pp.exists():
            try:
                pre = read_mask_png(pp)
            except AtrousError:
                pre = None  # a damaged pre-label copy only loses the correction weights
        out.append(
            make_sample(image, mask, input_size=input_size, prelabel=pre, num_classes=num_classes, image_id=rec.id)
        )
        if on_item is not None:
            on_item(i + 1, len(records))
    return out


# --------------------------------------------------------------------------- paired transforms


@dataclass
class Augment:
    """Paired augmentation settings (reference-script style)."""

    crop: int = 320
    scale_range: tuple[float, float] = (0.75, 1.5)
    hflip: float = 0.5
    jitter: float = 0.4  # brightness / contrast / saturation: factor in [1 - j, 1 + j]


def augment_pair(
    sample: Sample, aug: Augment, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One random view of a sample: (3, crop, crop) float in [0, 1], (crop, crop) int64 mask, optional bool map."""
    crop = aug.crop
    img = sample.image
    lab = sample.mask[None]
    if sample.corrected is not None:
        lab = torch.cat([lab, sample.corrected[None].to(torch.uint8)])
    _, h, w = img.shape
    lo, hi = aug.scale_range
    s = lo + (hi - lo) * float(torch.rand((), generator=gen))
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    x = img.float()
    if (nh, nw) != (h, w):
        x = F.interpolate(x[None], size=(nh, nw), mode="bilinear", align_corners=False)[0]
        lab = F.interpolate(lab[None].float(), size=(nh, nw), mode="nearest")[0].to(torch.uint8)
    ph, pw = max(0, crop - nh), max(0, crop - nw)
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), value=0.0)
        fill = torch.zeros((lab.shape[0], nh + ph, nw + pw), dtype=torch.uint8)
        fill[0] = VOID
        fill[:, :nh, :nw] = lab
        lab = fill
    H, W = x.shape[-2:]
    y0 = int(torch.randint(0, H - crop + 1, (), generator=gen))
    x0 = int(torch.randint(0, W - crop + 1, (), generator=gen))
    x = x[:, y0 : y0 + crop, x0 : x0 + crop]
    lab = lab[:, y0 : y0 + crop, x0 : x0 + crop]
    if float(torch.rand((), generator=gen)) < aug.hflip:
        x = x.flip(-1)
        lab = lab.flip(-1)
    x = x / 255.0
    if aug.jitter > 0:
        j = aug.jitter
        b, c, sat = (1 + j * (2 * torch.rand(3, generator=gen) - 1)).tolist()
        x = x * b
        mean = x.mean()
        x = (x - mean) * c + mean
        grey = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])[None]
        x = ((x - grey) * sat + grey).clamp_(0, 1)
    corrected = lab[1].bool() if lab.shape[0] > 1 else None
    return x.contiguous(), lab[0].long(), corrected


def normalise(
    x: torch.Tensor, sample: Sample, mean: Sequence[float], std: Sequence[float], *, per_image: bool
) -> torch.Tensor:
    """``x``, a view of ``sample``'s image in [0, 1] ((3, H, W) or (1, 3, H, W)), normalised for the network.

    ``per_image``: by the whole image's own mean and std (never the view's), else by ``mean``/``std``.
    """
    if per_image:
        m, s = sample.mean_std()
    else:
        m, s = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)
    return (x - m) / s


def make_batch(
    samples: Sequence[Sample],
    indices: Sequence[int],
    aug: Augment,
    gen: torch.Generator,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    per_image: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Stack augmented views into (N, 3, S, S) normalised float, (N, S, S) int64 and an optional bool map.

    ``per_image``: see :func:`normalise`. The colour jitter comes before, so it
    still varies what the network sees.
    """
    xs, ys, cs = [], [], []
    for i in indices:
        x, y, c = augment_pair(samples[i], aug, gen)
        xs.append(normalise(x, samples[i], mean, std, per_image=per_image))
        ys.append(y)
        cs.append(c)
    corrected = None
    if any(c is not None for c in cs):
        corrected = torch.stack([c if c is not None else torch.ones_like(y, dtype=torch.bool) for c, y in zip(cs, ys)])
    return torch.stack(xs), torch.stack(ys), corrected


def normalise_full(
    sample: Sample, mean: Sequence[float], std: Sequence[float], *, per_image: bool = False
) -> torch.Tensor:
    """A whole sample as a (1, 3, H, W) normalised float tensor, for validation."""
    return normalise(sample.image.float()[None] / 255.0, sample, mean, std, per_image=per_image)
