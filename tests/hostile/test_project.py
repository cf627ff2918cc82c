"""Projects and label folders built to hurt: label PNGs that are decompression bombs, a damaged
or unknown database, export options out of range (#17 item 11)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from annotation.layout import DB_NAME, mask_path

from ..badfiles import photo, png_bomb
from .conftest import Atrous, run_capped, snapshot
from .makers import H, W, labelled_project


@pytest.fixture
def project(tmp_path: Path, atrous: Atrous) -> Path:
    """A project of three labelled 60x40 images (imported from a mask folder)."""
    return labelled_project(tmp_path, atrous, 3)


def test_label_png_bomb_at_import(tmp_path: Path) -> None:
    # A 20000x20000 label PNG of a few hundred bytes: images had a bomb guard, label PNGs had none.
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    Image.fromarray(photo(H, W)).save(images / "x.png")
    png_bomb(labels / "x.png", 20000, 20000)
    run = run_capped("import", tmp_path / "proj", "--format", "masks", labels, "--images", images)
    run.refused(labels / "x.png", "too large")
    assert not (tmp_path / "proj").exists()


def test_voc_label_png_bomb_at_import(tmp_path: Path) -> None:
    root = tmp_path / "voc"
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClass").mkdir()
    Image.fromarray(photo(H, W)).save(root / "JPEGImages" / "x.jpg")
    png_bomb(root / "SegmentationClass" / "x.png", 15000, 15000)  # 1x-2x Pillow's limit: it only warns
    run = run_capped("import", tmp_path / "proj", "--format", "voc", root)
    run.refused(root / "SegmentationClass" / "x.png", "too large")
    assert not (tmp_path / "proj").exists()


def test_label_png_bomb_in_a_project_at_info(project: Path) -> None:
    png_bomb(mask_path(project, 1), 20000, 20000)
    before = snapshot(project)
    run = run_capped("info", project)  # capped: the bomb is refused, never decoded
    # info goes on with the other masks and names the bad one in a warning (#17 item 13).
    assert run.rc == 0, run.err
    assert "2 mask(s)" in run.out
    warnings = [line for line in run.err.splitlines() if line.startswith("warning: ")]
    assert any(str(mask_path(project, 1)) in w and "too large" in w and "0.png" in w for w in warnings), run.err
    assert "Traceback" not in run.err
    assert snapshot(project) == before


def test_unknown_schema_version(project: Path, atrous: Atrous) -> None:
    with sqlite3.connect(project / DB_NAME) as c:
        c.execute("UPDATE meta SET value='abc' WHERE key='schema_version'")
    c.close()
    before = snapshot(project)
    atrous("info", project).refused(project / DB_NAME, "unknown schema version 'abc'")
    assert snapshot(project) == before


def _damage_images_table(project: Path) -> None:
    db = project / DB_NAME
    c = sqlite3.connect(db)
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page = c.execute("SELECT rootpage FROM sqlite_master WHERE name='images'").fetchone()[0]
    size = c.execute("PRAGMA page_size").fetchone()[0]
    c.close()
    with open(db, "r+b") as fh:
        fh.seek((page - 1) * size)
        fh.write(np.random.default_rng(1).bytes(size))


def test_damaged_database_page(project: Path, tmp_path: Path, atrous: Atrous) -> None:
    _damage_images_table(project)
    before = snapshot(project)
    for args in (("info", project), ("export", project, "--format", "coco", tmp_path / "out")):
        assert "damaged" in atrous(*args).refused(project / DB_NAME)
    assert not (tmp_path / "out").exists()
    # `new` over it used to take it for a half-made project and replace it (exit 0).
    atrous("new", project, "--images", tmp_path / "images").refused(project, "already exists")
    assert snapshot(project) == before


@pytest.mark.parametrize("value", ["2", "nan", "-0.5"])
def test_export_val_fraction_out_of_range(project: Path, tmp_path: Path, atrous: Atrous, value: str) -> None:
    # Before: refused by a ValueError traceback after every image had been encoded.
    before = snapshot(project)
    out = tmp_path / "out"
    atrous("export", project, "--format", "voc", out, "--val-fraction", value).refused("--val-fraction", value)
    assert not out.exists()
    assert snapshot(project) == before
