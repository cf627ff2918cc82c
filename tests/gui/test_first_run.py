"""First run and feedback: which project opens on start, the empty window, Help and View menus,
what a failed pre-label says, and what goes to ``atrous.log``."""

from __future__ import annotations

import logging
import urllib.error
from pathlib import Path

import pytest
from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import QApplication, QDockWidget, QToolBar

from gui import dialogs
from gui.main_window import MainWindow

from .conftest import make_images


def _close(win: MainWindow) -> None:
    win.close()
    win.cache.shutdown()


def test_sample_on_the_very_first_start_then_the_last_project(qtbot, project_path: Path) -> None:
    from gui.app import start_window
    from gui.projects import SAMPLE_PROJECT_NAME

    first = start_window()
    qtbot.addWidget(first)
    assert first.project is not None and first.project.root.name == SAMPLE_PROJECT_NAME
    assert first.open_path(str(project_path))
    _close(first)

    second = start_window()  # the project opened last, not the sample
    qtbot.addWidget(second)
    assert second.project is not None and second.project.root == project_path.resolve()
    _close(second)


def test_later_starts_without_a_last_project_open_an_empty_window(qtbot, project_path: Path) -> None:
    from gui.app import start_window, startup_path
    from gui.settings import mark_started

    mark_started()
    assert startup_path() is None  # no sample again once the app has started here
    win = start_window()
    qtbot.addWidget(win)
    assert win.project is None
    assert "Open project" in win.statusBar().currentMessage()
    needs = [win.act_save, win.act_prelabel, win.act_finetune, win.act_next, win.act_prev, win.act_undo]
    needs += list(win.tool_actions.values())
    assert not any(a.isEnabled() for a in needs)
    class_dock = win.findChild(QDockWidget, "classes_dock")
    model_dock = win.findChild(QDockWidget, "model_dock")
    assert not class_dock.widget().isEnabled() and not model_dock.widget().isEnabled()
    assert not win.model_panel.btn_current.isEnabled() and not win.model_panel.finetune_button.isEnabled()
    assert win.open_path(str(project_path))
    assert all(a.isEnabled() for a in needs)
    assert class_dock.widget().isEnabled() and win.model_panel.btn_current.isEnabled()
    _close(win)


def test_unreadable_file_is_named_when_a_folder_becomes_a_project(qtbot, tmp_path: Path, monkeypatch, caplog) -> None:
    folder = tmp_path / "photos"
    make_images(folder, 2)
    (folder / "broken.png").write_bytes(b"not a picture")
    asked: list[str] = []
    told: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(dialogs, "confirm", lambda parent, title, text: (asked.append(text), True)[1])
    monkeypatch.setattr(dialogs, "show_list", lambda parent, title, text, lines: told.append((text, lines)))
    win = MainWindow()
    qtbot.addWidget(win)
    with caplog.at_level(logging.INFO, logger="atrous"):
        assert win.open_path(str(folder))
    assert "3 image file(s)" in asked[0]
    assert len(win.project.images()) == 2
    assert len(told) == 1 and "2 of the folder's 3" in told[0][0] and "broken.png" in told[0][0]
    assert told[0][1] == [line for line in told[0][1] if "broken.png" in line]
    assert any("broken.png" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)
    _close(win)


def test_view_menu_brings_back_every_dock_and_tool_bar(qtbot, window: MainWindow) -> None:
    in_menu = {id(a) for a in window.view_menu.actions()}
    docks = window.findChildren(QDockWidget)
    bars = window.findChildren(QToolBar)
    assert len(docks) >= 3 and len(bars) >= 2
    for w in docks + bars:
        assert id(w.toggleViewAction()) in in_menu, w.windowTitle()
    dock = window.findChild(QDockWidget, "model_dock")
    dock.close()  # the × of the dock
    assert not dock.isVisible()
    dock.toggleViewAction().trigger()
    assert dock.isVisible()
    bar = window.image_toolbar
    bar.toggleViewAction().trigger()
    assert not bar.isVisible()
    bar.toggleViewAction().trigger()
    assert bar.isVisible()


def test_help_keys_lists_every_shortcut_of_the_window(qtbot, window: MainWindow) -> None:
    from gui.help_dialogs import KeysDialog

    dlg = KeysDialog(window)
    qtbot.addWidget(dlg)
    rows = dlg.rows()
    listed = {keys for _text, keys in rows}
    missing = []
    for act in window.actions():
        keys = ", ".join(k.toString(QKeySequence.SequenceFormat.NativeText) for k in act.shortcuts())
        if keys and keys not in listed:
            missing.append((act.text(), keys))
    assert not missing
    texts = [t for t, _ in rows]
    assert "Brush" in texts and "Next image" in texts and "Keys…" in texts
    assert any(k == "Ctrl+Z" for _, k in rows)
    assert dlg.tree.topLevelItem(dlg.tree.topLevelItemCount() - 1).text(0) == "Canvas and mouse"


def test_help_menu_opens_keys_and_the_loop(qtbot, window: MainWindow) -> None:
    from gui.help_dialogs import KeysDialog, LoopDialog

    help_menu = next(a.menu() for a in window.menuBar().actions() if a.menu() and "Help" in a.menu().title())
    acts = {a.text(): a for a in help_menu.actions()}
    acts["Keys…"].trigger()
    acts["How the loop works…"].trigger()
    QApplication.processEvents()
    keys = window.findChild(KeysDialog)
    loop = window.findChild(LoopDialog)
    assert keys is not None and keys.isVisible() and keys.tree.topLevelItemCount() >= 5
    assert loop is not None and loop.isVisible()
    text = loop.label.text()
    for word in ("Pre-label", "Correct", "Fine-tune", "Export"):
        assert word in text
    acts["Keys…"].trigger()  # a second time: still one Keys dialog
    QApplication.processEvents()
    assert len([d for d in window.findChildren(KeysDialog) if d.isVisible()]) == 1


def test_no_model_guidance_names_the_smart_tools_not_a_missing_version(qtbot) -> None:
    from gui.model_panel import NO_MODEL_HINT, ModelPanel

    offline = (
        "Pretrained weights for 'deeplabv3_mobilenet_v3_large' are not on this machine (looked for /x.pth) and could "
        "not be downloaded ([Errno -2] Name or service not known); connect to the internet once so torchvision can "
        "cache them, or pass a checkpoint file with --model PATH."
    )
    panel = ModelPanel()
    qtbot.addWidget(panel)
    panel.set_models([], None, [])
    panel.show_error(offline)
    shown = panel.error_label.text()
    assert "version above" not in shown and "--model" not in shown
    assert NO_MODEL_HINT in shown and "magic wand W" in shown and "Learn from my strokes" in shown
    panel.set_models([(1, "ft", "/m/v1.pt", True)], 1, [])
    panel.show_error(offline)
    assert "project model version above" in panel.error_label.text()
    assert NO_MODEL_HINT not in panel.error_label.text()


def test_failed_prelabel_says_why_in_the_panel_and_a_message(qtbot, window: MainWindow, tmp_path: Path, caplog) -> None:
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    window.model_panel.add_file(str(empty))
    with caplog.at_level(logging.INFO, logger="atrous"), qtbot.waitSignal(window.prelabel.finished, timeout=30000):
        assert window.prelabel_images("current")
    box = window._failure_box
    assert box.isVisible() and not box.isModal()
    why = window.model_panel.error_label.text()
    assert "empty" in why and box.informativeText() == why  # the same, whole text in both
    assert not window.model_panel.progress_bar.isVisibleTo(window.model_panel)
    assert window.model_panel.progress_label.text().startswith("Nothing was pre-labelled")
    assert any(r.levelno == logging.ERROR and "empty" in r.getMessage() for r in caplog.records)


def test_offline_registry_model_fails_quietly_with_our_message(monkeypatch, tmp_path: Path, capfd) -> None:
    import torch.hub

    from model.weights import WeightsUnavailableError, load_registry_model

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(*_a, **_k):
        raise urllib.error.URLError(OSError(-2, "Name or service not known"))

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsUnavailableError, match="connect to the internet once"):
        load_registry_model("deeplabv3_mobilenet_v3_large")
    out, err = capfd.readouterr()
    assert "Downloading" not in out + err and out + err == ""


def test_worker_errors_reach_the_log_file(qtbot, isolated_data_dir: Path, tmp_path: Path) -> None:
    from annotation.errors import AtrousError
    from gui.app_log import log, log_error, setup_logging
    from gui.finetune_process import FinetuneProcess
    from gui.workers import ImageCache, LoadRequest

    path = setup_logging()
    try:
        log_error("export", "out/ is not empty")
        bad = tmp_path / "bad.png"
        bad.write_bytes(b"nope")
        cache = ImageCache()
        with pytest.raises(AtrousError):
            cache.get(LoadRequest(7, bad, None))
        cache.shutdown()
        proc = FinetuneProcess(tmp_path, {})
        proc._finish_with_error("the project has no edited or reviewed masks to train on")
        for h in log.handlers:
            h.flush()
        text = path.read_text()
    finally:
        for h in [h for h in log.handlers if getattr(h, "baseFilename", None) == str(path)]:
            log.removeHandler(h)
            h.close()
    assert path.parent == isolated_data_dir
    assert "export: out/ is not empty" in text
    assert "image: " in text and "bad.png" in text
    assert "fine-tune: " in text and "no edited or reviewed masks" in text
