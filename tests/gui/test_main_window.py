"""The main window driven by real keys and mouse: tools, undo, switching images, autosave."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtCore import QPoint, Qt

from annotation.masks import read_mask_png
from annotation.project import Project
from gui import dialogs
from gui.main_window import MainWindow
from gui.tools import Tool


def _paint(qtbot, win: MainWindow, pts: list[tuple[int, int]]) -> None:
    c = win.canvas
    wp = [c.image_to_widget(x, y).toPoint() for x, y in pts]
    qtbot.mousePress(c, Qt.MouseButton.LeftButton, pos=wp[0])
    for p in wp[1:]:
        qtbot.mouseMove(c, p)
    qtbot.mouseRelease(c, Qt.MouseButton.LeftButton, pos=wp[-1])


def _disk_mask(project_path: Path, image_id: int) -> np.ndarray:
    return read_mask_png(project_path / "masks" / f"{image_id}.png")


def test_opens_first_image_with_its_mask(window: MainWindow) -> None:
    assert window.current_id == window.project.images()[0].id
    m = window.current_model.label_map
    assert (m[:, :30] == 1).all() and (m[:, 30:] == 0).all()
    assert window.image_list.count() == 3
    assert "pre-labelled" in window.image_list.item(0).text()
    assert "saved" in window.lbl_save.text()


def test_class_hotkeys_and_tool_keys(qtbot, window: MainWindow) -> None:
    qtbot.keyClick(window.canvas, Qt.Key.Key_3)
    assert window.tools.class_value == 3
    qtbot.keyClick(window.canvas, Qt.Key.Key_2)
    assert window.tools.class_value == 2
    qtbot.keyClick(window.canvas, Qt.Key.Key_8)  # no class 8: unchanged
    assert window.tools.class_value == 2
    for key, tool in (
        (Qt.Key.Key_E, Tool.ERASER),
        (Qt.Key.Key_F, Tool.FILL),
        (Qt.Key.Key_P, Tool.POLYGON),
        (Qt.Key.Key_B, Tool.BRUSH),
    ):
        qtbot.keyClick(window.canvas, key)
        assert window.tools.tool is tool
    r = window.tools.radius
    qtbot.keyClick(window.canvas, Qt.Key.Key_BracketRight)
    assert window.tools.radius > r
    assert window.size_spin.value() == round(window.tools.radius * 2)


def test_undo_redo_shortcuts(qtbot, window: MainWindow) -> None:
    qtbot.keyClick(window.canvas, Qt.Key.Key_2)
    before = window.current_model.label_map.copy()
    _paint(qtbot, window, [(5, 5), (20, 5)])
    after = window.current_model.label_map.copy()
    assert after[5, 10] == 2
    qtbot.keyClick(window.canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    np.testing.assert_array_equal(window.current_model.label_map, before)
    qtbot.keyClick(window.canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    np.testing.assert_array_equal(window.current_model.label_map, after)
    qtbot.keyClick(window.canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    qtbot.keyClick(window.canvas, Qt.Key.Key_Y, Qt.KeyboardModifier.ControlModifier)
    np.testing.assert_array_equal(window.current_model.label_map, after)


def test_switching_saves_and_keeps_undo_history(qtbot, window: MainWindow, project_path: Path) -> None:
    first = window.current_id
    qtbot.keyClick(window.canvas, Qt.Key.Key_3)
    _paint(qtbot, window, [(40, 20), (50, 20)])
    painted = window.current_model.label_map.copy()
    assert "unsaved" in window.lbl_save.text()
    qtbot.keyClick(window.canvas, Qt.Key.Key_D)
    assert window.current_id != first
    np.testing.assert_array_equal(_disk_mask(project_path, first), painted)
    rec = window.project.image(first)
    assert rec.status == "edited" and rec.changed_pixels > 0
    # the second image had no mask: it starts as background
    assert (window.current_model.label_map == 0).all()
    qtbot.keyClick(window.canvas, Qt.Key.Key_PageDown)
    third = window.current_id
    qtbot.keyClick(window.canvas, Qt.Key.Key_A)
    qtbot.keyClick(window.canvas, Qt.Key.Key_PageUp)
    assert window.current_id == first
    np.testing.assert_array_equal(window.current_model.label_map, painted)
    # undo history survived the round trip
    qtbot.keyClick(window.canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert window.current_model.label_map[20, 45] == 0
    assert third != first


def test_autosave_after_idle(qtbot, window: MainWindow, project_path: Path) -> None:
    window.autosave_timer.setInterval(50)
    qtbot.keyClick(window.canvas, Qt.Key.Key_2)
    _paint(qtbot, window, [(45, 30)])
    image_id = window.current_id
    qtbot.waitUntil(lambda: _disk_mask(project_path, image_id)[30, 45] == 2, timeout=20000)
    assert not window.current_model.dirty
    assert "saved" in window.lbl_save.text()


def test_mark_reviewed_with_space_and_r(qtbot, window: MainWindow) -> None:
    first = window.current_id
    qtbot.keyClick(window.canvas, Qt.Key.Key_Space)
    assert window.project.image(first).status == "reviewed"
    second = window.current_id
    assert second != first
    qtbot.keyClick(window.canvas, Qt.Key.Key_R)
    rec = window.project.image(second)
    assert rec.status == "reviewed" and rec.has_mask  # an unmasked image is saved as all background
    assert "2/3 reviewed" in window.progress_label.text()


def test_space_drag_pans_instead_of_reviewing(qtbot, window: MainWindow) -> None:
    c = window.canvas
    first = window.current_id
    before = c.model.label_map.copy()
    off = c.offset
    qtbot.keyPress(c, Qt.Key.Key_Space)
    qtbot.mousePress(c, Qt.MouseButton.LeftButton, pos=QPoint(200, 200))
    qtbot.mouseMove(c, QPoint(240, 220))
    qtbot.mouseRelease(c, Qt.MouseButton.LeftButton, pos=QPoint(240, 220))
    qtbot.keyRelease(c, Qt.Key.Key_Space)
    assert window.current_id == first
    assert c.offset != off
    np.testing.assert_array_equal(c.model.label_map, before)


def test_filter_and_search(qtbot, window: MainWindow) -> None:
    window.status_filter.setCurrentIndex(window.status_filter.findData("new"))
    assert len(window._visible_ids()) == 2
    window.status_filter.setCurrentIndex(0)
    window.search_edit.setText("img02")
    ids = window._visible_ids()
    assert len(ids) == 1 and window.project.image(ids[0]).name == "img02.png"
    qtbot.keyClick(window.canvas, Qt.Key.Key_D)  # current image is filtered out: next visible one
    assert window.current_id == ids[0]


def test_neighbours_of_an_image_the_filter_hides(qtbot, window: MainWindow) -> None:
    a, b, c = window._visible_ids()
    window.show_image(b)
    window.search_edit.setText("img0")  # all three
    window.status_filter.setCurrentIndex(window.status_filter.findData("new"))  # b and c are new, a is not
    assert window._visible_ids() == [b, c]
    window.show_image(a)  # shown although filtered out (the filter was set after)
    window.status_filter.setCurrentIndex(window.status_filter.findData("prelabeled"))
    assert window._visible_ids() == [a] and window.current_id == a
    window.current_id = b  # b is hidden now: its neighbours are found by its row
    assert window._neighbour(1) is None and window._neighbour(-1) == a
    window.status_filter.setCurrentIndex(window.status_filter.findData("new"))
    window.current_id = a
    assert window._neighbour(1) == b and window._neighbour(-1) is None
    assert "2 shown" in window.progress_label.text()


def test_prefetches_next_image(qtbot, window: MainWindow) -> None:
    nxt = window._neighbour(1)
    qtbot.waitUntil(lambda: nxt in window.cache, timeout=20000)


def test_close_saves_unsaved_edits(qtbot, window: MainWindow, project_path: Path) -> None:
    qtbot.keyClick(window.canvas, Qt.Key.Key_3)
    _paint(qtbot, window, [(50, 10)])
    image_id = window.current_id
    window.close()
    assert _disk_mask(project_path, image_id)[10, 50] == 3


def test_close_when_saving_fails_asks_and_cancel_keeps_window(qtbot, window: MainWindow, monkeypatch) -> None:
    qtbot.keyClick(window.canvas, Qt.Key.Key_3)
    _paint(qtbot, window, [(50, 10)])

    def broken(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(window.project, "save_mask", broken)
    answers = ["retry", "cancel"]
    asked: list[str] = []
    monkeypatch.setattr(dialogs, "save_failed", lambda parent, text: (asked.append(text), answers.pop(0))[1])
    window.close()
    assert window.isVisible() and len(asked) == 2 and "disk full" in asked[0]
    assert window.current_model.dirty
    monkeypatch.setattr(dialogs, "save_failed", lambda parent, text: "discard")
    window.close()
    assert not window.isVisible()


def test_classes_add_rename_recolour(qtbot, window: MainWindow, project_path: Path) -> None:
    new = window.add_class("road", (10, 20, 30))
    assert new.index == 4 and window.tools.class_value == 4
    window.rename_class(4, "street")
    window.recolour_class(4, (1, 2, 3))
    with Project.open(project_path) as p:
        c = {c.index: c for c in p.classes()}[4]
    assert c.name == "street" and c.colour == (1, 2, 3)
    names = [window.class_tree.topLevelItem(i).text(0) for i in range(window.class_tree.topLevelItemCount())]
    assert "street" in names and "void / ignore" in names
    qtbot.keyClick(window.canvas, Qt.Key.Key_4)
    assert window.tools.class_value == 4
    # pixel share column: first image is half class 1
    item = next(
        window.class_tree.topLevelItem(i)
        for i in range(window.class_tree.topLevelItemCount())
        if window.class_tree.topLevelItem(i).text(0) == "person"
    )
    assert item.text(2) == "50.0 %"


def test_settings_persist_between_windows(qtbot, window: MainWindow, project_path: Path) -> None:
    qtbot.keyClick(window.canvas, Qt.Key.Key_F)
    window.tools.radius = 13
    window.opacity_slider.setValue(70)
    window.close()
    win2 = MainWindow(Project.open(project_path))
    qtbot.addWidget(win2)
    assert win2.tools.tool is Tool.FILL and win2.tools.radius == 13 and win2.opacity_slider.value() == 70
    from gui.settings import recent_projects

    assert str(project_path.resolve()) in recent_projects()
    win2.close()


def test_lock_combo_protects_neighbours(qtbot, window: MainWindow) -> None:
    from gui.tools import LOCK_UNLABELLED

    window.set_lock(LOCK_UNLABELLED)
    qtbot.keyClick(window.canvas, Qt.Key.Key_2)
    window.tools.radius = 40
    _paint(qtbot, window, [(30, 20)])
    m = window.current_model.label_map
    assert (m[:, :30] == 1).all()  # class 1 untouched
    assert (m[:, 30:] == 2).all()


def test_reopening_a_project_shows_the_image_left_last(qtbot, project_path: Path) -> None:
    from .conftest import shown_window

    first = shown_window(qtbot, project_path)
    win = next(first)
    win.navigate(1)
    win.navigate(1)
    left_on = win.current_id
    assert left_on == win._visible_ids()[2]
    next(first, None)  # closes the window (save_settings)
    again = shown_window(qtbot, project_path)
    win2 = next(again)
    assert win2.current_id == left_on
    win2.project.forget_image(left_on)  # gone since: the first image instead
    win2.set_project(Project.open(project_path))
    assert win2.current_id == win2._visible_ids()[0]
    next(again, None)
