"""labelme JSON import, compared with labelme's own VOC export of the same files."""

from __future__ import annotations

import base64
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from annotation.errors import AtrousReadError
from annotation.formats import apply_import
from annotation.formats.labelme import read_labelme
from annotation.formats.voc import export_voc
from annotation.masks import read_mask_png
from annotation.project import Project

from ..badfiles import photo
from ..conftest import SharedData


@pytest.mark.parametrize("example", ["semantic_segmentation", "instance_segmentation"])
def test_labelme_to_voc_matches_labelme(example: str, shared_data: SharedData, tmp_path: Path) -> None:
    base = shared_data("labelme_examples") / example
    res = read_labelme(base / "data_annotated")  # labels.txt is found beside the folder
    assert res.classes[0].name == "_background_" and len(res.classes) == 21
    apply_import(tmp_path / "p", res)
    with Project.open(tmp_path / "p") as p:
        export_voc(p, tmp_path / "voc")
    total = 0
    for ref_png in sorted((base / "data_dataset_voc" / "SegmentationClass").glob("*.png")):
        ours = read_mask_png(tmp_path / "voc" / "SegmentationClass" / ref_png.name)
        total += int(np.count_nonzero(ours != read_mask_png(ref_png)))
    print(f"{example}: {total} pixels differ from labelme's SegmentationClass")
    # labelme's own PNGs differ from a plain re-rasterisation by at most a pixel per image.
    assert total <= 3
    # JPEG originals are copied unchanged (labelme's export re-encodes them; we do not).
    src = (base / "data_annotated" / "2011_000003.jpg").read_bytes()
    assert (tmp_path / "voc" / "JPEGImages" / "2011_000003.jpg").read_bytes() == src


def _shape_ref(h: int, w: int, shape: dict) -> np.ndarray:
    """Independent restatement of labelme's shape_to_mask for the primitives file."""
    img = Image.new("L", (w, h))
    d = ImageDraw.Draw(img)
    pts = [tuple(p) for p in shape["points"]]
    t = shape["shape_type"]
    if t == "rectangle":
        d.rectangle(pts, outline=1, fill=1)
    elif t == "circle":
        (cx, cy), (px, py) = pts
        r = ((cx - px) ** 2 + (cy - py) ** 2) ** 0.5
        d.ellipse([cx - r, cy - r, cx + r, cy + r], outline=1, fill=1)
    elif t in ("line", "linestrip"):
        d.line(pts, fill=1, width=10)
    elif t == "point":
        (cx, cy) = pts[0]
        d.ellipse([cx - 5, cy - 5, cx + 5, cy + 5], outline=1, fill=1)
    elif t == "polygon":
        d.polygon(pts, outline=1, fill=1)
    out = np.asarray(img, bool).copy()
    if t == "mask":
        small = np.asarray(Image.open(io.BytesIO(base64.b64decode(shape["mask"])))) > 0
        x1, y1 = (int(v) for v in pts[0])
        out[y1 : y1 + small.shape[0], x1 : x1 + small.shape[1]] = small
    return out


def test_primitives_every_shape_type(shared_data: SharedData) -> None:
    path = shared_data("labelme_examples") / "primitives" / "primitives.json"
    doc = json.loads(path.read_text())
    res = read_labelme(path)
    (item,) = res.items
    assert [c.name for c in res.classes] == [
        "_background_",
        "rectangle",
        "circle",
        "polygon",
        "line",
        "point",
        "line_strip",
        "octagon",
    ]
    value = {c.name: c.index for c in res.classes}
    expected = np.zeros((doc["imageHeight"], doc["imageWidth"]), np.uint8)
    for shape in doc["shapes"]:
        expected[_shape_ref(*expected.shape, shape)] = value[shape["label"]]
    assert np.array_equal(item.mask, expected)
    assert {s["shape_type"] for s in doc["shapes"]} <= {
        "rectangle",
        "circle",
        "polygon",
        "line",
        "point",
        "linestrip",
        "mask",
    }
    assert all(np.any(item.mask == v) for v in value.values())


def _labelme_file(folder: Path, shapes: list, *, embed: bool = False, name: str = "pic") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    Image.fromarray(photo(20, 30)).save(buf, format="PNG")
    if not embed:
        (folder / f"{name}.png").write_bytes(buf.getvalue())
    doc = {
        "version": "5.2.1",
        "flags": {},
        "shapes": shapes,
        "imagePath": f"{name}.png",
        "imageData": base64.b64encode(buf.getvalue()).decode() if embed else None,
        "imageHeight": 20,
        "imageWidth": 30,
    }
    path = folder / f"{name}.json"
    path.write_text(json.dumps(doc))
    return path


def _poly(label: str, pts: list, shape_type: str = "polygon") -> dict:
    return {"label": label, "points": pts, "group_id": None, "shape_type": shape_type, "flags": {}}


def test_embedded_image_data_and_file_order(tmp_path: Path) -> None:
    shapes = [
        _poly("cat", [[2, 2], [20, 2], [20, 15], [2, 15]]),
        _poly("dog", [[10, 5], [28, 5], [28, 18]]),
        _poly("__ignore__", [[0, 0], [3, 0], [3, 3]]),
    ]
    _labelme_file(tmp_path / "src", shapes, embed=True)
    res = read_labelme(tmp_path / "src")
    assert [c.name for c in res.classes] == ["_background_", "cat", "dog"]
    m = res.items[0].mask
    assert m[3, 5] == 1 and m[10, 25] == 2 and m[0, 0] == 255 and m[19, 0] == 0
    assert m[6, 15] == 2  # the later shape paints over the earlier one
    apply_import(tmp_path / "p", res)
    with Project.open(tmp_path / "p") as p:
        (rec,) = p.images()
        assert rec.path.startswith("images/") and p.load_image(rec.id).shape == (20, 30, 3)
        assert np.array_equal(p.read_mask(rec.id), m)


@pytest.mark.parametrize(
    ("shapes", "words"),
    [
        ([_poly("a", [[1, 1], [5, 5]])], "fewer than 3 points"),
        ([_poly("a", [[1, 1], [5, "x"], [3, 3]])], "not \\[x, y\\] numbers"),
        ([_poly("a", [[1, 1], [5, 5], [2, 2]], "hexagon")], "unknown shape_type"),
        ([_poly("a", [[1, 1]], "circle")], "needs 2 points"),
        ([{"points": [[1, 1], [2, 2], [3, 1]], "shape_type": "polygon"}], "label"),
    ],
)
def test_bad_labelme_shapes_abort_import(tmp_path: Path, shapes: list, words: str) -> None:
    _labelme_file(tmp_path / "src", [_poly("a", [[1, 1], [9, 1], [9, 9]])], name="good")
    _labelme_file(tmp_path / "src", shapes, name="zbad")
    with pytest.raises(AtrousReadError, match=words) as info:
        read_labelme(tmp_path / "src")
    assert "zbad.json" in str(info.value)


def test_bad_labelme_files(tmp_path: Path) -> None:
    _labelme_file(tmp_path / "a", [])
    (tmp_path / "a" / "pic.json").write_bytes(b'{"shapes": [')
    with pytest.raises(AtrousReadError, match="pic.json: invalid or truncated JSON"):
        read_labelme(tmp_path / "a")
    _labelme_file(tmp_path / "b", [_poly("x", [[1, 1], [9, 1], [9, 9]])])
    (tmp_path / "b" / "pic.png").unlink()
    with pytest.raises(AtrousReadError, match="not found and the file has no imageData"):
        read_labelme(tmp_path / "b")
    _labelme_file(tmp_path / "c", [_poly("zebra", [[1, 1], [9, 1], [9, 9]])])
    (tmp_path / "c" / "labels.txt").write_text("__ignore__\n_background_\ncat\n")
    with pytest.raises(AtrousReadError, match="'zebra', which is not in"):
        read_labelme(tmp_path / "c")
    # A wrong imageHeight: refused against the image's header before any mask is made.
    path = _labelme_file(tmp_path / "d", [])
    doc = json.loads(path.read_text())
    doc["imageHeight"] = 21
    path.write_text(json.dumps(doc))
    with pytest.raises(
        AtrousReadError, match="pic.json: imageWidth x imageHeight is 30x21 but the image pic.png is 30x20"
    ):
        apply_import(tmp_path / "p", read_labelme(tmp_path / "d"))
    assert not (tmp_path / "p").exists()


def test_non_labelme_json_is_skipped_with_warning(tmp_path: Path, shared_data: SharedData) -> None:
    base = shared_data("labelme_examples") / "instance_segmentation"
    shutil.copytree(base / "data_annotated", tmp_path / "src" / "ann")
    shutil.copy(base / "data_dataset_coco" / "annotations.json", tmp_path / "src" / "annotations.json")
    res = read_labelme(tmp_path / "src", base / "labels.txt")
    assert len(res.items) == 3 and any("not a labelme file" in w for w in res.warnings)
