"""The main window: image list, canvas, class palette, tools, autosave.

The window owns the open :class:`Project`, a bounded cache of one
:class:`MaskDocumentModel` per visited image (so undo history survives
switching images), and the autosave policy: the current mask is written when
switching images, two seconds after the last edit, when marking reviewed and
on close. Every write goes through ``Project.save_mask`` (atomic PNG, then
one DB transaction).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
from PySide6.QtCore import QByteArray, QSize, Qt, QTimer
from PySide6.QtGui import QAction, QActionGroup, QCloseEvent, QColor, QIcon, QKeySequence, QPainter, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QColorDialog,
    QComboBox,
    QDockWidget,
    QFileDialog,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QPushButton,
    QSlider,
    QSpinBox,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from annotation.confidence import read_confidence
from annotation.editing import VOID
from annotation.errors import AtrousError
from annotation.project import STATUSES, ImageRecord, LabelClass, Project

from . import dialogs
from .canvas import Canvas
from .document import MaskDocumentModel
from .model_panel import ModelPanel
from .model_worker import PERSON_STATUSES, ModelChoice, PrelabelItem, PrelabelJob, PrelabelResult, PrelabelSummary
from .prelabel import PrelabelController
from .projects import open_or_create
from .settings import recent_projects, remember_project, settings
from .tools import LOCK_NONE, LOCK_UNLABELLED, Tool, ToolSettings
from .workers import ImageCache, LoadRequest

#: Save this long after the last edit.
AUTOSAVE_MS = 2000
#: Keep visited images' documents (mask + baseline + undo) up to this much memory.
DOC_CACHE_BYTES = 512 * 1024 * 1024
#: Keep this session's confidence maps in memory up to this much.
CONFIDENCE_CACHE_BYTES = 256 * 1024 * 1024
SORT_NAME = "name"
SORT_UNCERTAIN = "uncertain"

STATUS_LABELS = {"new": "new", "prelabeled": "pre-labelled", "edited": "edited", "reviewed": "reviewed"}
STATUS_COLOURS = {
    "new": QColor(150, 150, 150),
    "prelabeled": QColor(70, 130, 230),
    "edited": QColor(240, 160, 40),
    "reviewed": QColor(60, 180, 75),
}
VOID_COLOUR = (224, 224, 192)
ROLE_ID = Qt.ItemDataRole.UserRole


def _dot_icon(colour: QColor, size: int = 12) -> QIcon:
    pm = QPixmap(size, size)
    pm.fill(Qt.GlobalColor.transparent)
    p = QPainter(pm)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    p.setBrush(colour)
    p.setPen(colour.darker(150))
    p.drawEllipse(1, 1, size - 2, size - 2)
    p.end()
    return QIcon(pm)


def _swatch_icon(rgb: tuple[int, int, int], size: int = 14) -> QIcon:
    pm = QPixmap(size, size)
    pm.fill(QColor(*rgb))
    p = QPainter(pm)
    p.setPen(QColor(0, 0, 0))
    p.drawRect(0, 0, size - 1, size - 1)
    p.end()
    return QIcon(pm)


class MainWindow(QMainWindow):
    """The editor window. ``project`` may be None (an empty window with the File menu)."""

    def __init__(self, project: Project | None = None) -> None:
        super().__init__()
        self.setWindowTitle("Atrous")
        self.project: Project | None = None
        self.tools = ToolSettings(self)
        self.canvas = Canvas(self.tools, self)
        self.setCentralWidget(self.canvas)
        self.docs: OrderedDict[int, MaskDocumentModel] = OrderedDict()
        self.current_id: int | None = None
        self.cache = ImageCache(parent=self)
        self.autosave_timer = QTimer(self)
        self.autosave_timer.setSingleShot(True)
        self.autosave_timer.setInterval(AUTOSAVE_MS)
        self.autosave_timer.timeout.connect(self._autosave)
        self.last_save_error: str | None = None
        self._records: dict[int, ImageRecord] = {}
        self._classes: list[LabelClass] = []
        self._cursor = (-1, -1)
        self.prelabel = PrelabelController(self)
        #: this session's confidence maps (image id -> uint8 map), newest last
        self.confidence: OrderedDict[int, np.ndarray] = OrderedDict()
        #: mean confidence of pre-labels made in this session (also stored in the project)
        self.mean_confidence: dict[int, float] = {}
        self._pending_results: list[PrelabelResult] = []
        self._batch_label = ""
        self._model_classes: list[str] | None = None

        self._build_actions()
        self._build_image_dock()
        self._build_class_dock()
        self._build_model_dock()
        self._build_status_bar()
        self._restore_settings()

        self.canvas.cursorMoved.connect(self._on_cursor)
        self.canvas.viewChanged.connect(self._update_status)
        self.canvas.reviewRequested.connect(self.mark_reviewed)
        self.tools.changed.connect(self._tools_changed)
        self.resize(1280, 820)
        if project is not None:
            self.set_project(project)

    # ================================================================ building

    def _action(self, text: str, slot, shortcuts: list[str] | str | None = None, *, checkable: bool = False) -> QAction:  # noqa: ANN001
        act = QAction(text, self)
        if shortcuts:
            keys = [shortcuts] if isinstance(shortcuts, str) else shortcuts
            act.setShortcuts([QKeySequence(k) for k in keys])
        act.setCheckable(checkable)
        act.triggered.connect(slot)
        self.addAction(act)  # window-wide shortcuts even without a menu
        return act

    def _build_actions(self) -> None:
        m_file = self.menuBar().addMenu("&File")
        m_file.addAction(self._action("Open project or image folder…", self.open_dialog, "Ctrl+O"))
        self.recent_menu = m_file.addMenu("Open recent")
        self.recent_menu.aboutToShow.connect(self._fill_recent_menu)
        m_file.addAction(self._action("Save mask now", lambda: self.save_current(), "Ctrl+S"))
        m_file.addSeparator()
        m_file.addAction(self._action("Quit", self.close, "Ctrl+Q"))

        m_edit = self.menuBar().addMenu("&Edit")
        self.act_undo = self._action("Undo", self.undo, ["Ctrl+Z"])
        self.act_redo = self._action("Redo", self.redo, ["Ctrl+Shift+Z", "Ctrl+Y"])
        m_edit.addActions([self.act_undo, self.act_redo])

        m_tools = self.menuBar().addMenu("&Tools")
        group = QActionGroup(self)
        self.tool_actions: dict[Tool, QAction] = {}
        for tool, text, key in (
            (Tool.BRUSH, "Brush", "B"), (Tool.ERASER, "Eraser", "E"), (Tool.FILL, "Fill", "F"), (Tool.POLYGON, "Polygon", "P"),
        ):
            act = self._action(f"{text}", lambda _=False, t=tool: setattr(self.tools, "tool", t), key, checkable=True)
            group.addAction(act)
            m_tools.addAction(act)
            self.tool_actions[tool] = act
        self.tool_actions[Tool.BRUSH].setChecked(True)
        m_tools.addSeparator()
        m_tools.addAction(self._action("Smaller brush", lambda: self.tools.grow(-1), "["))
        m_tools.addAction(self._action("Larger brush", lambda: self.tools.grow(1), "]"))
        for i in range(10):
            self._action(f"Class {i}", lambda _=False, i=i: self.select_class(i), str(i))

        m_view = self.menuBar().addMenu("&View")
        self.act_overlay = self._action("Show mask overlay", self._toggle_overlay, "O", checkable=True)
        self.act_overlay.setChecked(True)
        self.act_outline = self._action("Outline only", self._toggle_outline, "Shift+O", checkable=True)
        m_view.addActions([self.act_overlay, self.act_outline])
        m_view.addAction(self._action("Fit to window", self.canvas.fit, "Ctrl+0"))
        m_view.addAction(self._action("Actual size (1:1)", self.canvas.actual_size, "Ctrl+1"))
        m_view.addAction(self._action("Zoom in", lambda: self.canvas.zoom_by(1.25), "Ctrl+="))
        m_view.addAction(self._action("Zoom out", lambda: self.canvas.zoom_by(0.8), "Ctrl+-"))

        m_go = self.menuBar().addMenu("&Image")
        self.act_next = self._action("Next image", lambda: self.navigate(1), ["D", "PgDown"])
        self.act_prev = self._action("Previous image", lambda: self.navigate(-1), ["A", "PgUp"])
        self.act_review = self._action("Mark reviewed and go on", self.mark_reviewed, "R")
        m_go.addActions([self.act_prev, self.act_next, self.act_review])

        m_model = self.menuBar().addMenu("&Model")
        self.act_prelabel = self._action("Pre-label this image", lambda: self.prelabel_images("current"), "Ctrl+L")
        self.act_prelabel_sel = self._action("Pre-label selected images", lambda: self.prelabel_images("selected"), "Ctrl+Shift+L")
        self.act_prelabel_new = self._action("Pre-label all new images", lambda: self.prelabel_images("new"))
        self.act_prelabel_cancel = self._action("Cancel pre-labelling", self.prelabel.cancel)
        self.act_prelabel_cancel.setEnabled(False)
        self.act_confidence = self._action("Show low-confidence pixels", self._toggle_confidence, "C", checkable=True)
        self.act_finetune = self._action("Fine-tune on corrections…", self.open_finetune)
        m_model.addActions([self.act_prelabel, self.act_prelabel_sel, self.act_prelabel_new, self.act_prelabel_cancel])
        m_model.addSeparator()
        m_model.addAction(self.act_confidence)
        m_model.addSeparator()
        m_model.addAction(self.act_finetune)
        self.act_prelabel.setToolTip("Pre-label this image with the model chosen in the Model panel (Ctrl+L)")

        tb = self.addToolBar("Tools")
        tb.setObjectName("tools_toolbar")
        for act in self.tool_actions.values():
            tb.addAction(act)
        tb.addSeparator()
        tb.addWidget(QLabel(" Size "))
        self.size_spin = QSpinBox()
        self.size_spin.setRange(1, 1000)
        self.size_spin.setSuffix(" px")
        self.size_spin.setToolTip("Brush diameter in image pixels ([ and ], or Ctrl+wheel)")
        self.size_spin.valueChanged.connect(lambda v: setattr(self.tools, "radius", v / 2))
        tb.addWidget(self.size_spin)
        tb.addWidget(QLabel("  Paint over "))
        self.lock_combo = QComboBox()
        self.lock_combo.setToolTip("Lock: paint only over these pixels, so neighbouring classes stay intact")
        self.lock_combo.currentIndexChanged.connect(self._lock_changed)
        tb.addWidget(self.lock_combo)
        self.void_check = QCheckBox("Eraser paints void")
        self.void_check.toggled.connect(lambda on: setattr(self.tools, "erase_to_void", on))
        tb.addWidget(self.void_check)
        tb.addSeparator()
        tb.addActions([self.act_undo, self.act_redo])
        tb.addSeparator()
        tb.addActions([self.act_prev, self.act_next, self.act_review])
        tb.addSeparator()
        self.act_prelabel.setIconText("Pre-label")
        tb.addActions([self.act_prelabel, self.act_confidence])

    def _build_image_dock(self) -> None:
        dock = QDockWidget("Images", self)
        dock.setObjectName("images_dock")
        w = QWidget()
        lay = QVBoxLayout(w)
        lay.setContentsMargins(4, 4, 4, 4)
        self.search_edit = QLineEdit()
        self.search_edit.setPlaceholderText("Search by name…")
        self.search_edit.setClearButtonEnabled(True)
        self.search_edit.textChanged.connect(self._apply_filter)
        self.status_filter = QComboBox()
        self.status_filter.addItem("All statuses", None)
        for s in STATUSES:
            self.status_filter.addItem(_dot_icon(STATUS_COLOURS[s]), STATUS_LABELS[s], s)
        self.status_filter.currentIndexChanged.connect(self._apply_filter)
        self.sort_combo = QComboBox()
        self.sort_combo.addItem("Sort by name", SORT_NAME)
        self.sort_combo.addItem("Least confident first", SORT_UNCERTAIN)
        self.sort_combo.setToolTip("Least confident first: the images whose pre-label the model was least sure of "
                                   "(an active-learning queue); images without a pre-label go last")
        self.sort_combo.currentIndexChanged.connect(lambda _=0: self._fill_image_list())
        self.image_list = QListWidget()
        self.image_list.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        # Keys belong to the canvas (D/A, Space); the list is driven by mouse and shortcuts.
        self.image_list.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.image_list.currentItemChanged.connect(self._list_current_changed)
        self.progress_label = QLabel()
        lay.addWidget(self.search_edit)
        lay.addWidget(self.status_filter)
        lay.addWidget(self.sort_combo)
        lay.addWidget(self.image_list, 1)
        lay.addWidget(self.progress_label)
        dock.setWidget(w)
        self.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, dock)

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

    def _build_model_dock(self) -> None:
        dock = QDockWidget("Model", self)
        dock.setObjectName("model_dock")
        self.model_panel = ModelPanel()
        dock.setWidget(self.model_panel)
        self.model_dock = dock
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
        self.resizeDocks([self.findChild(QDockWidget, "classes_dock"), dock], [330, 450], Qt.Orientation.Vertical)
        mp = self.model_panel
        mp.prelabelRequested.connect(self.prelabel_images)
        mp.cancelRequested.connect(self.prelabel.cancel)
        mp.checkRequested.connect(self.check_model)
        mp.browseRequested.connect(self.browse_checkpoint)
        mp.finetuneRequested.connect(self.open_finetune)
        mp.confidenceToggled.connect(self._confidence_check_toggled)
        mp.thresholdChanged.connect(self.canvas.set_confidence_threshold)
        self.canvas.set_confidence_threshold(mp.threshold())
        pc = self.prelabel
        pc.runningChanged.connect(self._prelabel_running)
        pc.progress.connect(mp.set_progress)
        pc.modelLoaded.connect(self._model_loaded)
        pc.loadFailed.connect(self._model_failed)
        pc.result.connect(self._on_prelabel_result)
        pc.imageFailed.connect(lambda _id, msg: mp.add_problem(f"✗ {msg}"))
        pc.finished.connect(self._prelabel_finished)

    def _build_status_bar(self) -> None:
        sb = self.statusBar()
        self.lbl_pos = QLabel()
        self.lbl_class = QLabel()
        self.lbl_zoom = QLabel()
        self.lbl_size = QLabel()
        self.lbl_save = QLabel()
        for lbl in (self.lbl_pos, self.lbl_class, self.lbl_zoom, self.lbl_size, self.lbl_save):
            lbl.setMinimumWidth(90)
            sb.addPermanentWidget(lbl)

    # ================================================================ settings

    def _restore_settings(self) -> None:
        s = settings()
        geo = s.value("window/geometry")
        if isinstance(geo, QByteArray):
            self.restoreGeometry(geo)
        state = s.value("window/state")
        if isinstance(state, QByteArray):
            self.restoreState(state)
        try:
            self.tools.tool = Tool(str(s.value("tools/tool", Tool.BRUSH.value)))
            self.tools.radius = float(s.value("tools/radius", 8.0))
            self.tools.erase_to_void = str(s.value("tools/erase_to_void", "false")).lower() == "true"
            opacity = int(s.value("view/opacity", 50))
            outline = str(s.value("view/outline", "false")).lower() == "true"
        except (TypeError, ValueError):
            opacity, outline = 50, False
        self.opacity_slider.setValue(opacity)
        self.canvas.set_opacity(opacity / 100)
        self.act_outline.setChecked(outline)
        self.canvas.set_outline(outline)
        device = str(s.value("model/device", "auto"))
        i = self.model_panel.device_combo.findData(device)
        self.model_panel.device_combo.setCurrentIndex(max(i, 0))
        self._tools_changed()

    def save_settings(self) -> None:
        s = settings()
        s.setValue("window/geometry", self.saveGeometry())
        s.setValue("window/state", self.saveState())
        s.setValue("tools/tool", self.tools.tool.value)
        s.setValue("tools/radius", self.tools.radius)
        s.setValue("tools/erase_to_void", "true" if self.tools.erase_to_void else "false")
        s.setValue("view/opacity", self.opacity_slider.value())
        s.setValue("view/outline", "true" if self.canvas.outline else "false")
        s.setValue("model/device", self.model_panel.device_combo.currentData())
        choice = self.model_panel.choice()
        if choice is not None:
            s.setValue("model/spec", choice.spec)
        s.sync()

    def _tools_changed(self) -> None:
        t = self.tools
        self.tool_actions[t.tool].setChecked(True)
        self.size_spin.blockSignals(True)
        self.size_spin.setValue(max(1, round(t.radius * 2)))
        self.size_spin.blockSignals(False)
        self.void_check.blockSignals(True)
        self.void_check.setChecked(t.erase_to_void)
        self.void_check.blockSignals(False)
        for i in range(self.class_tree.topLevelItemCount()):
            item = self.class_tree.topLevelItem(i)
            if item.data(0, ROLE_ID) == t.class_value:
                self.class_tree.blockSignals(True)
                self.class_tree.setCurrentItem(item)
                self.class_tree.blockSignals(False)
        self._update_status()

    # ================================================================ project

    def set_project(self, project: Project) -> None:
        """Show ``project`` (the previous one is saved and closed)."""
        if self.project is not None:
            if not self.save_current():
                raise AtrousError("the current mask could not be saved; not switching projects")
            self.prelabel.shutdown()
            self.cache.clear()
            self.docs.clear()
            self.project.close()
        self.project = project
        self.current_id = None
        self.prelabel.claims = type(self.prelabel.claims)()
        self.confidence.clear()
        self.mean_confidence.clear()
        self._fill_models()
        remember_project(project.root)
        self.setWindowTitle(f"Atrous — {project.root.name}")
        self._load_classes()
        self._fill_image_list()
        first = self._visible_ids()
        if first:
            self.show_image(first[0])

    def open_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open a project or an image folder")
        if path:
            self.open_path(path)

    def open_path(self, path: str) -> bool:
        """Open a project or image folder (asking before making a project of a folder)."""
        proj = open_or_create(path, lambda text: dialogs.confirm(self, "Create a project?", text))
        if proj is None:
            return False
        self.set_project(proj)
        return True

    def _fill_recent_menu(self) -> None:
        self.recent_menu.clear()
        for p in recent_projects():
            act = self.recent_menu.addAction(p)
            act.triggered.connect(lambda _=False, p=p: self.open_path(p))

    # ---- classes

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
            item.setIcon(0, _swatch_icon(colour))
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

    # ---- image list

    def _fill_image_list(self) -> None:
        """(Re)build the image list in the chosen order, keeping the current image selected."""
        if self.project is None:
            return
        recs = self.project.images()
        if self.sort_combo.currentData() == SORT_UNCERTAIN:
            # Active-learning queue: least confident pre-labels first; never pre-labelled last.
            recs.sort(key=lambda r: (self._mean_conf(r) is None, self._mean_conf(r) or 0.0, r.name))
        self._records = {r.id: r for r in recs}
        self.image_list.blockSignals(True)
        self.image_list.clear()
        for rec in self._records.values():
            item = QListWidgetItem(rec.name)
            item.setData(ROLE_ID, rec.id)
            self._style_item(item, rec)
            self.image_list.addItem(item)
            if rec.id == self.current_id:
                self.image_list.setCurrentItem(item)
        self.image_list.blockSignals(False)
        self._apply_filter()

    def _mean_conf(self, rec: ImageRecord) -> float | None:
        v = self.mean_confidence.get(rec.id)
        return rec.mean_confidence if v is None else v

    def _style_item(self, item: QListWidgetItem, rec: ImageRecord) -> None:
        item.setIcon(_dot_icon(STATUS_COLOURS.get(rec.status, QColor(128, 128, 128))))
        conf = self._mean_conf(rec)
        conf_text = "" if conf is None or rec.status not in ("prelabeled",) else f"  ·  {100 * conf:.0f} %"
        tip = f"{rec.path}\n{rec.width}x{rec.height}, {STATUS_LABELS.get(rec.status, rec.status)}"
        if conf is not None:
            tip += f"\nmean confidence of the last pre-label: {100 * conf:.1f} %"
        item.setToolTip(tip)
        item.setText(f"{rec.name}  ·  {STATUS_LABELS.get(rec.status, rec.status)}{conf_text}")

    def _item_for(self, image_id: int) -> QListWidgetItem | None:
        for i in range(self.image_list.count()):
            item = self.image_list.item(i)
            if item.data(ROLE_ID) == image_id:
                return item
        return None

    def _refresh_record(self, image_id: int) -> None:
        assert self.project is not None
        rec = self.project.image(image_id)
        self._records[image_id] = rec
        item = self._item_for(image_id)
        if item is not None:
            self._style_item(item, rec)
        self._update_progress()

    def _apply_filter(self) -> None:
        text = self.search_edit.text().strip().lower()
        status = self.status_filter.currentData()
        for i in range(self.image_list.count()):
            item = self.image_list.item(i)
            rec = self._records.get(item.data(ROLE_ID))
            ok = rec is not None and (not text or text in rec.name.lower()) and (status is None or rec.status == status)
            item.setHidden(not ok)
        self._update_progress()

    def _visible_ids(self) -> list[int]:
        return [
            self.image_list.item(i).data(ROLE_ID)
            for i in range(self.image_list.count())
            if not self.image_list.item(i).isHidden()
        ]

    def _update_progress(self) -> None:
        recs = self._records.values()
        done = sum(r.status == "reviewed" for r in recs)
        self.progress_label.setText(f"{len(self._visible_ids())} shown · {done}/{len(self._records)} reviewed")

    def _list_current_changed(self, item: QListWidgetItem | None) -> None:
        if item is not None and item.data(ROLE_ID) != self.current_id:
            self.show_image(int(item.data(ROLE_ID)))

    def _neighbour(self, delta: int) -> int | None:
        ids = self._visible_ids()
        if not ids:
            return None
        if self.current_id in ids:
            i = ids.index(self.current_id) + delta
        else:  # the current image was filtered out: go by position in the full list
            all_ids = list(self._records)
            pos = all_ids.index(self.current_id) if self.current_id in all_ids else -1
            later = [j for j in ids if all_ids.index(j) > pos]
            return (later[0] if later else None) if delta > 0 else next((j for j in reversed(ids) if all_ids.index(j) < pos), None)
        return ids[i] if 0 <= i < len(ids) else None

    def navigate(self, delta: int) -> None:
        """Go to the next (``delta=1``) or previous (``-1``) image of the list as filtered."""
        target = self._neighbour(delta)
        if target is None:
            self.statusBar().showMessage("No more images" if delta > 0 else "This is the first image", 2000)
            return
        self.show_image(target)

    # ================================================================ documents

    @property
    def current_model(self) -> MaskDocumentModel | None:
        return None if self.current_id is None else self.docs.get(self.current_id)

    def _request(self, image_id: int) -> LoadRequest:
        assert self.project is not None
        rec = self._records.get(image_id) or self.project.image(image_id)
        return LoadRequest(image_id, self.project.image_path(rec), self.project.mask_path(image_id) if rec.has_mask else None)

    def show_image(self, image_id: int) -> bool:
        """Switch to ``image_id`` (saving the current mask first). False if it could not be shown."""
        if self.project is None:
            return False
        if image_id == self.current_id:
            return True
        self.canvas._finish_interaction()  # noqa: SLF001  a stroke in progress ends here
        if not self.save_current():
            dialogs.show_error(self, "Could not save", f"The current mask could not be saved:\n{self.last_save_error}\n\n"
                               "Staying on this image so no edit is lost.")
            return False
        try:
            decoded = self.cache.get(self._request(image_id))
        except AtrousError as e:
            dialogs.show_error(self, "Cannot open image", str(e))
            return False
        model = self.docs.get(image_id)
        if model is None:
            h, w = decoded.rgb.shape[:2]
            mask = decoded.mask if decoded.mask is not None else np.full((h, w), self._background(), np.uint8)
            if mask.shape != (h, w):
                dialogs.show_error(self, "Mask does not fit", f"The stored mask is {mask.shape[1]}x{mask.shape[0]}, "
                                   f"the image {w}x{h}; starting from an empty mask.")
                mask = np.full((h, w), self._background(), np.uint8)
            # Claim first: from now on a running batch hands this image's pre-label to us
            # instead of writing it; and re-read the mask, which it may have just written.
            self.prelabel.claims.claim(image_id)
            if self.prelabel.running:
                try:
                    fresh = self.project.read_mask(image_id)
                except AtrousError:
                    fresh = None
                if fresh is not None and fresh.shape == (h, w):
                    mask = fresh
                self._records[image_id] = self.project.image(image_id)
            model = MaskDocumentModel(image_id, mask, parent=self)
            model.dirtyChanged.connect(self._on_dirty)
            model.stepFinished.connect(self._on_step)
            model.changed.connect(self._on_changed)
            self.docs[image_id] = model
        self.docs.move_to_end(image_id)
        self.current_id = image_id
        self.canvas.set_content(decoded.rgb, model, self.palette(), self._background())
        self.canvas.set_confidence(self.confidence_map(image_id))
        self._update_confidence_info()
        self._evict_docs()
        item = self._item_for(image_id)
        if item is not None:
            self.image_list.blockSignals(True)
            self.image_list.setCurrentItem(item)
            self.image_list.blockSignals(False)
            self.image_list.scrollToItem(item)
        self._update_shares()
        self._update_status()
        self.canvas.setFocus()
        nxt = self._neighbour(1)
        if nxt is not None:
            self.cache.prefetch(self._request(nxt))
        return True

    def _evict_docs(self) -> None:
        total = sum(m.nbytes() for m in self.docs.values())
        for image_id in list(self.docs):
            if total <= DOC_CACHE_BYTES:
                break
            m = self.docs[image_id]
            if image_id == self.current_id or m.dirty:
                continue
            total -= m.nbytes()
            del self.docs[image_id]
            self.prelabel.claims.release(image_id)
            self.cache.drop(image_id)
            m.deleteLater()

    def _on_changed(self, _box: object) -> None:
        self.autosave_timer.start()

    def _on_step(self) -> None:
        self._update_shares()
        self._update_status()

    def _on_dirty(self, _dirty: bool) -> None:
        self._update_status()

    # ================================================================ saving

    def save_current(self, status: str = "edited", *, force: bool = False) -> bool:
        """Write the current mask if it has unsaved edits (or ``force``); True when nothing is left unsaved."""
        model = self.current_model
        if self.project is None or model is None:
            return True
        if model.in_stroke:  # never save half a stroke; the release will arm the timer again
            self.autosave_timer.start()
            return not model.dirty
        if not (model.dirty or force):
            return True
        pixels, seconds = model.take_provenance()
        try:
            self.project.save_mask(
                model.image_id, model.label_map, status=status, changed_pixels=pixels, edit_seconds=seconds, source="editor"
            )
        except (AtrousError, OSError) as e:
            self.last_save_error = str(e)
            self.lbl_save.setText("⚠ save failed")
            self.statusBar().showMessage(f"Saving failed: {e}", 8000)
            return False
        self.last_save_error = None
        self.autosave_timer.stop()
        model.mark_saved()
        self.cache.drop(model.image_id)
        self._refresh_record(model.image_id)
        self._update_status()
        return True

    def _autosave(self) -> None:
        self.save_current()

    def mark_reviewed(self) -> None:
        """Save, set the status to reviewed and go to the next image (Space or R)."""
        model = self.current_model
        if self.project is None or model is None or self.current_id is None:
            return
        self.canvas._finish_interaction()  # noqa: SLF001
        rec = self._records[self.current_id]
        nxt = self._neighbour(1)
        if model.dirty or not rec.has_mask:
            if not self.save_current("reviewed", force=True):
                dialogs.show_error(self, "Could not save", str(self.last_save_error))
                return
        else:
            try:
                self.project.set_status(self.current_id, "reviewed")
            except AtrousError as e:
                dialogs.show_error(self, "Could not mark reviewed", str(e))
                return
            self._refresh_record(self.current_id)
        self._apply_filter()
        if nxt is not None:
            self.show_image(nxt)
        else:
            self.statusBar().showMessage("Reviewed — that was the last image", 3000)

    # ================================================================ edit actions

    def undo(self) -> None:
        m = self.current_model
        if m is not None and m.undo() is None:
            self.statusBar().showMessage("Nothing to undo", 1500)

    def redo(self) -> None:
        m = self.current_model
        if m is not None and m.redo() is None:
            self.statusBar().showMessage("Nothing to redo", 1500)

    def _toggle_overlay(self) -> None:
        self.canvas.set_overlay_visible(self.act_overlay.isChecked())

    def _toggle_outline(self) -> None:
        self.canvas.set_outline(self.act_outline.isChecked())

    # ================================================================ status bar

    def _on_cursor(self, x: int, y: int) -> None:
        self._cursor = (x, y)
        self._update_status()

    def _class_name(self, index: int | None) -> str:
        if index is None:
            return ""
        if index == VOID:
            return "void"
        return next((c.name for c in self._classes if c.index == index), f"class {index}")

    def _update_status(self) -> None:
        x, y = self._cursor
        if x >= 0:
            self.lbl_pos.setText(f"x {x}, y {y}")
            self.lbl_class.setText(self._class_name(self.canvas.current_class_at(x, y)))
        else:
            self.lbl_pos.setText("")
            self.lbl_class.setText("")
        self.lbl_zoom.setText(f"{self.canvas.scale * 100:.0f} %")
        w, h = self.canvas.image_size
        self.lbl_size.setText(f"{w} × {h}" if w else "")
        m = self.current_model
        if self.last_save_error:
            self.lbl_save.setText("⚠ save failed")
        elif m is None:
            self.lbl_save.setText("")
        else:
            self.lbl_save.setText("● unsaved" if m.dirty else "✓ saved")
        self.statusBar().showMessage(
            f"{self.tools.tool.value} · {self._class_name(self.tools.paint_value())} · size {self.tools.radius * 2:.0f}px"
        )

    # ================================================================ model: pre-labelling

    def _fill_models(self) -> None:
        if self.project is None:
            return
        versions = [(mv.id, mv.name, self._version_path(mv.checkpoint_path)) for mv in self.project.model_versions()]
        active = self.project.active_model_version
        files = []
        remembered = str(settings().value("model/spec", "") or "")
        if remembered and Path(remembered).is_file() and remembered not in {v[2] for v in versions}:
            files.append(remembered)
        self.model_panel.set_models(versions, None if active is None else active.id, files)
        if active is None and remembered:
            self.model_panel.select_spec(remembered)

    def _version_path(self, stored: str) -> str:
        assert self.project is not None
        p = Path(stored)
        return str(p if p.is_absolute() else self.project.root / p)

    def browse_checkpoint(self) -> None:
        path = dialogs.open_file(self, "Choose a model checkpoint", "PyTorch checkpoints (*.pt *.pth);;All files (*)")
        if path:
            self.model_panel.add_file(path)

    def _targets(self, scope: str) -> list[int]:
        assert self.project is not None
        if scope == "current":
            return [] if self.current_id is None else [self.current_id]
        if scope == "selected":
            ids = [int(it.data(ROLE_ID)) for it in self.image_list.selectedItems() if not it.isHidden()]
            if not ids and self.current_id is not None:
                ids = [self.current_id]
            order = list(self._records)
            return sorted(ids, key=lambda i: order.index(i) if i in order else 0)
        if scope == "new":
            return [r.id for r in self.project.images("new")]
        raise ValueError(f"unknown scope {scope!r}")

    def prelabel_images(self, scope: str = "current", *, overwrite: bool | None = None) -> bool:
        """Pre-label ``current``, ``selected`` or all ``new`` images in the background. False if nothing started."""
        if self.project is None:
            return False
        if self.prelabel.running:
            self.statusBar().showMessage("A pre-labelling batch is already running", 3000)
            return False
        choice = self.model_panel.choice()
        if choice is None:
            self.statusBar().showMessage("Choose a model in the Model panel first", 3000)
            return False
        ids = self._targets(scope)
        if not ids:
            self.statusBar().showMessage("No images to pre-label" + (" (no image has status new)" if scope == "new" else ""), 3000)
            return False
        if overwrite is None:
            overwrite = self.model_panel.overwrite_check.isChecked()
        if overwrite:
            worked = [i for i in ids if self._records.get(i) and self._records[i].status in PERSON_STATUSES]
            if worked and not dialogs.confirm(
                self, "Overwrite people's work?",
                f"{len(worked)} of these images were edited or reviewed by a person. Replace their masks with the "
                "model's pre-label?\n\nImages open in this session can be restored with Ctrl+Z; others cannot.",
            ):
                return False
        # Unsaved edits go to disk first, so the batch sees the person's current statuses.
        self.save_current()
        items = []
        for i in ids:
            rec = self._records.get(i) or self.project.image(i)
            items.append(PrelabelItem(i, self.project.image_path(rec), rec.name))
        job = PrelabelJob(self.prelabel.next_request_id(), self.project.root, choice, items, overwrite=bool(overwrite))
        self._batch_label = {"current": "This image", "selected": f"{len(items)} selected", "new": f"{len(items)} new"}[scope]
        self.model_panel.start_batch(len(items), self._batch_label)
        return self.prelabel.start(job)

    def check_model(self) -> bool:
        """Load the chosen model without predicting, to show what it runs on (or why it cannot load)."""
        if self.project is None or self.prelabel.running:
            return False
        choice = self.model_panel.choice()
        if choice is None:
            return False
        job = PrelabelJob(self.prelabel.next_request_id(), self.project.root, choice, [])
        self.model_panel.start_batch(0, "Checking")
        self.model_panel.progress_label.setText("Loading the model…")
        return self.prelabel.start(job)

    def _prelabel_running(self, running: bool) -> None:
        self.model_panel.set_running(running)
        for act in (self.act_prelabel, self.act_prelabel_sel, self.act_prelabel_new, self.act_finetune):
            act.setEnabled(not running)
        self.act_prelabel_cancel.setEnabled(running)

    def _model_loaded(self, description: str, name: str, class_names: object) -> None:
        names = list(class_names) if isinstance(class_names, (list, tuple)) else []
        self._model_classes = names
        note = ""
        ours = {c.index: c.name for c in self._classes}
        if names and [ours.get(i) for i in range(len(names))] != names:
            note = (f"{len(names)} model classes, {len(ours)} project classes: indices are saved as they are; "
                    "fine-tune to match your classes")
        self.model_panel.show_loaded(description, name, note)

    def _model_failed(self, message: str) -> None:
        self.model_panel.show_error(message)
        job = self.prelabel.job
        self.model_panel.progress_label.setText("Nothing was pre-labelled." if job is not None and job.items else "")

    def _on_prelabel_result(self, res: PrelabelResult) -> None:
        self._remember_confidence(res.image_id, res.confidence)
        self.mean_confidence[res.image_id] = res.mean_confidence
        if not self._apply_result(res):
            return
        self.cache.drop(res.image_id)
        if self.project is not None:
            self._refresh_record(res.image_id)
        if res.image_id == self.current_id:
            self.canvas.set_confidence(res.confidence)
            self._update_confidence_info()

    def _apply_result(self, res: PrelabelResult) -> bool:
        """Bring an image's document in line with a pre-label; False when the result was not used."""
        assert self.project is not None
        model = self.docs.get(res.image_id)
        if model is not None and model.in_stroke:
            # Never mix a pre-label into a stroke in progress: try again when it ends.
            self._pending_results.append(res)
            QTimer.singleShot(150, self._retry_pending)
            return False
        if res.saved:
            # The worker wrote the file; an open, untouched document follows it (one undo step).
            if model is not None and not model.dirty:
                model.replace_all(res.labels)
                model.mark_saved()
            return True
        job = self.prelabel.job
        overwrite = bool(job and job.overwrite)
        rec = self.project.image(res.image_id)
        if not overwrite and (rec.status in PERSON_STATUSES or (model is not None and model.dirty)):
            self.model_panel.add_problem(f"– {rec.name}: being edited; not overwritten")
            return False
        if model is not None:
            model.replace_all(res.labels)  # the old mask stays one Ctrl+Z away
        try:
            self.project.save_mask(res.image_id, res.labels, status="prelabeled", model_version=res.model_version, source="prelabel")
            self.project.set_mean_confidence(res.image_id, min(max(res.mean_confidence, 0.0), 1.0))
        except (AtrousError, OSError) as e:
            self.model_panel.add_problem(f"✗ {rec.name}: {e}")
            return False
        if model is not None:
            model.take_provenance()
            model.mark_saved()
        self._update_status()
        return True

    def _retry_pending(self) -> None:
        pending, self._pending_results = self._pending_results, []
        for res in pending:
            self._on_prelabel_result(res)

    def _prelabel_finished(self, summary: PrelabelSummary) -> None:
        mp = self.model_panel
        for _id, why in summary.skipped:
            mp.add_problem(f"– {why}")
        if summary.total:
            parts = [f"{summary.saved + summary.handed} pre-labelled"]
            if summary.skipped:
                parts.append(f"{len(summary.skipped)} skipped")
            if summary.failed:
                parts.append(f"{len(summary.failed)} failed")
            head = "Cancelled" if summary.cancelled else "Done"
            mp.progress_label.setText(f"{head}: " + ", ".join(parts) + f" ({summary.seconds:.1f} s)")
            self.statusBar().showMessage(f"Pre-labelling {head.lower()}: " + ", ".join(parts), 5000)
        elif summary.description:
            mp.progress_label.setText("Model loaded.")
        if self.sort_combo.currentData() == SORT_UNCERTAIN:
            self._fill_image_list()

    # ---- confidence

    def _remember_confidence(self, image_id: int, conf: np.ndarray) -> None:
        self.confidence[image_id] = conf
        self.confidence.move_to_end(image_id)
        total = sum(c.nbytes for c in self.confidence.values())
        while len(self.confidence) > 1 and total > CONFIDENCE_CACHE_BYTES:
            _, gone = self.confidence.popitem(last=False)
            total -= gone.nbytes

    def confidence_map(self, image_id: int) -> np.ndarray | None:
        """The confidence map of an image's last pre-label: this session's, else the stored one."""
        hit = self.confidence.get(image_id)
        if hit is None and self.project is not None:
            hit = read_confidence(self.project.root, image_id)
            if hit is not None:
                self._remember_confidence(image_id, hit)
        return hit

    def _toggle_confidence(self) -> None:
        on = self.act_confidence.isChecked()
        self.model_panel.confidence_check.blockSignals(True)
        self.model_panel.confidence_check.setChecked(on)
        self.model_panel.confidence_check.blockSignals(False)
        self.canvas.set_confidence_visible(on)
        self._update_confidence_info()

    def _confidence_check_toggled(self, on: bool) -> None:
        self.act_confidence.setChecked(on)
        self._toggle_confidence()

    def set_confidence_visible(self, on: bool) -> None:
        self.act_confidence.setChecked(on)
        self._toggle_confidence()

    def _update_confidence_info(self) -> None:
        lbl = self.model_panel.confidence_info
        if self.current_id is None:
            lbl.setText("")
        elif not self.canvas.has_confidence:
            lbl.setText("No confidence map for this image (pre-label it first).")
        else:
            rec = self._records.get(self.current_id)
            mean = self.mean_confidence.get(self.current_id, rec.mean_confidence if rec else None)
            lbl.setText("" if mean is None else f"Mean confidence of this pre-label: {100 * mean:.0f} %")

    # ================================================================ model: fine-tuning

    def open_finetune(self) -> None:
        if self.project is None or self.prelabel.running:
            return
        from .finetune_dialog import FinetuneDialog

        if not self.save_current():
            dialogs.show_error(self, "Could not save", str(self.last_save_error))
            return
        dlg = FinetuneDialog(self.project, self)
        dlg.prelabelNewRequested.connect(self._prelabel_with_version)
        self._finetune_dialog = dlg
        dlg.exec()
        dlg.shutdown()
        self._fill_models()

    def _prelabel_with_version(self, version_id: int) -> None:
        self._fill_models()
        assert self.project is not None
        for mv in self.project.model_versions():
            if mv.id == version_id:
                self.model_panel.select_spec(self._version_path(mv.checkpoint_path))
        self.prelabel_images("new")

    # ================================================================ closing

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802
        self.canvas._finish_interaction()  # noqa: SLF001
        while not self.save_current():
            choice = dialogs.save_failed(
                self, f"Your edits to this mask could not be saved:\n{self.last_save_error}"
            )
            if choice == "retry":
                continue
            if choice == "cancel":
                event.ignore()
                return
            break  # discard
        self.autosave_timer.stop()
        self.save_settings()
        self.prelabel.shutdown()
        self.cache.shutdown()
        if self.project is not None:
            self.project.close()
        event.accept()


__all__ = ["MainWindow", "AUTOSAVE_MS"]
