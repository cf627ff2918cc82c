"""A project nobody may write (a read-only mount, another user's folder) opens read-only: ``info``
and ``export`` to another folder work, every write is one clear error (#17 item 14).

Tests run as root, and root writes through file permissions, so "not writable" is simulated by
replacing ``annotation.project._writable`` (the one place that asks ``os.access``). SQLite itself
then really opens the database with ``mode=ro`` (and ``immutable=1`` for a read-only folder): a
write through that connection fails in SQLite, and no -wal/-shm file is created. The same was
checked by hand on a real read-only bind mount (``mount -o remount,bind,ro``).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import annotation.project as project_module
from annotation.errors import AtrousWriteError
from annotation.layout import DB_NAME, mask_path
from annotation.project import Project

from ..badfiles import photo
from .conftest import Atrous, snapshot
from .makers import H, W


@pytest.fixture
def project(tmp_path: Path, atrous: Atrous) -> Path:
    """Two labelled 60x40 images; the project closed cleanly (no -wal/-shm left)."""
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    for i in range(2):
        Image.fromarray(photo(H, W, seed=i)).save(images / f"{i}.png")
        Image.fromarray(np.full((H, W), i, np.uint8), mode="L").save(labels / f"{i}.png")
    (tmp_path / "classes.txt").write_text("background\nthing\n")
    proj = tmp_path / "proj"
    run = atrous("import", proj, "--format", "masks", labels, "--images", images, "--classes", tmp_path / "classes.txt")
    assert run.rc == 0, run.err
    assert not list(proj.glob(f"{DB_NAME}-*"))
    return proj


def _read_only(monkeypatch: pytest.MonkeyPatch, *paths: Path) -> None:
    """Make ``paths`` (the project folder, its database) look not writable."""
    ro = {p.resolve() for p in paths}
    monkeypatch.setattr(project_module, "_writable", lambda path: Path(path).resolve() not in ro)


@pytest.mark.parametrize("which", ["folder", "database"])
def test_info_and_export_on_a_read_only_project(
    project: Path, tmp_path: Path, atrous: Atrous, monkeypatch: pytest.MonkeyPatch, which: str
) -> None:
    _read_only(monkeypatch, project if which == "folder" else project / DB_NAME)
    before = snapshot(project)
    run = atrous("info", project)
    assert run.rc == 0 and "2 image(s), 2 mask(s)" in run.out, run.err
    run = atrous("export", project, "--format", "voc", tmp_path / "voc")
    assert run.rc == 0, run.err
    assert len(list((tmp_path / "voc" / "SegmentationClass").glob("*.png"))) == 2
    run = atrous("check", project)
    assert run.rc == 0, run.out + run.err
    assert snapshot(project) == before
    if which == "folder":  # immutable: SQLite made no side file it would need to write
        assert not list(project.glob(f"{DB_NAME}-*"))


def test_writes_are_one_clear_error(
    project: Path, tmp_path: Path, atrous: Atrous, monkeypatch: pytest.MonkeyPatch
) -> None:
    _read_only(monkeypatch, project)
    before = snapshot(project)
    atrous("add", project, tmp_path / "images").refused(project, "the project is read-only")
    with Project.open(project) as p:
        assert p.read_only
        with pytest.raises(AtrousWriteError, match="the project is read-only"):
            p.save_mask(1, np.zeros((H, W), np.uint8))
        with pytest.raises(AtrousWriteError, match="the project is read-only"):
            p.add_class("more")
        # Underneath, SQLite holds the connection read-only too: no write slips past.
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            p._conn.execute("DELETE FROM images")
    assert snapshot(project) == before
    assert np.asarray(Image.open(mask_path(project, 2))).max() == 1


def test_writable_project_is_not_read_only(project: Path) -> None:
    with Project.open(project) as p:
        assert not p.read_only
        p.add_class("more")
        assert [c.name for c in p.classes()][-1] == "more"


def test_a_full_disk_still_lets_the_project_be_read(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """D08: on a full disk the -shm file WAL needs cannot be made; ``info`` failed with a disk I/O error."""
    real = sqlite3.connect

    def connect(target, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if not kwargs.get("uri"):  # the writable open (WAL): the disk refuses its -shm file
            raise sqlite3.OperationalError("disk I/O error")
        return real(target, *args, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", connect)
    with Project.open(project) as p:
        assert p.read_only and len(p.images()) == 2 and p.read_mask(1) is not None
        with pytest.raises(AtrousWriteError, match="disk is full or failing"):
            p.set_status(1, "edited")
    monkeypatch.undo()
    with Project.open(project) as p:  # space freed: writable again, nothing changed
        assert not p.read_only and p.image(1).status == "reviewed"
