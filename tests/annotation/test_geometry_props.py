"""Property tests: mask <-> RLE <-> polygon conversions and connected components."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from annotation.geometry import (
    class_components,
    label_components,
    mask_bbox,
    mask_to_polygons,
    mask_to_rle,
    polygon_iou,
    polygons_to_mask,
    rle_to_mask,
)

FAST = settings(max_examples=60, deadline=None)


def _binary(max_side: int = 24):
    return st.integers(1, max_side).flatmap(
        lambda h: st.integers(1, max_side).flatmap(lambda w: arrays(np.bool_, (h, w)))
    )


def _flood_components(labels: np.ndarray) -> int:
    """Reference: count 4-connected equal-value regions with a plain flood fill."""
    h, w = labels.shape
    seen = np.zeros((h, w), dtype=bool)
    n = 0
    for y in range(h):
        for x in range(w):
            if seen[y, x]:
                continue
            n += 1
            stack = [(y, x)]
            seen[y, x] = True
            while stack:
                cy, cx = stack.pop()
                for ny, nx in ((cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)):
                    if 0 <= ny < h and 0 <= nx < w and not seen[ny, nx] and labels[ny, nx] == labels[cy, cx]:
                        seen[ny, nx] = True
                        stack.append((ny, nx))
    return n


@FAST
@given(_binary())
def test_rle_round_trip_is_exact(m: np.ndarray) -> None:
    rle = mask_to_rle(m)
    assert isinstance(rle["counts"], str)
    assert rle["size"] == [m.shape[0], m.shape[1]]
    assert np.array_equal(rle_to_mask(rle), m)


@FAST
@given(_binary())
def test_uncompressed_rle_decodes_like_compressed(m: np.ndarray) -> None:
    # Build COCO's uncompressed counts by hand (column-major runs, starting with zeros).
    flat = m.T.ravel().astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts = [0] + counts
    assert np.array_equal(rle_to_mask({"size": list(m.shape), "counts": counts}), m)


@FAST
@given(arrays(np.uint8, st.tuples(st.integers(1, 16), st.integers(1, 16)), elements=st.integers(0, 3)))
def test_components_match_flood_fill_and_partition(labels: np.ndarray) -> None:
    comps, n = label_components(labels)
    assert n == _flood_components(labels)
    assert comps.min() == 1 and comps.max() == n
    for c in class_components(labels, skip=()):
        assert np.all(labels[c.mask] == c.class_index)
        assert c.area == int(c.mask.sum())
        assert c.bbox == mask_bbox(c.mask)
    # Components cover every pixel exactly once.
    total = sum(c.area for c in class_components(labels, skip=()))
    assert total == labels.size


@FAST
@given(arrays(np.uint8, st.tuples(st.integers(1, 20), st.integers(1, 20)), elements=st.integers(0, 2)))
def test_polygons_exact_for_components_without_holes(labels: np.ndarray) -> None:
    h, w = labels.shape
    for c in class_components(labels, skip=()):
        res = mask_to_polygons(c.mask)
        back = polygons_to_mask(res.polygons, h, w)
        if res.exact:
            assert np.array_equal(back, c.mask)
            assert all(len(p) >= 6 and len(p) % 2 == 0 for p in res.polygons)
        else:
            assert res.has_holes
            # The outer outline still covers the component.
            assert np.all(back[c.mask])


def test_hole_is_flagged_and_outline_covers_it() -> None:
    ring = np.ones((5, 5), dtype=bool)
    ring[2, 2] = False
    res = mask_to_polygons(ring)
    assert not res.exact and res.has_holes
    back = polygons_to_mask(res.polygons, 5, 5)
    assert polygon_iou(back, ring) == pytest.approx(24 / 25)


def test_diagonal_pixels_are_separate_components() -> None:
    labels = np.array([[1, 0], [0, 1]], dtype=np.uint8)
    comps = [c for c in class_components(labels, skip=(0,))]
    assert len(comps) == 2
    for c in comps:
        assert np.array_equal(polygons_to_mask(mask_to_polygons(c.mask).polygons, 2, 2), c.mask)


def test_empty_and_full_masks() -> None:
    empty = np.zeros((3, 4), dtype=bool)
    assert mask_to_polygons(empty).polygons == []
    assert mask_bbox(empty) == (0, 0, 0, 0)
    full = np.ones((3, 4), dtype=bool)
    res = mask_to_polygons(full)
    assert res.exact and res.polygons == [[0.0, 0.0, 4.0, 0.0, 4.0, 3.0, 0.0, 3.0]]
