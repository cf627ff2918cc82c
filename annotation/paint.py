"""The one paint path: boxes, the lock, and writing a value into a region of a label map.

Qt-free and torch-free (numpy only). Brush, eraser, fill, polygon and
click-to-accept all build "a boolean region inside a box" and hand it to
:func:`paint_region`, which applies the lock (``only_over`` / ``protect``),
writes the new value and returns a :class:`PaintResult` (tight dirty box,
changed pixels, their old values) or ``None`` when nothing changed.

Conventions (shared by :mod:`annotation.shapes`, :mod:`annotation.regions`,
:mod:`annotation.history` and :mod:`annotation.editing`):

* A label map is a 2-D ``uint8`` array of class indices (``masks.VOID`` = 255).
* Coordinates are image coordinates with **pixel centres on integers**: pixel
  ``label_map[r, c]`` is centred at ``(x=c, y=r)`` and covers
  ``[c - 0.5, c + 0.5) x [r - 0.5, r + 0.5)``. Brush and polygon shapes cover
  the pixels whose centres they contain. (A Qt scene point with the image item
  at the origin maps to ``(px - 0.5, py - 0.5)``.)
* Boxes are half-open ``[y0, y1) x [x0, x1)`` in rows/columns, so
  ``label_map[box.slices]`` is the region; ``box.x, box.y, box.width,
  box.height`` give the ``QRect`` form.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np

__all__ = ["BACKGROUND", "Box", "ClassSet", "Lock", "PaintResult", "paint_region"]

#: The class index the eraser paints by default.
BACKGROUND = 0

#: One class index or several.
ClassSet: TypeAlias = "int | Iterable[int]"
#: ``only_over``: the classes (or a predicate on the current values, returning a
#: bool array of the same shape) that a paint operation may overwrite.
Lock: TypeAlias = "int | Iterable[int] | Callable[[np.ndarray], np.ndarray] | None"


# --------------------------------------------------------------------------- boxes


@dataclass(frozen=True, slots=True)
class Box:
    """A half-open pixel rectangle ``[y0, y1) x [x0, x1)`` (rows, then columns)."""

    y0: int
    x0: int
    y1: int
    x1: int

    def __post_init__(self) -> None:
        if self.y1 < self.y0 or self.x1 < self.x0:
            raise ValueError(f"inverted box {self!r}")

    @classmethod
    def from_xywh(cls, x: int, y: int, width: int, height: int) -> Box:
        """The box with top-left pixel ``(x, y)`` and the given size (``QRect`` order)."""
        return cls(y, x, y + height, x + width)

    @classmethod
    def full(cls, shape: tuple[int, ...]) -> Box:
        """The box covering a whole array of ``shape`` (only the first two axes count)."""
        return cls(0, 0, int(shape[0]), int(shape[1]))

    @property
    def x(self) -> int:
        return self.x0

    @property
    def y(self) -> int:
        return self.y0

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)``: the shape of ``array[box.slices]``."""
        return (self.y1 - self.y0, self.x1 - self.x0)

    @property
    def area(self) -> int:
        return self.height * self.width

    @property
    def empty(self) -> bool:
        return self.area == 0

    @property
    def slices(self) -> tuple[slice, slice]:
        """Index an array with this to get the box's region (a view)."""
        return (slice(self.y0, self.y1), slice(self.x0, self.x1))

    def union(self, other: Box) -> Box:
        """The smallest box containing both."""
        return Box(min(self.y0, other.y0), min(self.x0, other.x0), max(self.y1, other.y1), max(self.x1, other.x1))

    def intersection(self, other: Box) -> Box | None:
        """The overlap of both boxes, or ``None`` when it is empty."""
        y0, x0 = max(self.y0, other.y0), max(self.x0, other.x0)
        y1, x1 = min(self.y1, other.y1), min(self.x1, other.x1)
        if y1 <= y0 or x1 <= x0:
            return None
        return Box(y0, x0, y1, x1)

    def contains(self, other: Box) -> bool:
        return self.y0 <= other.y0 and self.x0 <= other.x0 and other.y1 <= self.y1 and other.x1 <= self.x1

    def offset(self, other: Box) -> Box:
        """``other`` in this box's local coordinates (``other`` must lie inside)."""
        return Box(other.y0 - self.y0, other.x0 - self.x0, other.y1 - self.y0, other.x1 - self.x0)


# --------------------------------------------------------------------------- paint path


@dataclass(frozen=True, slots=True, eq=False)
class PaintResult:
    """What one paint (or undo/redo) did to a label map.

    ``box`` is tight around the changed pixels. ``changed`` is a bool array of
    ``box.shape`` marking them, or ``None`` when every pixel of the box changed.
    ``old_values`` holds the previous value of each changed pixel in row-major
    order; ``new_values`` is the value written (a scalar for paint ops, an
    array in the same order after undo/redo).
    """

    box: Box
    changed: np.ndarray | None
    old_values: np.ndarray
    new_values: np.ndarray | int

    @property
    def count(self) -> int:
        """Number of pixels changed."""
        return int(self.old_values.size)

    def mask(self) -> np.ndarray:
        """The changed pixels as a bool array of ``box.shape`` (never ``None``)."""
        if self.changed is None:
            return np.ones(self.box.shape, dtype=bool)
        return self.changed

    def new_array(self) -> np.ndarray:
        """``new_values`` as a uint8 array, one per changed pixel."""
        if isinstance(self.new_values, np.ndarray):
            return self.new_values
        return np.full(self.count, self.new_values, dtype=np.uint8)


def _check_label_map(label_map: np.ndarray) -> None:
    if not isinstance(label_map, np.ndarray) or label_map.ndim != 2 or label_map.dtype != np.uint8:
        raise TypeError("a label map is a 2-D uint8 numpy array")


def _check_value(value: int) -> int:
    v = int(value)
    if v != value or not 0 <= v <= 255:
        raise ValueError(f"a class index is an integer in 0..255, got {value!r}")
    return v


def _class_table(classes: ClassSet) -> np.ndarray:
    """A 256-entry bool lookup table, True for the given class indices."""
    table = np.zeros(256, dtype=bool)
    if isinstance(classes, (int, np.integer)):
        table[_check_value(int(classes))] = True
    else:
        for c in classes:
            table[_check_value(int(c))] = True
    return table


def _allowed(current: np.ndarray, only_over: Lock, protect: ClassSet | None) -> np.ndarray | None:
    """Which pixels of ``current`` the lock lets an operation overwrite (None = all)."""
    if only_over is None and protect is None:
        return None
    if callable(only_over):
        allowed = np.asarray(only_over(current), dtype=bool)
        if allowed.shape != current.shape:
            raise ValueError("an only_over predicate must return a bool array shaped like its input")
        if protect is not None:
            allowed = allowed & ~_class_table(protect)[current]
        return allowed
    # Both class-set forms fold into one table so the lock costs one gather.
    table = np.ones(256, dtype=bool) if only_over is None else _class_table(only_over)
    if protect is not None:
        table &= ~_class_table(protect)
    return table[current]


def paint_region(
    label_map: np.ndarray,
    box: Box,
    region: np.ndarray | None,
    value: int,
    *,
    only_over: Lock = None,
    protect: ClassSet | None = None,
) -> PaintResult | None:
    """Write ``value`` into the ``region`` pixels of ``box``: the one paint path.

    ``region`` is a bool array of ``box.shape`` (``None`` = the whole box). The
    box may stick out of the label map; it is clipped. ``only_over`` restricts
    the write to pixels whose current class is in that set (or satisfies that
    predicate); ``protect`` names classes that are never overwritten. Pixels
    that already hold ``value`` do not count as changed.

    Returns the tight dirty box with the changed pixels and their old values,
    or ``None`` when no pixel changed (nothing to repaint, nothing to undo).
    """
    _check_label_map(label_map)
    value = _check_value(value)
    if region is not None:
        region = np.asarray(region, dtype=bool)
        if region.shape != box.shape:
            raise ValueError(f"region shape {region.shape} does not match box shape {box.shape}")
    clipped = box.intersection(Box.full(label_map.shape))
    if clipped is None:
        return None
    if region is not None and clipped != box:
        region = region[box.offset(clipped).slices]
    box = clipped

    current = label_map[box.slices]
    change = current != value
    if region is not None:
        change &= region
    allowed = _allowed(current, only_over, protect)
    if allowed is not None:
        change &= allowed

    rows = np.flatnonzero(change.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(change.any(axis=0))
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    tight = Box(box.y0 + r0, box.x0 + c0, box.y0 + r1, box.x0 + c1)
    current = current[r0:r1, c0:c1]
    change = change[r0:r1, c0:c1]

    changed: np.ndarray | None
    if change.all():
        old = current.flatten()  # flatten copies: the patch must not alias the map
        current[...] = value
        changed = None
    else:
        old = current[change]
        current[change] = value
        # Copy so the patch does not keep the (possibly much larger) parent alive.
        changed = np.array(change, dtype=bool, copy=True)
    return PaintResult(tight, changed, old, value)
