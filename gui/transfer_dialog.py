"""File -> Import and File -> Export: the ``import`` and ``export`` commands in a dialog.

Both dialogs collect the command's options and run :func:`annotation.jobs.run_import` /
:func:`annotation.jobs.run_export` (the functions the CLI calls) in a worker thread,
with a progress bar and Cancel (an import counts the files it reads, then the images it
writes; Cancel stops either phase within about one file). The jobs are all or nothing:
a malformed file, a refused folder or a cancel leaves the project and the output folder
as they were, and the dialog shows the CLI's message. At the end it shows the lines the
CLI prints.

:class:`BackgroundJob` is the worker both dialogs (and the new-project dialog) use:
the job gets plain data, reports through queued signals and is cancelled
cooperatively (its ``should_stop`` callback); it never touches a widget.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QRunnable, Qt, QThreadPool, QUrl, Signal
from PySide6.QtGui import QCloseEvent, QDesktopServices, QShowEvent
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from annotation.errors import AtrousError
from annotation.formats import Cancelled
from annotation.jobs import ExportOptions, ImportOptions, export_report, import_report, run_export, run_import
from annotation.project import STATUSES, Project

from . import dialogs

log = logging.getLogger("atrous.transfer")

#: A job: called in the worker thread with on_progress= and should_stop= keywords.
Job = Callable[..., Any]


class _Signals(QObject):
    progress = Signal(int, int, int, str)  # generation, done, total, name
    done = Signal(int, object)  # generation, result
    failed = Signal(int, str, bool)  # generation, message, cancelled


class _Task(QRunnable):
    def __init__(self, generation: int, job: Job, signals: _Signals, stop: threading.Event) -> None:
        super().__init__()
        self.setAutoDelete(True)
        self.generation, self.job, self.signals, self.stop = generation, job, signals, stop

    def run(self) -> None:
        # A worker catches its own errors and reports them; it never raises into Qt.
        g = self.generation
        try:
            result = self.job(
                on_progress=lambda d, t, n: self.signals.progress.emit(g, d, t, n), should_stop=self.stop.is_set
            )
        except Cancelled as e:
            self.signals.failed.emit(g, str(e), True)
        except AtrousError as e:
            log.warning("%s", e)
            self.signals.failed.emit(g, str(e), False)
        except Exception as e:  # a bug: keep the traceback in the log, show one line
            log.error("background job failed\n%s", traceback.format_exc())
            self.signals.failed.emit(g, f"{type(e).__name__}: {e}", False)
        else:
            self.signals.done.emit(g, result)


class BackgroundJob(QObject):
    """Runs one job at a time in its own thread; a newer job makes the older one's reports stale.

    Signals (queued to the GUI thread):
        progress(int done, int total, str name)
        succeeded(object result)
        failed(str message)
        cancelled(str message)
    """

    progress = Signal(int, int, str)
    succeeded = Signal(object)
    failed = Signal(str)
    cancelled = Signal(str)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(1)
        self._signals = _Signals(self)
        self._signals.progress.connect(self._on_progress)
        self._signals.done.connect(self._on_done)
        self._signals.failed.connect(self._on_failed)
        self._generation = 0
        self._stop = threading.Event()
        self.running = False

    def start(self, job: Job) -> None:
        """Run ``job`` (cancelling a job still running: its reports are dropped)."""
        self._stop.set()
        self._stop = threading.Event()
        self._generation += 1
        self.running = True
        self._pool.start(_Task(self._generation, job, self._signals, self._stop))

    def cancel(self) -> None:
        """Ask the running job to stop at its next check; it then reports ``cancelled``."""
        self._stop.set()

    def wait(self, msecs: int = -1) -> bool:
        """Block until no job runs (True) or ``msecs`` passed (False)."""
        done = self._pool.waitForDone(msecs)
        if done:
            self.running = False
        return done

    def _on_progress(self, g: int, done: int, total: int, name: str) -> None:
        if g == self._generation:
            self.progress.emit(done, total, name)

    def _on_done(self, g: int, result: object) -> None:
        if g == self._generation:
            self.running = False
            self.succeeded.emit(result)

    def _on_failed(self, g: int, message: str, was_cancelled: bool) -> None:
        if g == self._generation:
            self.running = False
            (self.cancelled if was_cancelled else self.failed).emit(message)


def path_row(edit: QLineEdit, browse: Callable[[], None]) -> QWidget:
    """A line edit with a Browse… button beside it."""
    row = QWidget()
    lay = QHBoxLayout(row)
    lay.setContentsMargins(0, 0, 0, 0)
    lay.addWidget(edit, 1)
    btn = QPushButton("Browse…")
    btn.clicked.connect(browse)
    lay.addWidget(btn)
    return row


def _path(edit: QLineEdit) -> Path | None:
    text = edit.text().strip()
    return Path(text).expanduser() if text else None


class AsksBeforeClosing:
    """For a dialog running a background job: closing it (×, Esc, the app quitting) goes through
    its ``ask_cancel()`` (each dialog's own), which may keep it open. Mixed in before QDialog."""

    def closeEvent(self, event: QCloseEvent) -> None:
        if not self.ask_cancel():
            event.ignore()
            return
        event.accept()

    def reject(self) -> None:  # Esc
        if self.ask_cancel():
            super().reject()


class JobDialog(AsksBeforeClosing, QDialog):
    """A form, a Run button, a progress bar, Cancel, and the summary of the last run."""

    what = "job"

    def __init__(self, window: Any, title: str, run_text: str) -> None:
        super().__init__(window)
        self.window_ = window
        self.setWindowTitle(title)
        self.setWindowModality(Qt.WindowModality.WindowModal)
        self.job = BackgroundJob(self)
        self.job.progress.connect(self._on_progress)
        self.job.succeeded.connect(self._on_succeeded)
        self.job.failed.connect(self._on_failed)
        self.job.cancelled.connect(self._on_cancelled)

        self.form_box = QWidget()
        self.form = QFormLayout(self.form_box)
        self.form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.ExpandingFieldsGrow)
        self.help = QLabel()
        self.help.setWordWrap(True)
        self.help.setStyleSheet("color: #555;")
        self.progress_bar = QProgressBar()
        self.progress_bar.setVisible(False)
        self.state = QLabel()
        self.state.setWordWrap(True)
        self.state.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.report = QPlainTextEdit()
        self.report.setReadOnly(True)
        self.report.setVisible(False)
        self.report.setMaximumHeight(120)

        self.run_btn = QPushButton(run_text)
        self.run_btn.setDefault(True)
        self.run_btn.clicked.connect(self.start)
        self.cancel_btn = QPushButton("Close")
        self.cancel_btn.clicked.connect(self._cancel_clicked)
        self.buttons = QHBoxLayout()
        self.buttons.addStretch(1)
        self.buttons.addWidget(self.run_btn)
        self.buttons.addWidget(self.cancel_btn)

        lay = QVBoxLayout(self)
        lay.addWidget(self.form_box)
        lay.addWidget(self.help)
        lay.addWidget(self.progress_bar)
        lay.addWidget(self.state)
        lay.addWidget(self.report)
        lay.addLayout(self.buttons)
        self.resize(620, 0)

    def fit_height(self) -> None:
        """Grow to the height the rows need at the current width.

        Qt sizes a dialog by its minimum size hint, which undercounts word-wrapped labels
        (the help text): the rows were squeezed until the line edits were a few pixels tall."""
        need = self.layout().totalHeightForWidth(self.width())
        if need > self.height():
            self.resize(self.width(), need)

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        self.fit_height()

    @property
    def running(self) -> bool:
        return self.job.running

    def add_format_row(self, formats: list[tuple[str, str]]) -> None:
        """The "Format" row: a combo of (format, label) whose choice is :attr:`fmt`."""
        self.format_combo = QComboBox()
        for fmt, text in formats:
            self.format_combo.addItem(text, fmt)
        self.form.addRow("Format", self.format_combo)

    def follow_format(self) -> None:
        """Show the rows of the chosen format, now and whenever it changes (call once every row exists)."""
        self.format_combo.currentIndexChanged.connect(self._format_changed)
        self.format_combo.currentIndexChanged.connect(lambda _=0: self.fit_height())
        self._format_changed()

    @property
    def fmt(self) -> str:
        return str(self.format_combo.currentData())

    def _format_changed(self) -> None:
        """Show only the form rows that apply to :attr:`fmt` (each dialog says which)."""

    # ---------------------------------------------------------------- running

    def make_job(self) -> Job | None:
        """The job for the current options (None after showing why it cannot run)."""
        raise NotImplementedError

    def start(self) -> None:
        if self.running:
            return
        try:
            job = self.make_job()
        except AtrousError as e:
            self._show_error(str(e))
            return
        if job is None:
            return
        self.report.setVisible(False)
        self.form_box.setEnabled(False)
        self.run_btn.setEnabled(False)
        self.cancel_btn.setText("Cancel")
        self.progress_bar.setVisible(True)
        self.progress_bar.setRange(0, 0)  # busy until the job knows its total (listing, parsing a JSON)
        self.state.setStyleSheet("")
        self.state.setText("Reading…")
        self.job.start(job)

    def _on_progress(self, done: int, total: int, name: str) -> None:
        self.progress_bar.setRange(0, max(total, 1))
        self.progress_bar.setValue(done)
        self.state.setText(f"{done} / {total}  {name}")

    def _idle(self) -> None:
        self.form_box.setEnabled(True)
        self.run_btn.setEnabled(True)
        self.cancel_btn.setText("Close")
        self.progress_bar.setVisible(False)

    def _show_error(self, message: str) -> None:
        self.state.setStyleSheet("color: #c0392b;")
        self.state.setText(f"error: {message}")

    def _on_failed(self, message: str) -> None:
        self._idle()
        self._show_error(message)

    def _on_cancelled(self, message: str) -> None:
        self._idle()
        self.state.setStyleSheet("")
        self.state.setText(f"Cancelled: {message}")

    def _on_succeeded(self, result: object) -> None:
        self._idle()
        self.state.setStyleSheet("color: #1e8449;")
        lines = self.finished_lines(result)
        self.state.setText("Done.")
        self.report.setPlainText("\n".join(lines))
        self.report.setVisible(True)
        self.fit_height()

    def finished_lines(self, result: object) -> list[str]:
        raise NotImplementedError

    # ---------------------------------------------------------------- stopping

    def _cancel_clicked(self) -> None:
        if self.running:
            self.state.setText("Cancelling… (nothing will be kept)")
            self.job.cancel()
        else:
            self.close()

    def ask_cancel(self) -> bool:
        """Closing the app while the job runs: ask, and on yes cancel it and wait until it cleaned up."""
        if not self.running:
            return True
        if not dialogs.confirm(
            self,
            f"Stop the {self.what}?",
            f"An {self.what} is running. Stop it? Nothing of it is kept: it is all or nothing.",
        ):
            return False
        self.job.cancel()
        self.job.wait()
        return True


# ---------------------------------------------------------------------- import

_IMPORT_FORMATS = [
    ("voc", "Pascal VOC folder", "The VOC root: JPEGImages/ and SegmentationClass/ (a class list in it is used)."),
    ("coco", "COCO JSON", "The instances JSON file; Images: where its file_name is resolved (default: its folder)."),
    ("labelme", "labelme folder", "A folder of labelme JSON files (a labels.txt beside them is used)."),
    (
        "masks",
        "Mask folder",
        "A folder of label PNGs named like their images. Images: the image folder "
        "(default: this project's images). Classes: default this project's.",
    ),
]


class ImportDialog(JobDialog):
    """File -> Import: the ``import`` command's options, run in a worker."""

    what = "import"

    def __init__(self, window: Any) -> None:
        super().__init__(window, "Import labels", "Import")
        current = getattr(window, "project", None)
        self.project_edit = QLineEdit(str(current.root) if current is not None else "")
        self.project_edit.setPlaceholderText("project folder (a new one is created)")
        self.form.addRow("Into project", path_row(self.project_edit, self._browse_project))
        self.add_format_row([(fmt, text) for fmt, text, _ in _IMPORT_FORMATS])
        self.src_edit = QLineEdit()
        self.form.addRow("Source", path_row(self.src_edit, self._browse_src))
        self.images_edit = QLineEdit()
        self.images_row = path_row(self.images_edit, lambda: self._browse_dir(self.images_edit, "Image folder"))
        self.form.addRow("Images", self.images_row)
        self.classes_edit = QLineEdit()
        self.classes_row = path_row(self.classes_edit, self._browse_classes)
        self.form.addRow("Class file", self.classes_row)
        self.void_spin = QSpinBox()
        self.void_spin.setRange(-1, 255)
        self.void_spin.setSpecialValueText("none")
        self.void_spin.setValue(-1)
        self.void_spin.setToolTip("The label value that means void / ignore (CamVid: 11); it becomes 255")
        self.form.addRow("Void value", self.void_spin)
        self.binary_check = QCheckBox("0/255 binary masks: 255 is the foreground class, not void")
        self.form.addRow("", self.binary_check)
        self.status_combo = QComboBox()
        self.status_combo.addItems(list(STATUSES))
        self.status_combo.setCurrentText("reviewed")
        self.form.addRow("Status of the masks", self.status_combo)
        self.fill_combo = QComboBox()
        self.fill_combo.addItems(["auto", "coco", "labelme"])
        self.fill_combo.setToolTip("Polygon rasteriser: pycocotools (coco) or PIL like labelme; auto picks labelme's")
        self.form.addRow("Polygon fill", self.fill_combo)
        self.follow_format()

    def _format_changed(self) -> None:
        fmt = self.fmt
        self.form.setRowVisible(self.images_row, fmt in ("coco", "masks"))
        self.form.setRowVisible(self.classes_row, fmt in ("voc", "labelme", "masks"))
        self.form.setRowVisible(self.void_spin, fmt == "masks")
        self.form.setRowVisible(self.binary_check, fmt == "masks")
        self.form.setRowVisible(self.fill_combo, fmt == "coco")
        self.help.setText(next(h for f, _, h in _IMPORT_FORMATS if f == fmt) + " All or nothing.")
        self.src_edit.setPlaceholderText("the JSON file" if fmt == "coco" else "a folder")
        self.images_edit.setPlaceholderText(
            "default: the JSON's folder" if fmt == "coco" else "default: this project's images"
        )
        self.classes_edit.setPlaceholderText(
            "default: this project's classes" if fmt == "masks" else "default: the list found in the source"
        )

    def _browse_dir(self, edit: QLineEdit, title: str) -> None:
        path = QFileDialog.getExistingDirectory(self, title, edit.text())
        if path:
            edit.setText(path)

    def _browse_project(self) -> None:
        self._browse_dir(self.project_edit, "Project folder")

    def _browse_src(self) -> None:
        if self.fmt == "coco":
            path = dialogs.open_file(self, "COCO JSON file", "JSON (*.json);;All files (*)")
            if path:
                self.src_edit.setText(path)
        else:
            self._browse_dir(self.src_edit, "Source folder")

    def _browse_classes(self) -> None:
        path = dialogs.open_file(self, "Class file", "Class lists (*.txt *.json);;All files (*)")
        if path:
            self.classes_edit.setText(path)

    def options(self) -> ImportOptions:
        src = _path(self.src_edit)
        if src is None:
            raise AtrousError("choose what to import (Source)")
        fmt = self.fmt
        return ImportOptions(
            fmt=fmt,
            src=src,
            images=_path(self.images_edit) if fmt in ("coco", "masks") else None,
            classes=_path(self.classes_edit) if fmt in ("voc", "labelme", "masks") else None,
            void=self.void_spin.value() if fmt == "masks" and self.void_spin.value() >= 0 else None,
            binary=fmt == "masks" and self.binary_check.isChecked(),
            status=self.status_combo.currentText(),
            polygon_fill=self.fill_combo.currentText(),
        )

    def make_job(self) -> Job | None:
        root = _path(self.project_edit)
        if root is None:
            raise AtrousError("choose the project to import into")
        opts = self.options()
        win = self.window_
        if _is_open(win, root) and not win.save_current():
            raise AtrousError("the current mask could not be saved; not importing")
        self._root, self._opts = root, opts
        return lambda **cb: run_import(root, opts, **cb)

    def finished_lines(self, result: object) -> list[str]:
        summary, read = result  # type: ignore[misc]
        lines = import_report(self._root, self._opts, summary, read)
        try:
            self.window_.set_project(Project.open(self._root))  # show what was imported
        except AtrousError as e:
            lines.append(f"error: cannot open {self._root}: {e}")
        return lines


def _is_open(window: Any, root: Path) -> bool:
    project = getattr(window, "project", None)
    return project is not None and Path(project.root).resolve() == root.resolve()


# ---------------------------------------------------------------------- export


class ExportDialog(JobDialog):
    """File -> Export: the ``export`` command's options, run in a worker."""

    what = "export"

    def __init__(self, window: Any) -> None:
        super().__init__(window, "Export masks", "Export")
        self.root = Path(window.project.root)
        self.form.addRow("Project", QLabel(str(self.root)))
        self.add_format_row([("voc", "Pascal VOC folder"), ("coco", "COCO JSON")])
        self.out_edit = QLineEdit()
        self.out_edit.setPlaceholderText("a new or empty folder")
        self.form.addRow("Output folder", path_row(self.out_edit, self._browse_out))
        status_row = QWidget()
        sl = QHBoxLayout(status_row)
        sl.setContentsMargins(0, 0, 0, 0)
        self.status_checks: dict[str, QCheckBox] = {}
        for s in STATUSES:
            cb = QCheckBox(s)
            cb.setChecked(True)
            self.status_checks[s] = cb
            sl.addWidget(cb)
        sl.addStretch(1)
        self.form.addRow("Images with status", status_row)
        self.val_spin = QDoubleSpinBox()
        self.val_spin.setRange(0.0, 1.0)
        self.val_spin.setSingleStep(0.05)
        self.val_spin.setValue(0.2)
        self.form.addRow("Share in val", self.val_spin)
        self.seed_spin = QSpinBox()
        self.seed_spin.setRange(0, 2**31 - 1)
        self.form.addRow("Split seed", self.seed_spin)
        self.devkit_check = QCheckBox("VOCdevkit/VOC2012 layout (torchvision's root = the output folder)")
        self.form.addRow("", self.devkit_check)
        self.lossless_check = QCheckBox("Store non-JPEG images as PNG instead of JPEG q95")
        self.form.addRow("", self.lossless_check)
        self.polygons_check = QCheckBox("Polygons instead of RLE (regions with holes stay RLE)")
        self.form.addRow("", self.polygons_check)
        self.per_class_check = QCheckBox("One annotation per class per image (not per region)")
        self.form.addRow("", self.per_class_check)
        self.open_btn = QPushButton("Open folder")
        self.open_btn.setVisible(False)
        self.open_btn.clicked.connect(self.open_folder)
        self.buttons.insertWidget(1, self.open_btn)
        self.follow_format()

    def _format_changed(self) -> None:
        voc = self.fmt == "voc"
        for w in (self.val_spin, self.seed_spin, self.devkit_check, self.lossless_check):
            self.form.setRowVisible(w, voc)
        for w in (self.polygons_check, self.per_class_check):
            self.form.setRowVisible(w, not voc)
        self.help.setText(
            "Images with a mask, in the upright frame. The folder must be new or empty; "
            "a failure or Cancel leaves nothing in it."
        )

    def _browse_out(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Export into (a new or empty folder)", self.out_edit.text())
        if path:
            self.out_edit.setText(path)

    def options(self) -> ExportOptions:
        out = _path(self.out_edit)
        if out is None:
            raise AtrousError("choose the output folder (a new or empty folder)")
        chosen = tuple(s for s, cb in self.status_checks.items() if cb.isChecked())
        if not chosen:
            raise AtrousError("choose at least one status")
        return ExportOptions(
            fmt=self.fmt,
            out=out,
            statuses=None if len(chosen) == len(STATUSES) else chosen,
            polygons=self.polygons_check.isChecked(),
            per_class=self.per_class_check.isChecked(),
            seed=self.seed_spin.value(),
            val_fraction=self.val_spin.value(),
            devkit=self.devkit_check.isChecked(),
            lossless_images=self.lossless_check.isChecked(),
        )

    def make_job(self) -> Job | None:
        opts = self.options()
        if not self.window_.save_current():
            raise AtrousError("the current mask could not be saved; not exporting")
        self.open_btn.setVisible(False)
        self._opts = opts
        root = self.root
        return lambda **cb: run_export(root, opts, **cb)

    def finished_lines(self, result: object) -> list[str]:
        self.open_btn.setVisible(True)
        return export_report(self._opts, result)  # type: ignore[arg-type]

    def open_folder(self) -> bool:
        """Show the exported folder in the desktop's file manager."""
        return QDesktopServices.openUrl(QUrl.fromLocalFile(str(self._opts.out)))


# ---------------------------------------------------------------------- menu entries


def running_job(window: Any) -> QDialog | None:
    """The window's new-project, import or export dialog while its job runs (raised to the front)."""
    dlg = getattr(window, "_job_dialog", None)
    if dlg is not None and dlg.running:
        dlg.raise_()
        return dlg
    return None


def show_job_dialog(window: Any, dlg: QDialog) -> QDialog:
    """Show ``dlg`` as the window's job dialog (the window's closeEvent asks it before closing)."""
    old = getattr(window, "_job_dialog", None)
    if old is not None and old is not dlg:
        old.deleteLater()  # idle (callers check running_job first)
    window._job_dialog = dlg
    dlg.show()
    return dlg


def open_import(window: Any) -> QDialog | None:
    """File -> Import labels…"""
    return running_job(window) or show_job_dialog(window, ImportDialog(window))


def open_export(window: Any) -> QDialog | None:
    """File -> Export masks…"""
    running = running_job(window)
    if running is not None:
        return running
    if getattr(window, "project", None) is None:
        dialogs.show_error(window, "Export", "Open a project first: there is nothing to export.")
        return None
    return show_job_dialog(window, ExportDialog(window))
