"""Recording a pre-label: the one place that writes what a network proposed for an image.

Whoever pre-labels (``prelabel PROJECT``, the app's worker, the app applying a
prediction to an open image) calls :func:`record_prelabel`, so every pre-label
leaves the same trace: the mask with status ``prelabeled`` and the model version,
the kept copy under ``prelabels/`` (a later save that differs from it is a
correction), the confidence map and the mean confidence. People's work is never
replaced unless the caller says so, checked inside the write transaction.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from .confidence import write_confidence
from .errors import AtrousError, AtrousReadError, AtrousWriteError
from .layout import prelabel_path
from .mask_commit import MaskNotPlaced
from .masks import write_mask_png
from .project import STATUSES, Project

log = logging.getLogger(__name__)

#: Statuses that mean a person worked on the mask.
PERSON_STATUSES = ("edited", "reviewed")
#: Statuses a pre-label may replace without being asked.
MACHINE_STATUSES = ("new", "prelabeled")


def writable_statuses(overwrite_edited: bool) -> tuple[str, ...]:
    """The statuses a pre-label may replace (all of them with ``overwrite_edited``)."""
    return STATUSES if overwrite_edited else MACHINE_STATUSES


def record_prelabel(
    project: Project,
    image_id: int,
    labels: np.ndarray,
    confidence: np.ndarray | None,
    mean_confidence: float | None,
    model_version: int | None,
    *,
    overwrite_edited: bool = False,
) -> bool:
    """Store one pre-label; False (nothing written) when the image is now a person's work.

    The kept copy is written under a temporary name first and moved into place
    only after the mask and its row are committed, so the copy and the mask are
    written together or not at all. The confidence map is a convenience for the
    editor's overlay: failing to write it is logged, not fatal.
    """
    rec = project.image(image_id)
    labels = np.ascontiguousarray(labels, dtype=np.uint8)
    if labels.shape != (rec.height, rec.width):
        raise AtrousReadError(
            f"{project.image_path(rec)}: the image is now {labels.shape[1]}x{labels.shape[0]}, "
            f"the project recorded {rec.width}x{rec.height}"
        )
    mean = None if mean_confidence is None else min(max(float(mean_confidence), 0.0), 1.0)
    kept = prelabel_path(project.root, rec.id)
    staged = kept.with_name(f".{rec.id}.{os.getpid()}.new.png")
    write_mask_png(staged, labels, project.palette())
    try:
        try:
            saved = project.save_mask(
                rec.id,
                labels,
                status="prelabeled",
                model_version=model_version,
                source="prelabel",
                only_if_status=writable_statuses(overwrite_edited),
                mean_confidence=mean,
            )
        except MaskNotPlaced:
            os.replace(staged, kept)  # committed: the mask is placed on the next open, the copy goes with it now
            raise
        if saved:
            try:
                os.replace(staged, kept)
            except OSError as e:
                raise AtrousWriteError(f"Cannot write {kept}: {e.strerror or e}") from e
    finally:
        staged.unlink(missing_ok=True)
    if saved and confidence is not None:
        try:
            write_confidence(project.root, rec.id, confidence)
        except AtrousError as e:
            log.warning("confidence map of image %s not saved: %s", rec.id, e)
    return saved
