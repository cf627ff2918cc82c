"""The main window's class palette: the class dock, the paint lock and class editing.

:class:`ClassesMixin` is one part of :class:`gui.main_window.MainWindow`; it
builds the "Classes" dock (class tree with keys and pixel shares, add / rename /
colour / reorder / delete, overlay opacity) and the Classes menu, keeps the tools'
class, lock and background in line with the project's classes, and applies class
edits: the project's stored masks through :func:`annotation.class_edits.apply_class_edit`,
the open documents through :func:`annotation.class_edits.remap_document`, and undoes
the last one for the whole project (:func:`annotation.class_undo.undo_class_edit`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QAction, QColor, QFont
from PySide6.QtWidgets import (
    QColorDialog,
    QComboBox,
    QDialog,
    QDockWidget,
    QHBoxLayout,
    QHeaderView,
    QInputDialog,
    QLabel,
    QMenu,
    QProgressDialog,
    QPushButton,
    QSlider,
    QToolButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from annotation import class_edits, class_undo
from annotation.classes import BACKGROUND_NAMES
from annotation.editing import VOID, Box
from annotation.errors import AtrousError
from annotation.project import LabelClass, Project

from . import dialogs
from .canvas import Canvas
from .class_dialogs import AddClassesDialog, ClassPicker, DeleteClassDialog, class_key
from .tools import LOCK_NONE, LOCK_UNLABELLED, Tool, ToolSettings
from .window_common import ROLE_ID, VOID_COLOUR, swatch_icon


class ClassesMixin:
    """Class dock and class editing of the main window (mixed into a QMainWindow).

    Uses the window's ``project``, ``tools``, ``canvas``, ``current_model``, ``docs`` and
    the paint-lock combo its tool bar holds."""

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
        # The name takes what the key and share columns leave: no horizontal scroll bar.
        header = self.class_tree.header()
        header.setStretchLastSection(False)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)
        self.class_tree.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.class_tree.currentItemChanged.connect(self._class_item_changed)
        lay.addWidget(self.class_tree, 1)
        rows = (
            (("Add…", self.add_classes, "Add classes: one name per line, or load a class file"),
             ("Rename", self.rename_class, "Rename the selected class"),
             ("Colour", self.recolour_class, "Change the selected class's colour")),
            (("▲", lambda: self.move_class(-1), "Move the selected class up (its index goes down by one)"),
             ("▼", lambda: self.move_class(1), "Move the selected class down"),
             ("Delete…", self.delete_class, "Delete the selected class: its pixels become background, void or "
              "another class")),
        )  # fmt: skip
        self.class_buttons: dict[str, QPushButton] = {}
        for entries in rows:
            row = QHBoxLayout()
            for text, slot, tip in entries:
                b = QPushButton(text)
                b.setFocusPolicy(Qt.FocusPolicy.NoFocus)
                b.setToolTip(tip)
                b.clicked.connect(lambda _=False, s=slot: s())
                row.addWidget(b)
                self.class_buttons[text] = b
            if entries is rows[1]:
                more = QToolButton()
                more.setText("More")
                more.setFocusPolicy(Qt.FocusPolicy.NoFocus)
                more.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
                self.class_more_menu = QMenu(more)
                self._fill_class_menu(self.class_more_menu, with_keys=False)
                more.setMenu(self.class_more_menu)
                row.addWidget(more)
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

    def _build_class_menu(self, menu: QMenu) -> None:
        """The Classes menu of the menu bar (the same actions as the dock, with their keys)."""
        self._fill_class_menu(menu, with_keys=True)
        menu.addSeparator()
        menu.addAction(self._class_undo_action())

    def _fill_class_menu(self, menu: QMenu, *, with_keys: bool) -> None:
        entries = [
            ("Add classes…", self.add_classes, None),
            ("Load class file…", self.load_class_file, None),
            None,
            ("Rename…", self.rename_class, None),
            ("Colour…", self.recolour_class, None),
            ("Move up", lambda: self.move_class(-1), None),
            ("Move down", lambda: self.move_class(1), None),
            ("Delete…", self.delete_class, None),
            ("Merge into…", self.merge_class, None),
            None,
            ("Make it the background", lambda: self.set_background_class(self.tools.class_value), None),
            ("No background class (eraser paints void)", lambda: self.set_background_class(None), None),
            None,
            ("Pick class by name…", self.pick_class, "/"),
        ]
        for e in entries:
            if e is None:
                menu.addSeparator()
                continue
            text, slot, key = e
            if with_keys and key:
                menu.addAction(self._action(text, lambda _=False, s=slot: s(), key))
            else:
                menu.addAction(text).triggered.connect(lambda _=False, s=slot: s())

    # ================================================================ classes -> tools and views

    def _background(self) -> int:
        """What the eraser paints and a new mask starts as: the background class, else void."""
        return class_edits.background_index(self._classes)

    def _load_classes(self) -> None:
        assert self.project is not None
        self._classes = self.project.classes()
        self.tools.background = self._background()
        if self.tools.class_value not in {c.index for c in self._classes} | {VOID}:
            fg = [c.index for c in self._classes if not c.is_background]
            self.tools.class_value = fg[0] if fg else self._background()
        self._fill_class_tree()
        self._fill_lock_combo()
        self._update_class_undo()
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
        entries = [(c.index, c.name, c.colour, c.is_background) for c in self._classes]
        entries.append((VOID, "void / ignore", VOID_COLOUR, False))
        for idx, name, colour, bg in entries:
            item = QTreeWidgetItem([name, class_key(idx), ""])
            item.setIcon(0, swatch_icon(colour))
            item.setData(0, ROLE_ID, idx)
            tip = f"class index {idx}"
            if bg:
                tip += " — the background: the eraser paints it"
                font = QFont(item.font(0))
                font.setItalic(True)
                item.setFont(0, font)
            elif idx == VOID and self._background() == VOID:
                tip += " — the project has no background class: the eraser paints void"
            item.setToolTip(0, tip)
            item.setToolTip(1, "press this key (⇧ = Shift) to pick the class; / picks any class by name")
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

    def pick_class(self, text: str = "") -> int | None:
        """Type-to-pick (/): a filter box over the class names; Enter picks."""
        if self.project is None or not self._classes:
            return None
        picker = ClassPicker(self, self._classes, text)
        if picker.exec() != QDialog.DialogCode.Accepted or picker.picked is None:
            return None
        self.select_class(picker.picked)
        return picker.picked

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

    # ================================================================ edits that keep the masks

    def add_class(self, name: str | None = None, colour: tuple[int, int, int] | None = None) -> LabelClass | None:
        """Add one class (asks for its name when none is given)."""
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

    def add_classes(self, names: list[str] | None = None, *, file: str | None = None) -> list[LabelClass]:
        """Add several classes: the dialog (one name per line, or a class file), or ``names`` directly."""
        if self.project is None:
            return []
        dlg = AddClassesDialog(self, self._classes, names or ())
        if file is not None:
            dlg.load_file(file)
        if names is None or file is not None:
            if dlg.exec() != QDialog.DialogCode.Accepted:
                return []
        edit = dlg.edit()
        if edit is None:
            self.statusBar().showMessage(dlg.message.text(), 5000)
            return []
        before = {c.index for c in self._classes}
        if not self._apply_class_edit(edit):
            return []
        added = [c for c in self._classes if c.index not in before]
        if added:
            self.select_class(added[0].index)
        return added

    def load_class_file(self, path: str | None = None) -> list[LabelClass]:
        """Add the classes of a class file (labels.txt, classes.json) not yet in the project."""
        if self.project is None:
            return []
        if path is None:
            from .class_dialogs import CLASS_FILE_FILTER

            path = dialogs.open_file(self, "Load a class file", CLASS_FILE_FILTER)
            if path is None:
                return []
        return self.add_classes([], file=path)

    def rename_class(self, index: int | None = None, name: str | None = None) -> None:
        """Rename a class; renaming the background asks whether the new name is still the background."""
        if self.project is None:
            return
        index = self.tools.class_value if index is None else index
        old = next((c for c in self._classes if c.index == index), None)
        if old is None:
            return
        if name is None:
            name, ok = QInputDialog.getText(self, "Rename class", "New name:", text=old.name)
            if not ok or not name.strip():
                return
        name = name.strip()
        try:
            self.project.rename_class(index, name)
            if old.is_background and name.lower() not in BACKGROUND_NAMES:
                keep = dialogs.confirm(
                    self,
                    "Still the background?",
                    f"“{old.name}” is the background: the eraser paints it and exports leave it out of the "
                    f"COCO categories.\n\nIs “{name}” still the background?\n\nNo: “{name}” becomes an ordinary "
                    "class, and the eraser paints void until you make a class the background.",
                )
                if not keep:
                    self.project.set_classes(class_edits.set_background(self.project.classes(), None).classes)
        except AtrousError as e:
            dialogs.show_error(self, "Cannot rename", str(e))
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

    def set_background_class(self, index: int | None) -> None:
        """Make class ``index`` the background (None: none; the eraser then paints void)."""
        if self.project is None or index == VOID:
            return
        try:
            self._apply_class_edit(class_edits.set_background(self._classes, index))
        except AtrousError as e:
            dialogs.show_error(self, "Cannot change the background", str(e))

    # ================================================================ edits that rewrite masks

    def delete_class(self, index: int | None = None, into: int | None = None, *, merge: bool = False) -> bool:
        """Delete class ``index``: its pixels become ``into`` (the background's index, another class's, or VOID).

        Without ``into`` a dialog asks. A confirmation then says how many images and pixels
        change. Every stored mask is rewritten at once; open images follow (see module doc).
        """
        if self.project is None:
            return False
        index = self.tools.class_value if index is None else index
        if index == VOID or index not in {c.index for c in self._classes}:
            self.statusBar().showMessage("Select a class to delete (void cannot be deleted)", 3000)
            return False
        if len(self._classes) < 2:
            self.statusBar().showMessage("The last class cannot be deleted", 3000)
            return False
        try:
            if into is None:
                dlg = DeleteClassDialog(self, self._classes, index, merge=merge)
                if dlg.exec() != QDialog.DialogCode.Accepted:
                    return False
                edit = dlg.edit()
            else:
                edit = class_edits.delete_class(self._classes, index, into)
        except AtrousError as e:
            dialogs.show_error(self, "Cannot delete the class", str(e))
            return False
        return self._apply_class_edit(edit, confirm=True)

    def merge_class(self, index: int | None = None, into: int | None = None) -> bool:
        """Merge class ``index`` into another (its pixels become that class)."""
        return self.delete_class(index, into, merge=True)

    def move_class(self, step: int, index: int | None = None) -> bool:
        """Move a class up (-1) or down (+1): it swaps indices with its neighbour in every mask."""
        if self.project is None:
            return False
        index = self.tools.class_value if index is None else index
        if index == VOID:
            return False
        try:
            edit = class_edits.move_class(self._classes, index, step)
        except AtrousError as e:
            self.statusBar().showMessage(str(e), 3000)
            return False
        return self._apply_class_edit(edit)

    def _class_edit_blocked(self) -> str | None:
        if self.prelabel.running:
            return "Pre-labelling is running with the current classes; cancel it or let it finish first."
        finetune = getattr(self, "_finetune_dialog", None)
        if finetune is not None and finetune.running:
            return "A fine-tune of these classes is running; let it finish or cancel it first."
        return None

    @contextmanager
    def _progress(self, label: str) -> Iterator[Callable[[int, int], None]]:
        """A modal progress callback for reading or rewriting every mask (shown after half a second)."""
        dlg = QProgressDialog(label, "", 0, 0, self)
        dlg.setCancelButton(None)
        dlg.setWindowModality(Qt.WindowModality.WindowModal)
        dlg.setMinimumDuration(500)

        def report(done: int, total: int) -> None:
            dlg.setMaximum(total)
            dlg.setValue(done)

        try:
            yield report
        finally:
            dlg.close()
            dlg.deleteLater()

    def _confirm_text(self, edit: class_edits.ClassEdit) -> str:
        assert self.project is not None
        with self._progress("Counting the pixels that change…") as report:
            imp = class_edits.impact(self.project, edit, on_progress=report)
        lines = [
            f"{edit.description[:1].upper()}{edit.description[1:]}?\n",
            f"{imp.pixels:,} pixel(s) in {imp.images} image(s) change class.",
        ]
        extra = imp.masks_rewritten - imp.images
        if extra > 0:
            lines.append(f"{extra} more mask(s) are rewritten because the classes after it move up one index.")
        if imp.prelabels_rewritten:
            lines.append(f"{imp.prelabels_rewritten} kept pre-label(s) follow, so corrections stay the same.")
        if self.project.model_versions() and not class_edits.models_still_match(self._classes, edit):
            lines.append("Fine-tuned models of the old class list will no longer fit: fine-tune again.")
        lines.append(
            "\nEdit → Undo class change (or Ctrl+Z right after it) undoes it for the whole project, as long as no "
            "mask is changed meanwhile; undo in open images still works for earlier strokes."
        )
        return "\n".join(lines)

    def _apply_class_edit(self, edit: class_edits.ClassEdit, *, confirm: bool = False) -> bool:
        """Apply a class edit to the project and every open document; True when it was applied.

        Order: finish any stroke, save the current mask (so the disk holds every open
        edit), ask (``confirm``), rewrite every stored mask in one all-or-nothing step,
        then carry the open documents through the same LUT (their history too).
        """
        assert self.project is not None
        blocked = self._class_edit_blocked() if edit.remaps else None
        if blocked:
            dialogs.show_error(self, "Not now", blocked)
            return False
        self.canvas._finish_interaction()  # a stroke in progress ends cleanly, as one undo step
        if edit.remaps and not self.save_current():
            dialogs.show_error(self, "Could not save", f"The current mask could not be saved:\n{self.last_save_error}")
            return False
        try:
            if confirm and not dialogs.confirm(self, "Change classes?", self._confirm_text(edit)):
                return False
            with self._progress("Rewriting the masks…") as report:
                result = class_edits.apply_class_edit(self.project, edit, on_progress=report)
        except AtrousError as e:
            dialogs.show_error(self, "Class change failed", str(e))
            if edit.remaps and self.project.classes() == list(edit.classes):  # committed, files still moving
                self._remap_open(edit, [])
            self._load_classes()
            return False
        if edit.remaps:
            self._remap_open(edit, result.changed_ids)
        self._load_classes()
        self._class_undo_mark = self._doc_revisions()  # Ctrl+Z undoes this change until something else is done
        self.statusBar().showMessage(f"Classes changed: {edit.description} (Edit → Undo class change)", 4000)
        return True

    # ================================================================ undoing the last class change

    def _class_undo_action(self) -> QAction:
        """The one "Undo class change" action (Edit menu and Classes menu); its text names the change."""
        if getattr(self, "act_undo_classes", None) is None:
            self.act_undo_classes = QAction("Undo class change", self)
            self.act_undo_classes.triggered.connect(lambda: self.undo_class_change())
            self.act_undo_classes.setEnabled(False)
            self._class_undo_mark: dict | None = None
        return self.act_undo_classes

    def _update_class_undo(self) -> None:
        act = self._class_undo_action()
        try:
            rec = None if self.project is None else class_undo.last_record(self.project)
        except AtrousError:
            rec = None
        act.setEnabled(rec is not None)
        act.setText("Undo class change" if rec is None else f"Undo class change: {rec.description}")

    def _doc_revisions(self) -> dict:
        return {"project": self.project, **{i: (id(m), m.doc.revision) for i, m in self.docs.items()}}

    def _class_change_was_last(self) -> bool:
        """True when nothing was painted or undone in any open image since the last class change."""
        mark = self._class_undo_mark
        if mark is None or mark.get("project") is not self.project or not self.act_undo_classes.isEnabled():
            return False
        for image_id, model in self.docs.items():
            if image_id in mark:
                if mark[image_id] != (id(model), model.doc.revision):
                    return False
            elif model.doc.can_undo:
                return False
        return True

    def undo_last(self) -> None:
        """Ctrl+Z: undo the class change when it was the last thing done, else the last stroke."""
        if self._class_change_was_last():
            self.undo_class_change()
        else:
            self.undo()

    def undo_class_change(self, *, confirm: bool = True) -> bool:
        """Undo the project's last class change: its class list and every mask it rewrote.

        Refused with a message (nothing changed) when a mask was changed after it; open
        images come back through the inverse LUT, their restored masks read from disk.
        """
        if self.project is None:
            return False
        self._class_undo_mark = None
        try:
            rec = class_undo.last_record(self.project)
        except AtrousError as e:
            dialogs.show_error(self, "Cannot undo the class change", str(e))
            return False
        if rec is None:
            self.statusBar().showMessage("No class change to undo", 3000)
            self._update_class_undo()
            return False
        blocked = self._class_edit_blocked()
        if blocked:
            dialogs.show_error(self, "Not now", blocked)
            return False
        self.canvas._finish_interaction()
        if not self.save_current():
            dialogs.show_error(self, "Could not save", f"The current mask could not be saved:\n{self.last_save_error}")
            return False
        text = (
            f"Undo “{rec.description}”?\n\nThe class list goes back to how it was before it, and "
            f"{len(rec.kept_masks)} mask(s) and {len(rec.kept_prelabels)} kept pre-label(s) it rewrote are restored."
        )
        if confirm and not dialogs.confirm(self, "Undo class change?", text):
            return False
        try:
            with self._progress("Restoring the masks…") as report:
                result = class_undo.undo_class_edit(self.project, on_progress=report)
        except AtrousError as e:
            dialogs.show_error(self, "Cannot undo the class change", str(e))
            if self.project.classes() == rec.old_classes:  # committed, files still moving
                back = class_edits.ClassEdit(tuple(rec.old_classes), rec.inverse_lut(), rec.description)
                self._remap_open(back, rec.kept_masks)
            self._load_classes()
            return False
        back = class_edits.ClassEdit(tuple(result.classes), result.lut, f"undo {result.description}")
        self._remap_open(back, result.changed_ids, restored=True)
        self._load_classes()
        self.statusBar().showMessage(f"Undone: {result.description}", 4000)
        return True

    def _remap_open(self, edit: class_edits.ClassEdit, changed_ids: list[int], *, restored: bool = False) -> None:
        """Carry open documents through ``edit``'s LUT; ``restored``: masks of ``changed_ids`` come from disk."""
        lut = edit.lut
        for image_id, model in self.docs.items():
            before = model.doc.changed_pixels
            labels = self.project.read_mask(image_id) if restored and image_id in changed_ids else None
            class_edits.remap_document(model.doc, lut, labels)
            # a class edit is not a correction: the next save's provenance leaves it out
            model._saved_changed += model.doc.changed_pixels - before
            model.changed.emit(Box.full(model.shape))
            model.stepFinished.emit()
        self.cache.clear()  # decoded masks hold the old values
        value = self.tools.class_value
        if value != VOID:  # the class painted keeps being painted; a deleted one gives way to its merge target
            old_name = next((c.name for c in self._classes if c.index == value), None)
            new_index = {c.name: c.index for c in edit.classes}
            if old_name in new_index:
                self.tools.class_value = new_index[old_name]
            elif lut[value] not in (VOID, class_edits.background_index(edit.classes)):
                self.tools.class_value = int(lut[value])
            else:
                self.tools.class_value = -1  # _load_classes picks the first class that is not the background
        lock = self.tools.lock
        if isinstance(lock, int):
            self.tools.lock = int(lut[lock]) if lut[lock] != VOID else LOCK_NONE
        for image_id in changed_ids:
            if image_id in self._records:
                self._refresh_record(image_id)
