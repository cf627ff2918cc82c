"""The Qt face of :class:`annotation.editing.MaskDocument`.

The document itself (label map, paint ops, patch undo, provenance) is Qt-free
and lives in ``annotation/``. This QObject forwards its operations and
re-emits every change as a signal carrying the dirty :class:`Box`, so views
repaint only that rectangle. It also keeps the per-image bookkeeping the
autosave needs: active editing seconds and the provenance already saved.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
from PySide6.QtCore import QObject, Signal

from annotation.editing import Box, ClassSet, Lock, MaskDocument

#: A pause longer than this between two edits is not counted as editing time.
IDLE_GAP_S = 10.0


class MaskDocumentModel(QObject):
    """One image's mask being edited, with change signals.

    Signals:
        changed(Box): pixels inside the box changed (paint, undo, redo, reset).
        stepFinished(): an undo step was committed or undone/redone (class shares may change).
        dirtyChanged(bool): the "unsaved edits" state flipped.
    """

    changed = Signal(object)
    stepFinished = Signal()
    dirtyChanged = Signal(bool)

    def __init__(
        self,
        image_id: int,
        label_map: np.ndarray,
        *,
        max_steps: int = 1000,
        max_bytes: int = 256 * 1024 * 1024,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.image_id = int(image_id)
        self.doc = MaskDocument(label_map, max_steps=max_steps, max_bytes=max_bytes)
        self._saved_changed = 0  # doc.changed_pixels at the last save
        self._pending_seconds = 0.0
        self._last_edit: float | None = None
        self._was_dirty = False
        self.ever_saved = False

    # ---- state

    @property
    def label_map(self) -> np.ndarray:
        return self.doc.label_map

    @property
    def shape(self) -> tuple[int, int]:
        return self.doc.shape

    @property
    def dirty(self) -> bool:
        return self.doc.dirty

    @property
    def in_stroke(self) -> bool:
        return self.doc.history.in_transaction

    @property
    def can_undo(self) -> bool:
        return self.doc.can_undo

    @property
    def can_redo(self) -> bool:
        return self.doc.can_redo

    def nbytes(self) -> int:
        """Memory this document holds: label map, baseline and undo patches."""
        return int(self.doc.label_map.nbytes + self.doc.baseline.nbytes + self.doc.history.nbytes)

    # ---- edits

    def _edited(self, box: Box | None, *, step: bool) -> Box | None:
        if box is not None:
            now = time.monotonic()
            if self._last_edit is not None:
                self._pending_seconds += min(now - self._last_edit, IDLE_GAP_S)
            self._last_edit = now
            self.changed.emit(box)
        if step:
            self.stepFinished.emit()
        self._emit_dirty()
        return box

    def _emit_dirty(self) -> None:
        d = self.doc.dirty
        if d != self._was_dirty:
            self._was_dirty = d
            self.dirtyChanged.emit(d)

    def begin_stroke(self) -> None:
        self.doc.begin_stroke()

    def end_stroke(self) -> Box | None:
        box = self.doc.end_stroke()
        self.stepFinished.emit()
        self._emit_dirty()
        return box

    def cancel_stroke(self) -> Box | None:
        return self._edited(self.doc.cancel_stroke(), step=True)

    def brush_segment(
        self,
        x0: float,
        y0: float,
        x1: float,
        y1: float,
        radius: float,
        value: int,
        *,
        only_over: Lock = None,
        protect: ClassSet | None = None,
    ) -> Box | None:
        box = self.doc.brush_segment(x0, y0, x1, y1, radius, value, only_over=only_over, protect=protect)
        return self._edited(box, step=not self.in_stroke)

    def fill(self, x: float, y: float, value: int, *, only_over: Lock = None) -> Box | None:
        return self._edited(self.doc.fill(x, y, value, only_over=only_over), step=True)

    def polygon(self, vertices: Sequence[Sequence[float]], value: int, *, only_over: Lock = None) -> Box | None:
        return self._edited(self.doc.polygon(vertices, value, only_over=only_over), step=True)

    def accept_region(self, x: float, y: float, value: int, *, only_over: Lock = None) -> Box | None:
        """Click-to-accept: the connected pre-label region under (x, y) becomes ``value`` (one step)."""
        return self._edited(self.doc.accept_region(x, y, value, only_over=only_over), step=True)

    def replace_all(self, labels: np.ndarray) -> Box | None:
        """Make the whole mask ``labels`` as one undo step (a pre-label over an open image).

        Goes through the document's paint path, one class at a time inside a
        single stroke, so Ctrl+Z gives the previous mask back.
        """
        labels = np.asarray(labels, dtype=np.uint8)
        if labels.shape != self.shape:
            raise ValueError(f"labels {labels.shape} do not fit the mask {self.shape}")
        full = Box.full(self.shape)
        box: Box | None = None
        self.doc.begin_stroke()
        try:
            for value in np.unique(labels):
                self.doc.paint(full, labels == value, int(value))
        finally:
            box = self.doc.end_stroke()
        return self._edited(box, step=True)

    def undo(self) -> Box | None:
        return self._edited(self.doc.undo(), step=True)

    def redo(self) -> Box | None:
        return self._edited(self.doc.redo(), step=True)

    # ---- saving

    def take_provenance(self) -> tuple[int, float]:
        """(changed pixels since the last save, editing seconds since the last save).

        The pixel figure is signed: undoing a saved edit gives it back, so the
        project's running total stays equal to the pixels changed from the pre-label.
        """
        return self.doc.changed_pixels - self._saved_changed, self._pending_seconds

    def mark_saved(self) -> None:
        """Call after a successful save of the current label map."""
        self._saved_changed = self.doc.changed_pixels
        self._pending_seconds = 0.0
        self.ever_saved = True
        self.doc.mark_clean()
        self._emit_dirty()
