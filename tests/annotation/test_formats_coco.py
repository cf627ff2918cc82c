"""COCO import/export, checked with pycocotools' own COCO reader."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from annotation.errors import AtrousReadError
from annotation.formats import apply_import
from annotation.formats.coco import export_coco, paint_coco, read_coco
from annotation.formats.maskdir import read_mask_folder
from annotation.geometry import mask_to_rle, polygon_iou
from annotation.masks import read_mask_png
from annotation.project import LabelClass, Project

from ..badfiles import photo
from ..conftest import SharedData

# pycocotools 2.0.x with numpy 2 warns on every decode; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

CLASSES = [LabelClass(0, "background", (0, 0, 0), True), LabelClass(1, "a", (9, 9, 9)), LabelClass(2, "b", (8, 8, 8))]


def _coco(path: Path):
    from pycocotools.coco import COCO

    return COCO(str(path))


def _index_of(coco) -> dict[int, int]:
    return {c["id"]: c["atrous_index"] for c in coco.dataset["categories"]}


@pytest.fixture(scope="module")
def camvid_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ..conftest import shared_dataset

    cam = shared_dataset("camvid_small")
    root = tmp_path_factory.mktemp("camc") / "proj"
    # Train and val together: 74 images.
    apply_import(
        root, read_mask_folder(cam / "train" / "labels", cam / "train" / "images", cam / "CLASSES.txt", void=11)
    )
    apply_import(root, read_mask_folder(cam / "val" / "labels", cam / "val" / "images", cam / "CLASSES.txt", void=11))
    return root


def test_camvid_coco_rle_round_trip_is_exact(camvid_project: Path, tmp_path: Path) -> None:
    with Project.open(camvid_project) as p:
        s = export_coco(p, tmp_path / "c")
        masks = {Path(r.path).stem: p.read_mask(r.id) for r in p.images()}
        names = [c.name for c in p.classes()]
    assert s.images == 74
    coco = _coco(tmp_path / "c" / "annotations.json")
    cats = coco.dataset["categories"]
    assert [c["id"] for c in cats] == list(range(1, 12)) and [c["name"] for c in cats] == names
    assert len(coco.dataset["annotations"]) == s.annotations
    for ann in coco.dataset["annotations"][:300]:
        m = coco.annToMask(ann)
        assert ann["area"] == int(m.sum()) and isinstance(ann["segmentation"]["counts"], str)
        ys, xs = np.nonzero(m)
        assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        assert ann["iscrowd"] == 0
    for im in coco.dataset["images"]:
        ref = masks[Path(im["file_name"]).stem]
        assert (im["height"], im["width"]) == ref.shape
        assert np.array_equal(paint_coco(coco, im["id"], 255, _index_of(coco)), ref)
        assert (tmp_path / "c" / "images" / im["file_name"]).is_file()
    # Re-import is exact, indices and all.
    apply_import(tmp_path / "q", read_coco(tmp_path / "c" / "annotations.json", tmp_path / "c" / "images"))
    with Project.open(tmp_path / "q") as q:
        assert [c.name for c in q.classes()] == names
        for r in q.images():
            assert np.array_equal(q.read_mask(r.id), masks[Path(r.path).stem])


def test_camvid_coco_polygons_iou(camvid_project: Path, tmp_path: Path) -> None:
    with Project.open(camvid_project) as p:
        recs = p.images()[:20]
        keep = {r.id for r in recs}
        for r in p.images():
            if r.id not in keep:
                p.set_status(r.id, "edited")
        s = export_coco(p, tmp_path / "c", polygons=True, statuses=["reviewed"])
        masks = {Path(r.path).stem: p.read_mask(r.id) for r in recs}
        for r in p.images("edited"):
            p.set_status(r.id, "reviewed")
    assert s.images == 20 and s.inexact_polygons > 0
    coco = _coco(tmp_path / "c" / "annotations.json")
    kinds = {type(a["segmentation"]).__name__ for a in coco.dataset["annotations"]}
    assert kinds == {"list", "dict"}  # polygons, plus RLE for components with holes
    worst = 1.0
    for im in coco.dataset["images"]:
        ref = masks[Path(im["file_name"]).stem]
        got = paint_coco(coco, im["id"], 255, _index_of(coco))
        for k in np.unique(ref):
            if k != 255:
                worst = min(worst, polygon_iou(got == k, ref == k))
    assert worst >= 0.98
    print(f"polygon export: min per-class IoU {worst:.4f}")


def test_per_class_and_background_not_a_category(tmp_path: Path) -> None:
    mask = np.zeros((10, 12), np.uint8)
    mask[1:3, 1:3] = 1
    mask[6:8, 6:9] = 1
    mask[4:6, 0:4] = 2
    mask[9, :] = 255
    root = _project_with_mask(tmp_path / "p", mask)
    with Project.open(root) as p:
        export_coco(p, tmp_path / "a")
        export_coco(p, tmp_path / "b", per_class=True)
        export_coco(p, tmp_path / "n", statuses=["new"])
    a, b = _coco(tmp_path / "a" / "annotations.json"), _coco(tmp_path / "b" / "annotations.json")
    assert [c["name"] for c in a.dataset["categories"]] == ["a", "b"]
    assert len(a.dataset["annotations"]) == 3 and len(b.dataset["annotations"]) == 2
    for c in (a, b):
        assert np.array_equal(paint_coco(c, 1, 0, _index_of(c)), mask)
    assert json.loads((tmp_path / "n" / "annotations.json").read_text())["images"] == []


def _project_with_mask(root: Path, mask: np.ndarray, classes: list[LabelClass] = CLASSES) -> Path:
    src = root.parent / f"{root.name}_img"
    src.mkdir(parents=True, exist_ok=True)
    Image.fromarray(photo(*mask.shape)).save(src / "pic.png")
    with Project.create(root, classes=classes) as p:
        p.add_images(src)
        p.save_mask(p.images()[0].id, mask, status="reviewed")
    return root


@settings(max_examples=15, deadline=None)
@given(
    arrays(np.uint8, st.tuples(st.integers(1, 12), st.integers(1, 12)), elements=st.sampled_from([0, 1, 2, 255])),
    st.booleans(),
)
def test_random_masks_round_trip_through_coco(mask: np.ndarray, polygons: bool) -> None:
    with tempfile.TemporaryDirectory() as d:
        root = _project_with_mask(Path(d) / "p", mask)
        with Project.open(root) as p:
            export_coco(p, Path(d) / "out", polygons=polygons)
        coco = _coco(Path(d) / "out" / "annotations.json")
        assert np.array_equal(paint_coco(coco, 1, 0, _index_of(coco)), mask)
        apply_import(Path(d) / "q", read_coco(Path(d) / "out" / "annotations.json", Path(d) / "out" / "images"))
        with Project.open(Path(d) / "q") as q:
            assert np.array_equal(q.read_mask(q.images()[0].id), mask)
            assert q.classes() == [
                LabelClass(c.index, c.name, q.classes()[i].colour, c.is_background) for i, c in enumerate(CLASSES)
            ]


def _write_images(folder: Path) -> None:
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(photo(10, 12, seed=1)).save(folder / "sub" / "one.png")
    Image.fromarray(photo(8, 6, seed=2)).save(folder / "two.png")


def _doc() -> dict:
    rect = np.zeros((10, 12), bool)
    rect[2:6, 2:10] = True
    rle = mask_to_rle(rect)
    unc = np.zeros((8, 6), bool)
    unc[0:4, 0:2] = True
    # Uncompressed column-major counts: 4 ones, 4 zeros, 4 ones, then 36 zeros.
    return {
        "images": [
            {"id": 10, "file_name": "sub/one.png", "width": 12, "height": 10},
            {"id": 11, "file_name": "two.png"},
        ],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 5, "segmentation": rle, "iscrowd": 0},
            {"id": 2, "image_id": 10, "category_id": 7, "segmentation": [[4, 0, 8, 0, 8, 10, 4, 10]], "iscrowd": 0},
            {
                "id": 3,
                "image_id": 11,
                "category_id": 7,
                "segmentation": {"size": [8, 6], "counts": [0, 4, 4, 4, 36]},
                "iscrowd": 1,
            },
        ],
        "categories": [{"id": 5, "name": "five"}, {"id": 7, "name": "seven"}],
    }


def test_coco_import_rules(tmp_path: Path) -> None:
    _write_images(tmp_path / "imgs")
    (tmp_path / "a.json").write_text(json.dumps(_doc()))
    res = read_coco(tmp_path / "a.json", tmp_path / "imgs")
    assert [(c.index, c.name, c.is_background) for c in res.classes] == [
        (0, "background", True),
        (5, "five", False),
        (7, "seven", False),
    ]
    one, two = res.items[0].mask, res.items[1].mask
    expected = np.zeros((10, 12), np.uint8)
    expected[2:6, 2:10] = 5
    expected[0:10, 4:8] = 7  # the later polygon paints over the earlier RLE
    assert np.array_equal(one, expected)
    assert two.tolist() == [[7, 7, 0, 0, 0, 0]] * 4 + [[0] * 6] * 4  # uncompressed RLE, iscrowd painted too
    apply_import(tmp_path / "p", res)
    with Project.open(tmp_path / "p") as p:
        assert [Path(r.path).name for r in p.images()] == ["one.png", "two.png"]


def test_category_ids_past_254_are_renumbered(tmp_path: Path) -> None:
    _write_images(tmp_path / "imgs")
    doc = _doc()
    doc["categories"] = [{"id": 5, "name": "five"}, {"id": 7000, "name": "big"}]
    for a in doc["annotations"]:
        if a["category_id"] == 7:
            a["category_id"] = 7000
    (tmp_path / "a.json").write_text(json.dumps(doc))
    res = read_coco(tmp_path / "a.json", tmp_path / "imgs")
    assert [(c.index, c.name) for c in res.classes] == [(0, "background"), (1, "five"), (2, "big")]


def test_labelme_coco_reproduces_labelme_voc(shared_data: SharedData, tmp_path: Path) -> None:
    base = shared_data("labelme_examples") / "instance_segmentation"
    ref_dir = base / "data_dataset_voc" / "SegmentationClass"
    diffs = {}
    for fill in ("labelme", "coco"):
        res = read_coco(base / "data_dataset_coco" / "annotations.json", polygon_fill=fill)
        assert res.classes[0].name == "_background_" and res.classes[0].is_background
        total = 0
        for item in res.items:
            ref = read_mask_png(ref_dir / f"{item.image_path.stem}.png")
            # labelme's COCO file leaves __ignore__ regions out; compare everywhere else.
            total += int(np.count_nonzero((item.mask != ref) & (ref != 255)))
        diffs[fill] = total
    print(f"labelme COCO vs labelme VOC, differing pixels: {diffs}")
    assert diffs["labelme"] <= 3
    assert diffs["coco"] > diffs["labelme"]  # pycocotools fills polygons thinner
    auto = read_coco(base / "data_dataset_coco" / "annotations.json")
    assert all(
        np.array_equal(a.mask, b.mask)
        for a, b in zip(
            auto.items, read_coco(base / "data_dataset_coco" / "annotations.json", polygon_fill="labelme").items
        )
    )


def test_torchvision_gallery_without_categories_fails_clearly(shared_data: SharedData, tmp_path: Path) -> None:
    src = shared_data("torchvision_gallery") / "coco_tiny"
    with pytest.raises(AtrousReadError, match=r"instances.json: missing required field 'categories'"):
        read_coco(src / "instances.json", src / "images")


BAD_CASES = {
    "truncated": (lambda d: json.dumps(d)[:40], "invalid or truncated JSON"),
    "latin1": (None, "not UTF-8"),
    "images not list": (lambda d: json.dumps({**d, "images": {}}), "'images' must be a list"),
    "id is text": (
        lambda d: json.dumps({**d, "images": [{**d["images"][0], "id": "10"}, d["images"][1]]}),
        "wrong type",
    ),
    "two points": (
        lambda d: json.dumps({**d, "annotations": [{**d["annotations"][1], "segmentation": [[1, 1, 2, 2]]}]}),
        "fewer than 3 points",
    ),
    "rle size": (
        lambda d: json.dumps(
            {
                **d,
                "annotations": [
                    {**d["annotations"][0], "segmentation": {**d["annotations"][0]["segmentation"], "size": [9, 12]}}
                ],
            }
        ),
        "disagrees with the image size",
    ),
    "missing image": (
        lambda d: json.dumps({**d, "images": [{**d["images"][0], "file_name": "nope.png"}]}),
        "not found",
    ),
    "wrong size": (
        lambda d: json.dumps({**d, "images": [{**d["images"][0], "width": 13}], "annotations": []}),
        "JSON says",
    ),
    "duplicate file": (
        lambda d: json.dumps({**d, "images": [d["images"][0], {**d["images"][0], "id": 12}], "annotations": []}),
        "is used by images",
    ),
    "unknown category": (
        lambda d: json.dumps({**d, "annotations": [{**d["annotations"][0], "category_id": 99}]}),
        "category id 99",
    ),
    "no segmentation": (
        lambda d: json.dumps({**d, "annotations": [{"id": 4, "image_id": 10, "category_id": 5}]}),
        "'segmentation'",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_coco_files_fail_clearly_and_leave_project_untouched(case: str, tmp_path: Path) -> None:
    _write_images(tmp_path / "imgs")
    make, words = BAD_CASES[case]
    bad = tmp_path / "bad.json"
    if make is None:
        bad.write_bytes(json.dumps(_doc()).replace("five", "f\u00efve").encode("latin-1"))
    else:
        bad.write_text(make(_doc()))
    # An existing project must stay exactly as it was.
    (tmp_path / "good.json").write_text(json.dumps(_doc()))
    apply_import(tmp_path / "p", read_coco(tmp_path / "good.json", tmp_path / "imgs"))
    with Project.open(tmp_path / "p") as p:
        before = (p.images(), p.classes(), [p.read_mask(r.id) for r in p.images()])
    with pytest.raises(AtrousReadError, match=words) as info:
        apply_import(tmp_path / "p", read_coco(bad, tmp_path / "imgs"))
    assert "bad.json" in str(info.value)
    with Project.open(tmp_path / "p") as p:
        after = (p.images(), p.classes(), [p.read_mask(r.id) for r in p.images()])
    assert before[:2] == after[:2] and all(np.array_equal(x, y) for x, y in zip(before[2], after[2]))
