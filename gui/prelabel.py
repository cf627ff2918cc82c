"""Runs pre-labelling batches one at a time and drops the results of stale ones.

:class:`PrelabelController` lives in the GUI thread. It starts a
:class:`~gui.model_worker.PrelabelWorker` in a QThread, tags every batch with a
request id, and re-emits only the signals of the batch that is current — a
cancelled batch that still reports one last image is ignored by id. It never
touches widgets either; the main window and the model panel listen to it.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal

from .model_worker import Claims, PrelabelJob, PrelabelResult, PrelabelSummary, PrelabelWorker, WorkerThread


class PrelabelController(QObject):
    """One pre-labelling batch at a time.

    Signals:
        runningChanged(bool)
        progress(int done, int total, float eta_seconds)
        modelLoaded(str description, str model_name, object class_names)
        loadFailed(str message): the model could not be loaded; nothing ran
        result(object PrelabelResult): one image's prediction (current batch only)
        imageFailed(int image_id, str message)
        finished(object PrelabelSummary)
    """

    runningChanged = Signal(bool)
    progress = Signal(int, int, float)
    modelLoaded = Signal(str, str, object)
    loadFailed = Signal(str)
    result = Signal(object)
    imageFailed = Signal(int, str)
    finished = Signal(object)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.claims = Claims()
        self._request = 0
        self._runner: WorkerThread | None = None
        self._old: list[WorkerThread] = []
        self.job: PrelabelJob | None = None

    @property
    def running(self) -> bool:
        return self._runner is not None

    def next_request_id(self) -> int:
        self._request += 1
        return self._request

    def start(self, job: PrelabelJob) -> bool:
        """Start ``job`` (its ``claims`` are replaced by the controller's); False while one runs."""
        if self._runner is not None:
            return False
        self._reap()
        job.claims = self.claims
        self.job = job
        worker = PrelabelWorker(job)
        worker.modelLoaded.connect(self._on_model)
        worker.progress.connect(self._on_progress)
        worker.result.connect(self._on_result)
        worker.imageError.connect(self._on_image_error)
        worker.error.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self._runner = WorkerThread(worker, worker.finished)
        self._runner.start()
        self.runningChanged.emit(True)
        return True

    def cancel(self) -> None:
        """Ask the running batch to stop before its next image."""
        if self._runner is not None:
            self._runner.worker.cancel()

    def shutdown(self) -> None:
        """Cancel and join every worker thread (call before the window or project goes away)."""
        if self._runner is not None:
            self._old.append(self._runner)
            self._runner = None
            self._request += 1  # whatever it still reports is stale now
        for r in self._old:
            r.stop()
        self._old.clear()

    def _reap(self) -> None:
        keep = []
        for r in self._old:
            if r.running():
                keep.append(r)
            else:
                r.thread.wait()
        self._old = keep

    # ---- worker signals (queued into the GUI thread)

    def _current(self, request_id: int) -> bool:
        return self.job is not None and request_id == self.job.request_id and self._runner is not None

    def _on_model(self, request_id: int, description: str, name: str, class_names: object) -> None:
        if self._current(request_id):
            self.modelLoaded.emit(description, name, class_names)

    def _on_progress(self, request_id: int, done: int, total: int, eta: float) -> None:
        if self._current(request_id):
            self.progress.emit(done, total, eta)

    def _on_result(self, res: PrelabelResult) -> None:
        if self._current(res.request_id):
            self.result.emit(res)

    def _on_image_error(self, request_id: int, image_id: int, message: str) -> None:
        if self._current(request_id):
            self.imageFailed.emit(image_id, message)

    def _on_error(self, request_id: int, message: str) -> None:
        if self._current(request_id):
            self.loadFailed.emit(message)

    def _on_finished(self, summary: PrelabelSummary) -> None:
        if not self._current(summary.request_id):
            return
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.thread.quit()
            runner.thread.wait()
        self.finished.emit(summary)
        self.runningChanged.emit(False)
