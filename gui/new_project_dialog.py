"""File -> New project: image folders, classes, and a summary of what will be made.

The classes are typed or pasted one per line (line number = index) or loaded from a
class file, and read by :mod:`annotation.classes` like every other class list
(``__ignore__``, BOM, duplicates, ``classes.json`` colours); each colour can be changed.
The folders are scanned in the background (:func:`annotation.jobs.scan_folders`) so the
summary lists unreadable files by name before anything is created. Creating is
:func:`annotation.jobs.create_project`, the ``new`` command's job: all or nothing,
cancellable, in a worker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QColorDialog,
    QDialog,
    QFileDialog,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from annotation.classes import (
    BACKGROUND_NAMES,
    IGNORE_NAME,
    LabelClass,
    names_by_index,
    parse_class_lines,
    read_class_file,
)
from annotation.errors import AtrousError
from annotation.jobs import FolderScan, create_project, create_report, scan_folders
from annotation.layout import is_project
from annotation.project import Project

from . import dialogs
from .transfer_dialog import AsksBeforeClosing, BackgroundJob, path_row, running_job, show_job_dialog

#: What a new project's class list starts as (the classes a plain folder gets).
DEFAULT_TEXT = "background\nforeground\n"
#: How many unreadable file names the summary shows before "and N more".
SHOW_UNREADABLE = 8


class NewProjectDialog(AsksBeforeClosing, QDialog):
    """Choose image folders, a project folder and the classes; create the project in a worker."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("New project")
        self.setWindowModality(Qt.WindowModality.WindowModal)
        self.created: Path | None = None
        self.created_lines: list[str] = []
        self._colours: dict[str, tuple[int, int, int]] = {}  # colour chosen per class name
        self._background: str | None = None  # background flag from a loaded class file
        self._scan: FolderScan | None = None
        self._auto_root = True  # the project folder follows the first image folder until edited
        self._classes: list[LabelClass] = []
        self._class_error = ""

        self.scanner = BackgroundJob(self)
        self.scanner.succeeded.connect(self._on_scanned)
        self.scanner.failed.connect(self._on_scan_failed)
        self.creator = BackgroundJob(self)
        self.creator.progress.connect(self._on_progress)
        self.creator.succeeded.connect(self._on_created)
        self.creator.failed.connect(self._on_create_failed)
        self.creator.cancelled.connect(self._on_create_failed)

        # -- images
        img_box = QGroupBox("Images (referenced in place, never changed)")
        self.folder_list = QListWidget()
        self.folder_list.setMaximumHeight(90)
        add_btn = QPushButton("Add folder…")
        add_btn.clicked.connect(self._browse_folder)
        rm_btn = QPushButton("Remove")
        rm_btn.clicked.connect(self._remove_folder)
        il = QGridLayout(img_box)
        il.addWidget(self.folder_list, 0, 0, 3, 1)
        il.addWidget(add_btn, 0, 1)
        il.addWidget(rm_btn, 1, 1)
        self.root_edit = QLineEdit()
        self.root_edit.setPlaceholderText("where the index and masks go (default: the first image folder)")
        self.root_edit.textEdited.connect(self._root_edited)
        il.addWidget(QLabel("Project folder"), 3, 0, 1, 2)
        il.addWidget(path_row(self.root_edit, self._browse_root), 4, 0, 1, 2)

        # -- classes
        cls_box = QGroupBox("Classes (one per line, line number = index; a first line __ignore__ means void)")
        self.class_text = QPlainTextEdit(DEFAULT_TEXT)
        self.class_text.setPlaceholderText("background\nroad\ncar\n…")
        self.class_text.textChanged.connect(self._classes_changed)
        load_btn = QPushButton("Load class file…")
        load_btn.setToolTip("labels.txt (labelme, with __ignore__), class_names.txt or classes.json")
        load_btn.clicked.connect(self._browse_class_file)
        self.class_table = QTableWidget(0, 3)
        self.class_table.setHorizontalHeaderLabels(["Index", "Colour", "Name"])
        self.class_table.verticalHeader().setVisible(False)
        self.class_table.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 6)
        self.class_table.horizontalHeader().setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        self.class_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.class_table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.class_table.setToolTip("Double-click a colour to change it")
        self.class_table.cellDoubleClicked.connect(self._pick_colour)
        cl = QGridLayout(cls_box)
        cl.addWidget(self.class_text, 0, 0)
        cl.addWidget(self.class_table, 0, 1)
        cl.addWidget(load_btn, 1, 0)
        cl.setColumnStretch(0, 1)
        cl.setColumnStretch(1, 1)

        # -- summary and buttons
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.progress_bar = QProgressBar()
        self.progress_bar.setVisible(False)
        self.create_btn = QPushButton("Create")
        self.create_btn.setDefault(True)
        self.create_btn.clicked.connect(self.create)
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.clicked.connect(self._cancel_clicked)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.create_btn)
        buttons.addWidget(self.cancel_btn)

        self.inputs = QWidget()
        il2 = QVBoxLayout(self.inputs)
        il2.setContentsMargins(0, 0, 0, 0)
        il2.addWidget(img_box)
        il2.addWidget(cls_box, 1)
        lay = QVBoxLayout(self)
        lay.addWidget(self.inputs, 1)
        lay.addWidget(self.summary)
        lay.addWidget(self.progress_bar)
        lay.addLayout(buttons)
        self.resize(760, 620)
        self._classes_changed()

    # ---------------------------------------------------------------- folders

    def folders(self) -> list[Path]:
        return [Path(self.folder_list.item(i).text()) for i in range(self.folder_list.count())]

    def add_folder(self, folder: str | Path) -> None:
        """Add an image folder (once) and rescan."""
        text = str(Path(folder))
        if text in {str(f) for f in self.folders()}:
            return
        self.folder_list.addItem(text)
        if self._auto_root and self.folder_list.count() == 1:
            self.root_edit.setText(text)
        self._rescan()

    def _browse_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Add an image folder")
        if path:
            self.add_folder(path)

    def _remove_folder(self) -> None:
        row = self.folder_list.currentRow()
        if row >= 0:
            self.folder_list.takeItem(row)
            if self._auto_root:
                folders = self.folders()
                self.root_edit.setText(str(folders[0]) if folders else "")
            self._rescan()

    def _browse_root(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Project folder", self.root_edit.text())
        if path:
            self.set_root(path)

    def set_root(self, path: str | Path) -> None:
        """Put the project in ``path`` (a new folder, or an existing one that is not a project yet)."""
        self.root_edit.setText(str(path))
        self._root_edited()

    def _root_edited(self, *_: object) -> None:
        self._auto_root = not self.root_edit.text().strip()
        self._update_summary()

    def root(self) -> Path | None:
        text = self.root_edit.text().strip()
        return Path(text).expanduser() if text else None

    def _rescan(self) -> None:
        self._scan = None
        folders = self.folders()
        if folders:
            self.scanner.start(lambda **cb: scan_folders(folders, should_stop=cb["should_stop"]))
        else:
            self.scanner.cancel()
        self._update_summary()

    def _on_scanned(self, scan: FolderScan) -> None:
        self._scan = scan
        self._update_summary()

    def _on_scan_failed(self, message: str) -> None:
        self._scan = FolderScan()
        self._update_summary(f"error: {message}")

    # ---------------------------------------------------------------- classes

    def set_class_text(self, text: str) -> None:
        self.class_text.setPlainText(text)

    def load_class_file(self, path: str | Path) -> None:
        """Fill the list from a class file, read by the one class reader (colours and background kept)."""
        try:
            classes, void = read_class_file(path)
        except AtrousError as e:
            self._update_summary(f"error: {e}")
            return
        self._colours = {c.name: c.colour for c in classes}
        self._background = next((c.name for c in classes if c.is_background), None)
        lines = ([IGNORE_NAME] if void else []) + names_by_index(classes)
        self.class_text.setPlainText("\n".join(lines) + "\n")

    def _browse_class_file(self) -> None:
        path = dialogs.open_file(self, "Load a class file", "Class lists (*.txt *.json);;All files (*)")
        if path:
            self.load_class_file(path)

    def classes(self) -> list[LabelClass]:
        """The classes the project will get (raises AtrousError for a bad list)."""
        parsed, _ = parse_class_lines(self.class_text.toPlainText().splitlines(), "the class list")
        names = {c.name for c in parsed}
        out = []
        for c in parsed:
            bg = c.name == self._background if self._background in names else c.is_background
            out.append(LabelClass(c.index, c.name, self._colours.get(c.name, c.colour), bg))
        return out

    def set_colour(self, name: str, rgb: tuple[int, int, int]) -> None:
        self._colours[name] = tuple(int(v) for v in rgb)  # type: ignore[assignment]
        self._classes_changed()

    def _pick_colour(self, row: int, column: int) -> None:
        if column != 1 or row >= len(self._classes):
            return
        c = self._classes[row]
        colour = QColorDialog.getColor(QColor(*c.colour), self, f"Colour of {c.name}")
        if colour.isValid():
            self.set_colour(c.name, (colour.red(), colour.green(), colour.blue()))

    def _classes_changed(self) -> None:
        try:
            self._classes, self._class_error = self.classes(), ""
        except AtrousError as e:
            self._classes, self._class_error = [], str(e)
        t = self.class_table
        t.setRowCount(len(self._classes))
        for row, c in enumerate(self._classes):
            t.setItem(row, 0, QTableWidgetItem(str(c.index)))
            swatch = QTableWidgetItem("")
            swatch.setBackground(QColor(*c.colour))
            swatch.setToolTip(f"rgb{c.colour}: double-click to change")
            t.setItem(row, 1, swatch)
            mark = "  (background)" if c.is_background and c.name.lower() not in BACKGROUND_NAMES else ""
            t.setItem(row, 2, QTableWidgetItem(c.name + mark))
        t.resizeColumnToContents(0)
        self._update_summary()

    # ---------------------------------------------------------------- summary

    def problems(self) -> list[str]:
        """Why the project cannot be created now (empty when it can)."""
        out = []
        if not self.folders():
            out.append("add at least one image folder")
        root = self.root()
        if root is None:
            out.append("choose the project folder")
        elif is_project(root):
            out.append(f"{root} is already a project; open it with File -> Open")
        elif root.exists() and not root.is_dir():
            out.append(f"{root} exists and is not a folder")
        if self._class_error:
            out.append(self._class_error)
        if self._scan is not None and self.folders() and not self._scan.images:
            out.append("no readable images in the chosen folder(s)")
        return out

    def summary_text(self) -> str:
        lines = []
        folders = self.folders()
        if folders and self._scan is None:
            lines.append("Looking for images…")
        elif self._scan is not None:
            s = self._scan
            lines.append(f"{len(s.images)} image(s) found in {len(folders)} folder(s).")
            if s.unreadable:
                names = [p.name for p, _ in s.unreadable]
                shown = ", ".join(names[:SHOW_UNREADABLE])
                more = f" and {len(names) - SHOW_UNREADABLE} more" if len(names) > SHOW_UNREADABLE else ""
                lines.append(f"{len(names)} unreadable file(s) will be left out: {shown}{more}.")
        if self._classes:
            lines.append(f"{len(self._classes)} class(es).")
        root = self.root()
        if root is not None and not self.problems():
            where = "a new folder" if not root.exists() else "this existing folder"
            lines.append(f"The project is created in {where}: {root}")
        return "\n".join(lines)

    def _update_summary(self, error: str = "") -> None:
        problems = ([error] if error else []) + self.problems()
        text = self.summary_text()
        if problems:
            text += ("\n" if text else "") + "\n".join(f"• {p}" for p in problems)
        self.summary.setText(text)
        self.summary.setStyleSheet("color: #c0392b;" if error or self._class_error else "")
        ready = not problems and self._scan is not None and not self.creator.running
        self.create_btn.setEnabled(ready)
        if self._scan is not None and self._scan.unreadable:
            self.summary.setToolTip("\n".join(f"{p}: {why}" for p, why in self._scan.unreadable))

    # ---------------------------------------------------------------- creating

    def create(self) -> None:
        if self.problems() or self._scan is None or self.creator.running:
            return
        root, folders, classes = self.root(), self.folders(), list(self._classes)
        assert root is not None
        self._root = root
        self.inputs.setEnabled(False)
        self.create_btn.setEnabled(False)
        self.progress_bar.setVisible(True)
        self.progress_bar.setRange(0, 0)
        self.creator.start(lambda **cb: create_project(root, folders, classes, **cb))

    def _on_progress(self, done: int, total: int, name: str) -> None:
        self.progress_bar.setRange(0, max(total, 1))
        self.progress_bar.setValue(done)
        self.summary.setText(f"Adding images: {done} / {total}  {name}")

    def _on_created(self, result: Any) -> None:
        self.created = self._root
        self.created_lines = create_report(self._root, result, len(self._classes))
        self.progress_bar.setVisible(False)
        self.accept()

    def _on_create_failed(self, message: str) -> None:
        self.inputs.setEnabled(True)
        self.progress_bar.setVisible(False)
        self._update_summary(f"error: {message}")

    @property
    def running(self) -> bool:
        return self.creator.running

    def _cancel_clicked(self) -> None:
        if self.creator.running:
            self.creator.cancel()
        else:
            self.reject()

    def ask_cancel(self) -> bool:
        """Closing the app while the project is being made: ask, then cancel and wait for the clean-up."""
        if not self.creator.running:
            self.scanner.cancel()
            self.scanner.wait()
            return True
        if not dialogs.confirm(self, "Stop creating the project?", "Stop? Nothing of the new project is kept."):
            return False
        self.creator.cancel()
        self.creator.wait()
        return True


def open_new_project(window: Any) -> QDialog:
    """File -> New project…: show the dialog; when a project was made, the window opens it."""
    running = running_job(window)
    if running is not None:
        return running
    dlg = NewProjectDialog(window)

    def opened() -> None:
        if dlg.created is None:
            return
        try:
            window.set_project(Project.open(dlg.created))
        except AtrousError as e:
            dialogs.show_error(window, "New project", str(e))
            return
        window.statusBar().showMessage(dlg.created_lines[0], 10000)
        if len(dlg.created_lines) > 1:
            notes = dlg.created_lines[1:]
            dialogs.show_list(window, "New project", f"{dlg.created_lines[0]}\n\nLeft out (see the details):", notes)

    dlg.accepted.connect(opened)
    return show_job_dialog(window, dlg)
