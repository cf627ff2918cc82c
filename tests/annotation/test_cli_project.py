"""The headless commands as a user runs them: new, import, export, info."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import main
from annotation.masks import read_mask_png
from annotation.project import Project

from ..conftest import SharedData

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_new_import_export_info_flow(
    shared_data: SharedData, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cam = shared_data("camvid_small")
    proj = tmp_path / "cam"
    code, out, _ = run(capsys, "new", proj, "--images", cam / "val" / "images", "--classes", cam / "CLASSES.txt")
    assert code == 0 and "18 images" in out and "12 classes" in out
    code, _, err = run(capsys, "new", proj, "--images", cam / "val" / "images")
    assert code == 2 and "already exists" in err
    code, out, _ = run(capsys, "add", proj, cam / "val" / "images")
    assert code == 0 and "added 0 image(s)" in out and "18 already present" in out
    code, out, _ = run(capsys, "add", proj, cam / "train" / "images")
    assert code == 0 and "added 56 image(s)" in out

    code, out, _ = run(
        capsys,
        "import",
        tmp_path / "cam2",
        "--format",
        "masks",
        cam / "val" / "labels",
        "--images",
        cam / "val" / "images",
        "--classes",
        cam / "CLASSES.txt",
        "--void",
        "11",
        "--status",
        "edited",
    )
    assert code == 0 and "18 new image(s)" in out and "18 mask(s) (edited)" in out
    with Project.open(tmp_path / "cam2") as p:
        first = p.images()[0]
        p.set_status(first.id, "reviewed")
        mv = p.add_model_version("deeplab-v1", "/ckpt/v1.pt", {"miou": 0.61})
        p.active_model_version = mv

    code, out, _ = run(capsys, "info", tmp_path / "cam2")
    assert code == 0
    assert "edited 17, reviewed 1" in out and "Sky" in out and "%" in out and "255 void" in out
    assert "deeplab-v1 (active)" in out and "last edits:" in out and "-> reviewed" in out

    code, out, _ = run(
        capsys, "export", tmp_path / "cam2", "--format", "voc", tmp_path / "voc", "--status", "reviewed", "--devkit"
    )
    assert code == 0 and "exported 1 image(s)" in out
    from torchvision.datasets import VOCSegmentation

    ds = VOCSegmentation(str(tmp_path / "voc"), image_set="trainval")
    with Project.open(tmp_path / "cam2") as p:
        assert len(ds) == 1 and np.array_equal(np.asarray(ds[0][1]), p.read_mask(first.id))

    code, out, _ = run(
        capsys,
        "export",
        tmp_path / "cam2",
        "--format",
        "coco",
        tmp_path / "coco",
        "--polygons",
        "--status",
        "edited,reviewed",
    )
    assert code == 0 and "exported 18 image(s)" in out
    from pycocotools.coco import COCO

    assert len(COCO(str(tmp_path / "coco" / "annotations.json")).imgs) == 18
    code, _, err = run(capsys, "export", tmp_path / "cam2", "--format", "coco", tmp_path / "coco")
    assert code == 2 and "not empty" in err
    code, _, err = run(capsys, "export", tmp_path / "cam2", "--format", "coco", tmp_path / "c3", "--status", "done")
    assert code == 2 and "unknown status 'done'" in err


def test_import_each_format(shared_data: SharedData, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lm = shared_data("labelme_examples")
    code, out, _ = run(
        capsys, "import", tmp_path / "a", "--format", "labelme", lm / "semantic_segmentation" / "data_annotated"
    )
    assert code == 0 and "3 new image(s)" in out and "21 classes" in out
    code, out, _ = run(
        capsys, "import", tmp_path / "b", "--format", "voc", lm / "semantic_segmentation" / "data_dataset_voc"
    )
    assert code == 0 and "3 mask(s) (reviewed)" in out
    code, out, _ = run(
        capsys,
        "import",
        tmp_path / "c",
        "--format",
        "coco",
        lm / "instance_segmentation" / "data_dataset_coco" / "annotations.json",
    )
    assert code == 0 and "3 new image(s)" in out
    # The same labels arrive through all three routes (up to labelme's ignore regions, absent from its COCO file).
    with Project.open(tmp_path / "a") as a, Project.open(tmp_path / "b") as b:
        for ra, rb in zip(a.images(), b.images()):
            assert np.count_nonzero(a.read_mask(ra.id) != b.read_mask(rb.id)) <= 1
    ref = lm / "instance_segmentation" / "data_dataset_voc" / "SegmentationClass"
    with Project.open(tmp_path / "c") as c:
        for r in c.images():
            want = read_mask_png(ref / f"{Path(r.path).stem}.png")
            assert np.count_nonzero((c.read_mask(r.id) != want) & (want != 255)) <= 1

    gallery = shared_data("torchvision_gallery") / "coco_tiny"
    code, _, err = run(
        capsys, "import", tmp_path / "g", "--format", "coco", gallery / "instances.json", "--images", gallery / "images"
    )
    assert code == 2 and "instances.json: missing required field 'categories'" in err
    assert not (tmp_path / "g").exists()
    code, _, err = run(capsys, "import", tmp_path / "m", "--format", "masks", lm)
    assert code == 2 and "--images" in err


def test_bad_import_leaves_project_unchanged(
    shared_data: SharedData, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lm = shared_data("labelme_examples") / "semantic_segmentation"
    run(capsys, "import", tmp_path / "p", "--format", "labelme", lm / "data_annotated")
    db = tmp_path / "p" / "atrous.sqlite"
    masks_before = {f.name: f.read_bytes() for f in (tmp_path / "p" / "masks").iterdir()}
    with Project.open(tmp_path / "p") as p:
        before = p.images()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.json").write_bytes(b"\xff\xfe{not utf8")
    code, _, err = run(capsys, "import", tmp_path / "p", "--format", "labelme", bad)
    assert code == 2 and "x.json: not UTF-8" in err
    with Project.open(tmp_path / "p") as p:
        assert p.images() == before
    assert {f.name: f.read_bytes() for f in (tmp_path / "p" / "masks").iterdir()} == masks_before
    assert db.exists()


def test_export_write_failures(
    shared_data: SharedData, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    lm = shared_data("labelme_examples") / "semantic_segmentation"
    run(capsys, "import", tmp_path / "p", "--format", "labelme", lm / "data_annotated")

    # A read-only target (tests run as root, where chmod does not stop writes, so refuse like the OS would).
    def read_only(*a: object, **k: object):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr("annotation.atomic._create_temp", read_only)
    code, _, err = run(capsys, "export", tmp_path / "p", "--format", "voc", tmp_path / "ro")
    assert code == 2 and "Cannot write" in err and "Permission denied" in err and str(tmp_path / "ro") in err
    assert not (tmp_path / "ro").exists()
    monkeypatch.undo()

    def full(*a: object, **k: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    code, _, err = run(capsys, "export", tmp_path / "p", "--format", "coco", tmp_path / "full")
    assert code == 2 and "No space left on device" in err and str(tmp_path / "full") in err
    assert not (tmp_path / "full").exists()


def test_export_with_missing_image_fails_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    from ..badfiles import photo

    (tmp_path / "imgs").mkdir()
    for seed, name in enumerate(("a", "b")):
        Image.fromarray(photo(8, 10, seed=seed)).save(tmp_path / "imgs" / f"{name}.png")
    assert run(capsys, "new", tmp_path / "p", "--images", tmp_path / "imgs")[0] == 0
    with Project.open(tmp_path / "p") as p:
        for r in p.images():
            p.save_mask(r.id, np.ones((8, 10), np.uint8), status="reviewed")
    (tmp_path / "imgs" / "b.png").unlink()
    code, _, err = run(capsys, "export", tmp_path / "p", "--format", "voc", tmp_path / "out")
    assert code == 2 and "b.png" in err and "not found" in err
    assert not (tmp_path / "out").exists()


def test_cli_module_is_light_and_layered() -> None:
    code = (
        "import sys, annotation.cli, annotation.project, annotation.formats; "
        "bad = [m for m in ('pycocotools', 'torch', 'PySide6') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def small_images(folder: Path, n: int, seed: int = 0) -> list[Path]:
    from PIL import Image

    from ..badfiles import photo

    folder.mkdir(parents=True)
    out = []
    for k in range(n):
        out.append(folder / f"im{k}.png")
        Image.fromarray(photo(8, 10, seed=seed + k)).save(out[-1])
    return out


def test_info_prints_one_line_per_model_version_and_json_has_everything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    small_images(tmp_path / "imgs", 2)
    assert run(capsys, "new", tmp_path / "p", "--images", tmp_path / "imgs")[0] == 0
    history = [{"epoch": e, "loss": 1.0 / (e + 1)} for e in range(50)]
    with Project.open(tmp_path / "p") as p:
        v1 = p.add_model_version(
            "finetune-1",
            "models/finetune-1.pt",
            {
                "base": "deeplabv3_mobilenet_v3_large",
                "train_images": [1, 2],
                "best_val_miou": 0.61234,
                "history": history,
            },
        )
        p.add_model_version("mine", "/ckpt/mine.pt", {"external": True})
        p.active_model_version = v1
    code, out, _ = run(capsys, "info", tmp_path / "p")
    assert code == 0
    lines = out.splitlines()
    first = next(ln for ln in lines if ln.strip().startswith("v1 "))
    assert "finetune-1 (active)" in first and "base deeplabv3_mobilenet_v3_large" in first
    assert "images 2" in first and "val mIoU 0.612" in first and "loss" not in out
    second = next(ln for ln in lines if ln.strip().startswith("v2 "))
    assert "base external checkpoint" in second and "val mIoU -" in second and "(active)" not in second
    assert "model versions: 2" in out and max(len(ln) for ln in lines) < 160
    code, out, _ = run(capsys, "info", tmp_path / "p", "--json")
    data = json.loads(out)
    assert code == 0 and data["images"] == 2 and data["status"]["new"] == 2
    v = data["model_versions"][0]
    assert v["active"] and v["metrics"]["history"] == history and v["checkpoint"] == "models/finetune-1.pt"
    assert [c["name"] for c in data["classes"]] == []


def test_import_masks_into_a_project_uses_its_images_and_classes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from annotation.masks import write_mask_png

    imgs = small_images(tmp_path / "imgs", 3)
    (tmp_path / "classes.txt").write_text("background\nroad\ncar\n")
    code, _, _ = run(
        capsys, "new", tmp_path / "p", "--images", tmp_path / "imgs", "--classes", tmp_path / "classes.txt"
    )
    assert code == 0
    (tmp_path / "labels").mkdir()
    want = {}
    for k, im in enumerate(imgs[:2]):
        m = np.full((8, 10), k + 1, np.uint8)
        write_mask_png(tmp_path / "labels" / f"{im.stem}.png", m, np.zeros((256, 3), np.uint8))
        want[im.name] = m
    # Neither --images nor --classes: the project's images and classes (it used to demand both).
    code, out, err = run(capsys, "import", tmp_path / "p", "--format", "masks", tmp_path / "labels")
    assert code == 0, err
    assert "0 new image(s), 2 already present, 2 mask(s) (reviewed)" in out
    with Project.open(tmp_path / "p") as p:
        assert [c.name for c in p.classes()] == ["background", "road", "car"]
        got = {Path(r.path).name: p.read_mask(r.id) for r in p.images() if r.has_mask}
    assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in want)
    # A value the project has no class for is refused, naming the file; nothing changes.
    write_mask_png(tmp_path / "labels" / "im2.png", np.full((8, 10), 7, np.uint8), np.zeros((256, 3), np.uint8))
    code, _, err = run(capsys, "import", tmp_path / "p", "--format", "masks", tmp_path / "labels")
    assert code == 2 and "im2.png: pixel values [7] have no class in the project's classes" in err
    with Project.open(tmp_path / "p") as p:
        assert sum(r.has_mask for r in p.images()) == 2


def test_labelme_import_lands_on_the_projects_classes_by_name(
    shared_data: SharedData, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lm = shared_data("labelme_examples") / "semantic_segmentation"
    names = (lm / "labels.txt").read_text().splitlines()
    # The same classes in reverse order (background first): every index differs from the file's.
    (tmp_path / "classes.txt").write_text("\n".join(["background", *reversed(names[2:])]) + "\n")
    small_images(tmp_path / "imgs", 1)
    code, _, _ = run(
        capsys, "new", tmp_path / "p", "--images", tmp_path / "imgs", "--classes", tmp_path / "classes.txt"
    )
    assert code == 0
    code, out, err = run(capsys, "import", tmp_path / "p", "--format", "labelme", lm / "data_annotated")
    assert code == 0, err
    assert "classes matched by name" in out and "3 new image(s)" in out
    run(capsys, "import", tmp_path / "ref", "--format", "labelme", lm / "data_annotated")
    with Project.open(tmp_path / "p") as p, Project.open(tmp_path / "ref") as ref:
        assert len(p.classes()) == len(names) - 1  # nothing added: all names agree
        name_p = {c.index: c.name for c in p.classes()}
        name_r = {c.index: c.name for c in ref.classes()}
        name_p[255] = name_r[255] = "void"
        rp = [r for r in p.images() if r.has_mask]
        for a, b in zip(rp, ref.images()):
            ma, mb = p.read_mask(a.id), ref.read_mask(b.id)
            assert np.unique(ma).size > 1
            lut_p = np.array([name_p.get(i, "?") for i in range(256)])
            lut_r = np.array([name_r.get(i, "?") for i in range(256)])
            same = lut_p[ma] == lut_r[mb]
            bg = (lut_p[ma] == "background") & (lut_r[mb] == "_background_")
            assert np.all(same | bg)


def test_new_takes_several_folders_and_a_failure_leaves_the_folder_clean(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    small_images(tmp_path / "a", 2)
    small_images(tmp_path / "b", 1, seed=5)
    code, out, _ = run(capsys, "new", tmp_path / "p", "--images", tmp_path / "a", "--images", tmp_path / "b")
    assert code == 0 and "3 images" in out

    # Into an existing image folder: a failure removes the index and masks/, never the images.
    from annotation import jobs

    def broken(self, paths):
        raise OSError("disk gone")

    monkeypatch.setattr(Project, "add_images", broken)
    with pytest.raises(OSError):
        jobs.create_project(tmp_path / "b", [tmp_path / "b"], [])
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["im0.png"]
    monkeypatch.undo()
    calls = []
    from annotation.formats import Cancelled

    with pytest.raises(Cancelled, match="cancelled"):
        jobs.create_project(tmp_path / "b", [tmp_path / "b"], [], should_stop=lambda: calls.append(1) or True)
    assert calls and sorted(p.name for p in (tmp_path / "b").iterdir()) == ["im0.png"]


def test_voc_without_a_class_list_takes_the_values_as_the_projects_classes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from PIL import Image

    from annotation.masks import write_mask_png

    from ..badfiles import photo

    (tmp_path / "classes.txt").write_text("background\nroad\ncar\n")
    small_images(tmp_path / "imgs", 1)
    run(capsys, "new", tmp_path / "p", "--images", tmp_path / "imgs", "--classes", tmp_path / "classes.txt")
    for name, value in (("voc", 2), ("voc5", 5)):
        root = tmp_path / name
        (root / "JPEGImages").mkdir(parents=True)
        (root / "SegmentationClass").mkdir()
        Image.fromarray(photo(8, 10, seed=9)).save(root / "JPEGImages" / "a.jpg")
        m = np.zeros((8, 10), np.uint8)
        m[4:] = value
        write_mask_png(root / "SegmentationClass" / "a.png", m, np.zeros((256, 3), np.uint8))
    code, out, err = run(capsys, "import", tmp_path / "p", "--format", "voc", tmp_path / "voc")
    assert code == 0, err
    assert "taken as this project's class indices" in out and "1 new image(s)" in out
    with Project.open(tmp_path / "p") as p:
        assert [c.name for c in p.classes()] == ["background", "road", "car"]
        rec = next(r for r in p.images() if r.has_mask)
        assert set(np.unique(p.read_mask(rec.id)).tolist()) == {0, 2}
    code, _, err = run(capsys, "import", tmp_path / "p", "--format", "voc", tmp_path / "voc5")
    assert code == 2 and "mask values [5] are not classes of the project" in err
