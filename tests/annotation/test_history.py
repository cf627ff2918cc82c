"""Patch-based undo and redo (annotation.editing, annotation.history): exactness, strokes, bounds, memory."""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from annotation.editing import (
    VOID,
    Box,
    History,
    MaskDocument,
    paint_region,
)
from annotation.history import _PackedMask

from .test_editing import random_labels

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
