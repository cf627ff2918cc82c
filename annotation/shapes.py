"""Rasterising brush and polygon shapes into regions, and painting them.

Qt-free and torch-free (numpy only). A shape covers the pixels whose centres it
contains (see :mod:`annotation.paint` for the coordinate conventions); each
``*_region`` function returns the clipped box and a bool region of its shape,
and the painting functions hand those to :func:`annotation.paint.paint_region`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .paint import Box, ClassSet, Lock, PaintResult, _check_label_map, paint_region

__all__ = ["MIN_RADIUS", "brush_segment", "capsule_region", "polygon", "polygon_region"]

#: Smallest effective brush radius: at sqrt(2)/2 every point of the image has a
#: pixel centre within reach, so a dab always paints the pixel under the cursor.
MIN_RADIUS = math.sqrt(0.5)


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


def polygon_region(
    vertices: Sequence[Sequence[float]] | np.ndarray, shape: tuple[int, int]
) -> tuple[Box, np.ndarray] | None:
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
