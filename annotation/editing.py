"""Paint operations on label maps and their patch-based undo history.

Everything here is Qt-free and torch-free (numpy only), so the editor's logic is
tested headless and the GUI stays a thin view: it turns mouse events into the
calls below and repaints only the dirty :class:`Box` each call returns.

Conventions
-----------
* A label map is a 2-D ``uint8`` array of class indices (``masks.VOID`` = 255).
* Coordinates are image coordinates with **pixel centres on integers**: pixel
  ``label_map[r, c]`` is centred at ``(x=c, y=r)`` and covers
  ``[c - 0.5, c + 0.5) x [r - 0.5, r + 0.5)``. Brush and polygon shapes cover
  the pixels whose centres they contain. (A Qt scene point with the image item
  at the origin maps to ``(px - 0.5, py - 0.5)``.)
* Boxes are half-open ``[y0, y1) x [x0, x1)`` in rows/columns, so
  ``label_map[box.slices]`` is the region; ``box.x, box.y, box.width,
  box.height`` give the ``QRect`` form.

One paint path
--------------
Brush, eraser, fill, polygon and click-to-accept all build "a boolean region
inside a box" and hand it to :func:`paint_region`, which applies the lock
(``only_over`` / ``protect``), writes the new value and returns a
:class:`PaintResult` (tight dirty box, changed pixels, their old values) or
``None`` when nothing changed. :class:`History` stores those results as compact
patches; :class:`MaskDocument` ties a label map, its history and its provenance
(pixels changed since the pre-label) together.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np

from .masks import VOID

__all__ = [
    "BACKGROUND",
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

#: The class index the eraser paints by default.
BACKGROUND = 0

#: One class index or several.
ClassSet: TypeAlias = "int | Iterable[int]"
#: ``only_over``: the classes (or a predicate on the current values, returning a
#: bool array of the same shape) that a paint operation may overwrite.
Lock: TypeAlias = "int | Iterable[int] | Callable[[np.ndarray], np.ndarray] | None"

#: Smallest effective brush radius: at sqrt(2)/2 every point of the image has a
#: pixel centre within reach, so a dab always paints the pixel under the cursor.
MIN_RADIUS = math.sqrt(0.5)

#: Bytes charged per undo record for its Python objects (record, box, array
#: headers) on top of the numpy buffers, so ``History.nbytes`` is not an
#: undercount when records are tiny.
RECORD_OVERHEAD = 512


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


# --------------------------------------------------------------------------- brush


def _int_range(lo: float, hi: float, limit: int) -> tuple[int, int]:
    """Integers in ``[lo, hi]`` clipped to ``[0, limit)``, as a half-open pair."""
    return max(math.ceil(lo), 0), min(math.floor(hi), limit - 1) + 1


def capsule_region(
    x0: float, y0: float, x1: float, y1: float, radius: float, shape: tuple[int, int]
) -> tuple[Box, np.ndarray] | None:
    """Pixels whose centres lie within ``radius`` of the segment (x0, y0)-(x1, y1).

    This is the brush footprint of one mouse move: a round dab swept along the
    segment, so a fast move leaves no gap. Returns the box (clipped to
    ``shape``) and a bool region of its shape, or ``None`` if it misses the image.

    The capsule is convex, so each pixel row meets it in one interval; computing
    those intervals costs O(rows) instead of a distance per pixel, which keeps
    long fast strokes cheap.
    """
    r = max(float(radius), MIN_RADIUS)
    x0, y0, x1, y1 = float(x0), float(y0), float(x1), float(y1)
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1, r)):
        raise ValueError("brush coordinates and radius must be finite")
    ya, yb = _int_range(min(y0, y1) - r, max(y0, y1) + r, shape[0])
    xa, xb = _int_range(min(x0, x1) - r, max(x0, x1) + r, shape[1])
    if ya >= yb or xa >= xb:
        return None

    ys = np.arange(ya, yb, dtype=np.float64)
    lo = np.full(ys.shape, np.inf)
    hi = np.full(ys.shape, -np.inf)

    def merge(ok: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
        # The pieces of a convex set's row interval overlap, so min/max is their union.
        np.minimum(lo, np.where(ok, a, np.inf), out=lo)
        np.maximum(hi, np.where(ok, b, -np.inf), out=hi)

    # The two end discs.
    for cx, cy in ((x0, y0), (x1, y1)):
        h2 = r * r - (ys - cy) ** 2
        s = np.sqrt(np.maximum(h2, 0.0))
        merge(h2 >= 0, cx - s, cx + s)

    # The swept band: points whose projection falls on the segment (0 <= t <= 1)
    # and whose perpendicular distance is at most r.
    dx, dy = x1 - x0, y1 - y0
    length2 = dx * dx + dy * dy
    if length2 > 0:
        length = math.sqrt(length2)
        ry = ys - y0
        if dy != 0:  # |(x - x0) dy - ry dx| <= r L
            # A nearly horizontal segment (tiny dy) overflows to +-inf, which is
            # the right bound: the band then spans the whole row.
            with np.errstate(over="ignore"):
                a = x0 + (ry * dx - r * length) / dy
                b = x0 + (ry * dx + r * length) / dy
            plo, phi = np.minimum(a, b), np.maximum(a, b)
        else:  # horizontal: the band is every x, for rows within r of the line
            near = np.abs(ry) <= r
            plo, phi = np.where(near, -np.inf, np.inf), np.where(near, np.inf, -np.inf)
        if dx != 0:  # 0 <= (x - x0) dx + ry dy <= L^2
            with np.errstate(over="ignore"):  # tiny dx: +-inf bounds, as above
                a = x0 - ry * dy / dx
                b = x0 + (length2 - ry * dy) / dx
            tlo, thi = np.minimum(a, b), np.maximum(a, b)
        else:  # vertical: every x, for rows between the end points
            along = (ry * dy >= 0) & (ry * dy <= length2)
            tlo, thi = np.where(along, -np.inf, np.inf), np.where(along, np.inf, -np.inf)
        blo, bhi = np.maximum(plo, tlo), np.minimum(phi, thi)
        merge(blo <= bhi, blo, bhi)

    cols = np.arange(xa, xb, dtype=np.float64)
    region = (cols >= np.ceil(lo)[:, None]) & (cols <= np.floor(hi)[:, None])
    return Box(ya, xa, yb, xb), region


def brush_segment(
    label_map: np.ndarray,
    x0: float,
    y0: float,
    x1: float,
    y1: float,
    radius: float,
    value: int,
    *,
    only_over: Lock = None,
    protect: ClassSet | None = None,
) -> PaintResult | None:
    """Paint a round brush of ``radius`` pixels swept from (x0, y0) to (x1, y1).

    A single dab is a segment with equal end points. The eraser is this with
    ``value=BACKGROUND`` (or ``VOID``). See :func:`paint_region` for the lock
    and the result.
    """
    _check_label_map(label_map)
    got = capsule_region(x0, y0, x1, y1, radius, label_map.shape)
    if got is None:
        return None
    box, region = got
    return paint_region(label_map, box, region, value, only_over=only_over, protect=protect)


# --------------------------------------------------------------------------- polygon


def polygon_region(vertices: Sequence[Sequence[float]] | np.ndarray, shape: tuple[int, int]) -> tuple[Box, np.ndarray] | None:
    """Pixels whose centres lie inside a polygon (even-odd rule), in its clipped bounding box.

    ``vertices`` is an (N, 2) sequence of ``(x, y)`` image coordinates; the
    polygon closes itself. Self-intersecting outlines (lasso scribbles) follow
    the even-odd rule. Returns ``None`` when no pixel centre is inside.

    It is a scanline rasteriser: each edge contributes one crossing per pixel
    row it spans, so the cost is O(crossings + box area), independent of how
    many vertices a freehand lasso has per row.
    """
    pts = np.asarray(vertices, dtype=np.float64).reshape(-1, 2)
    if len(pts) < 3:
        return None
    if not np.isfinite(pts).all():
        raise ValueError("polygon vertices must be finite")
    xs, ys = pts[:, 0], pts[:, 1]
    ya, yb = _int_range(ys.min(), ys.max(), shape[0])
    xa, xb = _int_range(xs.min(), xs.max(), shape[1])
    if ya >= yb or xa >= xb:
        return None
    h, w = yb - ya, xb - xa

    ex0, ey0 = xs, ys
    ex1, ey1 = np.roll(xs, -1), np.roll(ys, -1)
    keep = ey0 != ey1  # horizontal edges cross no row centre under the half-open rule
    ex0, ey0, ex1, ey1 = ex0[keep], ey0[keep], ex1[keep], ey1[keep]
    # Edge crosses row centre y iff min(ey) <= y < max(ey) (half-open, so a
    # vertex shared by two edges is counted exactly once).
    first = np.clip(np.ceil(np.minimum(ey0, ey1)), ya, yb).astype(np.int64)
    stop = np.clip(np.ceil(np.maximum(ey0, ey1)), ya, yb).astype(np.int64)
    counts = np.maximum(stop - first, 0)
    total = int(counts.sum())
    if total == 0:
        return None
    edge = np.repeat(np.arange(counts.size), counts)
    starts = np.cumsum(counts) - counts
    row = first[edge] + (np.arange(total) - starts[edge])
    y = row.astype(np.float64)
    x = ex0[edge] + (y - ey0[edge]) * (ex1[edge] - ex0[edge]) / (ey1[edge] - ey0[edge])

    # A centre c is inside iff an odd number of crossings lie strictly left of
    # it; the first centre right of crossing x is floor(x) + 1. Toggle there and
    # take a running parity along each row (uint8 wraps mod 256, parity survives).
    col = np.clip(np.floor(x).astype(np.int64) + 1 - xa, 0, w)
    flat = (row - ya) * (w + 1) + col
    uniq, n = np.unique(flat, return_counts=True)
    toggles = np.zeros(h * (w + 1), dtype=np.uint8)
    toggles[uniq[(n & 1) == 1]] = 1
    parity = np.cumsum(toggles.reshape(h, w + 1), axis=1, dtype=np.uint8)[:, :w]
    region = (parity & 1).astype(bool)
    return Box(ya, xa, yb, xb), region


def polygon(
    label_map: np.ndarray,
    vertices: Sequence[Sequence[float]] | np.ndarray,
    value: int,
    *,
    only_over: Lock = None,
    protect: ClassSet | None = None,
) -> PaintResult | None:
    """Fill a polygon (``(x, y)`` vertices, even-odd rule) with ``value``."""
    _check_label_map(label_map)
    got = polygon_region(vertices, label_map.shape)
    if got is None:
        return None
    box, region = got
    return paint_region(label_map, box, region, value, only_over=only_over, protect=protect)


# --------------------------------------------------------------------------- fill


def _pixel(x: float, y: float, shape: tuple[int, int]) -> tuple[int, int] | None:
    """The (row, col) of the pixel containing image point (x, y), or None outside."""
    c, r = math.floor(float(x) + 0.5), math.floor(float(y) + 0.5)
    if 0 <= r < shape[0] and 0 <= c < shape[1]:
        return r, c
    return None


#: Up to this many runs the run graph is walked with a plain Python stack
#: (cheapest for the smooth maps people paint); beyond it, with numpy frontiers
#: (speckled maps with millions of runs, where per-run Python costs seconds).
_PYTHON_WALK_MAX_RUNS = 100_000

_Ranges: TypeAlias = "tuple[np.ndarray, np.ndarray]"


def _walk_runs_python(seed: int, down: _Ranges, up: _Ranges) -> np.ndarray:
    """Runs reachable from ``seed``; neighbours of run i are ranges ``[lo[i], hi[i])``."""
    down_lo, down_hi = down[0].tolist(), down[1].tolist()
    up_lo, up_hi = up[0].tolist(), up[1].tolist()
    seen = bytearray(len(down_lo))
    seen[seed] = 1
    todo = [seed]
    while todo:
        i = todo.pop()
        for j in range(down_lo[i], down_hi[i]):
            if not seen[j]:
                seen[j] = 1
                todo.append(j)
        for j in range(up_lo[i], up_hi[i]):
            if not seen[j]:
                seen[j] = 1
                todo.append(j)
    return np.frombuffer(seen, dtype=np.uint8).astype(bool)


def _expand_ranges(frontier: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Concatenate ``range(lo[i], hi[i])`` for every i in ``frontier``, vectorised."""
    a, b = lo[frontier], hi[frontier]
    n = b - a
    keep = n > 0
    a, n = a[keep], n[keep]
    total = int(n.sum())
    if total == 0:
        return np.empty(0, dtype=np.intp)
    return np.repeat(a - (np.cumsum(n) - n), n) + np.arange(total)


def _walk_runs_numpy(seed: int, down: _Ranges, up: _Ranges) -> np.ndarray:
    """Same result as :func:`_walk_runs_python`, breadth-first with whole frontiers per step."""
    seen = np.zeros(down[0].size, dtype=bool)
    seen[seed] = True
    claim = np.empty(down[0].size, dtype=np.intp)  # scratch for de-duplicating a frontier
    frontier = np.array([seed], dtype=np.intp)
    while frontier.size:
        nb = np.concatenate((_expand_ranges(frontier, *down), _expand_ranges(frontier, *up)))
        nb = nb[~seen[nb]]
        # A run reached from two sides appears twice; keep the last writer of
        # each id (O(n), unlike sorting with np.unique).
        order = np.arange(nb.size)
        claim[nb] = order
        nb = nb[claim[nb] == order]
        seen[nb] = True
        frontier = nb
    return seen


def connected_region(label_map: np.ndarray, x: float, y: float) -> tuple[Box, np.ndarray] | None:
    """The 4-connected region of same-class pixels containing point (x, y).

    Returns its bounding box and a bool region of that shape, or ``None`` when
    the point is outside the image. Diagonal neighbours are not connected.

    Works on horizontal runs rather than pixels: the class mask is cut into
    runs with a few whole-array numpy passes, each run's overlapping runs in
    the rows above and below are found with ``searchsorted`` (they form a
    contiguous index range), and only the graph of runs is walked. A smooth
    label map has a few runs per row, so a full 6000x4000 fill walks thousands
    of nodes, not 24 million pixels; speckled maps with millions of runs are
    walked with numpy frontiers instead of a Python loop.
    """
    _check_label_map(label_map)
    hit = _pixel(x, y, label_map.shape)
    if hit is None:
        return None
    r, c = hit
    height, width = label_map.shape
    same = label_map == label_map[r, c]

    # Run boundaries as flat keys row * K + col in a (height, width + 1) grid; a
    # run is [start, end). Each row is padded with False on both sides, so
    # boundaries alternate start, end and never straddle rows.
    k = width + 1
    padded = np.zeros((height, width + 2), dtype=bool)
    padded[:, 1:-1] = same
    bounds = np.flatnonzero(padded[:, 1:] != padded[:, :-1])
    del padded
    starts, ends = bounds[0::2], bounds[1::2]

    # Runs in the next row overlapping [s, e): end_key > (row+1)K + s and
    # start_key < (row+1)K + e. Keys are sorted, so that is an index range.
    down = (np.searchsorted(ends, starts + k, side="right"), np.searchsorted(starts, ends + k, side="left"))
    up = (np.searchsorted(ends, starts - k, side="right"), np.searchsorted(starts, ends - k, side="left"))
    seed = int(np.searchsorted(starts, r * k + c, side="right")) - 1
    walk = _walk_runs_python if starts.size <= _PYTHON_WALK_MAX_RUNS else _walk_runs_numpy
    member = walk(seed, down, up)

    s_key, e_key = starts[member], ends[member]
    rows = s_key // k
    s_col, e_col = s_key - rows * k, e_key - rows * k
    box = Box(int(rows.min()), int(s_col.min()), int(rows.max()) + 1, int(e_col.max()))
    # +1 at each run start, -1 at each run end, running sum along the row. Runs
    # in one row are separated by at least one pixel, so no two marks collide.
    marks = np.zeros((box.height, box.width + 1), dtype=np.int8)
    marks[rows - box.y0, s_col - box.x0] = 1
    marks[rows - box.y0, e_col - box.x0] = -1
    region = np.cumsum(marks, axis=1, dtype=np.int8)[:, :-1].view(bool)
    return box, region


def fill(
    label_map: np.ndarray,
    x: float,
    y: float,
    value: int,
    *,
    only_over: Lock = None,
    protect: ClassSet | None = None,
) -> PaintResult | None:
    """Flood-fill the 4-connected same-class region under (x, y) with ``value``."""
    _check_label_map(label_map)
    value = _check_value(value)
    hit = _pixel(x, y, label_map.shape)
    if hit is None or label_map[hit] == value:
        return None  # nothing would change; skip the whole-image region search
    got = connected_region(label_map, x, y)
    assert got is not None
    box, region = got
    return paint_region(label_map, box, region, value, only_over=only_over, protect=protect)


def accept_region(
    label_map: np.ndarray,
    x: float,
    y: float,
    value: int,
    *,
    only_over: Lock = None,
    protect: ClassSet | None = None,
) -> PaintResult | None:
    """Click-to-accept: relabel the connected region under a click as ``value``.

    Identical to :func:`fill`; a separate name because the GUI offers it as a
    separate tool (accepting a pre-labelled blob as the current class).
    """
    return fill(label_map, x, y, value, only_over=only_over, protect=protect)


# --------------------------------------------------------------------------- history


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
        self, box: Box, region: np.ndarray | None, value: int, *, only_over: Lock = None, protect: ClassSet | None = None
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
