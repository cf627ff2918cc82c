"""One pre-label job and one evaluate job, called by the CLI, the app's worker (and later a Ray actor).

The job owns the steps every caller needs and none may do its own way:
batching and decode prefetch (``Predictor.predict_files``), the to-do list
(machine-made images unless people's work may be replaced), the recording
(:func:`annotation.prelabels.record_prelabel`: mask, kept copy, confidence,
model version, status, checked inside the write transaction) and per-image
error reporting. Callers differ only in how they show progress.

Importing this module does not import torch; the predictor passed in does.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from annotation.classes import names_by_index
from annotation.errors import AtrousError
from annotation.masks import VOID
from annotation.prelabels import PERSON_STATUSES, record_prelabel, writable_statuses
from annotation.project import ImageRecord, Project

if TYPE_CHECKING:
    from .class_map import ClassMap
    from .metrics import SegMetrics
    from .predictor import Predictor


class Claims:
    """Image ids a caller (the app) holds an open document for; thread-safe.

    The job records a claimed image's pre-label itself never: it hands the
    prediction to ``on_result`` with ``saved=False`` and the claimer applies it
    through its document (one undo step) with the same ``record_prelabel``. The
    check and the write happen under :attr:`lock`, so a claim either waits for
    that one write or makes the job hand the prediction over.
    """

    def __init__(self, ids: set[int] | None = None) -> None:
        self.lock = threading.Lock()
        self._ids: set[int] = set(ids or ())

    def claim(self, image_id: int) -> None:
        with self.lock:
            self._ids.add(int(image_id))

    def release(self, image_id: int) -> None:
        with self.lock:
            self._ids.discard(int(image_id))

    def is_claimed(self, image_id: int) -> bool:
        """Call with :attr:`lock` held."""
        return int(image_id) in self._ids


@dataclass(frozen=True)
class PrelabelOutcome:
    """One image's pre-label. ``saved``: the job recorded it; otherwise it was handed to the claimer."""

    image_id: int
    name: str
    labels: np.ndarray
    confidence: np.ndarray
    mean_confidence: float
    saved: bool
    model_version: int | None


@dataclass
class PrelabelSummary:
    """What a pre-label job did. ``skipped``/``failed``: (image id, one line why)."""

    total: int
    version_id: int | None
    done: int = 0
    saved: int = 0
    handed: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)
    left_alone: int = 0  # people's images outside the to-do list (no overwrite asked)
    cancelled: bool = False
    seconds: float = 0.0
    description: str = ""

    @property
    def written(self) -> int:
        return self.saved + self.handed


def _one_line(e: BaseException) -> str:
    text = " ".join((str(e).strip() or type(e).__name__).split())
    return text if isinstance(e, AtrousError | OSError) else f"{type(e).__name__}: {text}"


def prelabel_todo(
    project: Project, image_ids: Sequence[int] | None, overwrite_edited: bool
) -> tuple[list[ImageRecord], list[tuple[int, str]], int]:
    """(records to predict, person's images skipped from an explicit list, person's images left alone)."""
    allowed = writable_statuses(overwrite_edited)
    if image_ids is None:
        todo = project.images(list(allowed))
        left = 0 if overwrite_edited else len(project.images(list(PERSON_STATUSES)))
        return todo, [], left
    todo, skipped = [], []
    for i in image_ids:
        rec = project.image(int(i))
        if rec.status in allowed:
            todo.append(rec)
        else:
            skipped.append((rec.id, f"{rec.name}: {rec.status} by a person; not overwritten"))
    return todo, skipped, 0


def prelabel_project(
    project: Project,
    predictor: Predictor,
    *,
    version_id: int | None,
    image_ids: Sequence[int] | None = None,
    overwrite_edited: bool = False,
    claims: Claims | None = None,
    on_result: Callable[[PrelabelOutcome], None] | None = None,
    on_error: Callable[[int, str], None] | None = None,
    on_progress: Callable[[int, int, str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    class_map: ClassMap | None = None,
) -> PrelabelSummary:
    """Pre-label a project's machine-made images (or ``image_ids``); never raises for one bad image.

    ``on_progress(done, total, name)`` after every image; ``should_stop`` is
    checked before each image and ends the job early (``cancelled``).
    ``class_map``: the model's classes are not the project's; each prediction's labels
    go through its lookup table before they are recorded (the confidence is kept).
    """
    t0 = time.monotonic()
    todo, skipped, left = prelabel_todo(project, image_ids, overwrite_edited)
    summary = PrelabelSummary(len(todo) + len(skipped), version_id, skipped=skipped, left_alone=left)
    summary.done = len(skipped)
    summary.description = predictor.description
    lut = None if class_map is None else class_map.lut()
    results = predictor.predict_files([project.image_path(r) for r in todo])
    try:
        for rec in todo:
            if should_stop is not None and should_stop():
                summary.cancelled = True
                break
            path, pred = next(results)
            try:
                if isinstance(pred, BaseException):
                    raise pred
                outcome = _record(project, rec, pred, version_id, overwrite_edited, claims, lut)
                if outcome is None:
                    summary.skipped.append((rec.id, f"{rec.name}: saved by a person meanwhile; not overwritten"))
                else:
                    summary.saved += outcome.saved
                    summary.handed += not outcome.saved
                    if on_result is not None:
                        on_result(outcome)
            except Exception as e:  # one bad image must not end the batch
                line = f"{rec.name}: {_one_line(e)}" if rec.name not in str(e) else _one_line(e)
                summary.failed.append((rec.id, line))
                if on_error is not None:
                    on_error(rec.id, line)
            summary.done += 1
            if on_progress is not None:
                on_progress(summary.done, summary.total, rec.name)
    finally:
        results.close()  # stops the decode thread of a cancelled job
        summary.seconds = time.monotonic() - t0
    return summary


def _record(
    project: Project,
    rec: ImageRecord,
    pred: object,
    version_id: int | None,
    overwrite: bool,
    claims: Claims | None,
    lut: np.ndarray | None = None,
) -> PrelabelOutcome | None:
    labels = np.ascontiguousarray(pred.labels, dtype=np.uint8)
    if lut is not None:
        labels = lut[labels]
    conf = np.ascontiguousarray(pred.confidence, dtype=np.uint8)
    mean = float(pred.mean_confidence)
    with claims.lock if claims is not None else contextlib.nullcontext():
        if claims is not None and claims.is_claimed(rec.id):
            return PrelabelOutcome(rec.id, rec.name, labels, conf, mean, False, version_id)
        if not record_prelabel(project, rec.id, labels, conf, mean, version_id, overwrite_edited=overwrite):
            return None
    return PrelabelOutcome(rec.id, rec.name, labels, conf, mean, True, version_id)


@dataclass
class EvaluateSummary:
    """What an evaluate job measured, and the images it could not score."""

    metrics: SegMetrics
    images: int
    failed: list[str]


def evaluate_project(
    project: Project,
    predictor: Predictor,
    records: Sequence[ImageRecord],
    *,
    on_progress: Callable[[int, int, str], None] | None = None,
    class_map: ClassMap | None = None,
) -> EvaluateSummary:
    """Per-class IoU, mIoU and pixel accuracy of ``predictor`` on the records' masks, at full resolution.

    ``class_map``: predictions are mapped onto the project's classes first and scored per project
    class; a pixel mapped to void counts as wrong (in the pixel accuracy and the true class's IoU).
    """
    from .metrics import ConfusionMatrix

    meta = predictor.meta
    names = list(meta.class_names)
    lut = None
    if class_map is not None:
        names = names_by_index(project.classes())
        lut = class_map.lut()
        lut[lut == VOID] = len(names)  # one extra column: predicted void, never a target
    cm = ConfusionMatrix(meta.arch.num_classes if lut is None else len(names) + 1)
    failed: list[str] = []
    results = predictor.predict_files([project.image_path(r) for r in records])
    try:
        for n, rec in enumerate(records, 1):
            _, pred = next(results)
            try:
                if isinstance(pred, BaseException):
                    raise pred
                target = project.read_mask(rec.id)
                if target is None:
                    raise AtrousError(f"{rec.name}: has no mask")
                if target.shape != pred.labels.shape:
                    h, w = pred.labels.shape
                    raise AtrousError(
                        f"{project.image_path(rec)}: the image is now {w}x{h}, its mask is {target.shape[1]}x{target.shape[0]}"
                    )
                cm.update(target, pred.labels if lut is None else lut[pred.labels])
            except AtrousError as e:
                failed.append(_one_line(e))
            if on_progress is not None:
                on_progress(n, len(records), rec.name)
    finally:
        results.close()
    metrics = cm.compute(names)
    if lut is not None:  # drop the void column's IoU (always 0) from the classes and the mean
        ious = metrics.per_class_iou[: len(names)]
        present = [v for v in ious if v is not None]
        metrics.per_class_iou = ious
        metrics.miou = float(np.mean(present)) if present else 0.0
    return EvaluateSummary(metrics, len(records) - len(failed), failed)


def check_output_folder(images: Path, out: Path, *, overwrite: bool) -> None:
    """Refuse a folder-mode ``--out`` that could destroy files: the image folder itself (or a folder
    above it), or a folder that already holds files, unless ``overwrite``."""
    src, dst = images.resolve(), out.resolve()
    if src == dst or src.is_relative_to(dst):
        raise AtrousError(f"--out {out} holds the images to pre-label; choose a folder outside {images}")
    if dst.exists() and not dst.is_dir():
        raise AtrousError(f"--out {out} exists and is not a folder")
    if dst.is_dir() and any(dst.iterdir()) and not overwrite:
        raise AtrousError(
            f"--out {out} already holds files; choose a new or empty folder, or pass --overwrite to replace "
            "the masks in it"
        )


def mask_names(paths: Sequence[Path], root: Path) -> dict[Path, Path]:
    """Each image's mask path relative to the output folder: its relative path with ``.png``, or, where two
    images share a stem (``a.jpg`` and ``a.png``), its whole file name plus ``.png`` so none overwrites another."""
    plain = {p: p.relative_to(root).with_suffix(".png") for p in paths}
    counts: dict[Path, int] = {}
    for name in plain.values():
        counts[name] = counts.get(name, 0) + 1
    return {p: (n if counts[n] == 1 else n.with_name(p.name + ".png")) for p, n in plain.items()}
