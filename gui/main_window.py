"""The main window: composes the editor from its parts and owns what they share.

:class:`MainWindow` holds the open :class:`Project`, the canvas and the tool
settings, the menus and tool bar, the status bar, the window settings, and
opening / closing projects. Its other responsibilities live in mixins, one
module each:

* ``window_images``: the image list, its filter and sort order, navigation;
* ``window_classes``: the class dock, the paint lock, class editing;
* ``window_documents``: one undoable document per visited image, switching
  images, saving and the autosave policy (every write goes through
  ``Project.save_mask``: atomic PNG, then one DB transaction);
* ``window_model``: the model panel, pre-labelling, class mapping, the confidence
  overlay and the fine-tune dialog;
* ``window_learn``: "Learn from my strokes" (a pixel classifier previewing this image).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
from PySide6.QtCore import QByteArray, QRect, QTimer
from PySide6.QtGui import QAction, QActionGroup, QCloseEvent, QGuiApplication, QKeySequence
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDockWidget,
    QFileDialog,
    QLabel,
    QListWidgetItem,
    QMainWindow,
    QSpinBox,
    QToolBar,
)

from annotation.editing import VOID
from annotation.errors import AtrousError
from annotation.project import ImageRecord, LabelClass, Project

from . import dialogs
from .canvas import Canvas
from .document import MaskDocumentModel
from .help_dialogs import add_help_menu
from .model_worker import PrelabelResult
from .prelabel import PrelabelController
from .projects import open_or_create
from .settings import last_image, recent_projects, remember_image, remember_project, settings
from .tools import Tool, ToolSettings
from .window_classes import ClassesMixin
from .window_common import ROLE_ID, SORT_NAME, SORT_UNCERTAIN
from .window_documents import DocumentsMixin
from .window_images import ImagesMixin
from .window_learn import LearnMixin
from .window_model import ModelMixin
from .workers import ImageCache

#: Save this long after the last edit.
AUTOSAVE_MS = 2000
#: The status bar of an empty window.
NO_PROJECT_HINT = "No project open: File -> New project… (Ctrl+N) or Open project or image folder… (Ctrl+O)"


class MainWindow(ImagesMixin, ClassesMixin, DocumentsMixin, ModelMixin, LearnMixin, QMainWindow):
    """The editor window. ``project`` may be None (an empty window with the File menu).

    The mixins come before QMainWindow so that their methods win over Qt's of the same
    name (``palette`` returns the label palette, not the widget's QPalette)."""

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
        self._items: dict[int, QListWidgetItem] = {}  # the image list's item of each image id
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
        #: actions that need an open project (disabled without one); add yours here
        self.project_actions: list[QAction] = []

        self._build_actions()
        self._build_image_dock()
        self._build_class_dock()
        self._build_model_dock()
        self._build_status_bar()
        self._build_view_and_help_menus()
        self._restore_settings()

        self.canvas.cursorMoved.connect(self._on_cursor)
        self.canvas.viewChanged.connect(self._update_status)
        self.canvas.reviewRequested.connect(self.mark_reviewed)
        self.tools.changed.connect(self._tools_changed)
        if not self._geometry_restored:
            self._default_geometry()
        self._update_project_actions()
        if project is not None:
            self.set_project(project)

    # ================================================================ building

    def _action(self, text: str, slot, shortcuts: list[str] | str | None = None, *, checkable: bool = False) -> QAction:
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
        from . import image_set, new_project_dialog, transfer_dialog  # the File and Image menus' dialogs

        m_file.addAction(self._action("New project…", lambda: new_project_dialog.open_new_project(self), "Ctrl+N"))
        m_file.addAction(self._action("Open project or image folder…", self.open_dialog, "Ctrl+O"))
        self.recent_menu = m_file.addMenu("Open recent")
        self.recent_menu.aboutToShow.connect(self._fill_recent_menu)
        self.act_save = self._action("Save mask now", lambda: self.save_current(), "Ctrl+S")
        m_file.addAction(self.act_save)
        m_file.addSeparator()
        self.act_import = self._action("Import labels…", lambda: transfer_dialog.open_import(self))
        self.act_export = self._action("Export masks…", lambda: transfer_dialog.open_export(self))
        self.act_add_images = self._action("Add images…", lambda: image_set.open_add_images(self))
        self.act_add_images.setToolTip("Add the images of a folder that the project does not have yet")
        m_file.addActions([self.act_add_images, self.act_import, self.act_export])
        self.project_actions += [self.act_add_images, self.act_export]
        m_file.addSeparator()
        m_file.addAction(self._action("Quit", self.close, "Ctrl+Q"))

        m_edit = self.menuBar().addMenu("&Edit")
        self.act_undo = self._action("Undo", self.undo_last, ["Ctrl+Z"])  # or the class change just made
        self.act_redo = self._action("Redo", self.redo, ["Ctrl+Shift+Z", "Ctrl+Y"])
        m_edit.addActions([self.act_undo, self.act_redo])
        m_edit.addAction(self._class_undo_action())

        m_tools = self.menuBar().addMenu("&Tools")
        group = QActionGroup(self)
        self.tool_actions: dict[Tool, QAction] = {}
        for tool, text, key in (
            (Tool.BRUSH, "Brush", "B"),
            (Tool.ERASER, "Eraser", "E"),
            (Tool.FILL, "Fill", "F"),
            (Tool.POLYGON, "Polygon", "P"),
            (Tool.WAND, "Magic wand", "W"),
            (Tool.SUPERPIXEL, "Superpixel brush", "S"),
            (Tool.GRABCUT, "GrabCut", "G"),
        ):
            act = self._action(f"{text}", lambda _=False, t=tool: setattr(self.tools, "tool", t), key, checkable=True)
            group.addAction(act)
            m_tools.addAction(act)
            self.tool_actions[tool] = act
        self.tool_actions[Tool.BRUSH].setChecked(True)
        m_tools.addSeparator()
        m_tools.addAction(self._action("Smaller brush", lambda: self.tools.grow(-1), "["))
        m_tools.addAction(self._action("Larger brush", lambda: self.tools.grow(1), "]"))
        m_tools.addAction(
            self._action("Superpixels coarse / medium / fine", lambda: self.tools.next_granularity(), "Shift+S")
        )
        self.act_superpixels = self._action(
            "Show superpixel boundaries", lambda on: setattr(self.tools, "show_superpixels", on), "V", checkable=True
        )
        m_tools.addAction(self.act_superpixels)
        for i in range(20):  # 0..9, then Shift+0..9 for 10..19; "/" picks any class by name
            key = str(i) if i < 10 else f"Shift+{i - 10}"
            self._action(f"Class {i}", lambda _=False, i=i: self.select_class(i), key)
        self._build_class_menu(self.menuBar().addMenu("&Classes"))

        m_view = self.view_menu = self.menuBar().addMenu("&View")
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
        m_go.addSeparator()
        self.act_remove_images = self._action("Remove from project…", lambda: image_set.remove_selected(self))
        self.act_remove_images.setToolTip("Take the selected images out of the project (the files stay on disk)")
        m_go.addActions([self.act_add_images, self.act_remove_images])
        self.project_actions.append(self.act_remove_images)

        m_model = self.menuBar().addMenu("&Model")
        self.act_prelabel = self._action("Pre-label this image", lambda: self.prelabel_images("current"), "Ctrl+L")
        self.act_prelabel_sel = self._action(
            "Pre-label selected images", lambda: self.prelabel_images("selected"), "Ctrl+Shift+L"
        )
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
        m_model.addAction(self._action("Learn from my strokes", self.learn_from_strokes))
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
        self.tools_toolbar = tb
        # A second tool bar for the image at hand: on a narrow screen it takes its own row
        # (see _default_geometry) instead of hiding buttons behind an overflow arrow.
        tb = self.image_toolbar = self.addToolBar("Image")
        tb.setObjectName("image_toolbar")
        tb.addActions([self.act_undo, self.act_redo])
        tb.addSeparator()
        self.act_prev.setIconText("Previous")
        self.act_next.setIconText("Next")
        self.act_review.setIconText("Reviewed, next")
        tb.addActions([self.act_prev, self.act_next, self.act_review])
        tb.addSeparator()
        self.act_prelabel.setIconText("Pre-label")
        self.act_confidence.setIconText("Low confidence")
        tb.addActions([self.act_prelabel, self.act_confidence])
        for act in (self.act_prev, self.act_next, self.act_review, self.act_confidence):
            keys = " or ".join(k.toString(QKeySequence.SequenceFormat.NativeText) for k in act.shortcuts())
            act.setToolTip(f"{act.text()} ({keys})")

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

    def _build_view_and_help_menus(self) -> None:
        """View lists every dock and tool bar (one closed with × comes back from here); then Help."""
        self.view_menu.addSeparator()
        for dock in self.findChildren(QDockWidget):
            act = dock.toggleViewAction()
            act.setText(f"{dock.windowTitle()} panel")
            self.view_menu.addAction(act)
        for bar in self.findChildren(QToolBar):
            act = bar.toggleViewAction()
            act.setText(f"{bar.windowTitle()} tool bar")
            self.view_menu.addAction(act)
        add_help_menu(self)

    def _default_geometry(self, avail: QRect | None = None) -> None:
        """The first window: as large as comfortable, but inside the screen's free area ``avail``
        (status bar included) on 1280x800 and 1366x768 screens; the Image tool bar gets its own
        row if the two tool bars would not fit side by side."""
        if avail is None:
            screen = self.screen() or QGuiApplication.primaryScreen()
            avail = screen.availableGeometry() if screen is not None else QRect(0, 0, 1280, 800)
        # Leave room for the window frame and title bar, which the window manager adds outside.
        w = min(1400, avail.width() - 16)
        h = min(900, avail.height() - 48)
        self.resize(w, h)
        self.move(avail.x() + (avail.width() - w) // 2, avail.y() + max(0, (avail.height() - h - 32) // 2))
        need = self.tools_toolbar.sizeHint().width() + self.image_toolbar.sizeHint().width() + 16
        if need > w and not self.toolBarBreak(self.image_toolbar):
            self.insertToolBarBreak(self.image_toolbar)
        elif need <= w and self.toolBarBreak(self.image_toolbar):
            self.removeToolBarBreak(self.image_toolbar)

    def _update_project_actions(self) -> None:
        """What acts on a project is disabled in an empty window and enabled when one opens."""
        has = self.project is not None
        for act in (
            self.act_save,
            self.act_undo,
            self.act_redo,
            self.act_prev,
            self.act_next,
            self.act_review,
            self.act_prelabel,
            self.act_prelabel_sel,
            self.act_prelabel_new,
            self.act_confidence,
            self.act_finetune,
            *self.tool_actions.values(),
            *self.project_actions,
        ):
            act.setEnabled(has and not (self.prelabel.running and act in self._batch_actions()))
        for w in (self.size_spin, self.lock_combo, self.void_check):
            w.setEnabled(has)
        for dock in self.findChildren(QDockWidget):
            if dock.widget() is not None:
                dock.widget().setEnabled(has)

    def _batch_actions(self) -> tuple[QAction, ...]:
        return (
            self.act_prelabel,
            self.act_prelabel_sel,
            self.act_prelabel_new,
            self.act_finetune,
            self.act_remove_images,
        )

    # ================================================================ settings

    def _restore_settings(self) -> None:
        s = settings()
        geo = s.value("window/geometry")
        self._geometry_restored = isinstance(geo, QByteArray) and self.restoreGeometry(geo)
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
        if self.project is not None:
            remember_image(self.project.root, self.current_id)
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
        running = getattr(self, "_finetune_dialog", None)
        if running is not None and running.running:
            raise AtrousError(
                "a fine-tune of this project is running; let it finish or cancel it before opening another"
            )
        if self.project is not None:
            if not self.save_current():
                raise AtrousError("the current mask could not be saved; not switching projects")
            remember_image(self.project.root, self.current_id)
            self.prelabel.shutdown()
            self.cache.clear()
            self.docs.clear()
            self.project.close()
        self.project = project
        self.current_id = None
        self.prelabel.claims = type(self.prelabel.claims)()
        self.confidence.clear()
        self.mean_confidence.clear()
        self._model_classes = []
        self.model_panel.reset()  # nothing it said about the previous project's model holds here
        self._fill_models(keep_choice=False)
        remember_project(project.root)
        self._update_project_actions()
        self.setWindowTitle(f"Atrous — {project.root.name}")
        self._load_classes()
        self._fill_image_list()
        shown = self._visible_ids()
        if shown:  # where the person left off, else the first image
            last = last_image(project.root)
            self.show_image(last if last in shown else shown[0])

    def open_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open a project or an image folder")
        if path:
            self.open_path(path)

    def open_path(self, path: str) -> bool:
        """Open a project or image folder (asking before making a project of a folder)."""
        proj = open_or_create(
            path,
            lambda text: dialogs.confirm(self, "Create a project?", text),
            lambda text, lines: dialogs.show_list(self, "Some images were not added", text, lines),
        )
        if proj is None:
            return False
        self.set_project(proj)
        return True

    def _fill_recent_menu(self) -> None:
        self.recent_menu.clear()
        for p in recent_projects():
            act = self.recent_menu.addAction(p)
            act.triggered.connect(lambda _=False, p=p: self.open_path(p))

    # ================================================================ view

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
        if self.project is None:
            self.statusBar().showMessage(NO_PROJECT_HINT)
            return
        self.statusBar().showMessage(
            f"{self.tools.tool.value} · {self._class_name(self.tools.paint_value())} · size {self.tools.radius * 2:.0f}px"
        )

    # ================================================================ closing

    def closeEvent(self, event: QCloseEvent) -> None:
        job = getattr(self, "_job_dialog", None)  # a running new project, import or export asks first
        if job is not None and not job.ask_cancel():  # idle: stops a folder scan; running: asks
            event.ignore()
            return
        finetune = getattr(self, "_finetune_dialog", None)
        if finetune is not None and finetune.running and not self.ask_stop_finetune():
            event.ignore()  # keep editing; the training goes on
            return
        self.canvas._finish_interaction()
        while not self.save_current():
            choice = dialogs.save_failed(self, f"Your edits to this mask could not be saved:\n{self.last_save_error}")
            if choice == "retry":
                continue
            if choice == "cancel":
                event.ignore()
                return
            break  # discard
        self.autosave_timer.stop()
        self.save_settings()
        if finetune is not None and finetune.running:
            self.statusBar().showMessage("Stopping the fine-tune process (keeping its best checkpoint)…")
            finetune.shutdown(self.finetune_stop_ms)
        self.prelabel.shutdown()
        self.cache.shutdown()
        if self.project is not None:
            self.project.close()
        event.accept()


__all__ = ["MainWindow", "AUTOSAVE_MS", "SORT_NAME", "SORT_UNCERTAIN"]
