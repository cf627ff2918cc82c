"""Pre-labelling from the GUI through the real worker thread and a tiny checkpoint."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QItemSelectionModel, Qt

from annotation.confidence import confidence_path
from annotation.masks import read_mask_png
from annotation.project import Project
from gui import dialogs
from gui.main_window import MainWindow

from .conftest import CLASSES, H, W, make_images, shown_window


def _use(win: MainWindow, ckpt: Path) -> None:
    win.model_panel.add_file(str(ckpt))
    win.model_panel.device_combo.setCurrentIndex(win.model_panel.device_combo.findData("cpu"))


def _run(qtbot, win: MainWindow, scope: str, **kw):
    with qtbot.waitSignal(win.prelabel.finished, timeout=60000) as blocker:
        assert win.prelabel_images(scope, **kw)
    return blocker.args[0]


def _select(win: MainWindow, ids: list[int]) -> None:
    win.image_list.clearSelection()
    for i in range(win.image_list.count()):
        item = win.image_list.item(i)
        if item.data(Qt.ItemDataRole.UserRole) in ids:
            win.image_list.selectionModel().select(
                win.image_list.indexFromItem(item), QItemSelectionModel.SelectionFlag.Select
            )


def test_prelabel_selected_images(qtbot, window: MainWindow, tiny_checkpoint: Path, project_path: Path) -> None:
    _use(window, tiny_checkpoint)
    ids = [r.id for r in window.project.images()]
    _select(window, ids[1:])
    summary = _run(qtbot, window, "selected")
    assert summary.total == 2 and summary.saved == 2 and not summary.failed and not summary.cancelled
    for i in ids[1:]:
        rec = window.project.image(i)
        assert rec.status == "prelabeled" and rec.has_mask
        assert rec.mean_confidence is not None and 0.0 <= rec.mean_confidence <= 1.0
        assert read_mask_png(project_path / "masks" / f"{i}.png").shape == (H, W)
        assert confidence_path(project_path, i).is_file()
        assert i in window.confidence
    assert "CPU" in window.model_panel.info_label.text()
    assert "pre-labelled" in window.image_list.item(1).text()
    # the first image (not selected) is untouched
    assert window.project.image(ids[0]).prelabel_model_version is None
    assert not window.prelabel.running


def test_edited_and_reviewed_images_are_skipped(
    qtbot, window: MainWindow, tiny_checkpoint: Path, project_path: Path
) -> None:
    _use(window, tiny_checkpoint)
    ids = [r.id for r in window.project.images()]
    person = np.full((H, W), 3, np.uint8)
    window.project.save_mask(ids[1], person, status="edited")
    window.project.save_mask(ids[2], person, status="reviewed")
    window._fill_image_list()
    _select(window, ids[1:])
    summary = _run(qtbot, window, "selected")
    assert summary.saved == 0 and len(summary.skipped) == 2
    for i in ids[1:]:
        np.testing.assert_array_equal(read_mask_png(project_path / "masks" / f"{i}.png"), person)
    assert window.project.image(ids[1]).status == "edited"
    assert window.project.image(ids[2]).status == "reviewed"
    texts = [window.model_panel.problem_list.item(k).text() for k in range(window.model_panel.problem_list.count())]
    assert sum("not overwritten" in t for t in texts) == 2


def test_open_edited_image_is_skipped_without_overwrite(qtbot, window: MainWindow, tiny_checkpoint: Path) -> None:
    _use(window, tiny_checkpoint)
    before = window.current_model.label_map.copy()
    window.save_current("edited", force=True)
    summary = _run(qtbot, window, "current")
    assert summary.saved == 0 and summary.handed == 0 and len(summary.skipped) == 1
    np.testing.assert_array_equal(window.current_model.label_map, before)
    assert not window.current_model.can_undo


def test_overwrite_is_confirmed_and_stays_undoable(
    qtbot, window: MainWindow, tiny_checkpoint: Path, project_path: Path, monkeypatch
) -> None:
    _use(window, tiny_checkpoint)
    first = window.current_id
    old = window.current_model.label_map.copy()
    window.save_current("edited", force=True)
    asked: list[str] = []
    monkeypatch.setattr(dialogs, "confirm", lambda _p, title, _t: asked.append(title) or True)
    window.model_panel.overwrite_check.setChecked(True)
    results = []
    window.prelabel.result.connect(results.append)
    summary = _run(qtbot, window, "current")
    assert asked, "overwriting a person's work must be confirmed"
    assert summary.handed == 1 and summary.saved == 0
    pred = results[0].labels
    np.testing.assert_array_equal(window.current_model.label_map, pred)
    np.testing.assert_array_equal(read_mask_png(project_path / "masks" / f"{first}.png"), pred)
    assert window.project.image(first).status == "prelabeled"
    assert window.canvas.has_confidence
    # one Ctrl+Z gives the person's mask back, and it is saved as theirs again
    qtbot.keyClick(window.canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    np.testing.assert_array_equal(window.current_model.label_map, old)
    assert window.save_current()
    np.testing.assert_array_equal(read_mask_png(project_path / "masks" / f"{first}.png"), old)
    assert window.project.image(first).status == "edited"


def test_overwrite_declined_starts_nothing(qtbot, window: MainWindow, tiny_checkpoint: Path, monkeypatch) -> None:
    _use(window, tiny_checkpoint)
    window.save_current("edited", force=True)
    window._refresh_record(window.current_id)
    monkeypatch.setattr(dialogs, "confirm", lambda *_a: False)
    window.model_panel.overwrite_check.setChecked(True)
    assert not window.prelabel_images("current")
    assert not window.prelabel.running


def test_result_for_the_open_image_appears_through_its_document(
    qtbot, window: MainWindow, tiny_checkpoint: Path
) -> None:
    _use(window, tiny_checkpoint)
    ids = [r.id for r in window.project.images()]
    window.show_image(ids[1])  # status new, open: the worker hands its prediction to the window
    assert window.current_model.label_map.max() == 0
    summary = _run(qtbot, window, "current")
    assert summary.handed == 1
    assert window.project.image(ids[1]).status == "prelabeled"
    assert window.current_model.can_undo and not window.current_model.dirty
    np.testing.assert_array_equal(window.current_model.label_map, window.project.read_mask(ids[1]))


@pytest.fixture
def five_image_project(tmp_path: Path) -> Path:
    root = tmp_path / "proj5"
    make_images(tmp_path / "imgs5", n=5)
    with Project.create(root, CLASSES) as proj:
        proj.add_images(tmp_path / "imgs5")
    return root


@pytest.fixture
def window5(qtbot, five_image_project: Path):
    yield from shown_window(qtbot, five_image_project)


def test_cancel_stops_within_one_image(qtbot, window5: MainWindow, tiny_checkpoint: Path, monkeypatch) -> None:
    import annotation.imageio as imageio
    import model.predictor as mp

    _use(window5, tiny_checkpoint)
    real = imageio.load_image
    predict_files = mp.Predictor.predict_files
    in_second = threading.Event()
    cancelled = threading.Event()
    calls: list[Path] = []

    def slow_load(path, *a, **kw):
        calls.append(Path(path))
        if len(calls) == 2:
            in_second.set()
            cancelled.wait(30)  # the person presses Cancel while image 2 is being predicted
        return real(path, *a, **kw)

    # The job decodes ahead of inference (the CLI's prefetch); every decode goes through slow_load.
    monkeypatch.setattr(
        mp.Predictor, "predict_files", lambda self, paths, **kw: predict_files(self, paths, loader=slow_load, **kw)
    )
    with qtbot.waitSignal(window5.prelabel.finished, timeout=60000) as blocker:
        assert window5.prelabel_images("new")
        qtbot.waitUntil(in_second.is_set, timeout=30000)
        window5.model_panel.cancel_button.click()
        cancelled.set()
    summary = blocker.args[0]
    # Decoding runs ahead of inference, so Cancel lands while image 1 or 2 is being predicted; the job
    # stops before the next one, and what was decoded ahead is dropped, never recorded.
    assert summary.cancelled and summary.done in (1, 2) and 2 <= len(calls) <= 5
    statuses = [r.status for r in window5.project.images()]
    assert statuses.count("new") == 5 - summary.done
    assert "Cancelled" in window5.model_panel.progress_label.text()


def test_bad_image_is_listed_and_the_batch_goes_on(
    qtbot, window5: MainWindow, tiny_checkpoint: Path, five_image_project: Path
) -> None:
    _use(window5, tiny_checkpoint)
    recs = window5.project.images()
    bad = recs[2]
    window5.project.image_path(bad).write_bytes(b"this is not a png")
    summary = _run(qtbot, window5, "new")
    assert len(summary.failed) == 1 and summary.failed[0][0] == bad.id
    assert summary.saved + summary.handed == 4
    assert window5.project.image(bad.id).status == "new"
    problems = [
        window5.model_panel.problem_list.item(k).text() for k in range(window5.model_panel.problem_list.count())
    ]
    assert any(bad.name in t for t in problems)


def test_unloadable_model_shows_its_message(qtbot, window: MainWindow, tmp_path: Path, caplog) -> None:
    missing = tmp_path / "nowhere.pt"
    missing.write_bytes(b"")
    window.model_panel.add_file(str(missing))
    with caplog.at_level("INFO", logger="atrous"), qtbot.waitSignal(window.prelabel.finished, timeout=30000):
        assert window.prelabel_images("current")
    assert window.model_panel.error_label.isVisibleTo(window.model_panel)
    assert "empty" in window.model_panel.error_label.text()
    # not "Done: 0 pre-labelled" under a 0/1 bar: the batch never ran, and the log says why
    assert window.model_panel.progress_label.text().startswith("Nothing was pre-labelled")
    assert not window.model_panel.progress_bar.isVisibleTo(window.model_panel)
    assert any("could not be used" in r.getMessage() and "empty" in r.getMessage() for r in caplog.records)
    assert window.project.image(window.current_id).status == "prelabeled"  # the fixture's, unchanged


def test_ctrl_click_accepts_a_region(qtbot, window: MainWindow) -> None:
    qtbot.keyClick(window.canvas, Qt.Key.Key_2)
    before = window.current_model.label_map.copy()
    c = window.canvas
    qtbot.mouseClick(
        c, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.ControlModifier, c.image_to_widget(5, 5).toPoint()
    )
    m = window.current_model.label_map
    assert (m[:, : W // 2] == 2).all() and (m[:, W // 2 :] == 0).all()
    qtbot.keyClick(c, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    np.testing.assert_array_equal(window.current_model.label_map, before)


def test_the_window_opens_without_importing_torch() -> None:
    import subprocess
    import sys

    # gui may use model's torch-free modules (the resolver, the job); torch itself loads on first model use.
    code = "import sys, gui.main_window, gui.finetune_dialog; print('torch' in sys.modules or 'torchvision' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=120,
        env={**__import__("os").environ, "QT_QPA_PLATFORM": "offscreen"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"
