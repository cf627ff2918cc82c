"""The fine-tune dialog: settings a newcomer can accept, a live chart, per-class IoU, cancel.

Training runs in its own process, the command line's ``finetune --progress-json``
(:class:`~gui.finetune_process.FinetuneProcess`), so nothing it sets (seeds,
threads, allocator) touches the editor. The dialog is not modal: a person keeps
correcting masks while it trains, and closing the dialog only hides it (it shows
itself again with the outcome when the run ends). Cancel
asks the run to stop after the current step; the run then keeps the best
validated checkpoint so far as a (not activated) model version. A second click
stops it at once, keeping nothing.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QPainter, QPainterPath, QPaintEvent, QPen
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from annotation.project import Project

from .finetune_process import FinetuneOutcome, FinetuneProcess

LOSS_COLOUR = QColor(220, 90, 60)
MIOU_COLOUR = QColor(50, 120, 220)


class TrainingChart(QWidget):
    """A small QPainter chart: training loss (left axis, red) and val mIoU (right axis 0..1, blue)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.loss: list[tuple[int, float]] = []  # (iteration, loss)
        self.miou: list[tuple[int, float]] = []  # (iteration, val mIoU)
        self.setMinimumSize(360, 170)

    def clear(self) -> None:
        self.loss.clear()
        self.miou.clear()
        self.update()

    def add_loss(self, iteration: int, value: float) -> None:
        if math.isfinite(value):
            self.loss.append((iteration, value))
            self.update()

    def add_miou(self, iteration: int, value: float) -> None:
        self.miou.append((iteration, value))
        self.update()

    def paintEvent(self, event: QPaintEvent) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.fillRect(self.rect(), self.palette().base())
        fm = p.fontMetrics()
        left, right, top, bottom = 44, 40, 18, 20
        area = QRectF(left, top, max(self.width() - left - right, 10), max(self.height() - top - bottom, 10))
        p.setPen(QPen(self.palette().mid().color(), 1))
        p.drawRect(area)
        p.setPen(self.palette().text().color())
        p.drawText(QPointF(left, top - 5), "loss")
        p.drawText(QPointF(area.right() - fm.horizontalAdvance("val mIoU"), top - 5), "val mIoU")
        if not self.loss and not self.miou:
            p.drawText(area, Qt.AlignmentFlag.AlignCenter, "waiting for the first steps…")
            p.end()
            return
        last_it = max([i for i, _ in self.loss] + [i for i, _ in self.miou] + [1])
        lmax = max((v for _, v in self.loss), default=1.0) * 1.05 or 1.0

        def x_of(it: float) -> float:
            return area.left() + area.width() * it / last_it

        # axes labels
        p.drawText(QRectF(0, area.top() - 6, left - 4, 12), Qt.AlignmentFlag.AlignRight, f"{lmax:.2f}")
        p.drawText(QRectF(0, area.bottom() - 6, left - 4, 12), Qt.AlignmentFlag.AlignRight, "0")
        p.drawText(QRectF(area.right() + 4, area.top() - 6, right, 12), Qt.AlignmentFlag.AlignLeft, "1.0")
        p.drawText(QRectF(area.right() + 4, area.bottom() - 6, right, 12), Qt.AlignmentFlag.AlignLeft, "0")
        p.drawText(
            QRectF(area.left(), area.bottom() + 2, area.width(), 16), Qt.AlignmentFlag.AlignHCenter, f"{last_it} steps"
        )
        if self.loss:
            path = QPainterPath()
            # a light running mean keeps the line readable with small batches
            smooth, k = None, 0.2 if len(self.loss) > 20 else 1.0
            for j, (it, v) in enumerate(self.loss):
                smooth = v if smooth is None else (1 - k) * smooth + k * v
                pt = QPointF(x_of(it), area.bottom() - area.height() * smooth / lmax)
                path.moveTo(pt) if j == 0 else path.lineTo(pt)
            p.setPen(QPen(LOSS_COLOUR, 1.6))
            p.drawPath(path)
        if self.miou:
            p.setPen(QPen(MIOU_COLOUR, 1.8))
            pts = [QPointF(x_of(it), area.bottom() - area.height() * max(0.0, min(1.0, v))) for it, v in self.miou]
            for a, b in zip(pts, pts[1:]):
                p.drawLine(a, b)
            p.setBrush(MIOU_COLOUR)
            for pt in pts:
                p.drawEllipse(pt, 2.5, 2.5)
        p.end()


class FinetuneDialog(QDialog):
    """Settings, live progress and results of one fine-tune run at a time (not modal).

    Signals:
        prelabelNewRequested(int version_id): "Pre-label the new images with it" was pressed.
        versionCreated(int version_id, bool activated): a run saved a new model version
            (``activated``: it is now the project's active model).
        runFinished(): a run has ended, whatever its outcome (after the two above).
    """

    prelabelNewRequested = Signal(int)
    versionCreated = Signal(int, bool)
    runFinished = Signal()

    def __init__(self, project: Project, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Fine-tune on your corrections")
        self.setModal(False)
        self.project = project
        self.runner: FinetuneProcess | None = None
        self.result: FinetuneOutcome | None = None
        self.last_error: str | None = None
        self._iteration = 0
        self._skipped = 0  # unusable images the run left out
        self._shutting_down = False
        lay = QVBoxLayout(self)

        n_train = len([r for r in project.images(["edited", "reviewed"]) if r.has_mask])
        n_new = len(project.images("new"))
        self._n_new = n_new
        intro = QLabel(
            f"Trains a new model version on the <b>{n_train}</b> edited or reviewed masks of this project "
            f"(a fifth of them are held out to measure mIoU). The defaults are a good start."
        )
        intro.setWordWrap(True)
        lay.addWidget(intro)

        form = QFormLayout()
        self.base_combo = QComboBox()
        self.base_combo.addItem("Automatic (active version, else pretrained, else from scratch)", None)
        for mv in reversed(project.model_versions()):
            self.base_combo.addItem(f"v{mv.id} · {mv.name}", f"v{mv.id}")
        self.base_combo.addItem("From scratch (random weights)", "scratch")
        form.addRow("Start from", self.base_combo)
        self.epochs_spin = QSpinBox()
        self.epochs_spin.setRange(1, 1000)
        self.epochs_spin.setValue(30)
        self.epochs_spin.setSuffix(" epochs")
        self.minutes_spin = QDoubleSpinBox()
        self.minutes_spin.setRange(0, 1440)
        self.minutes_spin.setDecimals(1)
        self.minutes_spin.setValue(0)
        self.minutes_spin.setSpecialValueText("no time limit")
        self.minutes_spin.setSuffix(" min")
        self.minutes_spin.setToolTip("A time budget instead of a number of epochs (0: use epochs)")
        row = QHBoxLayout()
        row.addWidget(self.epochs_spin)
        row.addWidget(QLabel("or"))
        row.addWidget(self.minutes_spin)
        form.addRow("Length", row)
        self.batch_spin = QSpinBox()
        self.batch_spin.setRange(0, 256)
        self.batch_spin.setSpecialValueText("auto (4 on the CPU, 8 on a GPU)")
        self.batch_spin.setValue(0)
        self.batch_spin.setToolTip("Images per training step (0: auto)")
        form.addRow("Batch size", self.batch_spin)
        self.crop_spin = QSpinBox()
        self.crop_spin.setRange(32, 2048)
        self.crop_spin.setSingleStep(32)
        self.crop_spin.setValue(320)
        self.crop_spin.setSuffix(" px")
        form.addRow("Crop", self.crop_spin)
        self.weight_spin = QDoubleSpinBox()
        self.weight_spin.setRange(1.0, 20.0)
        self.weight_spin.setSingleStep(0.5)
        self.weight_spin.setValue(1.0)
        self.weight_spin.setToolTip("Above 1: pixels a person corrected count more in the loss")
        form.addRow("Correction weight", self.weight_spin)
        self.device_combo = QComboBox()
        for d in ("auto", "cpu", "cuda"):
            self.device_combo.addItem(d, d)
        form.addRow("Device", self.device_combo)
        self.settings_box = QWidget()
        self.settings_box.setLayout(form)
        lay.addWidget(self.settings_box)

        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setTextVisible(False)
        lay.addWidget(self.progress)
        self.status_label = QLabel("Ready.")
        self.status_label.setWordWrap(True)
        lay.addWidget(self.status_label)
        self.chart = TrainingChart()
        lay.addWidget(self.chart, 1)
        self.table = QTableWidget(0, 2)
        self.table.setHorizontalHeaderLabels(["Class", "IoU (best)"])
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().hide()
        self.table.setMaximumHeight(150)
        self.table.hide()
        lay.addWidget(self.table)

        buttons = QHBoxLayout()
        self.start_button = QPushButton("Start")
        self.start_button.setDefault(True)
        self.start_button.setEnabled(n_train > 0)
        if n_train == 0:
            self.status_label.setText("No edited or reviewed masks yet: correct and save a few pre-labels first.")
        self.cancel_button = QPushButton("Cancel training")
        self.cancel_button.setEnabled(False)
        self.cancel_button.setToolTip("Stop soon; the best checkpoint so far is kept as a model version")
        self.prelabel_button = QPushButton(f"Pre-label the {n_new} new images with it")
        self.prelabel_button.setEnabled(False)
        self.close_button = QPushButton("Close")
        self.start_button.clicked.connect(lambda: self.start())
        self.cancel_button.clicked.connect(self.cancel)
        self.prelabel_button.clicked.connect(self._prelabel_new)
        self.close_button.clicked.connect(self.close)
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.cancel_button)
        buttons.addStretch(1)
        buttons.addWidget(self.prelabel_button)
        buttons.addWidget(self.close_button)
        lay.addLayout(buttons)
        self.resize(560, 640)

    # ---- settings

    def options(self) -> dict[str, Any]:
        """The FinetuneConfig fields the settings give (plain data for the worker)."""
        opts: dict[str, Any] = {
            "base": self.base_combo.currentData(),
            "batch_size": self.batch_spin.value() or None,
            "crop": self.crop_spin.value(),
            "correction_weight": float(self.weight_spin.value()),
            "device": self.device_combo.currentData(),
        }
        if self.minutes_spin.value() > 0:
            opts["minutes"] = float(self.minutes_spin.value())
        else:
            opts["epochs"] = self.epochs_spin.value()
        return opts

    # ---- running

    @property
    def running(self) -> bool:
        """True while a fine-tune process runs."""
        return self.runner is not None

    def start(self, **overrides: Any) -> bool:
        """Start a run with the settings, ``overrides`` replacing them (``finetune`` option names);
        False when one is running already."""
        if self.runner is not None:
            return False
        opts = self.options()
        if "minutes" in overrides or "epochs" in overrides:
            opts.pop("minutes", None)
            opts.pop("epochs", None)
        opts.update(overrides)
        self.result, self.last_error, self._iteration, self._skipped = None, None, 0, 0
        self.chart.clear()
        self.table.hide()
        self.progress.setValue(0)
        runner = FinetuneProcess(self.project.root, opts, self)
        runner.progress.connect(self._on_progress)
        runner.result.connect(self._on_result)
        runner.error.connect(self._on_error)
        runner.finished.connect(self._on_finished)
        self.runner = runner
        self.settings_box.setEnabled(False)
        self.start_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.cancel_button.setText("Cancel training")
        self.prelabel_button.setEnabled(False)
        self.status_label.setText("Starting the training process…")
        runner.start()
        return True

    def cancel(self) -> None:
        """First call: stop after this step and keep the best checkpoint; second call: stop now."""
        if self.runner is None:
            return
        if self.runner.cancel_requested:
            self.runner.cancel()  # the second time it kills
            self.cancel_button.setEnabled(False)
            self.status_label.setText("Stopping now; nothing more is saved…")
            return
        self.runner.cancel()
        self.cancel_button.setText("Stop now")
        self.cancel_button.setToolTip("End the training process at once, keeping nothing from this run")
        self.status_label.setText("Stopping after this step; keeping the best checkpoint so far…")

    def shutdown(self, timeout_ms: int = 30_000) -> bool:
        """Cancel the run (keeping its best checkpoint) and wait up to ``timeout_ms`` before killing it.

        Blocks; for closing the app. True when no process is left running."""
        runner = self.runner
        if runner is None:
            return True
        self._shutting_down = True  # the app is closing: do not show the dialog again for the outcome
        ended = runner.stop_and_wait(timeout_ms)
        # finished() came through while waiting; if the process ended otherwise, tidy up here
        if self.runner is runner and ended:
            self._on_finished()
        return ended

    # ---- process signals

    def _on_progress(self, d: dict) -> None:
        phase = d.get("phase")
        if phase == "start":
            self.status_label.setText("Loading the data and the base model…")
        elif phase == "load" and "of" in d:
            self.status_label.setText(f"Loading image {d.get('loaded')} of {d.get('of')}…")
        elif phase == "load":
            self.status_label.setText(
                f"{d.get('images')} images ({d.get('train')} train, {d.get('val')} val); base: {d.get('base')}"
            )
        elif phase == "warmup":
            self.status_label.setText("Preparing the first step…")
        elif phase == "train":
            self._iteration = int(d.get("iteration") or 0)
            self.chart.add_loss(self._iteration, float(d.get("loss") or 0.0))
            self.progress.setValue(int(1000 * float(d.get("fraction") or 0.0)))
            ep = f"epoch {d.get('epoch')}" + (f"/{d['epochs']}" if d.get("epochs") else "")
            self.status_label.setText(
                f"{ep} · step {self._iteration} · loss {float(d.get('loss') or 0):.3f} · {float(d.get('it_per_s') or 0):.1f} steps/s"
            )
        elif phase == "eval":
            self.status_label.setText(f"Measuring val mIoU after epoch {d.get('epoch')}…")
        elif phase == "skipped":
            images = d.get("images") or []
            self._skipped = len(images)
            for item in images:
                logging.getLogger("atrous.gui").warning("fine-tune left out %s", item.get("why"))
        elif phase == "epoch":
            if d.get("val_miou") is not None:
                self.chart.add_miou(int(d.get("iteration") or self._iteration), float(d["val_miou"]))
            if d.get("fold_in"):
                self.status_label.setText("The val images are trained on from here (small project)…")
        elif phase == "bn":
            self.status_label.setText("Re-estimating BatchNorm statistics on the training images…")
        elif phase == "save":
            self.status_label.setText("Saving the new model version…")

    def _on_result(self, res: FinetuneOutcome) -> None:
        self.result = res
        self.progress.setValue(1000)
        n_new = self._count_new()
        self.prelabel_button.setText(f"Pre-label the {n_new} new images with it")
        if res.version_id is None:
            self.status_label.setText("Stopped before anything was worth keeping; no model version was saved.")
        else:
            best = "n/a" if res.best_miou is None else f"{100 * res.best_miou:.1f} %"
            what = "Stopped early; kept" if res.stopped else "Done: saved"
            act = " and made it the active model" if res.activated else " (not activated)"
            left = (
                f" {self._skipped} unusable image(s) were left out (atrous.log names them; "
                "`python main.py check PROJECT --repair` fixes the project)."
                if self._skipped
                else ""
            )
            self.status_label.setText(f"{what} model version v{res.version_id}{act}. Best val mIoU {best}.{left}")
            self.prelabel_button.setEnabled(n_new > 0)
        self.table.setRowCount(0)
        for name, iou in res.per_class_iou.items():
            if name.startswith("__unused_"):
                continue
            r = self.table.rowCount()
            self.table.insertRow(r)
            self.table.setItem(r, 0, QTableWidgetItem(name))
            self.table.setItem(r, 1, QTableWidgetItem("—" if iou is None else f"{100 * iou:.1f} %"))
        self.table.setVisible(self.table.rowCount() > 0)
        if res.version_id is not None:
            self.versionCreated.emit(int(res.version_id), bool(res.activated))

    def _count_new(self) -> int:
        try:
            return len(self.project.images("new"))
        except Exception:  # the project may have been closed while training ran
            return self._n_new

    def _on_error(self, message: str) -> None:
        logging.getLogger("atrous.gui").warning("fine-tune failed: %s", message)
        self.last_error = message
        self.status_label.setText(f"Fine-tuning failed: {message}")

    def _on_finished(self) -> None:
        runner, self.runner = self.runner, None
        if runner is not None:
            runner.deleteLater()
        self.settings_box.setEnabled(True)
        self.start_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.cancel_button.setText("Cancel training")
        if not self.isVisible() and not self._shutting_down:
            self.show()  # the person closed the dialog while it trained: show them how the run ended
        self.runFinished.emit()

    def _prelabel_new(self) -> None:
        if self.result is not None and self.result.version_id is not None:
            self.prelabelNewRequested.emit(int(self.result.version_id))
            self.accept()
