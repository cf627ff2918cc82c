"""Image -> Add images… and Remove from project…, driven as a person would."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from PySide6.QtCore import QPoint, Qt

from annotation.project import Project
from gui import dialogs, image_set
from gui.main_window import MainWindow

from .conftest import make_images
from .test_main_window import _paint


def wait_idle(qtbot, dlg) -> None:
    qtbot.waitUntil(lambda: not dlg.running, timeout=20000)
    qtbot.wait(10)


def names(win: MainWindow) -> list[str]:
    return [win._records[i].name for i in win._visible_ids()]


def test_add_images_lists_them_and_says_what_was_skipped(qtbot, window: MainWindow, tmp_path: Path) -> None:
    more = tmp_path / "more"
    make_images(more, 5)  # img00..img02 have the same content as the project's: skipped
    (more / "sub").mkdir()
    (more / "sub" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    dlg = image_set.open_add_images(window)
    dlg.folder_edit.setText(str(more))
    dlg.run_btn.click()
    wait_idle(qtbot, dlg)
    text = dlg.report.toPlainText()
    assert "added 2 image(s)" in text and "3 already present" in text and "broken.jpg" in text, text
    assert window.image_list.count() == 5 and names(window)[-2:] == ["img03.png", "img04.png"]
    dlg.folder_edit.setText(str(tmp_path / "missing"))
    dlg.run_btn.click()
    assert "image folder not found" in dlg.state.text()


def test_cancelled_add_adds_nothing(qtbot, window: MainWindow, tmp_path: Path, monkeypatch) -> None:
    more = tmp_path / "more"
    for i, p in enumerate(make_images(more, 6)):
        p.rename(more / f"new{i}.png")
    (more / "new0.png").write_bytes((more / "new0.png").read_bytes() + b"x")  # not a duplicate of img00
    entered, gate = threading.Event(), threading.Event()
    real = Project._probe

    def held(path):
        entered.set()
        assert gate.wait(10)
        return real(path)

    monkeypatch.setattr(Project, "_probe", staticmethod(held))
    dlg = image_set.open_add_images(window)
    dlg.folder_edit.setText(str(more))
    dlg.run_btn.click()
    assert entered.wait(10)
    dlg.cancel_btn.click()
    gate.set()
    wait_idle(qtbot, dlg)
    assert dlg.state.text().startswith("Cancelled") and "no image was added" in dlg.state.text()
    with Project.open(window.project.root) as p:
        assert len(p.images()) == 3
    assert window.image_list.count() == 3


def test_remove_the_current_image_moves_on_and_deletes_its_mask(
    qtbot, window: MainWindow, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = Path(window.project.root)
    first = window.current_id
    _paint(qtbot, window, [(5, 5), (20, 20)])  # unsaved edits of an image that is going away
    asked: list[str] = []
    monkeypatch.setattr(dialogs, "confirm", lambda _w, _t, text: asked.append(text) or True)
    window.act_remove_images.trigger()
    assert asked and "img00.png" in asked[0] and "Its pre-label is deleted" in asked[0]
    assert "file stays on disk" in asked[0]
    assert first not in window.docs and window.current_id != first
    assert names(window) == ["img01.png", "img02.png"] and window.current_id == window._visible_ids()[0]
    assert not (root / "masks" / f"{first}.png").exists()
    qtbot.wait(2500)  # past the autosave delay: nothing is written for the removed image
    with Project.open(root) as p:
        assert [r.name for r in p.images()] == ["img01.png", "img02.png"]
    assert (root.parent / "images" / "img00.png").is_file()


def test_remove_asks_about_corrected_masks_and_no_keeps_everything(
    qtbot, window: MainWindow, monkeypatch: pytest.MonkeyPatch
) -> None:
    window.navigate(1)
    _paint(qtbot, window, [(5, 5), (20, 20)])
    assert window.save_current()
    window.image_list.selectAll()
    asked: list[str] = []
    monkeypatch.setattr(dialogs, "confirm", lambda _w, _t, text: asked.append(text) or False)
    assert image_set.remove_selected(window) == []
    assert "Remove 3 images" in asked[0] and "1 of them was corrected by a person" in asked[0]
    assert window.image_list.count() == 3
    monkeypatch.setattr(dialogs, "confirm", lambda *_a: True)
    removed = image_set.remove_selected(window)
    assert len(removed) == 3 and window.image_list.count() == 0 and window.current_id is None
    assert window.canvas.model is None and window.canvas.image_size == (0, 0)
    window.canvas.grab()  # paints an empty canvas without error
    assert "Removed 3 images" in window.statusBar().currentMessage()


def test_right_click_offers_add_and_remove(qtbot, window: MainWindow) -> None:
    lst = window.image_list
    pos = lst.visualItemRect(lst.item(2)).center()
    menu = image_set.list_menu(window, pos)
    assert menu is not None
    texts = [a.text() for a in menu.actions() if a.text()]
    assert texts == ["Pre-label selected images", "Add images…", "Remove from project…"]
    assert window._targets("selected") == [window._visible_ids()[2]]  # the clicked image became the current
    menu.close()
    assert lst.contextMenuPolicy() == Qt.ContextMenuPolicy.CustomContextMenu
    assert isinstance(pos, QPoint)


def test_added_images_fall_into_name_order(qtbot, window: MainWindow, tmp_path: Path) -> None:
    more = tmp_path / "images"  # the project's own folder: new frames arrive beside the old ones
    for i, p in enumerate(make_images(tmp_path / "frames", 3)):
        p.rename(more / ["img10.png", "img2.png", "a.png"][i])
    (more / "a.png").write_bytes((more / "a.png").read_bytes() + b"-")  # not img00's content
    (more / "img2.png").write_bytes((more / "img2.png").read_bytes() + b"--")
    (more / "img10.png").write_bytes((more / "img10.png").read_bytes() + b"---")
    dlg = image_set.open_add_images(window)
    dlg.folder_edit.setText(str(more))
    dlg.run_btn.click()
    wait_idle(qtbot, dlg)
    assert "added 3 image(s)" in dlg.report.toPlainText()
    assert names(window) == ["a.png", "img00.png", "img01.png", "img02.png", "img2.png", "img10.png"]
