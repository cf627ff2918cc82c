"""Learning from a project: which pixels a person labelled, the training pairs of its masks, the preview.

The pixel classifier (:mod:`model.pixel_classifier`) learns from labelled pixels; this module
decides which pixels those are in a project (a person's strokes against the image's last
pre-label, edited and reviewed masks), trains it for ``prelabel --model pixel-classifier`` and
the app's "Learn from my strokes", and saves it as a project model version. torch-free, Qt-free.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from annotation.errors import AtrousError
from annotation.imageio import load_image
from annotation.layout import MODELS_DIR, models_dir
from annotation.masks import VOID

from .pixel_classifier import KIND, SUFFIX, Cancelled, ForestParams, PixelClassifier, PixelClassifierError


def learning_baseline(root: str | os.PathLike[str], image_id: int, opened: np.ndarray) -> np.ndarray:
    """What an open image's labels are compared with to find a person's pixels: its last pre-label
    (kept under ``prelabels/``), else the mask it opened with when that is blank (uniform), else
    all void (a mask without a pre-label that is not blank was imported or drawn by a person)."""
    from annotation.layout import prelabel_path
    from annotation.masks import read_mask_png

    try:
        kept = read_mask_png(prelabel_path(root, image_id)) if prelabel_path(root, image_id).is_file() else None
    except AtrousError:
        kept = None
    if kept is not None and kept.shape == opened.shape:
        return kept
    if opened.size and (opened == opened.flat[0]).all():
        return opened
    return np.full(opened.shape, VOID, np.uint8)


def person_pixels(labels: np.ndarray, baseline: np.ndarray, machine: np.ndarray | None = None) -> np.ndarray:
    """Which pixels of an open image a person labelled (bool). ``baseline``: what the image opened
    with (its pre-label or the blank mask); ``machine``: pixels a preview set, untouched since.

    Where the mask marks unlabelled pixels (void, or set by a preview) that the baseline had
    not (the person voided them, e.g. filled the blank with void first), or the blank itself
    is void, every other pixel is a label, as in ilastik; otherwise only the pixels that
    differ from the baseline.
    """
    labels = np.asarray(labels, np.uint8)
    unlabelled = labels == VOID if machine is None else (labels == VOID) | machine
    explicit = bool((unlabelled & (baseline != VOID)).any()) or bool((baseline == VOID).all())
    return ~unlabelled if explicit else (labels != baseline) & ~unlabelled


def stroke_labels(labels: np.ndarray, baseline: np.ndarray, machine: np.ndarray | None = None) -> np.ndarray:
    """An open image's labels to learn from: :func:`person_pixels` kept, every other pixel void.

    On a blank image (uniform baseline, not void) whose strokes do not use the blank's
    class, the untouched pixels count as that class, except near the strokes (within 2 %
    of the longer side, at least 10 pixels): painting background over a background-filled
    mask changes nothing, so it cannot be stroked, and the rest of a stroked object lies
    near its stroke.
    """
    from scipy import ndimage as ndi

    labels = np.asarray(labels, np.uint8)
    person = person_pixels(labels, baseline, machine)
    out = np.full(labels.shape, VOID, np.uint8)
    out[person] = labels[person]
    blank = int(baseline.flat[0]) if baseline.size else VOID
    if blank != VOID and (baseline == blank).all() and not (out == blank).any():
        untouched = ~person & (labels == blank)
        if machine is not None:
            untouched &= ~machine
        if person.any():
            margin = max(10.0, 0.02 * max(labels.shape))
            untouched &= ndi.distance_transform_edt(~person) > margin
        out[untouched] = blank
    return out


def preview_labels(
    labels: np.ndarray,
    baseline: np.ndarray,
    prediction: np.ndarray,
    applied: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(new label map, pixels the prediction set) for a preview on an open image: the person's pixels
    (:func:`person_pixels`, ``applied`` being the last preview's (pixels, values)) stay; every other
    pixel takes the prediction."""
    machine = None if applied is None else applied[0] & (labels == applied[1])
    keep = person_pixels(labels, baseline, machine)
    return np.where(keep, labels, prediction).astype(np.uint8), ~keep


def project_training_pairs(
    project, *, exclude: Iterable[int] = (), max_images: int = 24
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(image, mask) of the ``max_images`` latest edited or reviewed images of ``project``, except ``exclude``."""
    skip = {int(i) for i in exclude}
    recs = [r for r in project.images(["edited", "reviewed"]) if r.id not in skip and r.has_mask]
    # The latest ones: features of many big images would keep a person waiting for little gain.
    for rec in sorted(recs, key=lambda r: -r.modified)[:max_images]:
        mask = project.read_mask(rec.id)
        if mask is None:
            continue
        image = load_image(project.image_path(rec))
        if image.shape[:2] != mask.shape:
            continue  # the image changed on disk since it was labelled: its mask no longer fits
        yield image, mask


def project_classes(project) -> tuple[list[str], list[tuple[int, int, int]]]:
    """The project's class names and colours as a list indexed by label value (gaps named ``__unused_N``)."""
    classes = project.classes()
    if not classes:
        raise PixelClassifierError(f"{project.root}: the project has no classes to learn")
    n = max(c.index for c in classes) + 1
    names = [f"__unused_{i}" for i in range(n)]
    colours: list[tuple[int, int, int]] = [(0, 0, 0)] * n
    for c in classes:
        names[c.index] = c.name
        colours[c.index] = tuple(int(v) for v in c.colour)
    return names, colours


def new_model_path(project, stamp: str | None = None) -> Path:
    """A fresh file name under the project's models folder."""
    stamp = stamp or time.strftime("%Y%m%d-%H%M%S")
    folder = models_dir(project.root)
    path = folder / f"pixclf-{stamp}{SUFFIX}"
    n = 2
    while path.exists():
        path = folder / f"pixclf-{stamp}-{n}{SUFFIX}"
        n += 1
    return path


def train_for_project(
    project,
    extra: Sequence[tuple[int, np.ndarray, np.ndarray]] = (),
    *,
    params: ForestParams | None = None,
    should_stop: Callable[[], bool] | None = None,
    activate: bool = False,
) -> tuple[PixelClassifier, int, Path]:
    """Train on ``extra`` (image id, image, strokes: :func:`stroke_labels`) plus the project's edited/reviewed masks,
    save it under the models folder and record it as a model version. Returns (classifier, version id, path).
    """
    names, colours = project_classes(project)
    pairs: list = [(im, lab, False) for _, im, lab in extra]
    pairs += list(project_training_pairs(project, exclude=[i for i, _, _ in extra]))
    if not pairs:
        raise PixelClassifierError(
            f"{project.root}: nothing to learn from: no edited or reviewed masks (edit or review a few images, "
            "or paint strokes of two classes in the app)"
        )
    stamp = time.strftime("%Y%m%d-%H%M%S")
    clf = PixelClassifier.train(pairs, names, colours, params=params, name=f"pixclf-{stamp}", should_stop=should_stop)
    if should_stop is not None and should_stop():
        raise Cancelled("training cancelled")
    path = clf.save(new_model_path(project, stamp))
    rel = f"{MODELS_DIR}/{path.name}"
    metrics = {"kind": KIND, **clf.info}
    version_id = project.add_model_version(clf.name, rel, metrics)
    if activate:
        project.active_model_version = version_id
    return clf, version_id, path
