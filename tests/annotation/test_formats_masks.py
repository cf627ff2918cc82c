"""Label-PNG folders paired with images by stem (CamVid with void 11)."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from annotation.classes import parse_class_lines, read_class_file
from annotation.errors import AtrousReadError
from annotation.formats import apply_import
from annotation.formats.maskdir import read_mask_folder
from annotation.masks import read_mask_png
from annotation.project import Project

from ..badfiles import photo
from ..conftest import SharedData


def test_camvid_void_11_becomes_255(shared_data: SharedData, tmp_path: Path) -> None:
    cam = shared_data("camvid_small")
    res = read_mask_folder(cam / "val" / "labels", cam / "val" / "images", cam / "CLASSES.txt", void=11)
    assert len(res.items) == 18
    assert [c.name for c in res.classes][:2] == ["Sky", "Building"] and len(res.classes) == 11
    assert not any(c.is_background for c in res.classes)  # CamVid's 0 is Sky, not background
    for item in res.items:
        raw = read_mask_png(cam / "val" / "labels" / f"{item.image_path.stem}.png")
        assert np.array_equal(item.mask, np.where(raw == 11, 255, raw))
    apply_import(tmp_path / "p", res, status="edited")
    with Project.open(tmp_path / "p") as p:
        assert {r.status for r in p.images()} == {"edited"}
        # Importing the same folder again updates, it does not duplicate.
    apply_import(
        tmp_path / "p", read_mask_folder(cam / "val" / "labels", cam / "val" / "images", cam / "CLASSES.txt", void=11)
    )
    with Project.open(tmp_path / "p") as p:
        assert len(p.images()) == 18 and {r.status for r in p.images()} == {"reviewed"}


def _pair(folder: Path, stem: str, shape=(6, 8), label_shape=None, value=1, sub: str = "") -> None:
    (folder / "img" / sub).mkdir(parents=True, exist_ok=True)
    (folder / "lab" / sub).mkdir(parents=True, exist_ok=True)
    # crc32, not hash(): str hashes change with every process, and seed 5 once made "x" a copy
    # of another test's image (imports de-duplicate by content), failing 1 run in 100.
    Image.fromarray(photo(*shape, seed=zlib.crc32(stem.encode()) % 100)).save(folder / "img" / sub / f"{stem}.png")
    Image.fromarray(np.full(label_shape or shape, value, np.uint8)).save(folder / "lab" / sub / f"{stem}.png")


def test_mask_folder_errors(tmp_path: Path) -> None:
    _pair(tmp_path / "a", "x")
    _pair(tmp_path / "a", "y", label_shape=(5, 8))
    with pytest.raises(AtrousReadError, match=r"y.png: mask is 8x5 but image .* is 8x6"):
        apply_import(tmp_path / "p", read_mask_folder(tmp_path / "a" / "lab", tmp_path / "a" / "img"))
    assert not (tmp_path / "p").exists()
    _pair(tmp_path / "b", "x")
    _pair(tmp_path / "b", "x", sub="other")
    with pytest.raises(AtrousReadError, match="duplicate .* name 'x'"):
        read_mask_folder(tmp_path / "b" / "lab", tmp_path / "b" / "img")
    _pair(tmp_path / "c", "x", value=7)
    (tmp_path / "c" / "classes.txt").write_text("bg\nthing\n")
    with pytest.raises(AtrousReadError, match=r"x.png: pixel values \[7\]"):
        read_mask_folder(tmp_path / "c" / "lab", tmp_path / "c" / "img", tmp_path / "c" / "classes.txt")
    (tmp_path / "d" / "lab").mkdir(parents=True)
    (tmp_path / "d" / "img").mkdir()
    (tmp_path / "d" / "lab" / "x.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    Image.fromarray(photo(6, 8)).save(tmp_path / "d" / "img" / "x.png")
    with pytest.raises(AtrousReadError, match="x.png"):
        read_mask_folder(tmp_path / "d" / "lab", tmp_path / "d" / "img")


def test_images_without_labels_are_new(tmp_path: Path) -> None:
    _pair(tmp_path, "x", value=1)
    Image.fromarray(photo(6, 8, seed=100)).save(tmp_path / "img" / "unlabelled.png")  # _pair's seeds are 0..99
    apply_import(tmp_path / "p", read_mask_folder(tmp_path / "lab", tmp_path / "img"))
    with Project.open(tmp_path / "p") as p:
        assert sorted((Path(r.path).name, r.status, r.has_mask) for r in p.images()) == [
            ("unlabelled.png", "new", False),
            ("x.png", "reviewed", True),
        ]
        assert [c.name for c in p.classes()] == ["class_1"]


def test_class_files(tmp_path: Path) -> None:
    classes, void = parse_class_lines(["__ignore__", "_background_", "cat", "tv/monitor", ""], "labels.txt")
    assert void == {"__ignore__"} and [(c.index, c.name, c.is_background) for c in classes] == [
        (0, "_background_", True),
        (1, "cat", False),
        (2, "tv/monitor", False),
    ]
    with pytest.raises(AtrousReadError, match="line 2 is empty"):
        parse_class_lines(["a", "", "b"], "x.txt")
    with pytest.raises(AtrousReadError, match="appears twice"):
        parse_class_lines(["a", "a"], "x.txt")
    (tmp_path / "bad.txt").write_bytes(b"caf\xe9\n")
    with pytest.raises(AtrousReadError, match="bad.txt: the class list is not UTF-8"):
        read_class_file(tmp_path / "bad.txt")
