"""The project lock: class changes, imports and pre-label jobs never write over each other's class list."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from annotation import class_edits, locks
from annotation.errors import AtrousWriteError
from annotation.locks import HOLDER_PREFIX, holders, project_lock
from annotation.project import Project

from ..badfiles import photo
from .conftest import REPO, Atrous, snapshot
from .makers import H, W


def hold(root: Path, *, exclusive: bool, what: str) -> subprocess.Popen[str]:
    """A child process that takes the lock, says ``held`` and keeps it until killed or its stdin closes."""
    script = textwrap.dedent(
        f"""
        import sys
        from annotation.locks import project_lock
        with project_lock({str(root)!r}, exclusive={exclusive}, what={what!r}):
            print("held", flush=True)
            sys.stdin.read()
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO, env=env
    )
    assert p.stdout is not None and p.stdout.readline().strip() == "held"
    return p


def release(p: subprocess.Popen[str]) -> None:
    assert p.stdin is not None
    p.stdin.close()
    assert p.wait(timeout=30) == 0


@pytest.fixture
def project(tmp_path: Path, atrous: Atrous) -> Path:
    """A project of two labelled 60x40 images, classes background, cat, dog."""
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    for i, name in enumerate("ab"):
        Image.fromarray(photo(H, W, seed=i)).save(images / f"{name}.png")
        Image.fromarray(np.full((H, W), 2, np.uint8), mode="L").save(labels / f"{name}.png")
    (tmp_path / "classes.txt").write_text("background\ncat\ndog\n")
    proj = tmp_path / "proj"
    run = atrous("import", proj, "--format", "masks", labels, "--images", images, "--classes", tmp_path / "classes.txt")
    assert run.rc == 0, run.err
    return proj


@pytest.fixture(autouse=True)
def short_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(locks, "DEFAULT_TIMEOUT", 0.3)


def test_two_class_changes_one_fails_naming_the_other(project: Path) -> None:
    other = hold(project, exclusive=True, what="a class change")
    try:
        with Project.open(project) as p:
            before = snapshot(project)
            edit = class_edits.delete_class(p.classes(), 1, 0)
            with pytest.raises(AtrousWriteError, match=rf"a class change \(pid {other.pid}\)"):
                class_edits.apply_class_edit(p, edit)
            assert snapshot(project) == before
    finally:
        release(other)
    with Project.open(project) as p:  # once the other is done, the same change goes through
        class_edits.apply_class_edit(p, class_edits.delete_class(p.classes(), 1, 0))
        assert [c.name for c in p.classes()] == ["background", "dog"]
        assert int(p.read_mask(p.images()[0].id).max()) == 1  # dog moved up one index with the list
    assert not any(f.name.startswith(HOLDER_PREFIX) for f in project.iterdir())


def test_class_change_refused_while_a_prelabel_job_writes(project: Path) -> None:
    job = hold(project, exclusive=False, what="a pre-label job")
    try:
        with Project.open(project) as p:
            edit = class_edits.delete_class(p.classes(), 1, 0)
            with pytest.raises(AtrousWriteError) as e:
                class_edits.apply_class_edit(p, edit)
            assert f"a pre-label job (pid {job.pid}) is writing to this project" in str(e.value)
            assert [c.name for c in p.classes()] == ["background", "cat", "dog"]
            assert int(p.read_mask(p.images()[0].id).max()) == 2
    finally:
        release(job)


def test_import_waits_for_no_prelabel_job_and_changes_nothing(project: Path, tmp_path: Path, atrous: Atrous) -> None:
    labels = tmp_path / "labels2"
    labels.mkdir()
    Image.fromarray(np.full((H, W), 1, np.uint8), mode="L").save(labels / "a.png")
    (tmp_path / "other.txt").write_text("background\nbird\ncat\ndog\n")
    job = hold(project, exclusive=False, what="a pre-label job")
    try:
        before = snapshot(project)
        args = ("import", project, "--format", "masks", labels, "--images", tmp_path / "images")
        run = atrous(*args, "--classes", tmp_path / "other.txt", "--status", "edited")
        run.refused(project, "a pre-label job", f"pid {job.pid}")
        assert snapshot(project) == before
    finally:
        release(job)


def test_shared_holders_go_on_together(project: Path) -> None:
    job = hold(project, exclusive=False, what="a pre-label job")
    try:
        with project_lock(project, exclusive=False, what="another pre-label job"):
            assert sorted(w for _, w in holders(project)) == ["a pre-label job", "another pre-label job"]
    finally:
        release(job)


def test_two_imports_into_one_new_folder_are_serialised(tmp_path: Path) -> None:
    root = tmp_path / "new"
    first = hold(root, exclusive=True, what="an import")
    try:
        assert root.is_dir() and not any(root.iterdir())  # a new folder stays empty for the import's own check
        with (
            pytest.raises(AtrousWriteError, match="is writing to this project"),
            project_lock(root, exclusive=True, what="an import"),
        ):
            pass
    finally:
        release(first)
    assert not root.exists()  # made for an import that wrote nothing: removed again


def test_a_killed_holder_leaves_the_lock_free(project: Path) -> None:
    job = hold(project, exclusive=True, what="a class change")
    assert [p for p, _ in holders(project)] == [job.pid]
    job.send_signal(signal.SIGKILL)
    job.wait(timeout=30)
    with project_lock(project, exclusive=True, what="a class change"):
        # the next holder sweeps the dead holder's note away, without anyone asking who holds it
        notes = [f.name for f in project.iterdir() if f.name.startswith(HOLDER_PREFIX)]
        assert [n.split("-")[2] for n in notes] == [str(os.getpid())]
        assert [p for p, _ in holders(project)] == [os.getpid()]
    assert not any(f.name.startswith(HOLDER_PREFIX) for f in project.iterdir())


def test_nested_in_one_thread_other_threads_contend(project: Path) -> None:
    errors: list[str] = []
    with project_lock(project, exclusive=True, what="a class change"):
        with project_lock(project, exclusive=False, what="a pre-label job"):  # nested: free
            pass

        def other() -> None:
            try:
                with project_lock(project, exclusive=False, what="a pre-label job"):
                    errors.append("taken")
            except AtrousWriteError as e:
                errors.append(str(e))

        t = threading.Thread(target=other)
        t.start()
        t.join()
    assert len(errors) == 1 and "a class change" in errors[0]
    shared = project_lock(project, exclusive=False, what="a pre-label job")
    refused = pytest.raises(AtrousWriteError, match="needs the project to itself")
    with shared, refused, project_lock(project, exclusive=True, what="a class change"):
        pass


def test_new_refused_while_another_creates_the_same_folder(tmp_path: Path, atrous: Atrous) -> None:
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(photo(H, W, seed=0)).save(images / "a.png")
    root = tmp_path / "new"
    first = hold(root, exclusive=True, what="a project creation")
    try:
        atrous("new", root, "--images", images).refused(root, "is writing to this project")
        assert not any(root.iterdir())  # the other creation's folder is left as it was
    finally:
        release(first)
    assert atrous("new", root, "--images", images).rc == 0
    with Project.open(root) as p:
        assert [r.name for r in p.images()] == ["a.png"]


def test_a_dead_holders_note_that_cannot_be_removed_does_not_stop_the_next_holder(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = project / f"{HOLDER_PREFIX}{int(gone.stdout)}-1"
    dead.write_text("a pre-label job")
    real_unlink = Path.unlink

    def refuse(self: Path, missing_ok: bool = False) -> None:
        if self == dead:
            raise PermissionError(13, "Permission denied", str(self))  # a read-only project folder
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", refuse)
    with project_lock(project, exclusive=True, what="a class change"):
        assert [p for p, _ in holders(project)] == [os.getpid()]
    assert dead.exists()
