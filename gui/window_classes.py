"""The main window's class palette: the class dock, the paint lock and class editing.

:class:`ClassesMixin` is one part of :class:`gui.main_window.MainWindow`; it
builds the "Classes" dock (class tree, add / rename / colour buttons, overlay
opacity), keeps the tools' class and lock in line with the project's classes,
and shows each class's share of the current mask.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QColorDialog,
    QComboBox,
    QDockWidget,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QPushButton,
    QSlider,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from annotation.editing import VOID
from annotation.errors import AtrousError
from annotation.project import LabelClass, Project

from .canvas import Canvas
from .tools import LOCK_NONE, LOCK_UNLABELLED, Tool, ToolSettings
from .window_common import ROLE_ID, VOID_COLOUR, swatch_icon


class ClassesMixin:
    """Class dock and class editing of the main window (mixed into a QMainWindow).

    Uses the window's ``project``, ``tools``, ``canvas``, ``current_model`` and the
    paint-lock combo its tool bar holds."""

    project: Project | None
    tools: ToolSettings
    canvas: Canvas
    lock_combo: QComboBox
    _classes: list[LabelClass]

    def _build_class_dock(self) -> None:
        dock = QDockWidget("Classes", self)
        dock.setObjectName("classes_dock")
        w = QWidget()
        lay = QVBoxLayout(w)
        lay.setContentsMargins(4, 4, 4, 4)
        self.class_tree = QTreeWidget()
        self.class_tree.setColumnCount(3)
        self.class_tree.setHeaderLabels(["Class", "Key", "Share"])
        self.class_tree.setRootIsDecorated(False)
        self.class_tree.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.class_tree.setIconSize(QSize(14, 14))
        self.class_tree.setMinimumHeight(130)
        self.class_tree.currentItemChanged.connect(self._class_item_changed)
        lay.addWidget(self.class_tree, 1)
        row = QHBoxLayout()
        for text, slot in (("Add", self.add_class), ("Rename", self.rename_class), ("Colour", self.recolour_class)):
            b = QPushButton(text)
            b.setFocusPolicy(Qt.FocusPolicy.NoFocus)
            b.clicked.connect(lambda _=False, s=slot: s())
            row.addWidget(b)
        lay.addLayout(row)
        lay.addWidget(QLabel("Overlay opacity (O toggles, Shift+O outline)"))
        self.opacity_slider = QSlider(Qt.Orientation.Horizontal)
        self.opacity_slider.setRange(0, 100)
        self.opacity_slider.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.opacity_slider.valueChanged.connect(lambda v: self.canvas.set_opacity(v / 100))
        lay.addWidget(self.opacity_slider)
        dock.setWidget(w)
        dock.setMinimumWidth(230)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)

    def _background(self) -> int:
        for c in self._classes:
            if c.is_background:
                return c.index
        return 0

    def _load_classes(self) -> None:
        assert self.project is not None
        self._classes = self.project.classes()
        self.tools.background = self._background()
        if self.tools.class_value not in {c.index for c in self._classes} | {VOID}:
            fg = [c.index for c in self._classes if not c.is_background]
            self.tools.class_value = fg[0] if fg else self._background()
        self._fill_class_tree()
        self._fill_lock_combo()
        if self.canvas.model is not None:
            self.canvas.set_palette(self.palette(), self._background())

    def palette(self) -> np.ndarray:
        assert self.project is not None
        pal = self.project.palette()
        pal[VOID] = VOID_COLOUR
        return pal

    def _fill_class_tree(self) -> None:
        self.class_tree.blockSignals(True)
        self.class_tree.clear()
        entries = [(c.index, c.name, c.colour) for c in self._classes] + [(VOID, "void / ignore", VOID_COLOUR)]
        for idx, name, colour in entries:
            item = QTreeWidgetItem([name, str(idx) if idx <= 9 else "", ""])
            item.setIcon(0, swatch_icon(colour))
            item.setData(0, ROLE_ID, idx)
            item.setToolTip(0, f"class index {idx}")
            self.class_tree.addTopLevelItem(item)
            if idx == self.tools.class_value:
                self.class_tree.setCurrentItem(item)
        self.class_tree.resizeColumnToContents(0)
        self.class_tree.blockSignals(False)
        self._update_shares()

    def _fill_lock_combo(self) -> None:
        current = self.tools.lock
        self.lock_combo.blockSignals(True)
        self.lock_combo.clear()
        self.lock_combo.addItem("everything", LOCK_NONE)
        self.lock_combo.addItem("unlabelled only", LOCK_UNLABELLED)
        for c in self._classes:
            self.lock_combo.addItem(f"only {c.name}", c.index)
        i = self.lock_combo.findData(current)
        self.lock_combo.setCurrentIndex(max(i, 0))
        self.lock_combo.blockSignals(False)
        self.tools.lock = self.lock_combo.currentData()

    def _lock_changed(self) -> None:
        data = self.lock_combo.currentData()
        if data is not None:
            self.tools.lock = data

    def set_lock(self, lock: str | int) -> None:
        """Choose the lock (LOCK_NONE, LOCK_UNLABELLED or a class index)."""
        i = self.lock_combo.findData(lock)
        if i < 0:
            raise AtrousError(f"no lock option {lock!r}")
        self.lock_combo.setCurrentIndex(i)

    def _class_item_changed(self, item: QTreeWidgetItem | None) -> None:
        if item is not None:
            self.select_class(int(item.data(0, ROLE_ID)))

    def select_class(self, index: int) -> None:
        """Make class ``index`` (or VOID) the one the brush, fill and polygon paint."""
        if index != VOID and index not in {c.index for c in self._classes}:
            self.statusBar().showMessage(f"No class with index {index}", 2000)
            return
        self.tools.class_value = index
        if self.tools.tool is Tool.ERASER:
            self.tools.tool = Tool.BRUSH

    def _update_shares(self) -> None:
        model = self.current_model
        counts = None
        if model is not None:
            counts = np.bincount(model.label_map.ravel(), minlength=256)
            total = max(int(model.label_map.size), 1)
        for i in range(self.class_tree.topLevelItemCount()):
            item = self.class_tree.topLevelItem(i)
            idx = int(item.data(0, ROLE_ID))
            item.setText(2, "" if counts is None else f"{100 * counts[idx] / total:.1f} %")

    def add_class(self, name: str | None = None, colour: tuple[int, int, int] | None = None) -> LabelClass | None:
        if self.project is None:
            return None
        if name is None:
            name, ok = QInputDialog.getText(self, "Add class", "Name of the new class:")
            if not ok or not name.strip():
                return None
        new = self.project.add_class(name.strip(), colour)
        self._load_classes()
        self.select_class(new.index)
        return new

    def rename_class(self, index: int | None = None, name: str | None = None) -> None:
        if self.project is None:
            return
        index = self.tools.class_value if index is None else index
        if index == VOID:
            return
        if name is None:
            old = next((c.name for c in self._classes if c.index == index), "")
            name, ok = QInputDialog.getText(self, "Rename class", "New name:", text=old)
            if not ok or not name.strip():
                return
        self.project.rename_class(index, name.strip())
        self._load_classes()

    def recolour_class(self, index: int | None = None, colour: tuple[int, int, int] | None = None) -> None:
        if self.project is None:
            return
        index = self.tools.class_value if index is None else index
        if index == VOID:
            return
        if colour is None:
            old = next((c.colour for c in self._classes if c.index == index), (255, 0, 0))
            picked = QColorDialog.getColor(QColor(*old), self, "Class colour")
            if not picked.isValid():
                return
            colour = (picked.red(), picked.green(), picked.blue())
        self.project.recolour_class(index, colour)
        self._load_classes()
