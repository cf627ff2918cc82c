"""Project folder: database, atomic mask storage, dedupe, EXIF frame, crash safety."""

from __future__ import annotations

import errno
import os
import re
import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from annotation.errors import AtrousError, AtrousReadError, AtrousWriteError
from annotation.masks import read_mask_png
from annotation.project import DB_NAME, LabelClass, Project, validate_classes

from ..badfiles import exif_rotated_jpeg, make_awkward_folder, photo


def _images(folder: Path, n: int = 3) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = folder / f"img{i}.png"
        Image.fromarray(photo(20, 30, seed=i)).save(p)
        out.append(p)
    return out


CLASSES = [
    LabelClass(0, "background", (0, 0, 0), True),
    LabelClass(1, "cat", (200, 0, 0)),
    LabelClass(2, "dog", (0, 200, 0)),
]


def test_create_open_and_db_settings(tmp_path: Path) -> None:
    with Project.create(tmp_path / "p", classes=CLASSES) as p:
        assert p.classes() == CLASSES
        assert tuple(p.palette()[1]) == (200, 0, 0)
        assert tuple(p.palette()[255]) == (224, 224, 192)
    conn = sqlite3.connect(tmp_path / "p" / DB_NAME)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == "1"
    conn.close()
    with Project.open(tmp_path / "p") as p:
        assert [c.name for c in p.classes()] == ["background", "cat", "dog"]
    with pytest.raises(AtrousWriteError, match="already exists"):
        Project.create(tmp_path / "p")
    with pytest.raises(AtrousReadError, match="not an Atrous project"):
        Project.open(tmp_path / "nothing")


def test_class_edits_and_validation(tmp_path: Path) -> None:
    with Project.create(tmp_path / "p", classes=CLASSES) as p:
        new = p.add_class("bird")
        assert new.index == 3
        p.rename_class(3, "parrot")
        p.recolour_class(3, (1, 2, 3))
        assert p.classes()[3] == LabelClass(3, "parrot", (1, 2, 3), False)
        with pytest.raises(AtrousError, match="used twice"):
            p.add_class("cat")
        with pytest.raises(AtrousError, match="at most one"):
            p.add_class("ground", is_background=True)
        with pytest.raises(AtrousError, match="outside"):
            p.add_class("void", index=255)


def test_add_images_dedupes_by_content_and_paths(tmp_path: Path) -> None:
    imgs = _images(tmp_path / "data" / "sub")
    with Project.create(tmp_path / "p") as p:
        r1 = p.add_images(tmp_path / "data")
        assert len(r1.added) == 3
        # Same folder again: nothing new. A copy under another name: same hash, skipped.
        (tmp_path / "data" / "copy.png").write_bytes(imgs[0].read_bytes())
        Image.fromarray(photo(20, 30, seed=9)).save(tmp_path / "data" / "new.png")
        r2 = p.add_images(tmp_path / "data")
        assert len(r2.added) == 1 and len(r2.skipped_duplicates) == 4
        recs = p.images()
        assert len(recs) == 4
        assert all(Path(r.path).is_absolute() for r in recs)  # outside the project, given absolute
        assert p.image_path(recs[0]) == imgs[0]
        assert all(r.status == "new" and not r.has_mask for r in recs)
        assert (recs[0].width, recs[0].height) == (30, 20)
        assert p.read_mask(recs[0].id) is None


def test_paths_inside_project_are_relative(tmp_path: Path) -> None:
    root = tmp_path / "p"
    with Project.create(root) as p:
        _images(root / "pics", 1)
        p.add_images(root / "pics")
        (rec,) = p.images()
        assert rec.path == "pics/img0.png"
        assert p.load_image(rec.id).shape == (20, 30, 3)


def test_unreadable_images_are_reported_not_added(tmp_path: Path) -> None:
    expected = make_awkward_folder(tmp_path / "awk")
    with Project.create(tmp_path / "p") as p:
        res = p.add_images(tmp_path / "awk")
        bad = {Path(path).name: msg for path, msg in res.skipped_unreadable}
        for name in ("notes.png", "empty.jpg", "bomb.png"):
            assert name in bad and expected[name] in bad[name]
        assert "good.png" in {Path(r.path).name for r in p.images()}


def test_exif_orientation_masks_are_upright(tmp_path: Path) -> None:
    upright = exif_rotated_jpeg(tmp_path / "rot.jpg", h=30, w=50, orientation=6)
    with Project.create(tmp_path / "p") as p:
        p.add_images([tmp_path / "rot.jpg"])
        (rec,) = p.images()
        assert rec.orientation == 6
        assert (rec.height, rec.width) == upright.shape[:2] == (50, 30)
        assert p.load_image(rec.id).shape == upright.shape
        with pytest.raises(AtrousError, match="shape"):
            p.save_mask(rec.id, np.zeros((30, 50), np.uint8))  # the raw frame is refused
        p.save_mask(rec.id, np.ones((50, 30), np.uint8))
        assert p.read_mask(rec.id).shape == (50, 30)


def test_save_mask_is_lossless_with_holes_and_records_provenance(tmp_path: Path) -> None:
    _images(tmp_path / "d", 1)
    with Project.create(tmp_path / "p", classes=CLASSES) as p:
        p.add_images(tmp_path / "d")
        (rec,) = p.images()
        mask = np.zeros((20, 30), np.uint8)
        mask[2:15, 3:25] = 1
        mask[5:8, 8:12] = 0  # a hole
        mask[9:11, 14:16] = 255
        mv = p.add_model_version("v1", "/ckpt/v1.pt", {"miou": 0.5})
        p.active_model_version = mv
        assert p.active_model_version.name == "v1"
        p.save_mask(rec.id, mask, status="prelabeled", model_version=mv)
        assert np.array_equal(p.read_mask(rec.id), mask)
        png = read_mask_png(p.mask_path(rec.id))
        assert np.array_equal(png, mask)
        with Image.open(p.mask_path(rec.id)) as im:
            assert im.mode == "P"
        mask2 = mask.copy()
        mask2[0, 0] = 2
        p.save_mask(rec.id, mask2, status="edited", changed_pixels=1, edit_seconds=2.5)
        p.save_mask(rec.id, mask2, status="edited", changed_pixels=3, edit_seconds=1.0)
        r = p.image(rec.id)
        assert (r.status, r.prelabel_model_version, r.changed_pixels, r.edit_seconds) == ("edited", mv, 4, 3.5)
        p.set_status(rec.id, "reviewed")
        assert p.images("reviewed")[0].id == rec.id
        assert p.images(["new", "edited"]) == []
        assert p.last_edits(1)[0].status == "reviewed"
        assert p.model_versions()[0].metrics == {"miou": 0.5}
        st = p.stats()
        assert st.by_status["reviewed"] == 1 and st.class_pixels[255] == 4
        with pytest.raises(AtrousError, match="unknown status"):
            p.set_status(rec.id, "done")


def test_crash_during_save_keeps_old_mask_and_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _images(tmp_path / "d", 1)
    with Project.create(tmp_path / "p", classes=CLASSES) as p:
        p.add_images(tmp_path / "d")
        (rec,) = p.images()
        old = np.ones((20, 30), np.uint8)
        p.save_mask(rec.id, old, status="edited")
        before = p.image(rec.id)

        def boom(*a: object, **k: object) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "replace", boom)
        with pytest.raises(AtrousWriteError, match=f"{rec.id}.png"):
            p.save_mask(rec.id, np.full((20, 30), 2, np.uint8), status="reviewed")
        monkeypatch.undo()
        assert np.array_equal(p.read_mask(rec.id), old)
        assert p.image(rec.id) == before
        # No temporary file was left beside the mask.
        assert sorted(f.name for f in (tmp_path / "p" / "masks").iterdir()) == [f"{rec.id}.png"]


def test_crash_after_file_before_db_never_points_at_missing_mask(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _images(tmp_path / "d", 1)
    with Project.create(tmp_path / "p", classes=CLASSES) as p:
        p.add_images(tmp_path / "d")
        (rec,) = p.images()

        def fail(*a: object, **k: object) -> None:
            raise sqlite3.OperationalError("disk I/O error")

        monkeypatch.setattr(Project, "_record_mask", fail)
        with pytest.raises(AtrousWriteError, match="cannot record"):
            p.save_mask(rec.id, np.ones((20, 30), np.uint8))
        monkeypatch.undo()
        assert not p.image(rec.id).has_mask and p.read_mask(rec.id) is None


def test_threads_can_share_one_project(tmp_path: Path) -> None:
    _images(tmp_path / "d", 4)
    with Project.create(tmp_path / "p", classes=CLASSES) as p:
        p.add_images(tmp_path / "d")
        ids = [r.id for r in p.images()]
        errors: list[BaseException] = []

        def work(i: int) -> None:
            try:
                for k in range(5):
                    p.save_mask(i, np.full((20, 30), k % 3, np.uint8), changed_pixels=1)
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=work, args=(i,)) for i in ids]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert all(p.image(i).changed_pixels == 5 for i in ids)


def test_a_half_made_project_does_not_block_the_retry(tmp_path: Path) -> None:
    """#17 item 12: a failed or killed `new` left a 0-byte atrous.sqlite and 'a project already exists here'."""
    root = tmp_path / "p"
    root.mkdir()
    (root / "atrous.sqlite").write_bytes(b"")  # what a create killed before its schema leaves
    with Project.create(root, [LabelClass(0, "bg", (0, 0, 0), True)]) as p:
        assert [c.name for c in p.classes()] == ["bg"]
    with pytest.raises(AtrousWriteError, match="a project already exists here"):
        Project.create(root)


def test_a_create_that_fails_removes_its_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import annotation.project as project_module

    monkeypatch.setattr(project_module, "_SCHEMA", "CREATE TABLE broken (")  # the schema step fails
    with pytest.raises(AtrousWriteError, match="Cannot create project database"):
        Project.create(tmp_path / "p")
    assert not (tmp_path / "p" / "atrous.sqlite").exists()


def test_class_colours_must_be_bytes() -> None:
    """#17: a colour 999 was accepted by `new`, and every later import crashed on it."""
    with pytest.raises(AtrousError, match=r"colour \(999, 0, 0\) is not three values in 0..255"):
        validate_classes([LabelClass(0, "x", (999, 0, 0))])


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ({"index": 0, "name": "cell", "colour": [10, 20]}, "entry 0 ('cell'): colour [10, 20] is not three values"),
        ({"index": 0, "colour": [1, 2, 3]}, "an entry has no 'name'"),
        ({"index": "x", "name": "cell"}, "expected a list of"),
    ],
)
def test_a_bad_class_entry_is_named_in_words(tmp_path, entry, words) -> None:
    """F_colour_2: a two-value colour ended in Python's '(list index out of range)'."""
    import json

    from annotation.classes import read_class_file

    f = tmp_path / "classes.json"
    f.write_text(json.dumps([entry]))
    with pytest.raises(AtrousError, match=re.escape(words)):
        read_class_file(f)
