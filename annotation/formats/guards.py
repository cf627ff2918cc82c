"""Bounds for what a label file may ask of the readers: where its images are and how far its shapes reach.

A label file is input from anywhere, so before anything is opened or rasterised:

* a file name it gives must resolve inside the folder the person named (symlinks
  followed), unless they allowed files outside it (``--allow-outside``);
* shape coordinates are clipped to a window around the image, so the rasterisers'
  work follows the image size, not the numbers in the file (pycocotools' polygon
  fill allocates memory in proportion to the perimeter: a ±1e7 triangle took
  23 GB, and at ±1e12 its int coordinates overflow and it paints nothing);
* a shape that lies wholly outside its image is an error naming it, not a label
  that silently paints nothing.

The window reaches one image size beyond each edge. Shapes that stay inside it (every
shape a labelling tool draws) are passed on untouched, so their pixels are exactly
what pycocotools or labelme would paint; only shapes reaching past it are clipped,
which keeps the part inside the image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import AtrousReadError

#: Coordinates beyond this are refused: float64 cannot place a pixel precisely that far out.
MAX_COORD = 1e15


def is_inside(target: Path, root: Path) -> bool:
    """Whether ``target`` resolves (symlinks followed) to ``root`` or below it."""
    try:
        return target.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError) as e:  # a symlink loop
        raise AtrousReadError(f"{target}: cannot resolve the path ({e})") from e


def resolve_inside(base: Path, name: str, what: str, *, root: Path | None = None, allow_outside: bool) -> Path:
    """``base / name``, refused (naming ``what``) when it resolves outside ``root`` (default ``base``).

    Absolute names, ``..`` and symlinks that lead out all count as outside;
    ``allow_outside`` accepts them (the person said they trust the file).
    """
    target = base / name
    root = base if root is None else root
    if allow_outside or is_inside(target, root):
        return target
    raise AtrousReadError(
        f"{what}: {name!r} resolves to {target.resolve()}, outside the images folder {root}; "
        "name the folder that holds the images, or pass --allow-outside if you trust this file"
    )


def check_coordinates(xy: np.ndarray, what: str) -> None:
    """Refuse non-finite coordinates and coordinates too large to place a pixel with."""
    if not np.isfinite(xy).all():
        raise AtrousReadError(f"{what} has non-finite coordinates")
    if xy.size and float(np.abs(xy).max()) > MAX_COORD:
        raise AtrousReadError(f"{what} has coordinates beyond ±{MAX_COORD:g}")


def _window(width: int, height: int) -> tuple[float, float, float, float]:
    return -float(width), -float(height), 2.0 * width, 2.0 * height


def wholly_outside(xy: np.ndarray, width: int, height: int, reach: float = 0.0) -> bool:
    """True when the (n, 2) points' bounding box, grown by ``reach``, misses the image."""
    if not len(xy):
        return True
    x0, y0 = xy.min(axis=0) - reach
    x1, y1 = xy.max(axis=0) + reach
    return bool(x1 < 0 or y1 < 0 or x0 > width or y0 > height)


def beyond_window(xy: np.ndarray, width: int, height: int, reach: float = 0.0) -> bool:
    """True when some point (grown by ``reach``) lies outside the clipping window."""
    x0, y0, x1, y1 = _window(width, height)
    return bool(
        len(xy)
        and (
            xy[:, 0].min() - reach < x0
            or xy[:, 1].min() - reach < y0
            or xy[:, 0].max() + reach > x1
            or xy[:, 1].max() + reach > y1
        )
    )


def clip_polygon(xy: np.ndarray, width: int, height: int) -> np.ndarray:
    """The closed polygon ``xy`` (n, 2) clipped to the window around a ``width`` x ``height`` image.

    Returned unchanged when it lies inside the window; otherwise clipped with
    Sutherland-Hodgman against the window's four sides (exact for the area inside,
    which is all that can reach the image). May return fewer than 3 points.
    """
    if not beyond_window(xy, width, height):
        return xy
    x0, y0, x1, y1 = _window(width, height)
    for axis, limit, keep_above in ((0, x0, True), (0, x1, False), (1, y0, True), (1, y1, False)):
        if len(xy) == 0:
            break
        xy = _clip_half_plane(xy, axis, limit, keep_above)
    return xy


def _clip_half_plane(xy: np.ndarray, axis: int, limit: float, keep_above: bool) -> np.ndarray:
    """One Sutherland-Hodgman step, vectorised: each edge (previous -> current point) emits the
    crossing with the line when it crosses, then the current point when it is inside."""
    v = xy[:, axis]
    inside = v >= limit if keep_above else v <= limit
    prev = np.roll(xy, 1, axis=0)
    pv = prev[:, axis]
    crosses = inside != np.roll(inside, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(crosses, (limit - pv) / np.where(crosses, v - pv, 1.0), 0.0)
    hit = prev + t[:, None] * (xy - prev)
    hit[:, axis] = limit
    out = np.stack([hit, xy], axis=1)  # (n, 2 candidates, 2 coords)
    keep = np.stack([crosses, inside], axis=1)
    return out[keep]


def clip_segments(xy: np.ndarray, width: int, height: int) -> list[np.ndarray]:
    """An open polyline's segments clipped to the window (Liang-Barsky), as (2, 2) arrays.

    Returns ``[xy]`` unchanged when the polyline lies inside the window; otherwise one array per
    segment that keeps some part inside (a wide line drawn segment by segment looks the same).
    """
    if not beyond_window(xy, width, height):
        return [xy]
    x0, y0, x1, y1 = _window(width, height)
    out = []
    for p, q in zip(xy[:-1], xy[1:]):
        d = q - p
        lo, hi = 0.0, 1.0
        for pk, qk in ((-d[0], p[0] - x0), (d[0], x1 - p[0]), (-d[1], p[1] - y0), (d[1], y1 - p[1])):
            if pk == 0:
                if qk < 0:
                    lo, hi = 1.0, 0.0
                continue
            r = qk / pk
            if pk < 0:
                lo = max(lo, r)
            else:
                hi = min(hi, r)
        if lo <= hi:
            out.append(np.stack([p + lo * d, p + hi * d]))
    return out


#: pycocotools' polygon fill walks each outline in fifth-pixel steps and keeps about 20 bytes
#: per step, so an annotation's outline (after clipping) longer than this is refused (~400 MB).
MAX_OUTLINE = 4_000_000

#: PIL's polygon fill sorts, on each row, the edges crossing it; its time grows with the
#: square of that count (200 000 random points over 100 rows took 38 s, a smooth
#: 200 000-point outline 0.05 s). Past this sum of squared crossings (~1 s) it is refused.
MAX_FILL_WORK = 10_000_000_000


def check_fill_cost(polygons: list[np.ndarray], height: int, what: str, *, rows: bool) -> None:
    """Refuse polygons whose fill would cost far more than the image: with ``rows`` (PIL's scanline
    fill) by the edges crossing each row, otherwise (pycocotools) by the outline length in pixels."""
    if rows:
        per_row = sum((_row_crossings(p, height) for p in polygons), np.zeros(height, np.int64))
        if float(np.square(per_row, dtype=np.float64).sum()) > MAX_FILL_WORK:
            raise AtrousReadError(
                f"{what}: polygon too tangled to fill ({int(per_row.max()):,} of its "
                f"{sum(map(len, polygons)):,} edges cross one row)"
            )
        return
    outline = sum(float(np.abs(np.diff(np.vstack([p, p[:1]]), axis=0)).max(axis=1).sum()) for p in polygons)
    if outline > MAX_OUTLINE:
        raise AtrousReadError(
            f"{what}: polygon outline too long to rasterise ({outline:,.0f} px; at most {MAX_OUTLINE:,})"
        )


def _row_crossings(p: np.ndarray, height: int) -> np.ndarray:
    """How many edges of the closed polygon ``p`` each image row's centre line crosses."""
    y = p[:, 1]
    lo, hi = np.minimum(y, np.roll(y, -1)), np.maximum(y, np.roll(y, -1))
    first = np.clip(np.ceil(lo - 0.5), 0, height).astype(np.int64)
    stop = np.clip(np.floor(hi - 0.5) + 1, 0, height).astype(np.int64)
    diff = np.bincount(first, minlength=height + 1) - np.bincount(stop, minlength=height + 1)
    return np.cumsum(diff[:height])
