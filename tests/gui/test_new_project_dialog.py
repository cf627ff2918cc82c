"""File -> New project: folders, classes (typed, pasted or loaded), the summary, an all-or-nothing create."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from annotation.layout import DB_NAME, MASK_DIR
from annotation.project import Project
from gui import dialogs, new_project_dialog

from .conftest import make_images


def scanned(qtbot, dlg) -> None:
    qtbot.waitUntil(lambda: dlg._scan is not None and not dlg.scanner.running, timeout=20000)


@pytest.fixture
def empty_window(qtbot):
    from gui.main_window import MainWindow

    win = MainWindow(None)
    qtbot.addWidget(win)
    win.show()
    yield win
    if win.isVisible():
        win.close()
    win.cache.shutdown()


def two_folders(tmp_path: Path) -> tuple[Path, Path]:
    a, b = tmp_path / "a", tmp_path / "b"
    make_images(a, 2)
    make_images(b / "sub", 1)
    (b / "broken.jpg").write_bytes(b"not a jpeg at all")
    (b / "empty.png").write_bytes(b"")
    return a, b


def test_summary_lists_images_and_unreadable_files_then_creates_and_opens(
    qtbot, empty_window, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = two_folders(tmp_path)
    dlg = new_project_dialog.open_new_project(empty_window)
    assert empty_window._job_dialog is dlg and not dlg.create_btn.isEnabled()
    dlg.add_folder(a)
    dlg.add_folder(b)
    dlg.add_folder(a)  # once only
    assert dlg.root_edit.text() == str(a)  # the project goes in the first folder unless chosen
    scanned(qtbot, dlg)
    text = dlg.summary.text()
    assert "3 image(s) found in 2 folder(s)" in text
    assert "2 unreadable file(s) will be left out: broken.jpg, empty.png" in text
    assert "2 class(es)" in text and dlg.create_btn.isEnabled()
    dlg.set_root(tmp_path / "proj")
    dlg.set_class_text("background\nroad\ncar\n")
    dlg.set_colour("car", (1, 2, 3))
    assert "3 class(es)" in dlg.summary.text() and "a new folder" in dlg.summary.text()
    assert dlg.class_table.item(2, 1).background().color().getRgb()[:3] == (1, 2, 3)
    listed: list[list[str]] = []
    monkeypatch.setattr(dialogs, "show_list", lambda parent, title, text, lines: listed.append(lines))
    dlg.create_btn.click()
    qtbot.waitUntil(lambda: dlg.created is not None, timeout=20000)
    # b/sub/img00.png has the same pixels as a/img00.png: one image, as `new` counts it.
    assert dlg.created_lines[0] == f"created {tmp_path / 'proj'}: 2 images, 3 classes"
    assert any("broken.jpg" in line for line in listed[0])
    assert "skipped 1 duplicate image(s) (same content)" in listed[0][-1]
    win = empty_window
    assert win.project is not None and win.project.root == tmp_path / "proj"
    assert [(c.name, c.colour) for c in win.project.classes()][2] == ("car", (1, 2, 3))
    assert win.project.classes()[0].is_background and len(win.project.images()) == 2


def test_class_files_are_read_like_the_cli(qtbot, tmp_path: Path) -> None:
    dlg = new_project_dialog.NewProjectDialog()
    qtbot.addWidget(dlg)
    txt = tmp_path / "labels.txt"
    txt.write_bytes("\ufeff__ignore__\n_background_\nroad\nsky\n".encode())
    dlg.load_class_file(txt)
    assert [(c.index, c.name, c.is_background) for c in dlg.classes()] == [
        (0, "_background_", True),
        (1, "road", False),
        (2, "sky", False),
    ]
    js = tmp_path / "classes.json"
    js.write_text(
        json.dumps(
            [
                {"index": 0, "name": "ground", "colour": [9, 9, 9], "background": True},
                {"index": 3, "name": "tree", "colour": [10, 200, 10], "background": False},
            ]
        )
    )
    dlg.load_class_file(js)
    got = [(c.index, c.name, c.colour, c.is_background) for c in dlg.classes()]
    assert got == [(0, "ground", (9, 9, 9), True), (3, "tree", (10, 200, 10), False)]
    assert dlg.class_table.rowCount() == 2 and dlg.class_table.item(1, 0).text() == "3"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("a\nb\na\n", "class name 'a' appears twice"),
        ("\n".join(f"c{i}" for i in range(300)), "300 classes"),
        ("a\n\nb\n", "line 2 is empty"),
    ],
)
def test_bad_class_lists_block_create_with_the_readers_message(qtbot, tmp_path: Path, text: str, words: str) -> None:
    make_images(tmp_path / "imgs", 1)
    dlg = new_project_dialog.NewProjectDialog()
    qtbot.addWidget(dlg)
    dlg.add_folder(tmp_path / "imgs")
    scanned(qtbot, dlg)
    assert dlg.create_btn.isEnabled()
    dlg.set_class_text(text)
    assert words in dlg.summary.text() and not dlg.create_btn.isEnabled()
    dlg.create()
    assert not (tmp_path / "imgs" / DB_NAME).exists()


def test_an_existing_project_or_no_images_is_refused(qtbot, project_path: Path, tmp_path: Path) -> None:
    dlg = new_project_dialog.NewProjectDialog()
    qtbot.addWidget(dlg)
    (tmp_path / "none").mkdir()
    dlg.add_folder(tmp_path / "none")
    scanned(qtbot, dlg)
    assert "no readable images" in dlg.summary.text() and not dlg.create_btn.isEnabled()
    dlg.add_folder(tmp_path / "images")
    dlg.set_root(project_path)
    scanned(qtbot, dlg)
    assert "is already a project" in dlg.summary.text() and not dlg.create_btn.isEnabled()


def test_cancelling_the_create_leaves_the_image_folder_as_it_was(
    qtbot, empty_window, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    imgs = tmp_path / "imgs"
    make_images(imgs, 2)
    before = sorted(p.name for p in imgs.iterdir())
    entered, gate = threading.Event(), threading.Event()
    real = Project.add_images

    def held(self, source):
        entered.set()
        assert gate.wait(10)
        return real(self, source)

    monkeypatch.setattr(Project, "add_images", held)
    dlg = new_project_dialog.open_new_project(empty_window)
    dlg.add_folder(imgs)
    scanned(qtbot, dlg)
    dlg.create()
    assert entered.wait(10) and dlg.running and not dlg.inputs.isEnabled()
    asked: list[str] = []

    def yes(parent, title, text):
        asked.append(title)
        gate.set()
        return True

    monkeypatch.setattr(dialogs, "confirm", yes)
    empty_window.close()  # closing the app asks, cancels and waits for the clean-up
    assert asked == ["Stop creating the project?"] and not dlg.running
    assert sorted(p.name for p in imgs.iterdir()) == before
    assert not (imgs / DB_NAME).exists() and not (imgs / MASK_DIR).exists()
    assert empty_window.project is None
