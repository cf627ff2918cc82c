"""The patch-based undo history of a label map.

Qt-free and torch-free (numpy only). Each undo step is a patch: the dirty box,
the changed pixels (packed as bits or runs, whichever is smaller, or none when
the whole box changed) and their old and new values (scalars when uniform). A
whole mouse stroke is one step; the history is bounded by steps and bytes, and
a new edit clears redo. The whole mask is never copied per step.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from .paint import Box, PaintResult, _check_label_map

__all__ = ["RECORD_OVERHEAD", "History"]

#: Bytes charged per undo record for its Python objects (record, box, array
#: headers) on top of the numpy buffers, so ``History.nbytes`` is not an
#: undercount when records are tiny.
RECORD_OVERHEAD = 512


@dataclass(frozen=True, slots=True, eq=False)
class _PackedMask:
    """A bool mask stored as packed bits or as run boundaries, whichever is smaller.

    Brush strokes are thin diagonal bands in a square box, where one or two runs
    per row beat a bit per pixel; ragged fills are better as bits.
    """

    shape: tuple[int, int]
    runs: bool
    data: np.ndarray

    @classmethod
    def encode(cls, mask: np.ndarray) -> _PackedMask:
        flat = mask.reshape(-1)
        padded = np.zeros(flat.size + 2, dtype=bool)
        padded[1:-1] = flat
        bounds = np.flatnonzero(padded[1:] != padded[:-1])
        index_type = np.int32 if flat.size < 2**31 else np.int64
        run_bytes = bounds.size * np.dtype(index_type).itemsize
        if run_bytes < (flat.size + 7) // 8:
            return cls((int(mask.shape[0]), int(mask.shape[1])), True, bounds.astype(index_type))
        return cls((int(mask.shape[0]), int(mask.shape[1])), False, np.packbits(flat))

    def decode(self) -> np.ndarray:
        size = self.shape[0] * self.shape[1]
        if self.runs:
            marks = np.zeros(size + 1, dtype=np.int8)
            marks[self.data[0::2]] = 1
            marks[self.data[1::2]] = -1
            return np.cumsum(marks[:-1], dtype=np.int8).view(bool).reshape(self.shape)
        return np.unpackbits(self.data, count=size).view(bool).reshape(self.shape)

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)


def _compact(values: np.ndarray | int) -> np.ndarray | int:
    """A scalar when all values are equal (the usual case: painting over one class)."""
    if not isinstance(values, np.ndarray):
        return int(values)
    if values.size and bool((values == values[0]).all()):
        return int(values[0])
    return np.ascontiguousarray(values, dtype=np.uint8).copy()


@dataclass(frozen=True, slots=True, eq=False)
class _Record:
    """One undo step: a patch. Old/new values are scalars when uniform."""

    serial: int
    box: Box
    mask: _PackedMask | None  # None: every pixel of the box changed
    old: np.ndarray | int
    new: np.ndarray | int

    @property
    def nbytes(self) -> int:
        n = RECORD_OVERHEAD
        if self.mask is not None:
            n += self.mask.nbytes
        for v in (self.old, self.new):
            if isinstance(v, np.ndarray):
                n += int(v.nbytes)
        return n


def _merge(results: Sequence[PaintResult]) -> tuple[Box, np.ndarray | None, np.ndarray, np.ndarray] | None:
    """Fold a transaction's results into one patch: first old value, last new value per pixel.

    Pixels that end where they started are dropped. Returns (box, mask or None,
    old values, new values) or None when the transaction is a net no-op.
    """
    box = results[0].box
    for res in results[1:]:
        box = box.union(res.box)
    touched = np.zeros(box.shape, dtype=bool)
    old = np.zeros(box.shape, dtype=np.uint8)
    new = np.zeros(box.shape, dtype=np.uint8)
    for res in reversed(results):  # earliest written last: its old value wins
        sub = box.offset(res.box).slices
        if res.changed is None:
            old[sub] = res.old_values.reshape(res.box.shape)
        else:
            old[sub][res.changed] = res.old_values
    for res in results:  # latest written last: its new value wins
        sub = box.offset(res.box).slices
        if res.changed is None:
            new[sub] = res.new_array().reshape(res.box.shape)
            touched[sub] = True
        else:
            new[sub][res.changed] = res.new_array()
            touched[sub] |= res.changed
    touched &= old != new
    rows = np.flatnonzero(touched.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(touched.any(axis=0))
    local = Box(int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1)
    touched, old, new = touched[local.slices], old[local.slices], new[local.slices]
    tight = Box(box.y0 + local.y0, box.x0 + local.x0, box.y0 + local.y1, box.x0 + local.x1)
    if touched.all():
        return tight, None, old.flatten(), new.flatten()
    return tight, touched, old[touched], new[touched]


class History:
    """A bounded undo/redo history of patches.

    Paint results go in through :meth:`record`. Between :meth:`begin` and
    :meth:`end` (or inside ``with history.transaction():``) they are collected
    and merged into one undo step on ``end`` — a whole mouse stroke is one
    step. Transactions nest; only the outermost ``end`` commits. A new step
    clears the redo stack. The oldest steps are dropped once there are more
    than ``max_steps`` or the patches take more than ``max_bytes`` (the newest
    step is always kept, however large, so the last edit can be undone).
    """

    def __init__(self, max_steps: int = 1000, max_bytes: int = 256 * 1024 * 1024) -> None:
        if max_steps < 1 or max_bytes < 1:
            raise ValueError("max_steps and max_bytes must be positive")
        self.max_steps = int(max_steps)
        self.max_bytes = int(max_bytes)
        self._undo: deque[_Record] = deque()
        self._redo: list[_Record] = []
        self._pending: list[PaintResult] = []
        self._depth = 0
        self._bytes = 0
        self._serial = 0
        self._base_serial = 0  # the state token when the undo stack is empty

    # ---- inspection

    @property
    def nbytes(self) -> int:
        """Bytes held by the undo and redo patches (numpy buffers + per-record overhead).

        Results collected in an open transaction are not counted until ``end``.
        """
        return self._bytes

    @property
    def undo_steps(self) -> int:
        return len(self._undo)

    @property
    def redo_steps(self) -> int:
        return len(self._redo)

    @property
    def can_undo(self) -> bool:
        return bool(self._undo) or bool(self._pending)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo) and not self._pending

    @property
    def in_transaction(self) -> bool:
        return self._depth > 0

    @property
    def state_token(self) -> int:
        """Identifies the committed state reached by the history (for "modified since save")."""
        return self._undo[-1].serial if self._undo else self._base_serial

    # ---- recording

    def begin(self) -> None:
        """Open a transaction (e.g. on mouse press); nested calls just deepen it."""
        self._depth += 1

    def end(self) -> Box | None:
        """Close a transaction; the outermost close commits its results as one step.

        Returns the committed step's box, or ``None`` (nested close, or nothing changed).
        """
        if self._depth == 0:
            raise RuntimeError("History.end() without begin()")
        self._depth -= 1
        if self._depth:
            return None
        return self._commit()

    @contextmanager
    def transaction(self) -> Iterator[History]:
        """``with history.transaction(): ...`` — begin/end around the block."""
        self.begin()
        try:
            yield self
        finally:
            self.end()

    def record(self, result: PaintResult | None) -> None:
        """Add a paint result (``None`` is ignored) as a step, or to the open transaction."""
        if result is None:
            return
        self._pending.append(result)
        if self._depth == 0:
            self._commit()

    def cancel(self, label_map: np.ndarray) -> Box | None:
        """Abandon the open transaction: revert its changes to ``label_map`` and close it.

        Returns the box to repaint, or ``None`` if it had changed nothing.
        """
        res = self.cancel_result(label_map)
        return None if res is None else res.box

    def cancel_result(self, label_map: np.ndarray) -> PaintResult | None:
        """Like :meth:`cancel` but returns what changed."""
        pending, self._pending, self._depth = self._pending, [], 0
        if not pending:
            return None
        merged = _merge(pending)
        if merged is None:
            return None
        box, mask, old, new = merged
        region = label_map[box.slices]
        if mask is None:
            region[...] = old.reshape(box.shape)
        else:
            region[mask] = old
        return PaintResult(box, mask, new, old)

    def clear(self) -> None:
        """Forget every step (e.g. after loading another mask)."""
        self._undo.clear()
        self._redo.clear()
        self._pending.clear()
        self._depth = 0
        self._bytes = 0
        self._serial += 1
        self._base_serial = self._serial  # a fresh token: no earlier state matches it

    def _commit(self) -> Box | None:
        pending, self._pending = self._pending, []
        if not pending:
            return None
        if len(pending) == 1:
            res = pending[0]
            box, mask, old, new = res.box, res.changed, res.old_values, res.new_values
        else:
            merged = _merge(pending)
            if merged is None:
                return None
            box, mask, old, new = merged
        self._serial += 1
        packed = None if mask is None else _PackedMask.encode(mask)
        rec = _Record(self._serial, box, packed, _compact(old), _compact(new))
        for dropped in self._redo:
            self._bytes -= dropped.nbytes
        self._redo.clear()
        self._undo.append(rec)
        self._bytes += rec.nbytes
        while len(self._undo) > 1 and (len(self._undo) > self.max_steps or self._bytes > self.max_bytes):
            gone = self._undo.popleft()
            self._bytes -= gone.nbytes
            self._base_serial = gone.serial
        return box

    # ---- undo / redo

    def undo(self, label_map: np.ndarray) -> Box | None:
        """Revert the newest step in ``label_map``; returns its box (to repaint) or ``None``.

        An open transaction is committed first, so undo during a drag undoes the
        stroke so far.
        """
        res = self.undo_result(label_map)
        return None if res is None else res.box

    def redo(self, label_map: np.ndarray) -> Box | None:
        """Re-apply the newest undone step; returns its box or ``None``."""
        res = self.redo_result(label_map)
        return None if res is None else res.box

    def undo_result(self, label_map: np.ndarray) -> PaintResult | None:
        """Like :meth:`undo` but returns what changed (for provenance bookkeeping)."""
        if self._depth or self._pending:
            self._depth = 0
            self._commit()
        if not self._undo:
            return None
        rec = self._undo.pop()
        self._redo.append(rec)
        return _apply(label_map, rec, rec.old)

    def redo_result(self, label_map: np.ndarray) -> PaintResult | None:
        """Like :meth:`redo` but returns what changed."""
        if self._depth or self._pending:
            self._depth = 0
            self._commit()  # a committed edit clears redo, as any new edit does
        if not self._redo:
            return None
        rec = self._redo.pop()
        self._undo.append(rec)
        return _apply(label_map, rec, rec.new)


def _apply(label_map: np.ndarray, rec: _Record, values: np.ndarray | int) -> PaintResult:
    _check_label_map(label_map)
    if not Box.full(label_map.shape).contains(rec.box):
        raise ValueError("this history belongs to a larger label map")
    region = label_map[rec.box.slices]
    if rec.mask is None:
        before = region.flatten()
        region[...] = values if not isinstance(values, np.ndarray) else values.reshape(rec.box.shape)
        return PaintResult(rec.box, None, before, values)
    mask = rec.mask.decode()
    before = region[mask]
    region[mask] = values
    return PaintResult(rec.box, mask, before, values)
