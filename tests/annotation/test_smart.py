"""The smart tools' algorithms (annotation.smart): wand, superpixels, GrabCut, on every kind of image."""

from __future__ import annotations

import time

import numpy as np
import pytest

from annotation.editing import MaskDocument
from annotation.errors import AtrousError
from annotation.paint import Box
from annotation.smart import (
    SUPERPIXEL_MAX_SIDE,
    SmartToolError,
    as_rgb8,
    grabcut,
    superpixels,
    wand_region,
    work_shape,
)

H, W = 40, 60


def scene() -> np.ndarray:
    rgb = np.full((H, W, 3), 30, np.uint8)
    rgb[10:30, 15:45] = (220, 200, 40)
    return rgb


def as_full(result, shape=(H, W)) -> np.ndarray:
    full = np.zeros(shape, bool)
    if result is not None:
        box, region = result
        assert region.shape == box.shape and region.dtype == bool
        full[box.slices] = region
    return full


RECT = np.zeros((H, W), bool)
RECT[10:30, 15:45] = True


# --------------------------------------------------------------------------- input


@pytest.mark.parametrize(
    "image",
    [
        np.full((4, 5), 7, np.uint8),
        np.full((4, 5, 1), 7, np.uint8),
        np.full((4, 5, 4), 7, np.uint8),
        np.full((4, 5, 3), 7, np.uint8),
    ],
    ids=["grey", "grey1", "rgba", "rgb"],
)
def test_as_rgb8_keeps_8_bit_values(image: np.ndarray) -> None:
    out = as_rgb8(image)
    assert out.shape == (4, 5, 3) and out.dtype == np.uint8 and (out == 7).all()


def test_as_rgb8_stretches_16_bit_and_float() -> None:
    img16 = np.array([[1000, 3000], [2000, 1000]], np.uint16)
    out = as_rgb8(img16)
    assert out[0, 0, 0] == 0 and out[0, 1, 0] == 255 and 120 < out[1, 0, 0] < 135
    flat = as_rgb8(np.full((3, 3), 0.5, np.float32))
    assert (flat == 0).all()  # a constant image has nothing to stretch
    assert as_rgb8(np.array([[True, False]]))[0, 0, 0] == 255


@pytest.mark.parametrize("shape", [(4, 5, 2), (4,), (0, 5, 3)])
def test_as_rgb8_refuses_what_is_not_an_image(shape) -> None:
    with pytest.raises(SmartToolError) as e:
        as_rgb8(np.zeros(shape, np.uint8))
    assert isinstance(e.value, AtrousError)
    assert "image" in str(e.value)


# --------------------------------------------------------------------------- wand


def test_wand_selects_the_connected_similar_region() -> None:
    got = as_full(wand_region(scene(), 20, 15, 10))
    np.testing.assert_array_equal(got, RECT)
    # The dark surround, but not the rectangle, from a background click.
    np.testing.assert_array_equal(as_full(wand_region(scene(), 0, 0, 10)), ~RECT)


def test_wand_tolerance_grows_the_region_monotonically() -> None:
    ramp = np.repeat(np.repeat((np.arange(W, dtype=np.uint8) * 4)[None, :, None], H, 0), 3, 2)
    sizes = [int(as_full(wand_region(ramp, 30, 20, t)).sum()) for t in (0, 4, 8, 40, 255)]
    assert sizes == sorted(sizes) and sizes[0] == H and sizes[-1] == H * W
    # Fixed range: within 8 of the clicked value 120 means columns 28..32.
    cols = np.flatnonzero(as_full(wand_region(ramp, 30, 20, 8)).any(axis=0))
    assert cols.tolist() == [28, 29, 30, 31, 32]


def test_wand_outside_the_image_is_none_and_one_pixel_works() -> None:
    assert wand_region(scene(), -3, 5, 10) is None
    assert wand_region(scene(), 5, H + 2, 10) is None
    box, region = wand_region(np.zeros((1, 1), np.uint8), 0, 0, 0)
    assert box == Box(0, 0, 1, 1) and region.tolist() == [[True]]


@pytest.mark.parametrize("kind", ["grey", "rgba", "uint16"])
def test_wand_on_grey_rgba_and_16_bit_images(kind: str) -> None:
    grey = np.full((H, W), 20, np.uint8)
    grey[RECT] = 200
    image = {
        "grey": grey,
        "rgba": np.dstack([scene(), np.full((H, W), 9, np.uint8)]),
        "uint16": grey.astype(np.uint16) * 250,
    }[kind]
    np.testing.assert_array_equal(as_full(wand_region(image, 20, 15, 10)), RECT)


def test_wand_on_a_uniform_image_takes_everything() -> None:
    np.testing.assert_array_equal(
        as_full(wand_region(np.full((H, W, 3), 90, np.uint8), 3, 3, 0)), np.ones((H, W), bool)
    )


def test_wand_on_a_read_only_image() -> None:
    img = scene()
    img.flags.writeable = False
    np.testing.assert_array_equal(as_full(wand_region(img, 20, 15, 10)), RECT)


def test_wand_on_60_megapixels_answers_in_bounded_time() -> None:
    big = np.zeros((6000, 10000, 3), np.uint8)
    big[100:200, 100:300] = 255
    t = time.perf_counter()
    box, region = wand_region(big, 150, 150, 10)
    assert time.perf_counter() - t < 10  # no freeze: about 0.2 s here
    assert box == Box(100, 100, 200, 300) and region.all()


def test_wand_region_paints_through_the_document_with_the_lock() -> None:
    labels = np.zeros((H, W), np.uint8)
    labels[:, 30:] = 2
    doc = MaskDocument(labels)
    box, region = wand_region(scene(), 20, 15, 10)
    doc.paint(box, region, 3, only_over=2)
    assert (doc.label_map[10:30, 30:45] == 3).all() and (doc.label_map[10:30, 15:30] == 0).all()
    assert doc.history.undo_steps == 1


# --------------------------------------------------------------------------- superpixels


def test_downscale_rule() -> None:
    assert work_shape(6000, 10000, SUPERPIXEL_MAX_SIDE) == (614, 1024)
    assert work_shape(1155, 1732, 1024) == (683, 1024)
    assert work_shape(40, 60, 1024) == (40, 60)
    assert work_shape(1, 1, 1024) == (1, 1)
    assert work_shape(1, 100000, 1024) == (1, 1024)


def test_superpixels_partition_the_image_and_follow_edges() -> None:
    sp = superpixels(scene(), "fine")
    assert sp.shape == (H, W) and sp.labels.shape == (H, W)
    areas = [int(as_full(sp.region_of([i])).sum()) for i in range(sp.count)]
    assert sum(areas) == H * W and min(areas) > 0
    # A superpixel inside the rectangle does not leak out of it.
    inside = as_full(sp.region_of(sp.ids_in(Box(20, 30, 21, 31))))
    assert inside[20, 30] and not (inside & ~RECT).any()


def test_granularities_differ_and_unknown_is_refused() -> None:
    yy, xx = np.mgrid[:120, :160]
    wave = (127 + 60 * np.sin(xx / 9.0) + 60 * np.cos(yy / 7.0)).astype(np.uint8)
    img = np.dstack([wave, wave[::-1], wave[:, ::-1]])
    counts = [superpixels(img, g).count for g in ("coarse", "medium", "fine")]
    assert counts[0] < counts[1] < counts[2]
    with pytest.raises(SmartToolError, match="granularity"):
        superpixels(img, "huge")


def test_superpixels_of_a_large_image_are_computed_small_and_mapped_back() -> None:
    img = np.zeros((300, 500, 3), np.uint8)
    img[:, 250:] = 200
    sp = superpixels(img, "coarse", max_side=64)
    assert sp.labels.shape == work_shape(300, 500, 64) == (38, 64)
    full = sp.labels[np.ix_(sp.rows, sp.cols)]  # the nearest-neighbour map to full size
    assert full.shape == (300, 500)
    for i in (0, sp.count // 2, sp.count - 1):
        np.testing.assert_array_equal(as_full(sp.region_of([i]), (300, 500)), full == i)
    # Mapped back, the edge at column 250 stays within one small pixel (500 / 64 < 8 px).
    left = as_full(sp.region_of(sp.ids_in(Box(150, 10, 151, 11))), (300, 500))
    assert not left[:, 258:].any()


def test_superpixels_on_60_megapixels_use_the_downscaled_copy() -> None:
    sp = superpixels(np.zeros((6000, 10000), np.uint8), "coarse")
    assert sp.labels.shape == (614, 1024) and sp.shape == (6000, 10000)
    box, region = sp.region_of([0])
    assert box.y0 == 0 and box.x0 == 0 and region.all()


def test_superpixels_of_tiny_and_uniform_images() -> None:
    one = superpixels(np.zeros((1, 1, 3), np.uint8))
    assert one.count == 1 and as_full(one.region_of([0]), (1, 1)).all()
    two = superpixels(np.zeros((1, 3), np.uint16), "fine")
    assert as_full(two.region_of(range(two.count)), (1, 3)).all()
    flat = superpixels(np.full((H, W, 3), 77, np.uint8), "coarse")
    assert as_full(flat.region_of(range(flat.count))).all()
    assert flat.region_of([]) is None
    assert flat.boundaries().shape == (H, W)


def test_superpixels_on_16_bit_grey_and_rgba() -> None:
    g16 = np.zeros((H, W), np.uint16)
    g16[RECT] = 60000
    sp16 = superpixels(g16, "fine")
    rgba = superpixels(np.dstack([scene(), np.zeros((H, W), np.uint8)]), "fine")
    for sp in (sp16, rgba):
        got = as_full(sp.region_of(sp.ids_in(Box(20, 30, 21, 31))))
        assert got[20, 30] and not (got & ~RECT).any()


# --------------------------------------------------------------------------- GrabCut


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_grabcut_cuts_the_object_out_of_its_box() -> None:
    got = as_full(grabcut(scene(), Box(5, 10, 35, 50)))
    assert iou(got, RECT) > 0.95


def test_grabcut_strokes_force_object_and_background() -> None:
    img = scene()
    img[:, 52:] = 120
    box = Box(5, 10, 35, 58)
    assert not as_full(grabcut(img, box))[20, 54]
    with_fg = as_full(grabcut(img, box, fg_strokes=[([(54, 8), (54, 24)], 2)]))
    assert with_fg[20, 54] and with_fg[20, 30]
    both = as_full(grabcut(img, box, [([(54, 8), (54, 24)], 2)], [([(54, 30), (54, 34)], 2)]))
    assert not both[31:34, 53:56].any() and both[15, 54]


def test_grabcut_on_a_large_image_works_on_a_small_crop_in_time() -> None:
    big = np.full((1200, 1800, 3), 30, np.uint8)
    big[300:900, 500:1300] = (220, 200, 40)
    obj = np.zeros(big.shape[:2], bool)
    obj[300:900, 500:1300] = True
    t = time.perf_counter()
    got = as_full(grabcut(big, Box(200, 400, 1000, 1400)), big.shape[:2])
    assert time.perf_counter() - t < 5  # ~0.2 s on 2 cores
    assert iou(got, obj) > 0.97


@pytest.mark.parametrize("kind", ["grey", "rgba", "uint16"])
def test_grabcut_on_grey_rgba_and_16_bit(kind: str) -> None:
    grey = np.full((H, W), 20, np.uint8)
    grey[RECT] = 200
    image = {
        "grey": grey,
        "rgba": np.dstack([scene(), np.full((H, W), 200, np.uint8)]),
        "uint16": grey * np.uint16(300),
    }[kind]
    assert iou(as_full(grabcut(image, Box(5, 10, 35, 50))), RECT) > 0.9


def test_grabcut_edge_cases() -> None:
    assert grabcut(np.zeros((1, 1, 3), np.uint8), Box(0, 0, 1, 1)) is None  # too small to cut
    assert grabcut(scene(), Box(100, 100, 120, 120)) is None  # outside the image
    assert grabcut(scene(), Box(5, 5, 6, 30)) is None  # one pixel high
    # A uniform image: no edges to find; either nothing or a region inside the box, never an error.
    flat = grabcut(np.full((H, W, 3), 50, np.uint8), Box(5, 5, 30, 40))
    assert flat is None or Box(5, 5, 30, 40).contains(flat[0])
    # A box over the whole image still has background evidence (the image's rim).
    whole = as_full(grabcut(scene(), Box(0, 0, H, W)))
    assert iou(whole, RECT) > 0.9
    # Background strokes over the whole box leave no object.
    assert grabcut(scene(), Box(10, 15, 30, 45), bg_strokes=[([(15, 20), (45, 20)], 30)]) is None
