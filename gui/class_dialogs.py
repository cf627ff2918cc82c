"""Dialogs of the class dock: add several classes, delete or merge one, pick one by name.

Each dialog only collects a choice and checks it with the library's planning
functions (:mod:`annotation.class_edits`), so the message a person sees for a bad
list is the one the library raises; the window applies the resulting edit.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QPushButton,
    QRadioButton,
    QVBoxLayout,
    QWidget,
)

from annotation.class_edits import ClassEdit, add_classes, delete_class
from annotation.classes import IGNORE_NAME, LabelClass, read_class_file
from annotation.errors import AtrousError
from annotation.masks import VOID

from .window_common import ROLE_ID, swatch_icon

CLASS_FILE_FILTER = "Class lists (*.txt *.json *.names *.csv);;All files (*)"


def class_key(index: int) -> str:
    """The key that picks class ``index`` (shown in the class dock): 0..9, then Shift+0..9 for 10..19."""
    if 0 <= index <= 9:
        return str(index)
    if 10 <= index <= 19:
        return f"⇧{index - 10}"
    return ""


class AddClassesDialog(QDialog):
    """Add several classes at once: type or paste one name per line, or load a class file.

    ``edit()`` is the checked :class:`ClassEdit` (None while the list is not acceptable);
    the message under the list says what is wrong, as the library words it.
    """

    def __init__(self, parent: QWidget | None, classes: Sequence[LabelClass], names: Sequence[str] = ()) -> None:
        super().__init__(parent)
        self.setWindowTitle("Add classes")
        self._classes = list(classes)
        self._from_file: dict[str, LabelClass] = {}  # colours a class file gave
        self._edit: ClassEdit | None = None
        lay = QVBoxLayout(self)
        lay.addWidget(QLabel("One class name per line (paste a list, or load a class file):"))
        self.text = QPlainTextEdit()
        self.text.setPlaceholderText("road\nsidewalk\nbuilding")
        self.text.textChanged.connect(self._check)
        lay.addWidget(self.text, 1)
        row = QHBoxLayout()
        self.load_button = QPushButton("Load class file…")
        self.load_button.setToolTip("labels.txt (first line __ignore__ means void), a names list or classes.json")
        self.load_button.clicked.connect(lambda: self.load_file())
        row.addWidget(self.load_button)
        row.addStretch(1)
        lay.addLayout(row)
        self.message = QLabel()
        self.message.setWordWrap(True)
        lay.addWidget(self.message)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        lay.addWidget(self.buttons)
        self.resize(380, 360)
        self.text.setPlainText("\n".join(names))
        self._check()

    def names(self) -> list[str]:
        """The names typed, one per line, blank lines and labelme's ``__ignore__`` left out."""
        return [n for n in (ln.strip() for ln in self.text.toPlainText().splitlines()) if n and n != IGNORE_NAME]

    def edit(self) -> ClassEdit | None:
        return self._edit

    def _check(self) -> None:
        names = self.names()
        self._edit = None
        ok = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        if not names:
            self.message.setText("Type at least one name.")
            ok.setEnabled(False)
            return
        try:
            self._edit = add_classes(self._classes, [self._from_file.get(n, n) for n in names])
        except AtrousError as e:
            self.message.setText(f"<span style='color:#b00'>{e}</span>")
            ok.setEnabled(False)
            return
        wanted = set(names)
        idx = [c.index for c in self._edit.classes if c.name in wanted]
        self.message.setText(f"{len(names)} new class(es), indices {min(idx)}..{max(idx)}.")
        ok.setEnabled(True)

    def load_file(self, path: str | Path | None = None) -> bool:
        """Read a class file with the one class reader and append its names (those not yet classes)."""
        if path is None:
            from . import dialogs

            path = dialogs.open_file(self, "Load a class file", CLASS_FILE_FILTER)
            if path is None:
                return False
        try:
            classes, _void = read_class_file(path)
        except AtrousError as e:
            self.message.setText(f"<span style='color:#b00'>{e}</span>")
            return False
        have = {c.name for c in self._classes} | set(self.names())
        has_bg = any(c.is_background for c in self._classes)
        # the file's background is the project's background when it has one (_background_ = background)
        new = [c for c in classes if c.name not in have and not (has_bg and c.is_background)]
        self._from_file.update({c.name: c for c in new})
        lines = [*self.names(), *(c.name for c in new)]
        self.text.setPlainText("\n".join(lines))
        skipped = len(classes) - len(new)
        if skipped and self._edit is not None:
            self.message.setText(f"{self.message.text()} {skipped} name(s) of the file are already classes.")
        return True


class DeleteClassDialog(QDialog):
    """Delete a class or merge it into another: choose what its pixels become.

    ``target()`` is the class index (the background's, or another's) or VOID.
    """

    def __init__(self, parent: QWidget | None, classes: Sequence[LabelClass], index: int, *, merge: bool) -> None:
        super().__init__(parent)
        self._classes = sorted(classes, key=lambda c: c.index)
        self.index = index
        name = next(c.name for c in self._classes if c.index == index)
        bg = next((c for c in self._classes if c.is_background), None)
        self.setWindowTitle("Merge class" if merge else "Delete class")
        lay = QVBoxLayout(self)
        lay.addWidget(QLabel(f"<b>{'Merge' if merge else 'Delete'} “{name}”</b> — its pixels become:"))
        self.group = QButtonGroup(self)
        bg_text = "background" if bg is None or bg.name.lower() == "background" else f"the background, {bg.name}"
        self.to_background = QRadioButton(bg_text if bg else "background (the project has none)")
        self.to_background.setEnabled(bg is not None and bg.index != index)
        self.to_void = QRadioButton("void (not labelled, ignored in training)")
        self.to_class = QRadioButton("another class:")
        self.combo = QComboBox()
        for c in self._classes:
            if c.index != index and not c.is_background:  # the background has its own choice above
                self.combo.addItem(swatch_icon(c.colour), c.name, c.index)
        self.to_class.setEnabled(self.combo.count() > 0)
        for b in (self.to_background, self.to_void, self.to_class):
            self.group.addButton(b)
            lay.addWidget(b)
        lay.addWidget(self.combo)
        self.combo.currentIndexChanged.connect(lambda _: self.to_class.setChecked(True))
        if merge and self.to_class.isEnabled():
            self.to_class.setChecked(True)
        elif self.to_background.isEnabled():
            self.to_background.setChecked(True)
        else:
            self.to_void.setChecked(True)
        note = QLabel("Classes after it move up one index. The next step shows how many images and pixels change.")
        note.setWordWrap(True)
        lay.addWidget(note)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        lay.addWidget(buttons)
        self.setMinimumWidth(340)

    def target(self) -> int:
        if self.to_background.isChecked():
            return next(c.index for c in self._classes if c.is_background)
        if self.to_class.isChecked():
            return int(self.combo.currentData())
        return VOID

    def edit(self) -> ClassEdit:
        return delete_class(self._classes, self.index, self.target())


class ClassPicker(QDialog):
    """Type-to-pick: a filter box over the classes; Enter picks the first match (or the selected one).

    A number picks that index; otherwise the text matches names (start of a name first).
    """

    def __init__(self, parent: QWidget | None, classes: Sequence[LabelClass], text: str = "") -> None:
        super().__init__(parent)
        self.setWindowTitle("Pick a class")
        self._classes = sorted(classes, key=lambda c: c.index)
        self.picked: int | None = None
        lay = QVBoxLayout(self)
        self.filter = QLineEdit()
        self.filter.setPlaceholderText("type a name or an index, Enter picks")
        self.filter.textChanged.connect(self._refilter)
        self.filter.returnPressed.connect(self._pick_current)
        lay.addWidget(self.filter)
        self.list = QListWidget()
        self.list.itemActivated.connect(lambda item: self._pick(int(item.data(ROLE_ID))))
        lay.addWidget(self.list, 1)
        self.filter.installEventFilter(self)
        self.resize(280, 320)
        self.filter.setText(text)
        self._refilter()

    def matches(self, text: str) -> list[LabelClass]:
        t = text.strip().lower()
        if not t:
            return list(self._classes)
        if t.isdigit():
            exact = [c for c in self._classes if c.index == int(t)]
            return exact + [c for c in self._classes if t in str(c.index) and c not in exact]
        starts = [c for c in self._classes if c.name.lower().startswith(t)]
        return starts + [c for c in self._classes if t in c.name.lower() and c not in starts]

    def _refilter(self) -> None:
        self.list.clear()
        for c in self.matches(self.filter.text()):
            key = class_key(c.index)
            item = QListWidgetItem(swatch_icon(c.colour), f"{c.index}  {c.name}" + (f"   [{key}]" if key else ""))
            item.setData(ROLE_ID, c.index)
            self.list.addItem(item)
        if self.list.count():
            self.list.setCurrentRow(0)

    def eventFilter(self, obj, event) -> bool:  # arrows in the filter box move the selection
        if obj is self.filter and isinstance(event, QKeyEvent) and event.type() == QKeyEvent.Type.KeyPress:
            if event.key() in (Qt.Key.Key_Down, Qt.Key.Key_Up):
                step = 1 if event.key() == Qt.Key.Key_Down else -1
                self.list.setCurrentRow(max(0, min(self.list.count() - 1, self.list.currentRow() + step)))
                return True
        return super().eventFilter(obj, event)

    def _pick_current(self) -> None:
        item = self.list.currentItem()
        if item is not None:
            self._pick(int(item.data(ROLE_ID)))

    def _pick(self, index: int) -> None:
        self.picked = index
        self.accept()
