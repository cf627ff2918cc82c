"""Paint operations and patch-based undo (annotation.editing): exactness, locks, memory."""

from __future__ import annotations

import gc
import math
import tracemalloc
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
    History,
    MaskDocument,
    PaintResult,
    accept_region,
    brush_segment,
    connected_region,
    fill,
    paint_region,
    polygon,
)
from annotation.history import _PackedMask

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


# --------------------------------------------------------------------------- undo / redo


def _doc_op(op: str, doc: MaskDocument) -> Box | None:
    if op == "brush":
        return doc.brush_segment(3.5, 4.0, 40.2, 25.7, 4.5, 3)
    if op == "eraser":
        return doc.brush_segment(10, 10, 30, 10, 3, VOID)
    if op == "fill":
        return doc.fill(0, 0, 5)
    if op == "accept":
        return doc.accept_region(20, 15, 6)
    if op == "polygon":
        return doc.polygon([(2.3, 3.1), (44.0, 8.2), (30.5, 29.0), (6.0, 25.5)], 2)
    if op == "paint":
        region = np.random.default_rng(1).random((10, 12)) < 0.5
        return doc.paint(Box(5, 5, 15, 17), region, 7)
    if op == "stroke":
        with doc.stroke():
            for i in range(8):
                doc.brush_segment(4 * i, 3 * i, 4 * i + 4, 3 * i + 3, 2.5, 1 + i % 3)
        return Box(0, 0, 1, 1) if doc.history.undo_steps == 1 else None
    raise AssertionError(op)


DOC_OPS = ["brush", "eraser", "fill", "accept", "polygon", "paint", "stroke"]


@pytest.mark.parametrize("op", DOC_OPS)
def test_undo_restores_and_redo_reapplies_exactly(op: str) -> None:
    original = random_labels(np.random.default_rng(7), (32, 48))
    doc = MaskDocument(original)
    box = _doc_op(op, doc)
    assert box is not None
    after = doc.label_map.copy()
    assert not np.array_equal(after, original)
    assert doc.history.undo_steps == 1 and doc.can_undo and not doc.can_redo

    ubox = doc.undo()
    assert ubox is not None
    assert np.array_equal(doc.label_map, original)
    # The dirty box covers every pixel that changed.
    outside = np.ones(original.shape, dtype=bool)
    outside[ubox.slices] = False
    assert not (after != original)[outside].any()
    assert doc.can_redo and not doc.can_undo and doc.undo() is None

    rbox = doc.redo()
    assert rbox == ubox
    assert np.array_equal(doc.label_map, after)
    assert doc.redo() is None


def test_stroke_is_one_step_and_keeps_first_old_value() -> None:
    original = random_labels(np.random.default_rng(3), (40, 40))
    doc = MaskDocument(original)
    doc.begin_stroke()
    b1 = doc.brush_segment(5, 5, 20, 20, 4, 1)
    b2 = doc.brush_segment(20, 20, 35, 5, 4, 2)  # overlaps the first segment near (20, 20)
    b3 = doc.brush_segment(5, 5, 35, 5, 3, 3)  # repaints pixels the stroke already changed
    assert b1 and b2 and b3
    assert doc.history.undo_steps == 0 and doc.history.in_transaction
    box = doc.end_stroke()
    assert box is not None and box.contains(Box(5, 5, 6, 6))
    assert doc.history.undo_steps == 1
    final = doc.label_map.copy()
    doc.undo()
    assert np.array_equal(doc.label_map, original)
    assert doc.history.undo_steps == 0
    doc.redo()
    assert np.array_equal(doc.label_map, final)


def test_stroke_that_ends_where_it_started_records_nothing() -> None:
    doc = MaskDocument(np.zeros((10, 10), dtype=np.uint8))
    with doc.stroke():
        doc.brush_segment(5, 5, 5, 5, 2, 4)
        doc.brush_segment(5, 5, 5, 5, 2, 0)
    assert doc.history.undo_steps == 0 and not doc.can_undo and not doc.dirty


def test_nested_transactions_commit_once() -> None:
    doc = MaskDocument(np.zeros((10, 10), dtype=np.uint8))
    with doc.stroke():
        doc.brush_segment(2, 2, 2, 2, 1, 1)
        with doc.stroke():
            doc.brush_segment(7, 7, 7, 7, 1, 2)
        assert doc.history.undo_steps == 0
    assert doc.history.undo_steps == 1


def test_new_edit_clears_redo_but_noop_does_not() -> None:
    doc = MaskDocument(np.zeros((20, 20), dtype=np.uint8))
    doc.brush_segment(5, 5, 5, 5, 3, 1)
    doc.brush_segment(15, 15, 15, 15, 3, 2)
    doc.undo()
    assert doc.can_redo
    assert doc.brush_segment(15, 15, 15, 15, 3, 0) is None  # changes nothing
    assert doc.can_redo
    doc.fill(0, 0, 4)
    assert not doc.can_redo and doc.redo() is None
    assert doc.history.redo_steps == 0


def test_undo_during_stroke_commits_stroke_first() -> None:
    doc = MaskDocument(np.zeros((20, 20), dtype=np.uint8))
    doc.begin_stroke()
    doc.brush_segment(5, 5, 15, 5, 2, 3)
    assert doc.undo() is not None
    assert not doc.label_map.any()
    assert not doc.history.in_transaction and doc.can_redo
    assert doc.end_stroke() is None  # the mouse release that follows is harmless
    assert doc.can_redo and doc.redo() is not None and doc.label_map.any()


def test_cancel_stroke_restores() -> None:
    original = random_labels(np.random.default_rng(5), (30, 30))
    doc = MaskDocument(original)
    doc.brush_segment(3, 3, 3, 3, 2, 9)
    kept = doc.label_map.copy()
    doc.begin_stroke()
    doc.brush_segment(5, 5, 25, 25, 3, 8)
    doc.fill(0, 29, 7)
    box = doc.cancel_stroke()
    assert box is not None
    assert np.array_equal(doc.label_map, kept)
    assert doc.history.undo_steps == 1 and doc.changed_pixels == int((kept != original).sum())


# --------------------------------------------------------------------------- random sequences


op_strategy = st.one_of(
    st.tuples(
        st.just("brush"),
        st.floats(-4, 30),
        st.floats(-4, 30),
        st.floats(-4, 30),
        st.floats(-4, 30),
        st.floats(0, 6),
        st.integers(0, 4),
    ),
    st.tuples(st.just("fill"), st.integers(0, 25), st.integers(0, 21), st.integers(0, 4)),
    st.tuples(
        st.just("polygon"),
        st.lists(st.tuples(st.floats(-4, 30), st.floats(-4, 30)), min_size=3, max_size=6),
        st.integers(0, 4),
    ),
    st.tuples(st.just("begin")),
    st.tuples(st.just("end")),
)
lock_strategy = st.sampled_from([{}, {"protect": 1}, {"only_over": (0, 2)}, {"only_over": 3, "protect": 3}])


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32 - 1), st.lists(st.tuples(op_strategy, lock_strategy), max_size=25))
def test_random_edit_sequences_undo_and_redo_exactly(seed: int, ops: list[tuple[tuple, dict]]) -> None:
    original = random_labels(np.random.default_rng(seed), (22, 26), classes=4)
    doc = MaskDocument(original)
    snapshots = [original.copy()]  # the state after each committed step
    for (op, *args), lock in ops:
        if op == "begin":
            doc.begin_stroke()
            continue
        if op == "end":
            if doc.history.in_transaction:
                doc.end_stroke()
        elif op == "brush":
            doc.brush_segment(*args[:5], args[5], **lock)
        elif op == "fill":
            doc.fill(args[0], args[1], args[2], **lock)
        else:
            doc.polygon(args[0], args[1], **lock)
        if not doc.history.in_transaction and doc.history.undo_steps == len(snapshots):
            snapshots.append(doc.label_map.copy())
        assert doc.changed_pixels == int((doc.label_map != original).sum())
    while doc.history.in_transaction:
        doc.end_stroke()
    if doc.history.undo_steps == len(snapshots):
        snapshots.append(doc.label_map.copy())
    assert doc.history.undo_steps == len(snapshots) - 1
    final = doc.label_map.copy()

    for expect in reversed(snapshots[:-1]):
        assert doc.undo() is not None
        assert np.array_equal(doc.label_map, expect)
        assert doc.changed_pixels == int((doc.label_map != original).sum())
    assert doc.undo() is None and not doc.dirty
    for expect in snapshots[1:]:
        assert doc.redo() is not None
        assert np.array_equal(doc.label_map, expect)
    assert np.array_equal(doc.label_map, final)
    assert doc.changed_pixels == int((final != original).sum())


# --------------------------------------------------------------------------- provenance and clean state


def test_changed_pixels_against_baseline_and_dirty_flag() -> None:
    prelabel = np.zeros((30, 30), dtype=np.uint8)
    prelabel[10:20, 10:20] = 2
    doc = MaskDocument(prelabel)
    assert doc.changed_pixels == 0 and not doc.dirty
    doc.polygon([(9.5, 9.5), (14.5, 9.5), (14.5, 19.5), (9.5, 19.5)], 0)  # delete half the pre-label
    assert doc.changed_pixels == 50 and doc.dirty
    doc.mark_clean()
    assert not doc.dirty
    doc.polygon([(9.5, 9.5), (14.5, 9.5), (14.5, 19.5), (9.5, 19.5)], 2)  # put them back
    assert doc.changed_pixels == 0
    doc.fill(0, 0, 1)  # the background, which does not reach the 2s
    assert doc.changed_pixels == 800
    assert doc.dirty
    doc.undo()
    assert doc.dirty and doc.changed_pixels == 0
    doc.undo()
    assert not doc.dirty and doc.changed_pixels == 50
    assert doc.changed_mask().sum() == 50
    rev = doc.revision
    doc.redo()
    assert doc.revision == rev + 1 and doc.dirty


def test_separate_baseline() -> None:
    prelabel = np.zeros((8, 8), dtype=np.uint8)
    current = prelabel.copy()
    current[0, :] = 3
    doc = MaskDocument(current, baseline=prelabel)
    assert doc.changed_pixels == 8
    with pytest.raises(ValueError):
        MaskDocument(current, baseline=np.zeros((4, 4), dtype=np.uint8))


# --------------------------------------------------------------------------- bounds and memory


def test_history_bounded_by_steps() -> None:
    doc = MaskDocument(np.zeros((20, 20), dtype=np.uint8), max_steps=5)
    states = [doc.label_map.copy()]
    for i in range(8):
        doc.brush_segment(2 * i, 2, 2 * i, 2, 1, i + 1)
        states.append(doc.label_map.copy())
    assert doc.history.undo_steps == 5
    for k in range(5):
        assert doc.undo() is not None
        assert np.array_equal(doc.label_map, states[7 - k])
    assert doc.undo() is None  # the three oldest steps were dropped
    assert np.array_equal(doc.label_map, states[3])


def test_history_bounded_by_bytes_keeps_newest() -> None:
    labels = np.zeros((200, 200), dtype=np.uint8)
    hist = History(max_steps=1000, max_bytes=40_000)
    rng = np.random.default_rng(0)
    for i in range(50):
        region = rng.random((100, 100)) < 0.5  # ragged: about 5 kB of old values + 1.25 kB of bits
        hist.record(paint_region(labels, Box(50, 50, 150, 150), region, 1 + i % 3))
        assert hist.nbytes <= 40_000
    assert 1 < hist.undo_steps < 50
    # A single step larger than the cap is still kept, alone.
    hist.record(paint_region(labels, Box(0, 0, 200, 200), None, 9))  # 40,000 mixed old values
    assert hist.undo_steps == 1 and hist.nbytes > 40_000
    assert hist.undo(labels) is not None


def test_nbytes_counts_the_arrays() -> None:
    labels = random_labels(np.random.default_rng(2), (100, 100))
    hist = History()
    res = paint_region(labels, Box(0, 0, 100, 100), np.random.default_rng(3).random((100, 100)) < 0.3, 9)
    assert res is not None
    hist.record(res)
    (rec,) = hist._undo
    arrays = [a for a in (rec.old, rec.new) if isinstance(a, np.ndarray)] + [rec.mask.data]
    assert hist.nbytes >= sum(a.nbytes for a in arrays) >= res.count  # one byte per old value at least


@pytest.mark.parametrize("density", [0.02, 0.5, 1.0])
def test_packed_mask_round_trips(density: float) -> None:
    mask = np.random.default_rng(4).random((37, 53)) < density
    packed = _PackedMask.encode(mask)
    assert np.array_equal(packed.decode(), mask)
    assert packed.nbytes <= (mask.size + 7) // 8


def _stroke(doc: MaskDocument, rng: np.random.Generator, length: float = 200.0, radius: float = 20.0) -> None:
    h, w = doc.shape
    x, y = rng.uniform(radius, w - radius), rng.uniform(radius, h - radius)
    angle = rng.uniform(0, 2 * np.pi)
    steps = 10  # a mouse event every 20 px
    with doc.stroke():
        for _ in range(steps):
            nx, ny = x + length / steps * np.cos(angle), y + length / steps * np.sin(angle)
            doc.brush_segment(x, y, nx, ny, radius, int(rng.integers(1, 6)))
            x, y = nx, ny


def test_memory_of_1000_strokes_under_64_mb() -> None:
    """1,000 typical strokes (radius 20, 200 px) over a multi-class map fit in 64 MB, honestly counted."""
    rng = np.random.default_rng(11)
    small = rng.integers(0, 4, size=(40, 60), dtype=np.uint8)
    doc = MaskDocument(np.kron(small, np.ones((50, 50), dtype=np.uint8)))  # 2000x3000, 50 px tiles
    gc.collect()
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        for _ in range(1000):
            _stroke(doc, rng)
        gc.collect()
        used, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert doc.history.undo_steps == 1000
    accounted = doc.history.nbytes
    measured = used - base
    assert accounted < 64 * 2**20
    assert measured < 64 * 2**20
    # The accounting is honest: within 25% of what the allocator actually holds.
    assert 0.75 * measured <= accounted <= 1.25 * measured + 2**20, (accounted, measured)
    # And patches are much smaller than full copies would be (6 MB each).
    assert accounted < 1000 * doc.label_map.nbytes / 100
