"""The first window on small screens: 1280x800 and 1366x768, the sample project's six classes.

The offscreen platform's screen is not these sizes, so each test hands the window's
``_default_geometry`` the free area such a screen has, then checks what a person
would see: the status bar inside the screen, no tool bar hiding buttons behind its
overflow arrow, the image list's confidence and the class table without a scroll bar,
and no label or button narrower than its text.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import QRect
from PySide6.QtWidgets import QAbstractButton, QApplication, QLabel, QToolBar, QToolButton

from annotation.project import Project
from gui.main_window import MainWindow

SCREENS = {"1280x800": QRect(0, 0, 1280, 800), "1366x768": QRect(0, 0, 1366, 768)}


@pytest.fixture
def sample_window(qtbot):
    from gui.projects import ensure_sample_project

    win = MainWindow(Project.open(ensure_sample_project()))
    qtbot.addWidget(win)
    yield win
    if win.isVisible():
        win.close()
    win.cache.shutdown()


def _lay_out(qtbot, win: MainWindow, screen: QRect) -> None:
    win._default_geometry(screen)
    win.show()
    qtbot.waitExposed(win)
    QApplication.processEvents()


def _visible(win: MainWindow, widget) -> bool:
    return widget.isVisibleTo(win) and widget.window() is win


@pytest.mark.parametrize("name", list(SCREENS))
def test_window_and_status_bar_fit_the_screen(qtbot, sample_window: MainWindow, name: str) -> None:
    screen = SCREENS[name]
    _lay_out(qtbot, sample_window, screen)
    geo = sample_window.geometry()
    # room for a title bar (about 30 px) and a frame, which the window manager adds outside
    assert geo.width() <= screen.width() - 16 and geo.height() <= screen.height() - 48, geo
    assert screen.contains(geo)
    sb = sample_window.statusBar()
    assert sb.isVisible()
    top_left = sb.mapTo(sample_window, sb.rect().topLeft())
    assert top_left.y() + sb.height() <= geo.height()
    assert sample_window.minimumSizeHint().height() <= geo.height(), "the docks force a taller window"


@pytest.mark.parametrize("name", list(SCREENS))
def test_tool_bars_do_not_overflow(qtbot, sample_window: MainWindow, name: str) -> None:
    _lay_out(qtbot, sample_window, SCREENS[name])
    bars = sample_window.findChildren(QToolBar)
    assert len(bars) >= 2
    for bar in bars:
        ext = [b for b in bar.findChildren(QToolButton) if b.objectName() == "qt_toolbar_ext_button"]
        assert not any(b.isVisible() for b in ext), f"{bar.windowTitle()} hides buttons behind its overflow arrow"
        assert bar.sizeHint().width() <= bar.width() + 1, (bar.windowTitle(), bar.sizeHint(), bar.width())


@pytest.mark.parametrize("name", list(SCREENS))
def test_image_list_shows_the_confidence(qtbot, sample_window: MainWindow, name: str) -> None:
    _lay_out(qtbot, sample_window, SCREENS[name])
    win = sample_window
    for rid in list(win._records):
        win.mean_confidence[rid] = 0.87
    win._fill_image_list()
    lst = win.image_list
    assert not lst.horizontalScrollBar().isVisible()
    fm = lst.fontMetrics()
    room = lst.viewport().width() - lst.iconSize().width() - 12
    for i in range(lst.count()):
        text = lst.item(i).text()
        assert text.endswith("87 %")
        assert fm.horizontalAdvance(text) <= room, (text, room)
    # a long name is shortened in its middle, so the end (status, confidence) stays visible
    from PySide6.QtCore import Qt

    assert lst.textElideMode() == Qt.TextElideMode.ElideMiddle


@pytest.mark.parametrize("name", list(SCREENS))
def test_class_table_has_no_horizontal_scroll_bar(qtbot, sample_window: MainWindow, name: str) -> None:
    _lay_out(qtbot, sample_window, SCREENS[name])
    tree = sample_window.class_tree
    assert tree.topLevelItemCount() >= 6
    sample_window._update_shares()
    QApplication.processEvents()
    assert not tree.horizontalScrollBar().isVisible()
    total = sum(tree.columnWidth(c) for c in range(tree.columnCount()))
    assert total <= tree.viewport().width()
    fm = tree.fontMetrics()
    for c in (1, 2):  # keys and shares are never cut
        for i in range(tree.topLevelItemCount()):
            assert fm.horizontalAdvance(tree.topLevelItem(i).text(c)) <= tree.columnWidth(c)


@pytest.mark.parametrize("name", list(SCREENS))
def test_no_clipped_labels_or_buttons(qtbot, sample_window: MainWindow, name: str) -> None:
    _lay_out(qtbot, sample_window, SCREENS[name])
    clipped = []
    for w in sample_window.findChildren(QLabel) + sample_window.findChildren(QAbstractButton):
        if not _visible(sample_window, w) or (isinstance(w, QLabel) and w.wordWrap()):
            continue
        if isinstance(w, QToolButton) and w.objectName() == "qt_toolbar_ext_button":
            continue
        text = w.text()
        if text and w.width() < w.minimumSizeHint().width():
            clipped.append((type(w).__name__, text, w.width(), w.minimumSizeHint().width()))
    assert not clipped


def test_empty_window_fits_too(qtbot) -> None:
    win = MainWindow()
    qtbot.addWidget(win)
    _lay_out(qtbot, win, SCREENS["1280x800"])
    assert win.statusBar().isVisible()
    assert win.minimumSizeHint().height() <= win.height()
    win.close()


def test_saved_geometry_wins_over_the_default(qtbot, tmp_path: Path) -> None:
    win = MainWindow()
    qtbot.addWidget(win)
    win.resize(700, 500)
    win.save_settings()
    win.close()
    again = MainWindow()
    qtbot.addWidget(again)
    assert (again.width(), again.height()) == (700, 500)
    again.close()


def test_model_panel_with_a_long_failure_stays_inside_its_dock(qtbot, sample_window: MainWindow) -> None:
    _lay_out(qtbot, sample_window, SCREENS["1280x800"])
    panel = sample_window.model_panel
    panel.set_models([], None, [])
    panel.show_error(
        "Pretrained weights for 'deeplabv3_mobilenet_v3_large' are not on this machine (looked for "
        "/home/someone/.cache/torch/hub/checkpoints/deeplabv3_mobilenet_v3_large-fc3c493d.pth) and could not be "
        "downloaded ([Errno -2] Name or service not known); connect to the internet once so torchvision can cache "
        "them, or pass a checkpoint file with --model PATH."
    )
    panel.show_not_run("Nothing was pre-labelled (see the message above).")
    QApplication.processEvents()
    scroll = panel.parentWidget().parentWidget()  # the dock's scroll area (viewport -> scroll area)
    assert panel.width() <= scroll.viewport().width()
    assert panel.error_label.geometry().right() <= scroll.viewport().width()
    assert "Learn from my strokes" in panel.error_label.text()
