"""One pre-label pipeline: the app's worker and `prelabel PROJECT` leave exactly the same trace."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import main
from annotation.confidence import read_confidence
from annotation.layout import prelabel_path
from annotation.masks import read_mask_png
from annotation.project import Project
from gui.main_window import MainWindow

from .conftest import CLASSES, make_images, shown_window
from .test_prelabel import _run, _use


@pytest.fixture
def twin_projects(tmp_path: Path) -> tuple[Path, Path]:
    """Two identical projects over the same five images."""
    make_images(tmp_path / "imgs", n=5)
    with Project.create(tmp_path / "app", CLASSES) as proj:
        proj.add_images(tmp_path / "imgs")
    shutil.copytree(tmp_path / "app", tmp_path / "cli")
    return tmp_path / "app", tmp_path / "cli"


@pytest.fixture
def app_window(qtbot, twin_projects: tuple[Path, Path]):
    yield from shown_window(qtbot, twin_projects[0])


def _trace(root: Path) -> list[tuple]:
    with Project.open(root) as p:
        out = []
        for r in p.images():
            v = p.model_versions()[r.prelabel_model_version - 1] if r.prelabel_model_version else None
            out.append(
                (
                    r.id,
                    r.status,
                    round(r.mean_confidence or -1, 6),
                    v.checkpoint_path if v else None,
                    p.read_mask(r.id).tobytes(),
                    read_mask_png(prelabel_path(root, r.id)).tobytes(),
                    read_confidence(root, r.id).tobytes(),
                )
            )
        return out


def test_app_and_cli_prelabels_are_the_same(
    qtbot, app_window: MainWindow, twin_projects, tiny_checkpoint: Path
) -> None:
    app, cli = twin_projects
    _use(app_window, tiny_checkpoint)
    summary = _run(qtbot, app_window, "new")
    # the image on screen is handed to its document (one undo step), the others are written by the job
    assert summary.saved + summary.handed == 5 and summary.handed == 1 and not summary.failed
    assert main.main(["prelabel", str(cli), "--model", str(tiny_checkpoint), "--device", "cpu"]) == 0
    a, c = _trace(app), _trace(cli)
    assert [t[:4] for t in a] == [t[:4] for t in c]
    assert all(t[1] == "prelabeled" and t[3] == str(tiny_checkpoint.resolve()) for t in a)
    for ta, tc in zip(a, c, strict=True):
        assert ta[4:] == tc[4:], ta[0]  # mask, kept pre-label copy (the correction log), confidence map
    # the app recorded the outside checkpoint as a model version, as the CLI does, and lists it
    combo = app_window.model_panel.model_combo
    assert any("v1" in combo.itemText(i) for i in range(combo.count()))
    # the open image's document shows what was recorded, and has nothing left to save
    doc = app_window.current_model
    assert doc is not None and not doc.dirty
    assert np.array_equal(doc.label_map, read_mask_png(app / "masks" / f"{app_window.current_id}.png"))


def test_model_panel_follows_the_project(qtbot, app_window: MainWindow, twin_projects, tiny_checkpoint: Path) -> None:
    _, other = twin_projects
    panel = app_window.model_panel
    _use(app_window, tiny_checkpoint)
    with qtbot.waitSignal(app_window.prelabel.finished, timeout=60000):
        assert app_window.check_model()
    assert "tiny" in panel.info_label.text()
    with Project.open(other) as p:  # the other project has an active version of its own
        vid = p.add_model_version("theirs", str(tiny_checkpoint))
        p.active_model_version = vid
    app_window.set_project(Project.open(other))
    assert "tiny" not in panel.info_label.text() and not panel.error_label.isVisibleTo(panel)
    assert panel.choice() is not None and panel.choice().version_id == vid
    assert panel.problem_list.count() == 0
