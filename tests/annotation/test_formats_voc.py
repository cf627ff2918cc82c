"""VOC import/export, checked with torchvision's own VOCSegmentation reader."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from annotation.errors import AtrousReadError, AtrousWriteError
from annotation.formats import ExportFolder, apply_import, safe_name, unique_names
from annotation.formats.maskdir import read_mask_folder
from annotation.formats.voc import export_voc, object_map, read_voc, split_ids
from annotation.masks import read_mask_png, voc_colormap
from annotation.project import LabelClass, Project

from ..badfiles import exif_rotated_jpeg, photo
from ..conftest import SharedData

CLASSES = [LabelClass(0, "background", (0, 0, 0), True), LabelClass(1, "a", (9, 9, 9)), LabelClass(2, "b", (8, 8, 8))]


def _voc_dataset(root: Path, image_set: str = "trainval"):
    from torchvision.datasets import VOCSegmentation

    return VOCSegmentation(str(root), year="2012", image_set=image_set)


def _stem_masks(project: Project) -> dict[str, np.ndarray]:
    return {Path(r.path).stem: project.read_mask(r.id) for r in project.images() if r.has_mask}


@pytest.fixture(scope="module")
def camvid_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ..conftest import shared_dataset

    cam = shared_dataset("camvid_small")
    root = tmp_path_factory.mktemp("cam") / "proj"
    res = read_mask_folder(cam / "train" / "labels", cam / "train" / "images", cam / "CLASSES.txt", void=11)
    apply_import(root, res)
    return root


def test_camvid_voc_round_trip_is_exact(camvid_project: Path, tmp_path: Path, shared_data: SharedData) -> None:
    out = tmp_path / "voc"
    with Project.open(camvid_project) as p:
        s = export_voc(p, out, devkit=True)
        masks = _stem_masks(p)
        assert len(p.classes()) == 11 and "Unlabelled" not in {c.name for c in p.classes()}
    assert s.images == 56 and s.reencoded_images == 56  # PNG originals -> JPEG q95 by default
    ds = _voc_dataset(out)
    assert len(ds) == 56
    for i in range(len(ds)):
        img, target = ds[i]
        name = Path(ds.masks[i]).stem
        assert np.array_equal(np.asarray(target), masks[name]), name
        assert img.size == target.size
        # The raw label file had 11 where the project has 255.
        raw = read_mask_png(shared_data("camvid_small") / "train" / "labels" / f"{name}.png")
        assert np.array_equal(np.where(raw == 11, 255, raw), masks[name])
    train = _voc_dataset(out, "train")
    val = _voc_dataset(out, "val")
    assert len(train) + len(val) == 56 and not set(train.images) & set(val.images)
    voc = out / "VOCdevkit" / "VOC2012"
    with Image.open(voc / "SegmentationClass" / f"{name}.png") as im:
        assert im.mode == "P"
        assert np.array_equal(np.asarray(im.getpalette()[: 3 * 256]).reshape(256, 3), voc_colormap(256))
    labels = (voc / "labels.txt").read_text().splitlines()
    assert labels[0] == "Sky" and labels[10] == "Bicyclist"


def test_split_is_seeded_and_reproducible(camvid_project: Path, tmp_path: Path) -> None:
    names = [f"n{i}" for i in range(56)]
    a, b, c = split_ids(names, seed=3), split_ids(list(reversed(names)), seed=3), split_ids(names, seed=4)
    assert a == b and a != c
    assert len(a[1]) == round(56 * 0.2) and sorted(a[0] + a[1]) == sorted(names)
    assert len(split_ids(["x", "y"], val_fraction=0.0)[1]) == 1  # both parts non-empty
    with Project.open(camvid_project) as p:
        export_voc(p, tmp_path / "a", seed=3)
    lines = lambda n: (tmp_path / "a" / "ImageSets" / "Segmentation" / f"{n}.txt").read_text().split()  # noqa: E731
    stems = sorted(Path(r).stem for r in lines("trainval"))
    train, val = split_ids(stems, seed=3)
    assert lines("train") == train and lines("val") == val


def test_object_map_numbers_components() -> None:
    m = np.array([[0, 1, 1, 0, 2], [0, 0, 0, 0, 2], [1, 0, 255, 0, 0]], np.uint8)
    obj, overflow = object_map(m, background=0)
    assert overflow == 0
    assert obj.tolist() == [[0, 1, 1, 0, 3], [0, 0, 0, 0, 3], [2, 0, 255, 0, 0]]
    many = np.zeros((1, 600), np.uint8)
    many[0, ::2] = 1
    obj, overflow = object_map(many, background=0)
    assert overflow == 300 - 254 and obj.max() == 255 and np.count_nonzero(obj == 255) == 46


def test_labelme_voc_folder_imports_exactly(tmp_path: Path, shared_data: SharedData) -> None:
    root = shared_data("labelme_examples") / "semantic_segmentation" / "data_dataset_voc"
    res = read_voc(root)
    assert [c.name for c in res.classes][:2] == ["_background_", "aeroplane"] and res.classes[0].is_background
    apply_import(tmp_path / "p", res)
    with Project.open(tmp_path / "p") as p:
        masks = _stem_masks(p)
        assert {r.status for r in p.images()} == {"reviewed"}
    for stem, m in masks.items():
        assert np.array_equal(m, read_mask_png(root / "SegmentationClass" / f"{stem}.png"))
    assert set(np.unique(masks["2011_000003"]).tolist()) == {0, 5, 15, 255}


def _tiny_voc(root: Path) -> None:
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClass").mkdir()
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(photo(12, 16, seed=i)).save(root / "JPEGImages" / f"im{i}.jpg")
    for i in range(2):
        m = np.zeros((12, 16), np.uint8)
        m[2:6, 3:9] = i + 1
        m[0, :] = 255
        img = Image.fromarray(m, mode="L").convert("P")
        img.putpalette(voc_colormap().ravel().tolist())
        img.save(root / "SegmentationClass" / f"im{i}.png")
    (root / "ImageSets" / "Segmentation" / "trainval.txt").write_text("im0\nim1\nim2\n")


def test_voc_import_lists_unlabelled_images_as_new(tmp_path: Path) -> None:
    _tiny_voc(tmp_path / "voc")
    apply_import(tmp_path / "p", read_voc(tmp_path / "voc"), status="edited")
    with Project.open(tmp_path / "p") as p:
        assert sorted(r.status for r in p.images()) == ["edited", "edited", "new"]
        assert [c.name for c in p.classes()][:3] == ["background", "aeroplane", "bicycle"]


def test_voc_import_errors_leave_no_project(tmp_path: Path) -> None:
    _tiny_voc(tmp_path / "voc")
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(tmp_path / "voc" / "SegmentationClass" / "im1.png")
    with pytest.raises(AtrousReadError, match="im1.png.*5x5"):
        apply_import(tmp_path / "p", read_voc(tmp_path / "voc"))
    assert not (tmp_path / "p").exists()
    (tmp_path / "voc" / "JPEGImages" / "im2.jpg").unlink()
    with pytest.raises(AtrousReadError, match="im2"):
        read_voc(tmp_path / "voc")
    with pytest.raises(AtrousReadError, match="JPEGImages"):
        read_voc(tmp_path)


def _one_image_project(root: Path, h: int, w: int, orientation: int = 1, fmt: str = "png") -> int:
    src = root.parent / f"{root.name}_img"
    src.mkdir(parents=True, exist_ok=True)
    if orientation != 1:
        exif_rotated_jpeg(src / "pic.jpg", h=h, w=w, orientation=orientation)
    else:
        Image.fromarray(photo(h, w)).save(src / f"pic.{fmt}")
    p = Project.create(root, classes=CLASSES)
    p.add_images(src)
    rid = p.images()[0].id
    p.close()
    return rid


@settings(max_examples=15, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(1, 12), st.integers(1, 12)), elements=st.sampled_from([0, 1, 2, 255])))
def test_random_masks_round_trip_through_voc(mask: np.ndarray) -> None:
    with tempfile.TemporaryDirectory() as d:
        root = Path(d) / "p"
        rid = _one_image_project(root, *mask.shape)
        with Project.open(root) as p:
            p.save_mask(rid, mask, status="reviewed")
            export_voc(p, Path(d) / "out" / "VOCdevkit" / "VOC2012")
        ds = _voc_dataset(Path(d) / "out")
        assert np.array_equal(np.asarray(ds[0][1]), mask)
        # And back into a project through the importer.
        apply_import(Path(d) / "q", read_voc(Path(d) / "out" / "VOCdevkit" / "VOC2012"))
        with Project.open(Path(d) / "q") as q:
            assert np.array_equal(q.read_mask(q.images()[0].id), mask)
            assert q.classes() == CLASSES


def test_jpeg_policy_copy_reencode_and_lossless(tmp_path: Path) -> None:
    rid = _one_image_project(tmp_path / "j", 10, 14, fmt="jpg")
    with Project.open(tmp_path / "j") as p:
        p.save_mask(rid, np.ones((10, 14), np.uint8))
        s = export_voc(p, tmp_path / "oj")
        assert s.copied_images == 1
        assert (tmp_path / "oj" / "JPEGImages" / "pic.jpg").read_bytes() == p.image_path(rid).read_bytes()
    rid = _one_image_project(tmp_path / "n", 10, 14, fmt="png")
    with Project.open(tmp_path / "n") as p:
        p.save_mask(rid, np.ones((10, 14), np.uint8))
        export_voc(p, tmp_path / "on")
        export_voc(p, tmp_path / "ol", lossless_images=True)
        with Image.open(tmp_path / "on" / "JPEGImages" / "pic.jpg") as im:
            assert im.format == "JPEG"
        lossless = np.asarray(Image.open(tmp_path / "ol" / "JPEGImages" / "pic.png"))
        assert np.array_equal(lossless, p.load_image(rid))


def test_exif_rotated_jpeg_is_exported_upright(tmp_path: Path) -> None:
    rid = _one_image_project(tmp_path / "r", 30, 50, orientation=6)
    with Project.open(tmp_path / "r") as p:
        rec = p.image(rid)
        mask = np.zeros((rec.height, rec.width), np.uint8)
        mask[:10, :] = 1
        p.save_mask(rid, mask)
        s = export_voc(p, tmp_path / "o" / "VOCdevkit" / "VOC2012")
    assert s.reencoded_images == 1
    img, target = _voc_dataset(tmp_path / "o")[0]
    assert img.size == target.size == (30, 50)
    assert "upright" in (tmp_path / "o" / "VOCdevkit" / "VOC2012" / "atrous_export.json").read_text()


def test_export_refuses_non_empty_folder_and_cleans_up_on_full_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rid = _one_image_project(tmp_path / "p", 8, 8)
    with Project.open(tmp_path / "p") as p:
        p.save_mask(rid, np.ones((8, 8), np.uint8))
        (tmp_path / "full").mkdir()
        (tmp_path / "full" / "x").write_text("keep")
        with pytest.raises(AtrousWriteError, match="not empty"):
            export_voc(p, tmp_path / "full")
        assert (tmp_path / "full" / "x").read_text() == "keep"

        real_replace = os.replace
        calls = {"n": 0}

        def flaky(src: object, dst: object) -> None:
            calls["n"] += 1
            if calls["n"] == 3:
                raise OSError(errno.ENOSPC, "No space left on device")
            real_replace(src, dst)

        monkeypatch.setattr(os, "replace", flaky)
        with pytest.raises(AtrousWriteError, match=f"Cannot write {tmp_path / 'new'}.*No space left"):
            export_voc(p, tmp_path / "new")
        assert not (tmp_path / "new").exists()
        (tmp_path / "empty").mkdir()
        calls["n"] = 0
        with pytest.raises(AtrousWriteError):
            export_voc(p, tmp_path / "empty")
        assert (tmp_path / "empty").is_dir() and not any((tmp_path / "empty").iterdir())
        monkeypatch.undo()
        # The project itself is untouched.
        assert np.array_equal(p.read_mask(rid), np.ones((8, 8), np.uint8))


def test_names_are_sanitised_and_stay_inside(tmp_path: Path) -> None:
    assert safe_name("../../x") == "x"
    assert safe_name("a b/..\\c") == "c"
    assert safe_name("..") == "image"
    assert unique_names(["a", "A", "a", "../a"]) == ["a", "A_2", "a_3", "a_4"]
    with ExportFolder(tmp_path / "o") as f:
        with pytest.raises(AtrousWriteError, match="outside"):
            f.path("../evil.png")
        f.write("fine.txt", b"ok")
    assert (tmp_path / "o" / "fine.txt").exists() and not (tmp_path / "evil.png").exists()
