"""PASCAL VOC segmentation folders: import a VOC root, export one that torchvision reads.

Export layout (``OUT``, or ``OUT/VOCdevkit/VOC2012`` with ``devkit=True``)::

    JPEGImages/<id>.jpg                 images, upright frame (see JPEG policy below)
    SegmentationClass/<id>.png          palette PNG, pixel = class index, 255 = void, VOC colour map
    SegmentationObject/<id>.png         palette PNG, pixel = instance 1..N, 0 = background/none, 255 = void
    ImageSets/Segmentation/{train,val,trainval}.txt   seeded, reproducible split
    labels.txt                          class name per line, line number = index
    classes.json                        exact class list (index, name, colour, background)
    atrous_export.json                  frame, image policy, split seed, counts

JPEG policy: ``torchvision.datasets.VOCSegmentation`` opens ``JPEGImages/<id>.jpg``
and does not apply EXIF rotation. So JPEG originals without an EXIF rotation
are copied byte for byte; every other image (PNG, TIFF, ..., or a rotated JPEG)
is decoded upright and written as a quality-95 JPEG (4:4:4). With
``lossless_images=True`` those images are written as PNG (``<id>.png``)
instead: lossless, but torchvision's loader will not find them.

Instances in SegmentationObject are the 4-connected components of each
non-background class, numbered 1..254 by class then raster order; a mask with
more than 254 components puts the rest in 255 (counted in the summary).
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..classes import classes_json, labels_txt, make_class, read_class_file
from ..errors import AtrousReadError
from ..geometry import label_components
from ..imageio import IMAGE_EXTENSIONS
from ..masks import VOID, encode_mask_png, read_mask_png, voc_colormap
from ..project import Project
from . import (
    VOC_CLASSES,
    ExportFolder,
    ImportedItem,
    ImportResult,
    check_image_fits,
    check_stop,
    export_image_bytes,
    unique_names,
)

EXPORT_FRAME = "upright (EXIF orientation applied to images and masks)"


def read_voc(
    root: str | os.PathLike[str],
    classes_file: str | os.PathLike[str] | None = None,
    *,
    on_progress: Callable[[int, int, str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> ImportResult:
    """Read a VOC-style root: JPEGImages/, SegmentationClass/ (+ optional ImageSets/Segmentation, class list).

    The image ids are those listed in ``ImageSets/Segmentation/*.txt`` when that
    folder exists, else the stems of ``SegmentationClass/*.png``. Ids without a
    SegmentationClass PNG are imported without a mask. The class list comes from
    ``classes_file``, else ``classes.json``, ``labels.txt`` or ``class_names.txt``
    in the root, else the 21 VOC names. 255 stays void. ``on_progress(done, total, name)``
    follows the image ids; ``should_stop()`` is asked before each one and raises
    :class:`~annotation.formats.Cancelled` (nothing has been written).
    """
    root = Path(root)
    jpeg_dir = root / "JPEGImages"
    seg_dir = root / "SegmentationClass"
    if not jpeg_dir.is_dir():
        raise AtrousReadError(f"{root}: not a VOC root (no JPEGImages/ folder)")
    if not seg_dir.is_dir():
        raise AtrousReadError(f"{root}: not a VOC root (no SegmentationClass/ folder)")
    warnings: list[str] = []
    explicit = classes_file is not None
    if classes_file is None:
        for name in ("classes.json", "labels.txt", "class_names.txt"):
            if (root / name).is_file():
                classes_file = root / name
                break
    if classes_file is not None:
        classes, _ = read_class_file(classes_file)
    else:
        classes = [make_class(i, n) for i, n in enumerate(VOC_CLASSES)]
        warnings.append(f"{root}: no class list found; using the 21 PASCAL VOC class names")

    sets_dir = root / "ImageSets" / "Segmentation"
    ids: list[str] = []
    if sets_dir.is_dir() and any(sets_dir.glob("*.txt")):
        seen: set[str] = set()
        for txt in sorted(sets_dir.glob("*.txt")):
            try:
                lines = txt.read_text(encoding="utf-8").split()
            except (OSError, UnicodeDecodeError) as e:
                raise AtrousReadError(f"{txt}: cannot read image list ({e})") from e
            for stem in lines:
                if stem not in seen:
                    seen.add(stem)
                    ids.append(stem)
    else:
        ids = sorted(p.stem for p in seg_dir.glob("*.png"))
    if not ids:
        raise AtrousReadError(f"{root}: no images listed and no SegmentationClass PNGs")

    items: list[ImportedItem] = []
    known = {c.index for c in classes} | {VOID}
    for done, stem in enumerate(ids, start=1):
        check_stop(should_stop, "import")
        if "/" in stem or "\\" in stem or stem in ("", ".", ".."):
            raise AtrousReadError(f"{sets_dir}: bad image id {stem!r}")
        image = _find_image(jpeg_dir, stem)
        if image is None:
            raise AtrousReadError(
                f"{jpeg_dir}: image {stem!r} not found (listed in {sets_dir if sets_dir.is_dir() else seg_dir})"
            )
        label = seg_dir / f"{stem}.png"
        mask = None
        if label.is_file():
            mask = read_mask_png(label)
            extra = sorted(set(np.unique(mask).tolist()) - known)
            if extra:
                if explicit or classes_file is not None:
                    raise AtrousReadError(f"{label}: pixel values {extra} are not in the class list {classes_file}")
                for v in extra:
                    classes.append(make_class(v, f"class_{v}"))
                    known.add(v)
        items.append(ImportedItem(image_path=image, mask=mask, source=label if mask is not None else image))
        if on_progress is not None:
            on_progress(done, len(ids), label.name if mask is not None else image.name)
    return ImportResult(items=items, classes=classes, warnings=warnings, classes_guessed=classes_file is None)


def _find_image(folder: Path, stem: str) -> Path | None:
    for ext in IMAGE_EXTENSIONS:
        for cand in (folder / f"{stem}{ext}", folder / f"{stem}{ext.upper()}"):
            if cand.is_file():
                return cand
    return None


@dataclass
class ExportSummary:
    """What an export wrote."""

    out: Path
    images: int
    annotations: int = 0
    copied_images: int = 0
    reencoded_images: int = 0
    overflow_instances: int = 0
    inexact_polygons: int = 0
    skipped_without_mask: int = 0
    left_out: list[str] = field(default_factory=list)  # ``export --skip-bad``: one line per unusable image
    cleared_interrupted: bool = False  # the folder held an export a kill cut short; it was cleared first


def object_map(mask: np.ndarray, background: int | None) -> tuple[np.ndarray, int]:
    """SegmentationObject for a class mask: 4-connected components numbered 1..254.

    Background (if any) -> 0, void -> 255; components past 254 go to 255.
    Returns the map and how many components did not fit.
    """
    skip = [VOID] + ([background] if background is not None else [])
    comps, n = label_components(mask, ignore=skip)
    # Number by class, then by raster order of the first pixel (label_components' order).
    first_class = np.zeros(n + 1, dtype=np.int64)
    flat = comps.ravel()
    idx = np.flatnonzero(flat)
    firsts = np.full(n + 1, -1, dtype=np.int64)
    # Reverse so the earliest pixel of each component wins the assignment.
    firsts[flat[idx[::-1]]] = idx[::-1]
    first_class[1:] = mask.ravel()[firsts[1:]]
    order = np.lexsort((np.arange(1, n + 1), first_class[1:])) + 1
    rank = np.zeros(n + 1, dtype=np.int64)
    rank[order] = np.arange(1, n + 1)
    out = np.where(rank[comps] > 254, VOID, rank[comps]).astype(np.uint8)
    out[mask == VOID] = VOID
    return out, max(0, n - 254)


def split_ids(names: Sequence[str], *, val_fraction: float = 0.2, seed: int = 0) -> tuple[list[str], list[str]]:
    """A reproducible train/val split: shuffle the sorted ids with ``seed``, take ``val_fraction`` for val.

    With two or more ids both parts get at least one. Returns sorted ``(train, val)``.
    """
    if not 0.0 <= val_fraction <= 1.0:
        raise ValueError(f"val_fraction must be in [0, 1], not {val_fraction}")
    shuffled = sorted(names)
    random.Random(seed).shuffle(shuffled)
    n_val = int(round(len(shuffled) * val_fraction))
    if len(shuffled) >= 2:
        n_val = min(max(n_val, 1), len(shuffled) - 1)
    return sorted(shuffled[n_val:]), sorted(shuffled[:n_val])


def export_voc(
    project: Project,
    out: str | os.PathLike[str],
    *,
    statuses: Sequence[str] | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    devkit: bool = False,
    lossless_images: bool = False,
    on_progress: Callable[[int, int, str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> ExportSummary:
    """Export the masked images of ``project`` (optionally only some statuses) as a VOC folder.

    ``out`` must be new or empty. With ``devkit=True`` the data go to
    ``out/VOCdevkit/VOC2012`` so ``VOCSegmentation(root=out)`` works directly.
    ``on_progress(done, total, name)`` follows the images; ``should_stop()`` true
    stops with :class:`~annotation.formats.Cancelled` and removes what was written.
    """
    classes = project.classes()
    background = next((c.index for c in classes if c.is_background), None)
    records = project.images(statuses) if statuses else project.images()
    with_mask = [r for r in records if r.has_mask]
    names = unique_names([Path(r.path).stem for r in with_mask])
    cmap = voc_colormap(256)
    summary = ExportSummary(out=Path(out), images=len(with_mask), skipped_without_mask=len(records) - len(with_mask))
    prefix = "VOCdevkit/VOC2012/" if devkit else ""
    with ExportFolder(out) as folder:
        summary.cleared_interrupted = folder.cleared
        for done, (rec, name) in enumerate(zip(with_mask, names)):
            check_stop(should_stop)
            if on_progress is not None:
                on_progress(done, len(with_mask), rec.name)
            mask = project.read_mask(rec.id)
            assert mask is not None
            check_image_fits(project, rec, mask)
            data, ext, copied = export_image_bytes(project, rec.id, lossless=lossless_images)
            folder.write(f"{prefix}JPEGImages/{name}{ext}", data)
            summary.copied_images += copied
            summary.reencoded_images += not copied
            folder.write(f"{prefix}SegmentationClass/{name}.png", encode_mask_png(mask, cmap))
            obj, overflow = object_map(mask, background)
            summary.overflow_instances += overflow
            folder.write(f"{prefix}SegmentationObject/{name}.png", encode_mask_png(obj, cmap))
        check_stop(should_stop)
        train, val = split_ids(names, val_fraction=val_fraction, seed=seed)
        for split, ids in (("train", train), ("val", val), ("trainval", sorted(names))):
            folder.write(f"{prefix}ImageSets/Segmentation/{split}.txt", "".join(f"{i}\n" for i in ids).encode())
        folder.write(f"{prefix}labels.txt", labels_txt(classes))
        folder.write(f"{prefix}classes.json", classes_json(classes))
        meta = {
            "format": "voc",
            "frame": EXPORT_FRAME,
            "images": "JPEG originals copied unchanged when not EXIF-rotated; others re-encoded "
            + ("as PNG (lossless)" if lossless_images else "as JPEG quality 95"),
            "void": VOID,
            "split": {"seed": seed, "val_fraction": val_fraction, "train": len(train), "val": len(val)},
            "instances": "4-connected components per class, 1..254, overflow -> 255",
            "source_project": str(project.root),
        }
        folder.write(f"{prefix}atrous_export.json", json.dumps(meta, indent=1).encode())
    return summary
