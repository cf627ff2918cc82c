"""The main window's "Learn from my strokes": a pixel classifier trained on this image's strokes.

A mixin of :class:`gui.main_window.MainWindow`: the training runs in a
:class:`~gui.model_worker.LearnWorker` thread (``model.pixel_learning``), is saved as a
project model version, and its prediction previews the open image as one undo step,
changing only the pixels the person did not paint.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QTimer

from annotation.errors import AtrousError
from annotation.prelabels import record_prelabel

from .model_worker import LearnJob, LearnResult, LearnWorker, StopOnClose, WorkerThread


class LearnMixin:
    """ "Learn from my strokes" of the main window (mixed into a QMainWindow with ModelMixin)."""

    def learn_from_strokes(self) -> bool:
        """Train a pixel classifier on this image's strokes and the project's edited/reviewed masks in a
        worker thread; its prediction previews this image (see :meth:`_learned`). False if nothing started."""
        from model.pixel_learning import learning_baseline, stroke_labels

        if self.project is None or self.current_id is None or self.current_id not in self.docs:
            return False
        if self.learning:  # the button reads "Stop learning" meanwhile
            self._learn_thread.worker.cancel()
            self.model_panel.progress_label.setText("Stopping…")
            return False
        model = self.docs[self.current_id]
        labels = model.label_map
        applied = self._learn_applied.get(self.current_id)
        machine = None if applied is None else applied[0] & (labels == applied[1])
        baseline = learning_baseline(self.project.root, self.current_id, model.doc.baseline)
        strokes = stroke_labels(labels, baseline, machine)
        rec = self._records.get(self.current_id) or self.project.image(self.current_id)
        self._learn_request = getattr(self, "_learn_request", 0) + 1
        job = LearnJob(self._learn_request, self.project.root, self.current_id, self.project.image_path(rec), strokes)
        worker = LearnWorker(job)
        worker.result.connect(self._learned)
        worker.error.connect(self._learn_failed)
        worker.finished.connect(self._learn_finished)
        self._learn_thread = WorkerThread(worker, worker.finished)
        if getattr(self, "_learn_close_filter", None) is None:
            self._learn_close_filter = StopOnClose(self, self.stop_learning)
        self.model_panel.learn_button.setText("Stop learning")
        self.model_panel.progress_label.setText("Learning from your strokes…")
        self._learn_thread.start()
        return True

    @property
    def learning(self) -> bool:
        thread = getattr(self, "_learn_thread", None)
        return thread is not None and thread.running()

    @property
    def _learn_applied(self) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """Per image: (pixels a preview set, the values it set), so a later run does not learn from them."""
        if not hasattr(self, "_learn_previews"):
            self._learn_previews = {}
        return self._learn_previews

    def stop_learning(self) -> None:
        """Cancel a running "Learn from my strokes" and wait for its thread (nothing is saved)."""
        thread = getattr(self, "_learn_thread", None)
        if thread is not None:
            self._learn_request = getattr(self, "_learn_request", 0) + 1  # its result, if any, is stale now
            thread.stop()

    def _learn_failed(self, request_id: int, message: str) -> None:
        if request_id == getattr(self, "_learn_request", 0):
            self.model_panel.progress_label.setText("Could not learn: " + message)
            self.statusBar().showMessage("Learn from my strokes: " + message, 8000)

    def _learn_finished(self, request_id: int) -> None:
        self.model_panel.learn_button.setText("Learn from my strokes")
        if request_id == getattr(self, "_learn_request", 0) and self.model_panel.progress_label.text().startswith(
            ("Learning", "Stopping")
        ):
            self.model_panel.progress_label.setText("Learning cancelled; nothing was saved.")

    def _learned(self, res: LearnResult) -> None:
        """Show the new version in the panel and apply its prediction to the open image as one undo step:
        only pixels the person did not paint change; a reviewed image is left as it is."""
        if res.request_id != getattr(self, "_learn_request", 0) or self.project is None:
            return
        self._fill_models()
        self.model_panel.select_spec(res.spec)
        text = f"Learned v{res.version_id} from {res.samples} pixels in {res.seconds:.1f} s"
        model = self.docs.get(res.image_id)
        if model is not None and model.in_stroke:
            QTimer.singleShot(150, lambda: self._learned(res))  # never into a stroke in progress
            return
        rec = self.project.image(res.image_id)
        if model is None or rec.status == "reviewed":
            self.model_panel.progress_label.setText(text + ("; this image is reviewed, left as it is" if model else ""))
            return
        from model.pixel_learning import learning_baseline, preview_labels

        baseline = learning_baseline(self.project.root, res.image_id, model.doc.baseline)
        merged, machine = preview_labels(model.label_map, baseline, res.labels, self._learn_applied.get(res.image_id))
        model.replace_all(merged)  # one undo step
        self._learn_applied[res.image_id] = (machine, merged)
        try:
            # Recorded as any pre-label of an open image: mask, kept copy, confidence, model version.
            record_prelabel(
                self.project,
                res.image_id,
                merged,
                res.confidence,
                res.mean_confidence,
                res.version_id,
                overwrite_edited=True,
            )
        except (AtrousError, OSError) as e:
            self.model_panel.add_problem(f"✗ {rec.name}: {e}")
        else:
            model.take_provenance()
            model.mark_saved()
        self._remember_confidence(res.image_id, res.confidence)
        self.mean_confidence[res.image_id] = res.mean_confidence
        self.cache.drop(res.image_id)
        self._refresh_record(res.image_id)
        if res.image_id == self.current_id:
            self.canvas.set_confidence(res.confidence)
            self._update_confidence_info()
        self._update_status()
        self.model_panel.progress_label.setText(text + "; 'All new' pre-labels with it")
