"""The main window's model side: the model panel, pre-labelling, confidence and fine-tuning.

:class:`ModelMixin` is one part of :class:`gui.main_window.MainWindow`. It
builds the "Model" dock and wires it to the :class:`PrelabelController`,
starts pre-labelling batches, brings their results into the open documents
(never into a stroke in progress, never over a person's work unasked), keeps
this session's confidence maps for the low-confidence overlay, and opens the
fine-tune dialog, whose training runs in its own process. Torch is reached only
inside functions, through ``model``.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QComboBox, QDockWidget, QFrame, QListWidget, QMessageBox, QScrollArea

from annotation.confidence import read_confidence
from annotation.errors import AtrousError
from annotation.prelabels import record_prelabel
from annotation.project import ImageRecord, LabelClass, Project

from . import dialogs
from .canvas import Canvas
from .document import MaskDocumentModel
from .model_panel import ModelPanel
from .model_worker import (
    PERSON_STATUSES,
    ModelChoice,
    PrelabelItem,
    PrelabelJob,
    PrelabelResult,
    PrelabelSummary,
)
from .prelabel import PrelabelController
from .settings import settings
from .window_common import ROLE_ID, SORT_UNCERTAIN
from .workers import ImageCache

# A child of the "atrous" logger, whose file handler writes atrous.log.
log = logging.getLogger("atrous.gui")

#: Keep this session's confidence maps in memory up to this much.
CONFIDENCE_CACHE_BYTES = 256 * 1024 * 1024


class ModelMixin:
    """Model dock, pre-labelling, confidence overlay and fine-tune wiring of the main window.

    Mixed into a QMainWindow; uses the window's ``project``, ``canvas``,
    ``prelabel`` controller, open ``docs``, image list and Model menu actions."""

    #: How long closing the app waits for a cancelled fine-tune to save its best checkpoint before killing it.
    finetune_stop_ms: int = 30_000

    project: Project | None
    canvas: Canvas
    cache: ImageCache
    prelabel: PrelabelController
    docs: OrderedDict[int, MaskDocumentModel]
    current_id: int | None
    confidence: OrderedDict[int, np.ndarray]
    mean_confidence: dict[int, float]
    image_list: QListWidget
    sort_combo: QComboBox
    act_confidence: QAction
    act_prelabel: QAction
    act_prelabel_sel: QAction
    act_prelabel_new: QAction
    act_prelabel_cancel: QAction
    act_finetune: QAction
    last_save_error: str | None
    _records: dict[int, ImageRecord]
    _classes: list[LabelClass]
    _pending_results: list[PrelabelResult]
    _batch_label: str
    _model_classes: list[str] | None

    def _build_model_dock(self) -> None:
        dock = QDockWidget("Model", self)
        dock.setObjectName("model_dock")
        self.model_panel = ModelPanel()
        # Scrolls instead of squeezing (or pushing the window past a 768-pixel-high screen)
        # when the panel is taller than the space left beside the canvas.
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(self.model_panel)
        dock.setWidget(scroll)
        self.model_dock = dock
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
        self.resizeDocks([self.findChild(QDockWidget, "classes_dock"), dock], [330, 450], Qt.Orientation.Vertical)
        mp = self.model_panel
        mp.prelabelRequested.connect(self.prelabel_images)
        mp.cancelRequested.connect(self.prelabel.cancel)
        mp.checkRequested.connect(self.check_model)
        mp.browseRequested.connect(self.browse_checkpoint)
        mp.finetuneRequested.connect(self.open_finetune)
        mp.learnRequested.connect(self.learn_from_strokes)
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

    # ================================================================ model: pre-labelling

    def _fill_models(self, *, keep_choice: bool = True) -> None:
        """List the project's model versions (through the one resolver, as the CLI sees them)."""
        if self.project is None:
            return
        from model.versions import version_choices

        versions = version_choices(self.project)
        active = self.project.active_model_version
        files = []
        remembered = str(settings().value("model/spec", "") or "")
        if remembered and Path(remembered).is_file() and remembered not in {v[2] for v in versions}:
            files.append(remembered)
        self.model_panel.set_models(versions, None if active is None else active.id, files, keep_choice=keep_choice)
        if active is None and remembered and not keep_choice:
            self.model_panel.select_spec(remembered)

    def _version_path(self, stored: str) -> str:
        """What to load for a version's stored checkpoint path (a registry name stays a name)."""
        assert self.project is not None
        from model.versions import version_spec

        return version_spec(self.project.root, stored)

    def browse_checkpoint(self) -> None:
        path = dialogs.open_file(
            self, "Choose a model checkpoint", "Checkpoints and pixel classifiers (*.pt *.pth *.npz);;All files (*)"
        )
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
            return sorted(ids, key=lambda i: self._row.get(i, 0))
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
            self.statusBar().showMessage(
                "No images to pre-label" + (" (no image has status new)" if scope == "new" else ""), 3000
            )
            return False
        if overwrite is None:
            overwrite = self.model_panel.overwrite_check.isChecked()
        if overwrite:
            worked = [i for i in ids if self._records.get(i) and self._records[i].status in PERSON_STATUSES]
            if worked and not dialogs.confirm(
                self,
                "Overwrite people's work?",
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
        job = PrelabelJob(
            self.prelabel.next_request_id(),
            self.project.root,
            choice,
            items,
            overwrite=bool(overwrite),
            class_map=self._remembered_class_map(choice.spec),
        )
        self._batch_label = {"current": "This image", "selected": f"{len(items)} selected", "new": f"{len(items)} new"}[
            scope
        ]
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
            job = self.prelabel.job
            cmap = job.class_map if job is not None else None
            note = (
                f"Classes mapped onto the project's: {cmap.describe(4)}"
                if cmap is not None
                else f"{len(names)} model classes, not the project's {len(ours)}: pre-labelling asks how to map them"
            )
        self.model_panel.show_loaded(description, name, note)

    def _model_failed(self, message: str) -> None:
        log.error("pre-label: the model could not be used: %s", message)
        self.model_panel.show_error(message)
        job = self.prelabel.job
        self.model_panel.progress_label.setText("Nothing was pre-labelled." if job is not None and job.items else "")

    def _show_model_failure(self, text: str) -> None:
        """The whole reason a pre-label did not run, in a message that does not block the editor."""
        box = getattr(self, "_failure_box", None)
        if box is None:
            box = QMessageBox(QMessageBox.Icon.Warning, "Pre-labelling did not run", "", QMessageBox.StandardButton.Ok)
            box.setParent(self, Qt.WindowType.Dialog)
            box.setModal(False)
            box.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            self._failure_box = box
        box.setText("The model could not be loaded, so nothing was pre-labelled.")
        box.setInformativeText(text)
        box.show()
        box.raise_()

    # ---- class mapping (a model whose classes are not the project's)

    def _remembered_class_map(self, spec: str):
        """This session's class map for the project and ``spec``, if a person made one."""
        if self.project is None:
            return None
        return getattr(self, "_class_maps", {}).get((str(self.project.root), spec))

    def _offer_class_map(self, summary: PrelabelSummary) -> bool:
        """A batch was refused for other classes: ask for a class map and run the batch again with it."""
        job = self.prelabel.job
        if self.project is None or self.prelabel.running or job is None or job.request_id != summary.request_id:
            return False
        from . import class_map_dialog

        names = list(summary.model_classes or [])
        initial = self._remembered_class_map(job.model.spec)
        if initial is None and job.model.version_id is not None:  # a version recorded with its map
            from model.class_map import class_map_from_record

            mv = next((v for v in self.project.model_versions() if v.id == job.model.version_id), None)
            initial = class_map_from_record(mv.metrics.get("class_map") if mv else None, names, self._classes)
        name = job.model.label or Path(job.model.spec).name
        cmap = class_map_dialog.ask_class_map(self, name, names, self._classes, initial)
        if cmap is None:
            return False
        if not hasattr(self, "_class_maps"):
            self._class_maps = {}
        self._class_maps[(str(self.project.root), job.model.spec)] = cmap
        log.info("pre-label: class map for %s: %s", job.model.spec, cmap.describe())
        again = PrelabelJob(
            self.prelabel.next_request_id(),
            job.project_root,
            job.model,
            job.items,
            overwrite=job.overwrite,
            class_map=cmap,
        )
        self.model_panel.start_batch(len(again.items), self._batch_label)
        return self.prelabel.start(again)

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
            # Recorded exactly as the job records the images nobody has open: mask, kept copy, confidence.
            saved = record_prelabel(
                self.project,
                res.image_id,
                res.labels,
                res.confidence,
                res.mean_confidence,
                res.model_version,
                overwrite_edited=overwrite,
            )
        except (AtrousError, OSError) as e:
            self.model_panel.add_problem(f"✗ {rec.name}: {e}")
            return False
        if not saved:
            self.model_panel.add_problem(f"– {rec.name}: saved by a person meanwhile; not overwritten")
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
        for _id, why in summary.failed:
            log.warning("pre-label: %s", why)
        if summary.error and summary.total:
            # Not "Done: 0 pre-labelled": the batch never ran, and the panel above says why.
            mp.show_not_run("Nothing was pre-labelled (see the message above).")
            self.statusBar().showMessage("Pre-labelling did not run: " + summary.error, 8000)
            if summary.model_classes:  # only the classes differ: offer the class table, not a failure
                QTimer.singleShot(0, lambda: self._offer_class_map(summary))
            else:
                self._show_model_failure(mp.explain(summary.error))
        elif summary.total:
            log.info(
                "pre-label: %d of %d images in %.1f s with model version %s (%s)",
                summary.saved + summary.handed,
                summary.total,
                summary.seconds,
                summary.version_id,
                summary.description,
            )
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
        if self.project is not None and summary.version_id is not None:
            known = {
                self.model_panel.model_combo.itemData(i).version_id
                for i in range(self.model_panel.model_combo.count())
                if isinstance(self.model_panel.model_combo.itemData(i), ModelChoice)
            }
            if summary.version_id not in known:  # the batch recorded an outside model as a new version
                self._fill_models()

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
        """Show the fine-tune dialog (not modal: training runs in its own process while a person edits)."""
        if self.project is None or self.prelabel.running:
            return
        from .finetune_dialog import FinetuneDialog

        old = getattr(self, "_finetune_dialog", None)
        if old is not None and old.running:
            old.show()  # one run at a time: bring its dialog back
            old.raise_()
            old.activateWindow()
            return
        if not self.save_current():
            dialogs.show_error(self, "Could not save", str(self.last_save_error))
            return
        if old is not None:
            old.deleteLater()
        dlg = FinetuneDialog(self.project, self)
        dlg.prelabelNewRequested.connect(self._prelabel_with_version)
        dlg.versionCreated.connect(self._finetune_finished)
        self._finetune_dialog = dlg
        dlg.show()

    def _prelabel_with_version(self, version_id: int) -> None:
        self._fill_models()
        assert self.project is not None
        for mv in self.project.model_versions():
            if mv.id == version_id:
                self.model_panel.select_spec(self._version_path(mv.checkpoint_path))
        self.prelabel_images("new")

    def _finetune_finished(self, version_id: int, activated: bool) -> None:
        """A fine-tune run saved model version ``version_id``: list it, and choose it when it became active."""
        log.info("fine-tune saved model version v%s (%s)", version_id, "active" if activated else "not activated")
        self._fill_models(keep_choice=not activated)

    def ask_stop_finetune(self) -> bool:
        """Closing while a fine-tune runs: True to stop it (keeping its best checkpoint) and close.

        Its own method so tests can answer it instead of a blocking message box."""
        from PySide6.QtWidgets import QMessageBox

        box = QMessageBox(
            QMessageBox.Icon.Question,
            "Fine-tuning is running",
            "A fine-tune is still training. Stop it and close? The best checkpoint so far is kept as a "
            "model version (not activated).",
            QMessageBox.StandardButton.NoButton,
            self,
        )
        stop = box.addButton("Stop and close", QMessageBox.ButtonRole.DestructiveRole)
        keep = box.addButton("Keep editing", QMessageBox.ButtonRole.RejectRole)
        box.setDefaultButton(keep)
        box.exec()
        return box.clickedButton() is stop
