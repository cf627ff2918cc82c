"""Mask geometry: connected components, COCO RLE and pixel-exact polygons.

Conventions used throughout:

* A *binary mask* is a 2-D array (bool or uint8) of shape (H, W).
* Connected components use **4-connectivity** (pixels touching only at a corner
  are separate components). It keeps every component's outline a set of simple
  loops on the pixel grid, which is what makes the polygon export exact.
* Polygons are traced along the **edges of the pixel squares**: pixel (row r,
  column c) covers ``[c, c+1] x [r, r+1]`` in (x, y) coordinates. pycocotools
  rasterises such a polygon back to the very same pixels, so polygon -> mask is
  lossless for components without holes. COCO polygons of one annotation are
  united, so holes cannot be expressed as polygons: those components are
  reported as not exact and exported as RLE by :mod:`annotation.formats.coco`.
* RLE follows pycocotools (column-major); ``counts`` is a ``str`` in what this
  module returns, so it can go straight into JSON.

Only numpy and pycocotools are used (no scipy, no OpenCV). pycocotools is
imported lazily so importing this module stays cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# --------------------------------------------------------------------------
# connected components
# --------------------------------------------------------------------------


def label_components(labels: np.ndarray, ignore: Sequence[int] = ()) -> tuple[np.ndarray, int]:
    """Label 4-connected regions of equal value in a label map.

    Returns ``(components, n)``: an int32 array where each pixel holds its
    component number 1..n (0 for pixels whose value is in ``ignore``), numbered
    in raster order of each component's first pixel.

    Works on runs of equal values per row and joins overlapping runs of the
    next row with a union-find, so the Python-level work is proportional to the
    number of runs, not pixels.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError("label_components needs a 2-D array")
    h, w = labels.shape
    if h == 0 or w == 0:
        return np.zeros((h, w), dtype=np.int32), 0
    starts = np.ones((h, w), dtype=bool)
    starts[:, 1:] = labels[:, 1:] != labels[:, :-1]
    run_id = np.cumsum(starts.ravel()).reshape(h, w) - 1  # 0-based run of every pixel
    n_runs = int(run_id[-1, -1]) + 1
    run_value = labels.ravel()[starts.ravel()]

    # Vertical neighbours with the same value join their runs.
    same = labels[1:, :] == labels[:-1, :]
    a = run_id[:-1, :][same]
    b = run_id[1:, :][same]
    parent = np.arange(n_runs)
    if a.size:
        # 1-D unique on a combined key is much faster than unique(axis=0).
        key = np.unique(a.astype(np.int64) * n_runs + b)
        pairs = np.stack([key // n_runs, key % n_runs], axis=1)
        par = parent.tolist()

        def find(x: int) -> int:
            root = x
            while par[root] != root:
                root = par[root]
            while par[x] != root:  # path compression
                par[x], x = root, par[x]
            return root

        for x, y in pairs.tolist():
            rx, ry = find(x), find(y)
            if rx != ry:
                if rx < ry:
                    par[ry] = rx
                else:
                    par[rx] = ry
        parent = np.array([find(i) for i in range(n_runs)], dtype=np.int64)

    keep = np.ones(n_runs, dtype=bool)
    for v in ignore:
        keep &= run_value != v
    roots = parent.copy()
    # Number the roots 1..n in raster order (roots are the smallest run id of their set).
    is_root = (roots == np.arange(n_runs)) & keep
    number = np.zeros(n_runs, dtype=np.int32)
    number[is_root] = np.arange(1, int(is_root.sum()) + 1, dtype=np.int32)
    comp_of_run = number[roots]
    comp_of_run[~keep] = 0
    return comp_of_run[run_id].astype(np.int32), int(is_root.sum())


@dataclass(frozen=True)
class Component:
    """One connected component of one class."""

    class_index: int
    mask: np.ndarray  # bool (H, W), full image size
    area: int
    bbox: tuple[int, int, int, int]  # x, y, width, height (pixel-exact, COCO order)


def class_components(mask: np.ndarray, skip: Sequence[int] = (255,)) -> list[Component]:
    """Every 4-connected component of every class in ``mask`` (classes in ``skip`` left out).

    Components are ordered by class index, then by raster order of their first pixel.
    """
    comps, n = label_components(mask, ignore=skip)
    if n == 0:
        return []
    flat = comps.ravel()
    order = np.argsort(flat, kind="stable")
    counts = np.bincount(flat, minlength=n + 1)
    bounds = np.concatenate([[0], np.cumsum(counts)])
    w = mask.shape[1]
    out: list[Component] = []
    for k in range(1, n + 1):
        idx = order[bounds[k] : bounds[k + 1]]
        ys, xs = np.divmod(idx, w)
        cls = int(mask.flat[idx[0]])
        # Scatter the component's own pixels: far cheaper than comparing the whole map per component.
        m = np.zeros(mask.shape, dtype=bool)
        m.flat[idx] = True
        x0, y0 = int(xs.min()), int(ys.min())
        out.append(
            Component(
                class_index=cls,
                mask=m,
                area=int(idx.size),
                bbox=(x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1),
            )
        )
    out.sort(key=lambda c: (c.class_index, c.bbox[1], c.bbox[0]))
    return out


def mask_bbox(binary: np.ndarray) -> tuple[int, int, int, int]:
    """Pixel-exact COCO bbox ``(x, y, w, h)`` of a binary mask; zeros when empty."""
    ys, xs = np.nonzero(binary)
    if ys.size == 0:
        return (0, 0, 0, 0)
    x0, y0 = int(xs.min()), int(ys.min())
    return (x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1)


# --------------------------------------------------------------------------
# RLE
# --------------------------------------------------------------------------


def _decode(rle: dict[str, Any]) -> np.ndarray:
    import warnings

    from pycocotools import mask as mask_utils

    # pycocotools 2.0.x trips numpy 2's __array__(copy=...) deprecation on every decode;
    # it is harmless and would drown real warnings.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rle).astype(bool)


def mask_to_rle(binary: np.ndarray) -> dict[str, Any]:
    """Encode a binary mask as compressed COCO RLE with ``counts`` as ``str``."""
    from pycocotools import mask as mask_utils

    arr = np.asfortranarray(np.asarray(binary, dtype=np.uint8))
    rle = mask_utils.encode(arr)
    counts = rle["counts"]
    return {
        "size": [int(rle["size"][0]), int(rle["size"][1])],
        "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts,
    }


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    """Decode COCO RLE (compressed str/bytes counts or an uncompressed counts list) to bool."""
    from pycocotools import mask as mask_utils

    h, w = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, list):
        compressed = mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)
    else:
        compressed = {"size": [h, w], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return _decode(compressed)


def polygons_to_mask(polygons: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """Rasterise COCO polygons (flat ``[x0, y0, x1, y1, ...]`` lists) the way pycocotools does; union.

    Each polygon is first clipped to a window just around the image (exact for every pixel
    inside it): pycocotools walks every unit step of an edge, so coordinates of 1e8
    made it allocate without bound or crash the process.
    """
    from pycocotools import mask as mask_utils

    from .errors import AtrousReadError
    from .formats.guards import clip_polygon

    clipped = []
    for p in polygons:
        xy = np.asarray(list(map(float, p)), dtype=np.float64)
        if len(xy) % 2 or not np.isfinite(xy).all():
            raise AtrousReadError("a polygon has an odd number of coordinates or one that is not a finite number")
        xy = clip_polygon(xy.reshape(-1, 2), width, height)
        if len(xy) >= 3:
            clipped.append(xy.ravel().tolist())
    if not clipped:
        return np.zeros((height, width), dtype=bool)
    rles = mask_utils.frPyObjects(clipped, height, width)
    return _decode(mask_utils.merge(rles))


# --------------------------------------------------------------------------
# polygons
# --------------------------------------------------------------------------

# Directions as (dx, dy) with y pointing down; index order is clockwise on screen.
_DIRS = ((1, 0), (0, 1), (-1, 0), (0, -1))  # east, south, west, north


def _trace_loops(binary: np.ndarray) -> list[list[tuple[int, int]]]:
    """Closed loops of pixel-square edges around a binary mask.

    Each pixel's boundary edges are directed clockwise (on screen), so outer
    outlines come out clockwise and holes counter-clockwise. Where two pixels of
    the region touch only at a corner, the walk turns right, which keeps
    4-connected parts in separate loops.
    """
    m = np.pad(np.asarray(binary, dtype=bool), 1)
    # Edges keyed by start vertex (x, y) in the padded frame -> list of direction indices.
    out: dict[tuple[int, int], list[int]] = {}
    inner = m[1:-1, 1:-1]
    specs = (
        (m[:-2, 1:-1], 0, 0, 0),  # top edge: starts at (c, r), goes east
        (m[1:-1, 2:], 1, 1, 0),  # right edge: starts at (c+1, r), goes south
        (m[2:, 1:-1], 2, 1, 1),  # bottom edge: starts at (c+1, r+1), goes west
        (m[1:-1, :-2], 3, 0, 1),  # left edge: starts at (c, r+1), goes north
    )
    for neighbour, d, ox, oy in specs:
        rs, cs = np.nonzero(inner & ~neighbour)
        for r, c in zip(rs.tolist(), cs.tolist()):
            out.setdefault((c + ox, r + oy), []).append(d)
    loops: list[list[tuple[int, int]]] = []
    while out:
        # Start on a vertex with a single outgoing edge when there is one, so the
        # right-turn rule decides every pinch vertex.
        start = next((k for k, ds in out.items() if len(ds) == 1), None) or next(iter(out))
        d = (out[start][0] + 3) % 4  # pretend we arrived turning into it
        loop: list[tuple[int, int]] = []
        v = start
        while True:
            dirs = out.get(v)
            if dirs is None:
                break
            if len(dirs) > 1:
                # Pinch vertex: prefer a right turn, then straight, then left.
                for turn in (1, 0, 3):
                    if (d + turn) % 4 in dirs:
                        d = (d + turn) % 4
                        break
            else:
                d = dirs[0]
            dirs.remove(d)
            if not dirs:
                del out[v]
            loop.append(v)
            dx, dy = _DIRS[d]
            v = (v[0] + dx, v[1] + dy)
            if v == start:
                break
        loops.append(loop)
    return loops


def _simplify(loop: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Drop vertices where the outline goes straight on (keeps the corners)."""
    n = len(loop)
    keep = []
    for i in range(n):
        px, py = loop[i - 1]
        x, y = loop[i]
        nx, ny = loop[(i + 1) % n]
        if (x - px) * (ny - y) - (y - py) * (nx - x) != 0:
            keep.append(loop[i])
    return keep


def _signed_area(loop: Sequence[tuple[int, int]]) -> float:
    s = 0
    n = len(loop)
    for i in range(n):
        x0, y0 = loop[i]
        x1, y1 = loop[(i + 1) % n]
        s += x0 * y1 - x1 * y0
    return s / 2.0


@dataclass(frozen=True)
class PolygonResult:
    """Polygons of one binary mask. ``exact`` is False when they cannot reproduce it (holes)."""

    polygons: list[list[float]]
    exact: bool
    has_holes: bool


def mask_to_polygons(binary: np.ndarray) -> PolygonResult:
    """Outline a binary mask with polygons on pixel-square edges (COCO flat lists).

    Outer outlines become polygons; holes are detected (counter-clockwise loops)
    but left out, since COCO unites the polygons of an annotation, so such a mask
    is returned with ``exact=False``. Without holes, :func:`polygons_to_mask`
    of the result gives back ``binary`` exactly.
    """
    binary = np.asarray(binary, dtype=bool)
    if not binary.any():
        return PolygonResult([], True, False)
    ys, xs = np.nonzero(binary)
    y0, x0 = int(ys.min()), int(xs.min())
    crop = binary[y0 : int(ys.max()) + 1, x0 : int(xs.max()) + 1]
    polys: list[list[float]] = []
    holes = False
    for loop in _trace_loops(crop):
        pts = _simplify(loop)
        if len(pts) < 3:
            continue
        if _signed_area(pts) < 0:  # counter-clockwise on screen: a hole
            holes = True
            continue
        flat: list[float] = []
        for vx, vy in pts:
            # Loop vertices are relative to the crop; the offset restores image coordinates.
            flat.extend((float(vx + x0), float(vy + y0)))
        polys.append(flat)
    return PolygonResult(polys, not holes, holes)


def polygon_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two binary masks (1.0 when both are empty)."""
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    union = np.count_nonzero(a | b)
    if union == 0:
        return 1.0
    return np.count_nonzero(a & b) / union
