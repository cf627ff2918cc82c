"""Paint operations (annotation.editing): exactness against brute-force references, and locks.

Undo, redo and their memory are in test_history.py."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from annotation import regions as editing  # the fill's run-walk threshold lives in annotation.regions
from annotation.editing import (
    BACKGROUND,
    MIN_RADIUS,
    VOID,
    Box,
    PaintResult,
    accept_region,
    brush_segment,
    connected_region,
    fill,
    paint_region,
    polygon,
)

# --------------------------------------------------------------------------- brute-force references


def seg_distance(x0: float, y0: float, x1: float, y1: float, shape: tuple[int, int]) -> np.ndarray:
    """Distance from every pixel centre to the segment, the slow obvious way."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    dx, dy = x1 - x0, y1 - y0
    l2 = dx * dx + dy * dy
    t = np.zeros_like(xx) if l2 == 0 else np.clip(((xx - x0) * dx + (yy - y0) * dy) / l2, 0, 1)
    return np.hypot(xx - x0 - t * dx, yy - y0 - t * dy)


def flood_reference(labels: np.ndarray, r: int, c: int) -> np.ndarray:
    """4-connected same-class region by a pixel BFS."""
    h, w = labels.shape
    cls = labels[r, c]
    out = np.zeros(labels.shape, dtype=bool)
    out[r, c] = True
    todo = deque([(r, c)])
    while todo:
        y, x = todo.popleft()
        for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
            if 0 <= ny < h and 0 <= nx < w and not out[ny, nx] and labels[ny, nx] == cls:
                out[ny, nx] = True
                todo.append((ny, nx))
    return out


def even_odd_reference(vertices: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Point-in-polygon (even-odd, half-open in y) for every pixel centre."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    inside = np.zeros(shape, dtype=bool)
    n = len(vertices)
    for i in range(n):
        xa, ya = vertices[i]
        xb, yb = vertices[(i + 1) % n]
        if ya == yb:
            continue
        crosses = (ya > yy) != (yb > yy)
        with np.errstate(over="ignore"):  # a near-flat edge: +-inf, never a crossing that counts wrongly
            xc = xa + (yy - ya) * (xb - xa) / (yb - ya)
        inside ^= crosses & (xc < xx)
    return inside


def expand(res: PaintResult, shape: tuple[int, int]) -> np.ndarray:
    """A result's changed pixels as a full-size bool map."""
    out = np.zeros(shape, dtype=bool)
    out[res.box.slices] = res.mask()
    return out


def random_labels(rng: np.random.Generator, shape: tuple[int, int], classes: int = 4, block: int = 4) -> np.ndarray:
    """Blocky random classes: regions with real boundaries, not pure noise."""
    small = rng.integers(0, classes, size=(-(-shape[0] // block), -(-shape[1] // block)), dtype=np.uint8)
    big = np.kron(small, np.ones((block, block), dtype=np.uint8))[: shape[0], : shape[1]]
    noise = rng.random(shape) < 0.15
    big[noise] = rng.integers(0, classes, size=int(noise.sum()), dtype=np.uint8)
    return np.ascontiguousarray(big)


# --------------------------------------------------------------------------- Box


def test_box_geometry() -> None:
    b = Box(2, 3, 7, 11)
    assert (b.x, b.y, b.width, b.height, b.shape, b.area) == (3, 2, 8, 5, (5, 8), 40)
    assert Box.from_xywh(3, 2, 8, 5) == b
    assert b.union(Box(0, 10, 3, 20)) == Box(0, 3, 7, 20)
    assert b.intersection(Box(5, 5, 100, 100)) == Box(5, 5, 7, 11)
    assert b.intersection(Box(7, 0, 9, 9)) is None  # half-open: touching is not overlapping
    assert np.zeros((10, 20))[b.slices].shape == b.shape
    with pytest.raises(ValueError):
        Box(5, 0, 4, 1)


# --------------------------------------------------------------------------- the paint path


def test_paint_region_tight_box_old_values_and_noop() -> None:
    labels = np.zeros((10, 12), dtype=np.uint8)
    labels[4, 5] = 7
    region = np.zeros((6, 6), dtype=bool)
    region[2:4, 1:3] = True  # pixels (4..5, 5..6) of the map
    res = paint_region(labels, Box(2, 4, 8, 10), region, 3)
    assert res is not None
    assert res.box == Box(4, 5, 6, 7)
    assert res.changed is None  # the whole tight box changed
    assert res.old_values.tolist() == [7, 0, 0, 0]
    assert labels[4:6, 5:7].tolist() == [[3, 3], [3, 3]]
    assert int((labels == 3).sum()) == 4
    # Painting the same again changes nothing and says so.
    assert paint_region(labels, Box(2, 4, 8, 10), region, 3) is None


def test_paint_region_clips_box_outside_map() -> None:
    labels = np.zeros((5, 5), dtype=np.uint8)
    res = paint_region(labels, Box(-2, -2, 3, 3), None, 1)
    assert res is not None and res.box == Box(0, 0, 3, 3)
    assert int(labels.sum()) == 9
    assert paint_region(labels, Box(10, 10, 12, 12), None, 1) is None


def test_paint_region_rejects_bad_input() -> None:
    labels = np.zeros((5, 5), dtype=np.uint8)
    with pytest.raises(ValueError):
        paint_region(labels, Box(0, 0, 2, 2), np.ones((3, 3), bool), 1)
    with pytest.raises(ValueError):
        paint_region(labels, Box(0, 0, 2, 2), None, 256)
    with pytest.raises(TypeError):
        paint_region(labels.astype(np.int32), Box(0, 0, 2, 2), None, 1)


# --------------------------------------------------------------------------- brush


@pytest.mark.parametrize(
    ("x0", "y0", "x1", "y1", "radius"),
    [
        (3.2, 4.7, 57.9, 38.1, 5.3),  # diagonal
        (10.4, 20.6, 50.3, 20.6, 3.7),  # horizontal
        (30.25, 2.5, 30.25, 45.5, 2.2),  # vertical
        (20.3, 20.1, 20.3, 20.1, 6.6),  # a dab
        (-10.0, -5.0, 70.0, 55.0, 4.4),  # sticks out of the image on both ends
    ],
)
def test_brush_matches_distance_definition(x0: float, y0: float, x1: float, y1: float, radius: float) -> None:
    shape = (48, 64)
    labels = np.zeros(shape, dtype=np.uint8)
    res = brush_segment(labels, x0, y0, x1, y1, radius, 2)
    assert res is not None
    d = seg_distance(x0, y0, x1, y1, shape)
    painted = labels == 2
    assert painted[d < radius - 1e-9].all()
    assert not painted[d > radius + 1e-9].any()
    assert (expand(res, shape) == painted).all()


@settings(max_examples=60, deadline=None)
@given(st.floats(-5, 45), st.floats(-5, 45), st.floats(-5, 45), st.floats(-5, 45), st.floats(0.0, 9.0))
def test_brush_property(x0: float, y0: float, x1: float, y1: float, radius: float) -> None:
    shape = (40, 40)
    labels = np.zeros(shape, dtype=np.uint8)
    brush_segment(labels, x0, y0, x1, y1, radius, 1)
    d = seg_distance(x0, y0, x1, y1, shape)
    r = max(radius, MIN_RADIUS)
    painted = labels == 1
    assert painted[d < r - 1e-7].all()
    assert not painted[d > r + 1e-7].any()


def test_fast_stroke_leaves_no_gap() -> None:
    """Two mouse events 400 px apart still paint one unbroken band."""
    labels = np.zeros((300, 500), dtype=np.uint8)
    res = brush_segment(labels, 20.0, 30.0, 460.0, 270.0, 3.0, 5)
    assert res is not None
    region = connected_region(labels, 20, 30)
    assert region is not None
    box, mask = region
    # The component holding the start point reaches the far end point.
    assert box.contains(Box(270, 460, 271, 461)) and mask[270 - box.y0, 460 - box.x0]
    assert int(mask.sum()) == int((labels == 5).sum())
    # Every pixel centre on the straight line between the events is painted.
    t = np.linspace(0, 1, 2000)
    xs = np.rint(20 + t * 440).astype(int)
    ys = np.rint(30 + t * 240).astype(int)
    assert (labels[ys, xs] == 5).all()


def test_dab_of_tiny_radius_paints_pixel_under_cursor() -> None:
    labels = np.zeros((5, 5), dtype=np.uint8)
    brush_segment(labels, 2.3, 1.8, 2.3, 1.8, 0.0, 9)
    assert labels[2, 2] == 9


def test_eraser_is_brush_with_background_or_void() -> None:
    labels = np.full((20, 20), 4, dtype=np.uint8)
    brush_segment(labels, 5, 5, 15, 5, 2, BACKGROUND)
    brush_segment(labels, 5, 15, 15, 15, 2, VOID)
    assert labels[5, 10] == 0 and labels[15, 10] == 255 and labels[10, 10] == 4


# --------------------------------------------------------------------------- fill


def test_fill_is_4_connected_diagonal_not_filled() -> None:
    labels = np.array(
        [
            [1, 0, 0],
            [0, 1, 0],
            [0, 0, 1],
        ],
        dtype=np.uint8,
    )
    res = fill(labels, 0, 0, 7)
    assert res is not None and res.box == Box(0, 0, 1, 1)
    assert labels.tolist() == [[7, 0, 0], [0, 1, 0], [0, 0, 1]]
    # The zeros split by the diagonal are two regions too.
    fill(labels, 2, 0, 3)
    assert labels.tolist() == [[7, 3, 3], [0, 1, 3], [0, 0, 1]]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32 - 1), st.integers(1, 12), st.integers(1, 40), st.integers(1, 3))
def test_fill_matches_pixel_bfs(seed: int, h: int, w: int, classes: int) -> None:
    rng = np.random.default_rng(seed)
    labels = random_labels(rng, (h, w), classes=classes, block=2)
    r, c = int(rng.integers(h)), int(rng.integers(w))
    expect = flood_reference(labels, r, c)
    saved = editing._PYTHON_WALK_MAX_RUNS
    try:
        for limit in (0, 10**9):  # the numpy-frontier walk, then the Python-stack walk
            editing._PYTHON_WALK_MAX_RUNS = limit
            got = connected_region(labels, c, r)
            assert got is not None
            box, mask = got
            full = np.zeros_like(expect)
            full[box.slices] = mask
            assert (full == expect).all()
    finally:
        editing._PYTHON_WALK_MAX_RUNS = saved
    before = labels.copy()
    res = fill(labels, c, r, 200)
    assert res is not None
    assert (labels == np.where(expect, 200, before)).all()


def test_fill_outside_or_same_class_is_noop() -> None:
    labels = np.zeros((4, 4), dtype=np.uint8)
    assert fill(labels, -1, 0, 3) is None
    assert fill(labels, 0, 4, 3) is None
    assert fill(labels, 1, 1, 0) is None
    assert not labels.any()


def test_accept_region_relabels_connected_blob() -> None:
    labels = np.zeros((10, 10), dtype=np.uint8)
    labels[2:5, 2:5] = 6  # pre-labelled blob
    labels[7:9, 7:9] = 6  # another blob of the same class, not connected
    res = accept_region(labels, 3, 3, 2)
    assert res is not None and res.box == Box(2, 2, 5, 5)
    assert (labels[2:5, 2:5] == 2).all() and (labels[7:9, 7:9] == 6).all()


def test_speckled_map_fill_uses_numpy_walk_and_matches() -> None:
    """Above the run threshold the frontier walk takes over; it must agree with the pixel BFS."""
    rng = np.random.default_rng(9)
    labels = (rng.random((300, 400)) < 0.3).astype(np.uint8)  # ~40k runs of class 0
    saved = editing._PYTHON_WALK_MAX_RUNS
    editing._PYTHON_WALK_MAX_RUNS = 1000
    try:
        r, c = map(int, np.argwhere(labels == 0)[0])
        res = fill(labels, c, r, 5)
    finally:
        editing._PYTHON_WALK_MAX_RUNS = saved
    assert res is not None
    expect = flood_reference(np.where(labels == 5, 0, labels), r, c)
    assert ((labels == 5) == expect).all()


def test_full_image_fill_goes_around_an_obstacle() -> None:
    """A whole 6000x4000 fill (its speed is measured in bench/undo_memory.py, not here)."""
    labels = np.zeros((4000, 6000), dtype=np.uint8)
    labels[1000:3000, 2000:2600] = 3  # an obstacle the fill must go around
    res = fill(labels, 10, 10, 1)
    assert res is not None and res.count == 4000 * 6000 - 2000 * 600
    assert (labels[1000:3000, 2000:2600] == 3).all() and (labels == 1).sum() == res.count


# --------------------------------------------------------------------------- polygon


def test_polygon_rectangle_exact_area() -> None:
    labels = np.zeros((20, 20), dtype=np.uint8)
    res = polygon(labels, [(-0.5, -0.5), (9.5, -0.5), (9.5, 4.5), (-0.5, 4.5)], 1)
    assert res is not None and res.box == Box(0, 0, 5, 10)
    assert int((labels == 1).sum()) == 50


def test_polygon_disc_area_close_to_pi_r2() -> None:
    labels = np.zeros((200, 200), dtype=np.uint8)
    a = np.linspace(0, 2 * np.pi, 361)[:-1]
    polygon(labels, np.stack([100 + 60 * np.cos(a), 100 + 60 * np.sin(a)], axis=1), 1)
    area = int((labels == 1).sum())
    assert abs(area - math.pi * 60**2) / (math.pi * 60**2) < 0.01


def test_polygon_even_odd_star_and_degenerate() -> None:
    labels = np.zeros((50, 50), dtype=np.uint8)
    a = np.arange(5) * 4 * np.pi / 5  # a pentagram: its centre is outside under even-odd
    verts = np.stack([25 + 20 * np.sin(a), 25 - 20 * np.cos(a)], axis=1)
    polygon(labels, verts, 1)
    assert labels[25, 25] == 0 and (labels == 1).sum() > 100
    assert (labels == 1).tolist() == even_odd_reference(verts, labels.shape).tolist()
    assert polygon(labels, [(1, 1), (3, 3)], 2) is None  # two points are no polygon
    assert polygon(labels, [(1.1, 1.1), (1.3, 1.1), (1.2, 1.3)], 2) is None  # no centre inside


# Coordinates on a 1/64 grid, as a zoomed-in click or a sub-pixel outline gives them. With
# arbitrary floats the reference's own rounding can disagree with the exact answer: for the
# triangle (-1.85e-28, 0), (-1, 0), (-1, 1) its crossing at row 0 rounds to x = 0.0 and it
# paints pixel (0, 0), whose centre lies right of the whole triangle (see the test below).
_grid = st.integers(-8 * 64, 40 * 64).map(lambda v: v / 64)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(_grid, _grid), min_size=3, max_size=12))
def test_polygon_matches_even_odd_reference(points: list[tuple[float, float]]) -> None:
    shape = (32, 36)
    verts = np.array(points, dtype=np.float64)
    labels = np.zeros(shape, dtype=np.uint8)
    polygon(labels, verts, 1)
    assert ((labels == 1) == even_odd_reference(verts, shape)).all()


def test_polygon_left_of_every_centre_paints_nothing() -> None:
    labels = np.zeros((4, 4), dtype=np.uint8)
    assert polygon(labels, [(-1.8524825392396903e-28, 0.0), (-1.0, 0.0), (-1.0, 1.0)], 1) is None
    assert not labels.any()


# --------------------------------------------------------------------------- locks


def _apply_op(op: str, labels: np.ndarray, value: int, **lock: object) -> PaintResult | None:
    if op == "brush":
        return brush_segment(labels, 2, 2, 27, 17, 6, value, **lock)
    if op == "fill":
        return fill(labels, 0, 0, value, **lock)
    if op == "polygon":
        return polygon(labels, [(-1, -1), (40, -1), (40, 30), (-1, 30)], value, **lock)
    return paint_region(labels, Box(0, 0, 20, 30), None, value, **lock)


OPS = ["brush", "fill", "polygon", "paint_region"]


def _lock_map() -> np.ndarray:
    labels = np.zeros((20, 30), dtype=np.uint8)
    labels[5:15, 5:12] = 1  # a neighbouring class
    labels[8:12, 20:26] = VOID
    labels[0:3, 25:30] = 2
    return labels


LOCKS: list[tuple[dict[str, object], Callable[[np.ndarray], np.ndarray]]] = [
    ({"protect": 1}, lambda b: b != 1),
    ({"protect": [1, VOID]}, lambda b: (b != 1) & (b != VOID)),
    ({"only_over": 0}, lambda b: b == 0),
    ({"only_over": {0, 2}}, lambda b: (b == 0) | (b == 2)),
    ({"only_over": lambda cur: cur != 1}, lambda b: b != 1),
    ({"only_over": lambda cur: cur == 0, "protect": 1}, lambda b: b == 0),
]


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize(
    ("lock", "allowed"), LOCKS, ids=["protect1", "protect1void", "only0", "only0_2", "predicate", "predicate+protect"]
)
def test_lock_never_damages_protected_class(
    op: str, lock: dict[str, object], allowed: Callable[[np.ndarray], np.ndarray]
) -> None:
    labels = _lock_map()
    before = labels.copy()
    res = _apply_op(op, labels, 4, **lock)
    assert res is not None
    assert (labels[before == 1] == 1).all()  # class 1 survives every lock above
    changed = labels != before
    assert changed.any()
    assert not (changed & ~allowed(before)).any()
    assert (expand(res, labels.shape) == changed).all()


@pytest.mark.parametrize("op", OPS)
def test_unlocked_op_does_overwrite(op: str) -> None:
    """Control for the lock tests: without a lock class 1 is damaged (except fill, which stops at it)."""
    labels = _lock_map()
    _apply_op(op, labels, 4)
    damaged = int((labels[_lock_map() == 1] != 1).sum())
    assert (damaged == 0) if op == "fill" else (damaged > 0)
