"""The editor's smart tools as pure functions: magic wand, superpixels, GrabCut.

Qt-free and torch-free. Each tool turns image pixels into "a boolean region
inside a :class:`Box`", the shape :func:`annotation.paint.paint_region` takes,
so the GUI applies a result through the one paint path (class lock, one undo
step) exactly like the fill tool.

OpenCV (``floodFill``, ``grabCut``) and scikit-image (SLIC) are imported inside
the functions: the app's first window and the headless commands never load them.

Every function accepts what an image can be in memory: (H, W) greyscale,
(H, W, 1|3|4) channels, uint8, uint16 or float; :func:`as_rgb8` normalises it to
the 8-bit RGB the algorithms want, the way :mod:`annotation.imageio` does for files.

Sizes: the wand works at full resolution (``floodFill`` takes ~0.15 s on a
uniform 60-megapixel image). Superpixels are computed on a copy whose longest
side is at most :data:`SUPERPIXEL_MAX_SIDE` and mapped back by nearest
neighbour; GrabCut runs on a crop around the box, downscaled to at most
:data:`GRABCUT_MAX_PIXELS`, so both answer in bounded time on any image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

import numpy as np

from .errors import AtrousError
from .paint import Box
from .regions import _pixel

__all__ = [
    "GRABCUT_MAX_PIXELS",
    "GRANULARITIES",
    "SUPERPIXEL_MAX_SIDE",
    "SmartToolError",
    "Stroke",
    "SuperpixelMap",
    "as_rgb8",
    "grabcut",
    "superpixels",
    "wand_region",
    "work_shape",
]

#: Superpixels are computed on a copy whose longest side is at most this.
SUPERPIXEL_MAX_SIDE = 1024
#: Roughly how many superpixels each granularity asks SLIC for.
GRANULARITIES: dict[str, int] = {"coarse": 150, "medium": 600, "fine": 2000}
#: GrabCut works on a crop of at most this many pixels (keeps it under ~0.3 s on 2 cores).
GRABCUT_MAX_PIXELS = 150 * 150
#: The crop around a GrabCut box reaches this fraction of the box beyond it (background samples).
GRABCUT_MARGIN = 0.15

#: A stroke: its points in editing coordinates (pixel centres on integers) and its radius in pixels.
Stroke: TypeAlias = "tuple[Sequence[tuple[float, float]], float]"


class SmartToolError(AtrousError):
    """A smart tool was given something it cannot work on (the message says what)."""


# --------------------------------------------------------------------------- input


def as_rgb8(image: np.ndarray) -> np.ndarray:
    """``image`` as a C-contiguous (H, W, 3) uint8 array (a view when it already is one).

    Greyscale is repeated to three channels, alpha is dropped, and 16-bit or
    float images are stretched from their own min..max to 0..255 (the rule
    :func:`annotation.imageio.load_image` applies to files).
    """
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 3 and a.shape[2] in (3, 4):
        a = a[:, :, :3]
    elif a.ndim != 2:
        raise SmartToolError(f"an image is (H, W) or (H, W, 1|3|4) pixels, got shape {a.shape}")
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise SmartToolError(f"the image is empty ({a.shape[1]}x{a.shape[0]})")
    if a.dtype != np.uint8:
        if a.dtype == bool:
            a = a.astype(np.uint8) * 255
        elif np.issubdtype(a.dtype, np.integer) and a.size and a.min() >= 0 and a.max() <= 255:
            a = a.astype(np.uint8)
        else:
            f = a.astype(np.float64)
            lo, hi = float(np.nanmin(f)), float(np.nanmax(f))
            scale = 255.0 / (hi - lo) if hi > lo else 0.0
            a = np.clip(np.nan_to_num((f - lo) * scale + 0.5), 0, 255).astype(np.uint8)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    return np.ascontiguousarray(a)


def work_shape(height: int, width: int, max_side: int) -> tuple[int, int]:
    """The (height, width) an image is worked on when its longest side may be at most ``max_side``."""
    s = min(1.0, max_side / max(height, width, 1))
    return max(1, round(height * s)), max(1, round(width * s))


def _nearest_index(full: int, small: int) -> np.ndarray:
    """For each of ``full`` pixels along an axis, the ``small``-grid pixel whose area holds its centre."""
    idx = ((np.arange(full, dtype=np.float64) + 0.5) * (small / full)).astype(np.int64)
    return np.minimum(idx, small - 1)


def _tight(region: np.ndarray, origin: tuple[int, int]) -> tuple[Box, np.ndarray] | None:
    """Crop a bool region (placed at ``origin`` = (y, x)) to its set pixels; None when empty."""
    rows = np.flatnonzero(region.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(region.any(axis=0))
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    box = Box(origin[0] + r0, origin[1] + c0, origin[0] + r1, origin[1] + c1)
    return box, np.ascontiguousarray(region[r0:r1, c0:c1])


# --------------------------------------------------------------------------- magic wand


def wand_region(image: np.ndarray, x: float, y: float, tolerance: float) -> tuple[Box, np.ndarray] | None:
    """The 4-connected region of pixels whose colour is within ``tolerance`` of the pixel at (x, y).

    Each channel of a member differs from the clicked pixel's by at most
    ``tolerance`` (0..255; OpenCV's fixed-range flood fill), so the region
    grows monotonically with the tolerance. Returns the region's box and a bool
    array of its shape, or ``None`` when (x, y) is outside the image.
    """
    import cv2

    rgb = as_rgb8(image)
    hit = _pixel(x, y, rgb.shape[:2])
    if hit is None:
        return None
    if not rgb.flags.writeable:
        rgb = rgb.copy()  # floodFill wants a writable image even when it only writes the mask
    r, c = hit
    h, w = rgb.shape[:2]
    t = float(min(max(tolerance, 0.0), 255.0))
    mask = np.zeros((h + 2, w + 2), np.uint8)
    flags = 4 | cv2.FLOODFILL_MASK_ONLY | cv2.FLOODFILL_FIXED_RANGE | (1 << 8)
    try:
        _, _, _, rect = cv2.floodFill(rgb, mask, (c, r), (0, 0, 0), (t, t, t), (t, t, t), flags)
    except cv2.error as e:
        raise SmartToolError(f"the magic wand failed on this image: {e.err or e}") from e
    rx, ry, rw, rh = (int(v) for v in rect)
    box = Box(ry, rx, ry + rh, rx + rw)
    region = mask[1 + box.y0 : 1 + box.y1, 1 + box.x0 : 1 + box.x1].astype(bool)
    return box, region


# --------------------------------------------------------------------------- superpixels


@dataclass(eq=False)
class SuperpixelMap:
    """Superpixel labels of one image, kept at the working size and mapped to full size on demand.

    ``labels`` is (h, w) int32, ids ``0..count-1``; ``shape`` is the full image's
    (H, W). Full pixel (r, c) belongs to superpixel ``labels[rows[r], cols[c]]``
    (nearest neighbour), so a 60-megapixel image costs no full-size label array.
    """

    labels: np.ndarray
    shape: tuple[int, int]
    granularity: str
    rows: np.ndarray = field(init=False, repr=False)
    cols: np.ndarray = field(init=False, repr=False)
    _boxes: list | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        h, w = self.labels.shape
        self.rows = _nearest_index(self.shape[0], h)
        self.cols = _nearest_index(self.shape[1], w)

    @property
    def count(self) -> int:
        return int(self.labels.max()) + 1 if self.labels.size else 0

    def ids_in(self, box: Box, region: np.ndarray | None = None) -> np.ndarray:
        """The ids of the superpixels under ``region`` of the full-size ``box`` (sorted)."""
        sub = self.labels[np.ix_(self.rows[box.y0 : box.y1], self.cols[box.x0 : box.x1])]
        return np.unique(sub if region is None else sub[region])

    def region_of(self, ids: Sequence[int] | np.ndarray) -> tuple[Box, np.ndarray] | None:
        """The full-size pixels of the given superpixels as (box, bool region), or None for no ids."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if ids.size == 0:
            return None
        if self._boxes is None:
            from scipy import ndimage

            self._boxes = ndimage.find_objects(self.labels + 1)
        spans = [self._boxes[i] for i in ids.tolist() if 0 <= i < len(self._boxes) and self._boxes[i] is not None]
        if not spans:
            return None
        sy0, sy1 = min(s[0].start for s in spans), max(s[0].stop for s in spans)
        sx0, sx1 = min(s[1].start for s in spans), max(s[1].stop for s in spans)
        chosen = np.zeros(self.count, dtype=bool)
        chosen[ids[(ids >= 0) & (ids < self.count)]] = True
        small = chosen[self.labels[sy0:sy1, sx0:sx1]]
        # Full rows/columns whose nearest small pixel lies in the span (the maps are monotonic).
        r0, r1 = int(np.searchsorted(self.rows, sy0)), int(np.searchsorted(self.rows, sy1))
        c0, c1 = int(np.searchsorted(self.cols, sx0)), int(np.searchsorted(self.cols, sx1))
        full = small[np.ix_(self.rows[r0:r1] - sy0, self.cols[c0:c1] - sx0)]
        return _tight(full, (r0, c0))

    def boundaries(self) -> np.ndarray:
        """Bool (h, w) map of working-size pixels that differ from their right or lower neighbour."""
        lab = self.labels
        edge = np.zeros(lab.shape, dtype=bool)
        edge[:-1, :] |= lab[:-1, :] != lab[1:, :]
        edge[:, :-1] |= lab[:, :-1] != lab[:, 1:]
        return edge


def load_superpixel_library() -> None:
    """Import scikit-image's segmentation now, in the calling thread.

    The app calls this in its GUI thread before the first superpixel job. Imported first
    in a worker thread, scikit-image's lazy loader parses its stubs with ``ast`` while the
    GUI thread may be collecting garbage, and CPython 3.11 before 3.11.9 can crash there
    (seen here on 3.11.7 in about 1 run in 6 of the smart-tool tests; CPython gh-106905,
    lazy_loader #88). Later calls cost a dictionary lookup.
    """
    import skimage.segmentation  # noqa: F401


def superpixels(
    image: np.ndarray, granularity: str = "medium", *, max_side: int = SUPERPIXEL_MAX_SIDE
) -> SuperpixelMap:
    """SLIC superpixels of ``image`` at ``granularity`` (``coarse``, ``medium`` or ``fine``).

    An image whose longest side exceeds ``max_side`` is shrunk first (area
    averaging) and the labels stay at that size; :class:`SuperpixelMap` maps
    them back to full resolution by nearest neighbour. Takes about a second
    on 2 CPU cores at 1024 px, independent of the image's own size.
    """
    if granularity not in GRANULARITIES:
        raise SmartToolError(f"unknown superpixel granularity {granularity!r}; use one of {', '.join(GRANULARITIES)}")
    rgb = as_rgb8(image)
    h, w = rgb.shape[:2]
    hs, ws = work_shape(h, w, max_side)
    if hs * ws < 4:
        return SuperpixelMap(np.zeros((hs, ws), np.int32), (h, w), granularity)
    import cv2
    from skimage.segmentation import slic

    work = rgb if (hs, ws) == (h, w) else cv2.resize(rgb, (ws, hs), interpolation=cv2.INTER_AREA)
    n = min(GRANULARITIES[granularity], hs * ws)
    labels = slic(work, n_segments=n, compactness=10.0, start_label=0, channel_axis=-1)
    labels = np.ascontiguousarray(labels, dtype=np.int32)
    # SLIC numbers its segments densely from 0 on every input we give it; make sure of it.
    uniq = np.unique(labels)
    if uniq.size != int(labels.max()) + 1:
        labels = np.searchsorted(uniq, labels).astype(np.int32)
    return SuperpixelMap(labels, (h, w), granularity)


# --------------------------------------------------------------------------- GrabCut


def _grabcut_crop(box: Box, shape: tuple[int, int], margin: float) -> Box:
    """``box`` grown by ``margin`` of its size (at least 8 px) on every side, clipped to the image."""
    my = max(8, math.ceil(box.height * margin))
    mx = max(8, math.ceil(box.width * margin))
    return Box(max(0, box.y0 - my), max(0, box.x0 - mx), min(shape[0], box.y1 + my), min(shape[1], box.x1 + mx))


def grabcut(
    image: np.ndarray,
    box: Box,
    fg_strokes: Sequence[Stroke] = (),
    bg_strokes: Sequence[Stroke] = (),
    *,
    iterations: int = 3,
    max_pixels: int = GRABCUT_MAX_PIXELS,
) -> tuple[Box, np.ndarray] | None:
    """Cut the object inside ``box`` out of ``image`` with OpenCV's GrabCut.

    Pixels outside the box are background; inside it, the algorithm decides,
    except under the strokes: ``fg_strokes`` are surely the object,
    ``bg_strokes`` surely not. It runs on a crop around the box shrunk to at
    most ``max_pixels`` and the answer is scaled back (bilinear, then
    thresholded) to full resolution. Returns the object as (box, bool region)
    inside ``box``, or ``None`` when nothing is left (a box under 2 pixels
    wide, or strokes that leave no object). Stateless: a refinement is the
    same call with more strokes.
    """
    import cv2

    rgb = as_rgb8(image)
    h, w = rgb.shape[:2]
    clipped = box.intersection(Box.full((h, w)))
    if clipped is None or clipped.height < 2 or clipped.width < 2:
        return None
    box = clipped
    crop = _grabcut_crop(box, (h, w), GRABCUT_MARGIN)
    s = min(1.0, math.sqrt(max_pixels / crop.area))
    wh, ww = max(2, round(crop.height * s)), max(2, round(crop.width * s))
    sy, sx = wh / crop.height, ww / crop.width
    patch = rgb[crop.slices]
    work = patch if (wh, ww) == crop.shape else cv2.resize(patch, (ww, wh), interpolation=cv2.INTER_AREA)
    work = np.ascontiguousarray(work)

    def to_work(px: float, py: float) -> tuple[int, int]:
        # editing coords -> continuous crop coords -> work pixel
        return round((px + 0.5 - crop.x0) * sx - 0.5), round((py + 0.5 - crop.y0) * sy - 0.5)

    mask = np.full((wh, ww), cv2.GC_BGD, np.uint8)
    by0, bx0 = math.floor((box.y0 - crop.y0) * sy), math.floor((box.x0 - crop.x0) * sx)
    by1, bx1 = math.ceil((box.y1 - crop.y0) * sy), math.ceil((box.x1 - crop.x0) * sx)
    mask[by0:by1, bx0:bx1] = cv2.GC_PR_FGD
    for strokes, value in ((bg_strokes, cv2.GC_BGD), (fg_strokes, cv2.GC_FGD)):
        for points, radius in strokes:
            pts = [to_work(px, py) for px, py in points]
            thick = max(1, round(2 * radius * min(sx, sy)))
            for a, b in zip(pts, pts[1:] or pts):
                cv2.line(mask, a, b, int(value), thick)
    if not ((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)).any():
        return None
    if not ((mask == cv2.GC_BGD) | (mask == cv2.GC_PR_BGD)).any():
        # The box covers the whole image: the image's rim is the only background evidence.
        inner = mask[1:-1, 1:-1].copy()
        mask[...] = cv2.GC_BGD
        mask[1:-1, 1:-1] = inner
    fixed = (mask == cv2.GC_FGD) | (mask == cv2.GC_BGD)
    if not fixed.all():
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        try:
            cv2.grabCut(work, mask, None, bgd, fgd, max(1, int(iterations)), cv2.GC_INIT_WITH_MASK)
        except cv2.error as e:
            raise SmartToolError(f"GrabCut could not separate this box: {e.err or e}") from e
    fg = ((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)).astype(np.float32)
    if (wh, ww) != crop.shape:
        fg = cv2.resize(fg, (crop.width, crop.height), interpolation=cv2.INTER_LINEAR)
    inside = fg[box.y0 - crop.y0 : box.y1 - crop.y0, box.x0 - crop.x0 : box.x1 - crop.x0] >= 0.5
    return _tight(inside, (box.y0, box.x0))
