"""A mask and its row change together: the file is moved into place only after the row commits (#17 item 3).

A COMMIT that fails (database locked, disk full) leaves the old mask with the old row; a crash
between the commit and the move is finished when the project is next opened, or by
``check --repair``; a file whose row never committed is removed once its writer is gone.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from annotation import mask_commit
from annotation import project as project_module
from annotation.errors import AtrousWriteError
from annotation.layout import DB_NAME, mask_path
from annotation.mask_commit import pending_path, staging_dir
from annotation.masks import read_mask_png, write_mask_png
from annotation.project import Project

from ..badfiles import photo
from .conftest import Atrous, snapshot
from .makers import H, W, labelled_project

DEAD = 999999999  # no process has this id


@pytest.fixture
def project(tmp_path: Path, atrous: Atrous) -> Path:
    """Two reviewed 60x40 images (ids 1, 2) with masks of class 0 and class 1."""
    return labelled_project(tmp_path, atrous, 2)


class _Cursor:
    """A cursor whose COMMIT fails the way a locked database makes it fail."""

    def __init__(self, cur: sqlite3.Cursor) -> None:
        self._cur = cur

    def execute(self, sql: str, *args: object) -> _Cursor:
        if sql.strip().upper() == "COMMIT":
            raise sqlite3.OperationalError("database is locked")
        self._cur.execute(sql, *args)
        return self

    def __getattr__(self, name: str) -> object:
        return getattr(self._cur, name)


class _CommitFails:
    """Wraps a project's connection: every write transaction reaches its COMMIT, which fails."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def cursor(self) -> _Cursor:
        return _Cursor(self._conn.cursor())

    def __getattr__(self, name: str) -> object:
        return getattr(self._conn, name)


def _leftovers(project: Path) -> list[str]:
    return sorted(p.name for p in (project / "masks").iterdir() if not p.name.endswith(".png") or p.is_dir())


def _row(project: Path, image_id: int, cols: str = "status, modified") -> tuple:
    with sqlite3.connect(project / DB_NAME) as c:
        row = c.execute(f"SELECT {cols} FROM images WHERE id=?", (image_id,)).fetchone()
    c.close()
    return row


def _fail_moves_of(monkeypatch: pytest.MonkeyPatch, mark: str) -> None:
    """Make every move of a finished file whose path holds ``mark`` fail (a crash between commit and move);
    the atomic writer's own temporary files (``*.tmp``) still move."""
    real = os.replace

    def replace(src, dst, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
        if mark in str(src) and not str(src).endswith(".tmp"):
            raise OSError(5, "Input/output error")
        return real(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", replace)


def _new_images(tmp_path: Path, n: int) -> list[Path]:
    folder = tmp_path / "more"
    folder.mkdir()
    out = []
    for i in range(n):
        out.append(folder / f"m{i}.png")
        Image.fromarray(photo(H, W, seed=20 + i)).save(out[-1])
    return out


# ---------------------------------------------------------------- one save


def test_a_failed_commit_keeps_the_old_mask_and_row(project: Path) -> None:
    old_bytes = mask_path(project, 2).read_bytes()
    old_row = _row(project, 2)
    with Project.open(project) as p:
        edits = len(p.last_edits(100))
        real = p._conn
        p._conn = _CommitFails(real)
        try:
            with pytest.raises(AtrousWriteError, match="locked"):
                p.save_mask(2, np.zeros((H, W), np.uint8), status="prelabeled", model_version=None)
        finally:
            p._conn = real
        assert mask_path(project, 2).read_bytes() == old_bytes
        assert p.image(2).status == "reviewed" and len(p.last_edits(100)) == edits
        assert _leftovers(project) == []  # no pending file left behind
        # The connection is usable again: the failed COMMIT's transaction was ended.
        assert p.save_mask(1, np.ones((H, W), np.uint8))
        assert p.read_mask(1).all()
    assert mask_path(project, 2).read_bytes() == old_bytes and _row(project, 2) == old_row


def test_a_move_that_fails_after_the_commit_is_finished_on_open(project: Path, monkeypatch) -> None:  # noqa: ANN001
    old_bytes = mask_path(project, 1).read_bytes()
    new = np.ones((H, W), np.uint8)
    with Project.open(project) as p:
        _fail_moves_of(monkeypatch, ".pending-")
        with pytest.raises(AtrousWriteError, match="will be put in place when the project is next opened"):
            p.save_mask(1, new, status="edited", changed_pixels=5)
        monkeypatch.undo()
        assert p.image(1).status == "edited"  # committed
        assert mask_path(project, 1).read_bytes() == old_bytes  # not yet moved
        pending = list((project / "masks").glob("1.png.pending-*"))
        assert len(pending) == 1 and _row(project, 1, "mask_token")[0] == pending[0].name.split(".pending-")[1]
    with Project.open(project) as p:
        assert np.array_equal(p.read_mask(1), new)
    assert _leftovers(project) == []


def test_a_prelabel_whose_move_fails_keeps_its_copy_beside_the_committed_mask(project: Path, monkeypatch) -> None:  # noqa: ANN001
    """Item 5 still holds then: the kept pre-label copy goes with the committed mask, not with the old one."""
    from annotation.layout import prelabel_path
    from annotation.prelabels import record_prelabel

    labels = np.ones((H, W), np.uint8)
    with Project.open(project) as p:
        p.set_status(1, "prelabeled")
        _fail_moves_of(monkeypatch, ".pending-")
        with pytest.raises(AtrousWriteError, match="will be put in place"):
            record_prelabel(p, 1, labels, None, None, None)
        monkeypatch.undo()
    assert np.array_equal(read_mask_png(prelabel_path(project, 1)), labels)
    with Project.open(project) as p:
        assert np.array_equal(p.read_mask(1), labels)


def test_a_crash_after_the_commit_is_rolled_forward_on_open(project: Path) -> None:
    token = f"{DEAD}-1"
    new = np.ones((H, W), np.uint8)
    write_mask_png(pending_path(project, 1, token), new)
    with sqlite3.connect(project / DB_NAME) as c:  # what the killed writer committed
        c.execute("UPDATE images SET status='edited', mask_token=? WHERE id=1", (token,))
    c.close()
    with Project.open(project) as p:
        assert np.array_equal(p.read_mask(1), new) and p.image(1).status == "edited"
    assert _leftovers(project) == []


def test_an_uncommitted_pending_mask_is_removed_once_its_writer_is_gone(project: Path) -> None:
    old_bytes = mask_path(project, 1).read_bytes()
    dead = pending_path(project, 1, f"{DEAD}-2")
    live = pending_path(project, 2, f"{os.getpid()}-3")  # a writer of this process may still commit it
    for path in (dead, live):
        write_mask_png(path, np.ones((H, W), np.uint8))
    with Project.open(project) as p:
        assert p.read_mask(1).max() == 0
    assert mask_path(project, 1).read_bytes() == old_bytes
    assert not dead.exists() and live.exists()


def test_a_slower_writer_never_puts_its_older_mask_over_a_newer_one(project: Path, monkeypatch) -> None:  # noqa: ANN001
    held: list[tuple] = []
    with Project.open(project) as slow, Project.open(project) as fast:
        monkeypatch.setattr(project_module, "_place_masks", lambda *args: held.append(args))
        slow.save_mask(1, np.full((H, W), 1, np.uint8))  # committed; its move is held back
        monkeypatch.undo()
        fast.save_mask(1, np.zeros((H, W), np.uint8))  # commits and moves after it
        mask_commit.place(*held[0])  # the slow writer's move comes last
        assert read_mask_png(mask_path(project, 1)).max() == 0
    assert _leftovers(project) == []


# ---------------------------------------------------------------- import


def _items(paths: list[Path]) -> list[tuple]:
    return [(path, Project._probe(path), np.full((H, W), 1, np.uint8)) for path in paths]


def test_an_import_whose_commit_fails_moves_no_mask(project: Path, tmp_path: Path) -> None:
    items = _items(_new_images(tmp_path, 2))
    before = snapshot(project / "masks")
    with Project.open(project) as p:
        real = p._conn
        p._conn = _CommitFails(real)
        try:
            with pytest.raises(AtrousWriteError, match="locked"):
                p.import_batch(items)
        finally:
            p._conn = real
    assert snapshot(project / "masks") == before and _leftovers(project) == []
    with Project.open(project) as p:
        assert [r.id for r in p.images()] == [1, 2]


def test_an_import_cut_short_after_its_commit_is_finished_on_open(project: Path, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    items = _items(_new_images(tmp_path, 2))
    with Project.open(project) as p:
        _fail_moves_of(monkeypatch, ".staging-")
        with pytest.raises(AtrousWriteError, match="next opened"):
            p.import_batch(items)
        monkeypatch.undo()
        ids = [r.id for r in p.images()]
        assert len(ids) == 4 and not mask_path(project, ids[2]).exists()
        assert len(_leftovers(project)) == 1  # the staging folder, full
    with Project.open(project) as p:
        for image_id in ids[2:]:
            assert p.read_mask(image_id).all()
    assert _leftovers(project) == []


def test_a_dead_import_that_never_committed_is_removed_on_open(project: Path) -> None:
    staged = staging_dir(project, f"{DEAD}-4") / "2.png"
    write_mask_png(staged, np.ones((H, W), np.uint8))
    with Project.open(project) as p:
        assert p.read_mask(2).all() and p.read_mask(1).max() == 0
    assert read_mask_png(mask_path(project, 1)).max() == 0
    assert _leftovers(project) == []


# ---------------------------------------------------------------- check and --repair


def test_check_lists_a_committed_mask_not_in_place_and_repair_places_it(project: Path, atrous: Atrous) -> None:
    token = f"{DEAD}-5"
    write_mask_png(pending_path(project, 2, token), np.zeros((H, W), np.uint8))
    with sqlite3.connect(project / DB_NAME) as c:
        c.execute("UPDATE images SET mask_token=? WHERE id=2", (token,))
    c.close()
    stale = pending_path(project, 1, f"{DEAD}-6")  # never committed: a leftover
    write_mask_png(stale, np.ones((H, W), np.uint8))
    before = snapshot(project)
    run = atrous("check", project)
    assert run.rc == 1, run.err
    lines = run.out.splitlines()
    assert lines[0].startswith("unplaced-mask: ") and "(image 2)" in lines[0], run.out
    assert "put the committed mask in place" in lines[0]
    assert any(line.startswith(f"leftover: {stale}") for line in lines), run.out
    assert lines[-1].endswith("2 problem(s)")
    assert snapshot(project) == before  # check writes nothing
    run = atrous("check", project, "--repair")
    assert run.rc == 0, run.out + run.err
    assert "putting the committed mask of image 2 in place" in run.out
    assert read_mask_png(mask_path(project, 2)).max() == 0 and read_mask_png(mask_path(project, 1)).max() == 0
    assert _leftovers(project) == []
