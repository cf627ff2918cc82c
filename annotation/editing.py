"""Editing a label map: the :class:`MaskDocument` and the paint API in one import.

Everything here is Qt-free and torch-free (numpy only), so the editor's logic is
tested headless and the GUI stays a thin view: it turns mouse events into the
calls below and repaints only the dirty :class:`Box` each call returns.

The pieces live in their own modules and are re-exported here, so
``from annotation.editing import ...`` keeps working for all of them:

* :mod:`annotation.paint`: :class:`Box`, the lock, :func:`paint_region` (the one
  paint path) and the coordinate conventions;
* :mod:`annotation.shapes`: brush (capsule) and polygon rasterising;
* :mod:`annotation.regions`: connected regions, flood fill, click-to-accept;
* :mod:`annotation.history`: the patch-based undo :class:`History`.

:class:`MaskDocument` ties a label map, its history and its provenance (pixels
changed since the pre-label) together.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np

from .history import RECORD_OVERHEAD, History
from .masks import VOID
from .paint import BACKGROUND, Box, ClassSet, Lock, PaintResult, _check_label_map, paint_region
from .regions import accept_region, connected_region, fill
from .shapes import MIN_RADIUS, brush_segment, capsule_region, polygon, polygon_region

__all__ = [
    "BACKGROUND",
    "MIN_RADIUS",
    "RECORD_OVERHEAD",
    "VOID",
    "Box",
    "ClassSet",
    "Lock",
    "PaintResult",
    "History",
    "MaskDocument",
    "paint_region",
    "capsule_region",
    "brush_segment",
    "polygon_region",
    "polygon",
    "connected_region",
    "fill",
    "accept_region",
]

# --------------------------------------------------------------------------- document


class MaskDocument:
    """A label map being edited: paint ops, undo history, revision and provenance.

    Qt-free; the GUI wraps it in a QObject that forwards the returned dirty
    boxes as repaint signals. Paint only through these methods, so the history
    and the provenance count stay true.

    ``baseline`` is the pre-label the person started from (default: a copy of
    the initial label map); :attr:`changed_pixels` counts pixels that now
    differ from it, the provenance figure saved with each mask.
    """

    def __init__(
        self,
        label_map: np.ndarray,
        *,
        baseline: np.ndarray | None = None,
        max_steps: int = 1000,
        max_bytes: int = 256 * 1024 * 1024,
    ) -> None:
        self.history = History(max_steps=max_steps, max_bytes=max_bytes)
        self.revision = 0
        self._clean_token = 0
        self.reset(label_map, baseline=baseline)

    def reset(self, label_map: np.ndarray, *, baseline: np.ndarray | None = None) -> None:
        """Start over on a new label map (copied); clears history; the new state is clean."""
        _check_label_map(label_map)
        self._labels = np.array(label_map, dtype=np.uint8, copy=True)
        base = self._labels if baseline is None else baseline
        _check_label_map(base)
        if base.shape != self._labels.shape:
            raise ValueError("baseline and label map differ in shape")
        self._baseline = np.array(base, dtype=np.uint8, copy=True)
        self._baseline.flags.writeable = False
        self._changed = int(np.count_nonzero(self._labels != self._baseline))
        self.history.clear()
        self._stroke_changed = False
        self.revision += 1
        self.mark_clean()

    # ---- state

    @property
    def label_map(self) -> np.ndarray:
        """The current label map. Read it freely; change it only through this class."""
        return self._labels

    @property
    def baseline(self) -> np.ndarray:
        """The read-only pre-label the provenance count compares against."""
        return self._baseline

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self._labels.shape[0]), int(self._labels.shape[1]))

    @property
    def changed_pixels(self) -> int:
        """Pixels that differ from the baseline now (kept up to date per operation)."""
        return self._changed

    def changed_mask(self) -> np.ndarray:
        """Bool map of the pixels a person changed relative to the baseline."""
        return self._labels != self._baseline

    @property
    def dirty(self) -> bool:
        """Whether the label map differs from the state last marked clean (saved).

        Undoing back to the saved state makes it clean again.
        """
        return self._stroke_changed or self.history.state_token != self._clean_token

    def mark_clean(self) -> None:
        """Call after saving: the current state is the saved one."""
        self._clean_token = self.history.state_token

    @property
    def can_undo(self) -> bool:
        return self.history.can_undo

    @property
    def can_redo(self) -> bool:
        return self.history.can_redo

    # ---- bookkeeping

    def _account(self, res: PaintResult | None, *, record: bool) -> Box | None:
        if res is None:
            return None
        base = self._baseline[res.box.slices]
        base_vals = base.reshape(-1) if res.changed is None else base[res.changed]
        self._changed += int(np.count_nonzero(res.new_array() != base_vals))
        self._changed -= int(np.count_nonzero(res.old_values != base_vals))
        self.revision += 1
        if record:
            self.history.record(res)
            if self.history.in_transaction:
                self._stroke_changed = True
        return res.box

    # ---- paint operations (each returns the dirty box, or None if nothing changed)

    def paint(
        self,
        box: Box,
        region: np.ndarray | None,
        value: int,
        *,
        only_over: Lock = None,
        protect: ClassSet | None = None,
    ) -> Box | None:
        """The general paint path: ``value`` into ``region`` of ``box`` (see :func:`paint_region`)."""
        res = paint_region(self._labels, box, region, value, only_over=only_over, protect=protect)
        return self._account(res, record=True)

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
        """One mouse move of the brush (or eraser: ``value=BACKGROUND``/``VOID``)."""
        res = brush_segment(self._labels, x0, y0, x1, y1, radius, value, only_over=only_over, protect=protect)
        return self._account(res, record=True)

    def fill(
        self, x: float, y: float, value: int, *, only_over: Lock = None, protect: ClassSet | None = None
    ) -> Box | None:
        """Flood-fill the 4-connected same-class region under (x, y)."""
        res = fill(self._labels, x, y, value, only_over=only_over, protect=protect)
        return self._account(res, record=True)

    def accept_region(
        self, x: float, y: float, value: int, *, only_over: Lock = None, protect: ClassSet | None = None
    ) -> Box | None:
        """Click-to-accept: relabel the connected region under (x, y) as ``value``."""
        res = accept_region(self._labels, x, y, value, only_over=only_over, protect=protect)
        return self._account(res, record=True)

    def polygon(
        self,
        vertices: Sequence[Sequence[float]] | np.ndarray,
        value: int,
        *,
        only_over: Lock = None,
        protect: ClassSet | None = None,
    ) -> Box | None:
        """Fill a polygon of ``(x, y)`` vertices with ``value``."""
        res = polygon(self._labels, vertices, value, only_over=only_over, protect=protect)
        return self._account(res, record=True)

    # ---- strokes

    def begin_stroke(self) -> None:
        """Start one undo step (mouse press); every op until :meth:`end_stroke` joins it."""
        self.history.begin()

    def end_stroke(self) -> Box | None:
        """Finish the step (mouse release); returns the stroke's net box or ``None``.

        Harmless when the stroke was already closed (an undo during the drag
        commits it), so the GUI can pair every press with a release blindly.
        """
        if not self.history.in_transaction:
            return None
        box = self.history.end()
        if not self.history.in_transaction:
            self._stroke_changed = False
        return box

    def cancel_stroke(self) -> Box | None:
        """Abandon the stroke in progress (Esc): restore the map; returns the box to repaint."""
        res = self.history.cancel_result(self._labels)
        self._stroke_changed = False
        return self._account(res, record=False)

    @contextmanager
    def stroke(self) -> Iterator[MaskDocument]:
        """``with doc.stroke(): ...`` — the block's ops are one undo step."""
        self.begin_stroke()
        try:
            yield self
        finally:
            self.end_stroke()

    # ---- undo / redo

    def undo(self) -> Box | None:
        """Undo one step; returns the dirty box or ``None`` when there is nothing to undo."""
        res = self.history.undo_result(self._labels)
        self._stroke_changed = False
        return self._account(res, record=False)

    def redo(self) -> Box | None:
        """Redo one step; returns the dirty box or ``None`` when there is nothing to redo."""
        res = self.history.redo_result(self._labels)
        self._stroke_changed = False
        return self._account(res, record=False)
