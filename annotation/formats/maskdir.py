"""A folder of label PNGs paired with images by file stem (CamVid, ISBI, most repos).

Label PNGs hold class indices, as grey values (mode L) or palette indices
(mode P). The class list has one name per line, line number = index. Pixels
equal to ``void`` (e.g. CamVid's 11) become 255, and a class at that index is
dropped from the list. Images without a label PNG are imported without a mask.
Stems must be unique on each side: two images (or labels) with the same stem in
different sub-folders are an error, since the pairing would be a guess.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..classes import make_class, read_class_file
from ..errors import AtrousReadError
from ..masks import VOID, read_mask_png
from ..project import LabelClass, scan_images
from . import ImportedItem, ImportResult, check_stop


def _by_stem(paths: list[Path], what: str) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in paths:
        if p.stem in out:
            raise AtrousReadError(f"duplicate {what} name {p.stem!r}: {out[p.stem]} and {p}")
        out[p.stem] = p
    return out


def read_mask_folder(
    labels_dir: str | os.PathLike[str],
    images_dir: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    classes_file: str | os.PathLike[str] | None = None,
    void: int | None = None,
    *,
    binary: bool = False,
    project_classes: Sequence[LabelClass] | None = None,
    on_progress: Callable[[int, int, str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> ImportResult:
    """Pair ``labels_dir/**/<stem>.png`` with ``images_dir/**/<stem>.<ext>`` and read the masks.

    ``images_dir`` may also be a list of image files (the images of the project imported
    into). Without ``classes_file``, ``project_classes`` (that project's classes) name the
    values; without either, value N is named ``class_N``. ``on_progress(done, total, name)``
    follows the images; ``should_stop()`` is asked before each one and raises
    :class:`~annotation.formats.Cancelled` (nothing has been written).

    ``binary``: the masks hold only 0 and 255 (one foreground class, as ISBI's do): 255
    becomes class 1 instead of void. Without it, 255 is void, and when guessed classes meet
    255 pixels the result carries a warning saying how much of the masks that made void.
    """
    labels_dir = Path(labels_dir)
    if not labels_dir.is_dir():
        raise AtrousReadError(f"{labels_dir}: label folder not found")
    if isinstance(images_dir, (str, os.PathLike)):
        images_dir = Path(images_dir)
        if not images_dir.is_dir():
            raise AtrousReadError(f"{images_dir}: image folder not found")
        image_paths, where, from_project = scan_images(images_dir), str(images_dir), False
    else:
        image_paths, where, from_project = [Path(p) for p in images_dir], "the project's images", True
    if void is not None and not 0 <= void <= 255:
        raise AtrousReadError(f"--void {void}: must be 0..255")
    if binary and void is not None:
        raise AtrousReadError("--binary masks have no void value; give either --binary or --void")
    labels = _by_stem(sorted(p for p in labels_dir.rglob("*") if p.suffix.lower() == ".png" and p.is_file()), "label")
    images = _by_stem(image_paths, "image")
    if not labels:
        raise AtrousReadError(f"{labels_dir}: no label PNGs found")
    orphans = sorted(set(labels) - set(images))
    if orphans:
        raise AtrousReadError(
            f"{labels[orphans[0]]}: no image with the same name in {where} ({len(orphans)} label(s) without image)"
        )

    classes: list[LabelClass]
    if classes_file is not None:
        classes, _ = read_class_file(classes_file)
        if void is not None:
            classes = [c for c in classes if c.index != void]
        fixed, named_by = True, str(classes_file)
    elif project_classes:
        classes = [c for c in project_classes if c.index != void]
        fixed, named_by = True, "the project's classes (give a class file to import other classes)"
    elif binary:
        classes, fixed, named_by = [make_class(0, "background"), make_class(1, "foreground")], True, "--binary"
    else:
        classes, fixed, named_by = [], False, ""
    known = {c.index for c in classes}
    void_px, all_px = 0, 0  # 255 pixels in masks whose classes were guessed
    items: list[ImportedItem] = []
    # A project image without a label PNG stays as it is.
    pairs = [(image, labels.get(stem)) for stem, image in images.items() if stem in labels or not from_project]
    for done, (image, label) in enumerate(pairs, start=1):
        check_stop(should_stop, "import")
        mask = None
        if label is not None:
            mask = read_mask_png(label)
            if binary:
                odd = sorted(set(np.unique(mask).tolist()) - {0, VOID})
                if odd:
                    raise AtrousReadError(f"{label}: --binary masks hold only 0 and 255, this one also {odd[:5]}")
                mask = (mask == VOID).astype(np.uint8)
            if void is not None and void != VOID:
                mask = mask.copy()
                mask[mask == void] = VOID
            elif void is None and not fixed:
                void_px += int(np.count_nonzero(mask == VOID))
                all_px += mask.size
            values = set(np.unique(mask).tolist()) - {VOID}
            extra = sorted(values - known)
            if extra:
                if fixed:
                    raise AtrousReadError(f"{label}: pixel values {extra} have no class in {named_by}")
                for v in extra:
                    classes.append(make_class(v, f"class_{v}"))
                    known.add(v)
        items.append(ImportedItem(image_path=image, mask=mask, source=label or image))
        if on_progress is not None:
            on_progress(done, len(pairs), (label or image).name)
    classes.sort(key=lambda c: c.index)
    result = ImportResult(items=items, classes=classes, classes_guessed=not fixed)
    if void_px:
        result.warnings.append(
            f"{100 * void_px / all_px:.1f} % of the mask pixels are 255, which Atrous reads as void (unlabelled, "
            "never trained on); if 255 is a class here (0/255 binary masks), import again with --binary"
        )
    return result
