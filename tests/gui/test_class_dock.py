"""The class dock: add several classes, class files, delete / merge / reorder, keys past 9, the background."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QApplication, QDialogButtonBox

from annotation.masks import VOID, read_mask_png
from annotation.project import Project
from gui import dialogs
from gui.class_dialogs import AddClassesDialog, ClassPicker, DeleteClassDialog, class_key
from gui.main_window import MainWindow
from gui.tools import Tool

from .conftest import CLASSES, H, W


def _names(win: MainWindow) -> list[str]:
    return [c.name for c in win.project.classes()]


def _disk(project_path: Path, image_id: int) -> np.ndarray:
    return read_mask_png(project_path / "masks" / f"{image_id}.png")


def _tree_row(win: MainWindow, name: str):
    t = win.class_tree
    return next(t.topLevelItem(i) for i in range(t.topLevelItemCount()) if t.topLevelItem(i).text(0) == name)


@pytest.fixture
def confirmations(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Answer every confirmation with yes and keep its text."""
    asked: list[str] = []
    monkeypatch.setattr(dialogs, "confirm", lambda parent, title, text: (asked.append(text), True)[1])
    return asked


def _drag(qtbot, win: MainWindow, pts: list[tuple[int, int]], between=None) -> None:
    c = win.canvas
    wp = [c.image_to_widget(x, y).toPoint() for x, y in pts]
    qtbot.mousePress(c, Qt.MouseButton.LeftButton, pos=wp[0])
    for k, p in enumerate(wp[1:]):
        qtbot.mouseMove(c, p)
        if between is not None and k == 0:
            between()
    qtbot.mouseRelease(c, Qt.MouseButton.LeftButton, pos=wp[-1])


# ---------------------------------------------------------------- dialogs


def test_add_classes_dialog_checks_the_list(qtbot, tmp_path: Path) -> None:
    dlg = AddClassesDialog(None, CLASSES)
    qtbot.addWidget(dlg)
    ok = dlg.buttons.button(QDialogButtonBox.StandardButton.Ok)
    assert not ok.isEnabled()
    dlg.text.setPlainText("road\n\nsky\nroad")
    assert not ok.isEnabled() and "twice in the list: road" in dlg.message.text()
    dlg.text.setPlainText("road\ncar")
    assert not ok.isEnabled() and "already classes of this project: car" in dlg.message.text()
    dlg.text.setPlainText("road\nsky\n")
    assert ok.isEnabled() and "indices 4..5" in dlg.message.text()
    assert [c.name for c in dlg.edit().classes] == [*(c.name for c in CLASSES), "road", "sky"]
    labels = tmp_path / "labels.txt"
    labels.write_text("__ignore__\n_background_\nperson\nbicycle\n")
    assert dlg.load_file(labels)
    assert dlg.names() == ["road", "sky", "bicycle"]  # known names and __ignore__ left out
    big = tmp_path / "big.txt"
    big.write_text("\n".join(f"c{i}" for i in range(300)))
    assert not dlg.load_file(big)
    assert "300 classes; at most 255 fit" in dlg.message.text()
    dup = tmp_path / "dup.txt"
    dup.write_text("a\nb\na\n")
    assert not dlg.load_file(dup) and "'a' appears twice" in dlg.message.text()
    dlg.text.setPlainText("\n".join(f"n{i}" for i in range(300)))
    assert not ok.isEnabled() and "at most 255" in dlg.message.text()


def test_delete_dialog_offers_background_void_or_a_class(qtbot) -> None:
    dlg = DeleteClassDialog(None, CLASSES, 2, merge=False)
    qtbot.addWidget(dlg)
    assert dlg.to_background.isChecked() and dlg.target() == 0
    assert dlg.combo.findData(0) == -1 and dlg.combo.findData(2) == -1  # background has its own choice
    dlg.to_void.setChecked(True)
    assert dlg.target() == VOID
    dlg.combo.setCurrentIndex(dlg.combo.findData(3))
    assert dlg.to_class.isChecked() and dlg.target() == 3
    assert dlg.edit().lut[2] == 2 and [c.name for c in dlg.edit().classes] == ["background", "person", "tree"]
    merge = DeleteClassDialog(None, CLASSES, 0, merge=True)  # the background itself: not "into background"
    qtbot.addWidget(merge)
    assert not merge.to_background.isEnabled() and merge.to_class.isChecked()


def test_class_picker_filters_and_picks(qtbot) -> None:
    picker = ClassPicker(None, CLASSES)
    qtbot.addWidget(picker)
    qtbot.keyClicks(picker.filter, "ca")
    assert picker.list.count() == 1 and "car" in picker.list.item(0).text()
    qtbot.keyClick(picker.filter, Qt.Key.Key_Return)
    assert picker.picked == 2
    assert [c.name for c in picker.matches("r")] == ["background", "person", "car", "tree"]
    assert [c.name for c in picker.matches("t")] == ["tree"]
    assert picker.matches("3")[0].name == "tree"
    assert (class_key(3), class_key(13), class_key(25)) == ("3", "⇧3", "")


# ---------------------------------------------------------------- the window


def test_add_several_then_shift_digit_picks_10_to_19(qtbot, window: MainWindow, project_path: Path) -> None:
    added = window.add_classes([f"k{i}" for i in range(4, 16)])
    assert [c.index for c in added] == list(range(4, 16)) and window.tools.class_value == 4
    assert _tree_row(window, "k13").text(1) == "⇧3"
    qtbot.keyClick(window.canvas, Qt.Key.Key_3, Qt.KeyboardModifier.ShiftModifier)
    assert window.tools.class_value == 13
    qtbot.keyClick(window.canvas, Qt.Key.Key_2)
    assert window.tools.class_value == 2
    with Project.open(project_path) as p:
        assert len(p.classes()) == 16


def test_load_class_file_adds_its_classes(qtbot, window: MainWindow, tmp_path: Path, monkeypatch) -> None:
    f = tmp_path / "classes.txt"
    f.write_text("\ufeff__ignore__\nbackground\nsky\nroad\n")
    monkeypatch.setattr(AddClassesDialog, "exec", lambda self: AddClassesDialog.DialogCode.Accepted)
    added = window.load_class_file(str(f))
    assert [c.name for c in added] == ["sky", "road"] and _names(window)[-2:] == ["sky", "road"]


def test_delete_into_background_rewrites_masks_after_confirming(
    qtbot, window: MainWindow, project_path: Path, confirmations: list[str]
) -> None:
    first = window.current_id
    assert window.delete_class(1, into=0)
    assert f"{H * W // 2:,} pixel(s) in 1 image(s) change class" in confirmations[0]
    assert _names(window) == ["background", "car", "tree"]
    assert window.tools.class_value == 1  # person was selected: now car, not the background
    assert (window.current_model.label_map == 0).all() and (_disk(project_path, first) == 0).all()
    assert not window.current_model.dirty
    assert window.project.image(first).status == "prelabeled"  # a class edit is not a correction


def test_declining_the_confirmation_changes_nothing(qtbot, window: MainWindow, project_path: Path, monkeypatch):
    monkeypatch.setattr(dialogs, "confirm", lambda *a: False)
    assert not window.delete_class(1, into=VOID)
    assert _names(window) == [c.name for c in CLASSES]
    assert (_disk(project_path, window.current_id)[:, : W // 2] == 1).all()


def test_undo_after_delete_keeps_earlier_strokes_meaningful(
    qtbot, window: MainWindow, project_path: Path, confirmations: list[str]
) -> None:
    window.select_class(3)  # tree
    _drag(qtbot, window, [(40, 20), (50, 20)])
    painted = window.current_model.label_map.copy()
    assert (painted == 3).any()
    assert window.merge_class(2, into=VOID)  # car (unused here) to void: tree moves from 3 to 2
    m = window.current_model.label_map
    assert ((m == 2) == (painted == 3)).all()
    assert window.tools.class_value == 2  # still tree
    window.undo()  # the tree stroke goes, under the new indices
    assert not (window.current_model.label_map == 2).any()
    window.redo()
    assert ((window.current_model.label_map == 2) == (painted == 3)).all()
    assert window.save_current()
    assert ((_disk(project_path, window.current_id) == 2) == (painted == 3)).all()


def test_move_class_swaps_indices_everywhere(
    qtbot, window: MainWindow, project_path: Path, confirmations: list[str]
) -> None:
    window.select_class(1)
    window.set_lock(1)
    assert window.move_class(1)  # person moves down: person <-> car
    assert _names(window) == ["background", "car", "person", "tree"]
    assert (_disk(project_path, window.current_id)[:, : W // 2] == 2).all()
    assert (window.current_model.label_map[:, : W // 2] == 2).all()
    assert window.tools.class_value == 2 and window.tools.lock == 2  # still person
    assert not confirmations  # a reorder changes no pixel's class: no question
    assert not window.move_class(-1, index=0)


def test_the_eraser_paints_the_background_or_void_never_just_index_0(
    qtbot, window: MainWindow, monkeypatch: pytest.MonkeyPatch
) -> None:
    window.tools.tool = Tool.ERASER
    assert window.tools.paint_value() == 0
    monkeypatch.setattr(dialogs, "confirm", lambda *a: False)  # "Sky" is not the background
    window.rename_class(0, "Sky")
    assert window.tools.background == VOID and window.tools.paint_value() == VOID
    assert not any(c.is_background for c in window.project.classes())
    window.set_background_class(0)  # the person says so
    assert window.tools.paint_value() == 0
    window.set_background_class(None)
    assert window.tools.paint_value() == VOID
    monkeypatch.setattr(dialogs, "confirm", lambda *a: True)
    window.set_background_class(0)
    window.rename_class(0, "Sky")  # yes, still the background
    assert window.tools.paint_value() == 0


def test_deleting_the_class_being_painted_ends_the_stroke(
    qtbot, window: MainWindow, project_path: Path, confirmations: list[str]
) -> None:
    window.select_class(3)

    def delete_mid_stroke() -> None:
        assert window.current_model.in_stroke
        assert window.delete_class(3, into=0)

    _drag(qtbot, window, [(35, 5), (45, 5), (55, 5)], between=delete_mid_stroke)
    m = window.current_model
    assert not m.in_stroke and not (m.label_map == 3).any()
    assert window.tools.class_value in {c.index for c in window.project.classes()}
    before = m.label_map.copy()
    window.undo()  # the part of the stroke before the delete is one step (its tree pixels are background now)
    window.redo()
    assert (m.label_map == before).all()
    assert window.save_current()


def test_class_edits_wait_for_a_running_prelabel(qtbot, window: MainWindow, monkeypatch) -> None:
    errors: list[str] = []
    monkeypatch.setattr(type(window.prelabel), "running", property(lambda self: True))
    monkeypatch.setattr(dialogs, "show_error", lambda parent, title, text, *a: errors.append(text))
    assert not window.delete_class(2, into=0)
    assert "Pre-labelling is running" in errors[0] and "car" in _names(window)


def test_slash_opens_the_picker(qtbot, window: MainWindow) -> None:
    def type_in() -> None:
        dlg = QApplication.activeModalWidget()
        assert isinstance(dlg, ClassPicker)
        qtbot.keyClicks(dlg.filter, "tr")
        qtbot.keyClick(dlg.filter, Qt.Key.Key_Return)

    QTimer.singleShot(50, type_in)
    qtbot.keyClick(window.canvas, Qt.Key.Key_Slash)
    assert window.tools.class_value == 3


def test_a_failed_class_edit_leaves_project_and_open_mask_unchanged(
    qtbot, window: MainWindow, project_path: Path, confirmations: list[str], monkeypatch
) -> None:
    from annotation import class_edits
    from annotation.errors import AtrousWriteError

    def full(*_a, **_k):
        raise AtrousWriteError("disk full (injected)")

    errors: list[str] = []
    monkeypatch.setattr(class_edits, "write_mask_png", full)
    monkeypatch.setattr(dialogs, "show_error", lambda parent, title, text, *a: errors.append(text))
    before = window.current_model.label_map.copy()
    assert not window.delete_class(1, into=VOID)
    assert "injected" in errors[0]
    assert _names(window) == [c.name for c in CLASSES]
    assert (window.current_model.label_map == before).all()
    assert (_disk(project_path, window.current_id) == before).all()


def test_a_merge_is_not_counted_as_a_correction(
    qtbot, window: MainWindow, project_path: Path, confirmations: list[str]
) -> None:
    window.select_class(2)  # car over the person half
    _drag(qtbot, window, [(5, 20), (20, 20)])
    assert window.save_current()
    m = window.current_model
    assert m.doc.changed_pixels > 0
    assert window.merge_class(1, into=2)  # person into car: the painted pixels no longer differ
    assert m.doc.changed_pixels == 0
    assert m.take_provenance()[0] == 0 and not m.dirty


# ---------------------------------------------------------------- undoing the last class change


def _files(project_path: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in (project_path / "masks").glob("*.png")}


def test_ctrl_z_right_after_a_reorder_undoes_it_for_the_project(
    qtbot, window: MainWindow, project_path: Path, confirmations: list[str]
) -> None:
    before, shown = _files(project_path), window.current_model.label_map.copy()
    assert not window.act_undo_classes.isEnabled()
    window.select_class(1)
    qtbot.mouseClick(window.class_buttons["▼"], Qt.MouseButton.LeftButton)  # person <-> car, through the dock
    assert _names(window)[1:3] == ["car", "person"] and (window.current_model.label_map[:, : W // 2] == 2).all()
    assert window.act_undo_classes.isEnabled() and "move person down" in window.act_undo_classes.text()
    assert window.act_undo.shortcut().toString() == "Ctrl+Z"
    window.act_undo.trigger()  # what Ctrl+Z does: the class change was the last thing done
    assert "Undo “move person down”?" in confirmations[-1]
    assert _names(window) == [c.name for c in CLASSES]
    assert _files(project_path) == before  # byte for byte
    assert (window.current_model.label_map == shown).all() and not window.current_model.dirty
    assert window.tools.class_value == 1  # person is still the class painted, at its old index again
    assert not window.act_undo_classes.isEnabled() and window.act_undo_classes.text() == "Undo class change"


def test_after_a_delete_ctrl_z_undoes_strokes_first_and_a_saved_stroke_blocks_the_undo(
    qtbot, window: MainWindow, project_path: Path, confirmations: list[str], monkeypatch
) -> None:
    before = _files(project_path)
    assert window.delete_class(1, into=0)  # person -> background
    assert "Edit → Undo class change" in confirmations[0]
    window.select_class(2)  # tree, now at 2
    _drag(qtbot, window, [(40, 20), (50, 20)])
    window.act_undo.trigger()  # the stroke was the last thing done: Ctrl+Z takes it back
    assert _names(window) == ["background", "car", "tree"] and not (window.current_model.label_map == 2).any()
    window.act_undo.trigger()  # nothing left in the image; the class change is not undone by a stray Ctrl+Z
    assert _names(window) == ["background", "car", "tree"]
    window.redo()  # the stroke again, saved: the mask is no longer what the delete left
    assert window.save_current()
    errors: list[str] = []
    monkeypatch.setattr(dialogs, "show_error", lambda parent, title, text: errors.append(text))
    assert not window.undo_class_change()
    assert "changed after it (img00.png)" in errors[0] and "Nothing was changed" in errors[0]
    assert _names(window) == ["background", "car", "tree"]
    window.undo()  # take the stroke back and save: the mask is as the delete left it
    assert window.save_current()
    window.act_undo_classes.trigger()  # Edit -> Undo class change
    assert _names(window) == [c.name for c in CLASSES] and _files(project_path) == before
    assert (window.current_model.label_map[:, : W // 2] == 1).all()


def test_export_is_disabled_without_a_project(qtbot) -> None:
    win = MainWindow(None)
    qtbot.addWidget(win)
    assert not win.act_export.isEnabled() and not win.act_undo_classes.isEnabled()
    win.cache.shutdown()
