"""Region tools: the 4-connected same-class region under a point, flood fill, click-to-accept.

Qt-free and torch-free (numpy only). :func:`connected_region` finds the region
on horizontal runs instead of pixels, so a fill of a large smooth label map
walks thousands of runs, not millions of pixels.
"""

from __future__ import annotations

import math
from typing import TypeAlias

import numpy as np

from .paint import Box, ClassSet, Lock, PaintResult, _check_label_map, _check_value, paint_region

__all__ = ["accept_region", "connected_region", "fill"]


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
