"""Start-up: the sample project, opening folders, the exception hook, the layering rule."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from annotation.errors import AtrousReadError
from annotation.project import Project
from gui import dialogs

from .conftest import make_images


def test_sample_project_made_on_first_start(isolated_data_dir: Path) -> None:
    from gui.projects import SAMPLE_PROJECT_NAME, ensure_sample_project

    root = ensure_sample_project()
    assert root == isolated_data_dir / SAMPLE_PROJECT_NAME
    with Project.open(root) as p:
        recs = p.images()
        assert len(recs) >= 4
        assert all(r.has_mask and r.status == "prelabeled" for r in recs)
        # images live inside the project (relative paths), masks have more than one class
        assert all(not Path(r.path).is_absolute() for r in recs)
        assert all(len(np.unique(p.read_mask(r.id))) >= 2 for r in recs)
        names = {c.name for c in p.classes()}
    assert {"background", "person"} <= names
    assert ensure_sample_project() == root  # second start reuses it


def test_sample_licenses_cover_every_image() -> None:
    from gui.settings import SAMPLES

    text = (SAMPLES / "LICENSE.md").read_text()
    images = sorted(p.name for p in (SAMPLES / "images").iterdir())
    assert images and all(f"`{n}`" in text for n in images)
    assert sum(p.stat().st_size for p in SAMPLES.rglob("*") if p.is_file()) < 3_000_000


def test_open_image_folder_asks_then_creates_project(qtbot, tmp_path: Path, monkeypatch) -> None:
    from gui.main_window import MainWindow

    folder = tmp_path / "photos"
    make_images(folder, 2)
    asked: list[str] = []
    monkeypatch.setattr(dialogs, "confirm", lambda parent, title, text: (asked.append(text), False)[1])
    win = MainWindow()
    qtbot.addWidget(win)
    assert win.open_path(str(folder)) is False and asked
    assert not (folder / "atrous.sqlite").exists()
    monkeypatch.setattr(dialogs, "confirm", lambda parent, title, text: True)
    assert win.open_path(str(folder)) is True
    assert win.project is not None and len(win.project.images()) == 2
    assert win.current_model is not None
    win.close()
    # the second time it is a project: no question
    monkeypatch.setattr(dialogs, "confirm", lambda *a: pytest.fail("asked again"))
    from gui.projects import open_or_create

    with open_or_create(folder, lambda t: False) as p:
        assert len(p.images()) == 2


def test_excepthook_logs_and_shows(monkeypatch, isolated_data_dir: Path) -> None:
    from gui.app import excepthook

    shown: list[tuple] = []
    monkeypatch.setattr(
        dialogs, "show_error", lambda parent, title, text, details=None: shown.append((title, text, details))
    )
    try:
        raise ZeroDivisionError("boom")
    except ZeroDivisionError:
        excepthook(*sys.exc_info())
    try:
        raise AtrousReadError("photo.png: truncated")
    except AtrousReadError:
        excepthook(*sys.exc_info())
    for h in logging.getLogger("atrous").handlers:
        h.flush()
    log = (isolated_data_dir / "atrous.log").read_text()
    assert "ZeroDivisionError: boom" in log and "Traceback" in log
    assert shown[0][0] == "Unexpected error" and "boom" in shown[0][1] and "Traceback" in shown[0][2]
    assert shown[1] == ("Atrous", "photo.png: truncated", None)


def test_gui_does_not_import_torch() -> None:
    """The window may use model's torch-free modules (the resolver, the job); never the network code."""
    code = (
        "import sys, gui.app, gui.main_window, gui.canvas, gui.workers, gui.projects;"
        "torch_free={'model','model.jobs','model.versions','model.progress'};"
        "bad=[m for m in sys.modules if m.split('.')[0] in ('torch','torchvision') or"
        " (m.split('.')[0]=='model' and m not in torch_free)];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    repo = Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
