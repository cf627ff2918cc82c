"""Pre-labelling off the GUI thread.

The only gui module that reaches ``model/`` for the network — and only inside
functions that run in the worker thread, so opening the window never imports
torch. The work itself is :func:`model.jobs.prelabel_project`, the job the
``prelabel PROJECT`` command runs: the same batching, decode prefetch, recording
and never-overwrite rule. This module only carries its reports to the GUI.

Workers never touch widgets: a :class:`PrelabelWorker` gets plain data (the
project folder, image ids, the model choice, a set of *claimed* image ids) and
reports through signals that Qt queues to the GUI thread. It opens its own
:class:`Project` connection; the predictions of images the GUI holds a document
for are handed back to the GUI, which applies them as one undo step and records
them with the same ``annotation.prelabels.record_prelabel``. Cancelling is
cooperative: the flag is checked before every image.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QEvent, QObject, QThread, Signal, Slot

from annotation.prelabels import PERSON_STATUSES
from model.jobs import Claims, PrelabelOutcome
from model.jobs import PrelabelSummary as JobSummary
from model.versions import REGISTRY_NAMES, ModelRef

__all__ = [
    "PERSON_STATUSES",
    "Claims",
    "LearnJob",
    "LearnResult",
    "LearnWorker",
    "ModelChoice",
    "PrelabelItem",
    "PrelabelJob",
    "PrelabelResult",
    "PrelabelSummary",
    "PrelabelWorker",
    "StopOnClose",
    "WorkerThread",
    "load_predictor",
    "registry_names",
]


@dataclass(frozen=True)
class ModelChoice:
    """Which model and device to use: plain data, so it crosses threads safely.

    ``spec``: a registry name or a checkpoint path. ``version_id``: the project's
    model version this checkpoint is (recorded with each pre-label), if any.
    """

    spec: str
    device: str = "auto"
    version_id: int | None = None
    label: str = ""


@dataclass(frozen=True)
class PrelabelItem:
    image_id: int
    path: Path
    name: str


@dataclass
class PrelabelJob:
    """One batch: what to predict and the rules for writing it."""

    request_id: int
    project_root: Path
    model: ModelChoice
    items: list[PrelabelItem]
    overwrite: bool = False  # also replace masks a person edited or reviewed
    claims: Claims = field(default_factory=Claims)
    class_map: Any = None  # a model.class_map.ClassMap when the model's classes are not the project's


@dataclass(frozen=True)
class PrelabelResult:
    """One image's prediction. ``saved``: the worker already wrote it to the project;
    otherwise the GUI applies it through the image's document."""

    request_id: int
    image_id: int
    labels: np.ndarray
    confidence: np.ndarray
    mean_confidence: float
    saved: bool
    model_version: int | None


@dataclass(frozen=True)
class PrelabelSummary:
    request_id: int
    total: int
    done: int
    saved: int
    handed: int
    skipped: list[tuple[int, str]]  # (image id, why)
    failed: list[tuple[int, str]]
    cancelled: bool
    seconds: float
    description: str
    version_id: int | None = None  # the model version the batch recorded
    error: str = ""  # why the batch could not run at all (the model did not load, other classes...)
    model_classes: list[str] | None = None  # refused for other classes and no class map: the model's (to map)


# A loaded predictor is kept for the next batch (loading weights costs seconds).
_predictor_cache: dict[tuple[str, str, float], Any] = {}
_predictor_lock = threading.Lock()


def load_predictor(spec: str, device: str) -> Any:
    """A ``model.predictor.Predictor`` for ``spec`` on ``device`` (cached; raises AtrousError subclasses).

    Loaded by :func:`model.versions.load_predictor`, as the CLI does, so the app
    gets the same batch size and precision as ``prelabel``.
    """
    import os

    from model.versions import load_predictor as load

    mtime = os.path.getmtime(spec) if os.path.exists(spec) else 0.0
    key = (spec, device, mtime)
    with _predictor_lock:
        hit = _predictor_cache.get(key)
        if hit is not None:
            return hit
        pred = load(spec, device=device)
        _predictor_cache.clear()
        _predictor_cache[key] = pred
        return pred


class PrelabelWorker(QObject):
    """Runs one :class:`PrelabelJob` in a worker thread (``moveToThread`` + :meth:`run`).

    Signals (all queued to the GUI thread):
        started(int request_id, int total)
        modelLoaded(int request_id, str description, str model_name, object class_names)
        progress(int request_id, int done, int total, float eta_seconds)  (eta < 0: unknown)
        result(object PrelabelResult)
        imageError(int request_id, int image_id, str message)
        error(int request_id, str message): the batch could not run at all (e.g. the model did not load)
        finished(object PrelabelSummary)
    """

    started = Signal(int, int)
    modelLoaded = Signal(int, str, str, object)
    progress = Signal(int, int, int, float)
    result = Signal(object)
    imageError = Signal(int, int, str)
    error = Signal(int, str)
    finished = Signal(object)

    def __init__(self, job: PrelabelJob) -> None:
        super().__init__()
        self.job = job
        self._cancel = threading.Event()

    def cancel(self) -> None:
        """Ask the worker to stop before the next image (safe from any thread)."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @Slot()
    def run(self) -> None:
        job = self.job
        t0 = time.monotonic()
        summary = None
        description = ""
        error = ""
        version_id = job.model.version_id
        mismatch: list[str] | None = None
        self.started.emit(job.request_id, len(job.items))
        held = contextlib.ExitStack()
        try:
            from annotation.locks import project_lock
            from annotation.project import Project
            from model.class_map import ClassMismatchError
            from model.jobs import prelabel_project
            from model.versions import check_classes_match, ensure_version, resolve

            # The shared project lock, as the CLI's pre-label job holds it: an import or a class change
            # by another program waits for this batch (or fails naming it) instead of remapping under it.
            held.enter_context(
                project_lock(job.project_root, exclusive=False, what="a pre-label job in the Atrous app")
            )
            project = Project.open(job.project_root)
            try:
                try:
                    if job.model.version_id is not None:
                        ref = ModelRef(job.model.spec, job.model.version_id, job.model.label)
                    else:
                        ref = resolve(project, job.model.spec)
                    predictor = load_predictor(ref.spec, job.model.device)
                    description = predictor.description
                    self.modelLoaded.emit(
                        job.request_id, description, predictor.meta.name, list(predictor.meta.class_names)
                    )
                    if not job.items:
                        return
                    check_classes_match(project, predictor.meta, job.class_map)
                    version_id = ensure_version(project, ref, predictor.meta.name, job.class_map)
                except Exception as e:
                    if isinstance(e, ClassMismatchError):
                        mismatch = list(predictor.meta.class_names)
                    error = _one_line(e)
                    self.error.emit(job.request_id, error)
                    return

                def on_result(out: PrelabelOutcome) -> None:
                    self.result.emit(
                        PrelabelResult(
                            job.request_id,
                            out.image_id,
                            out.labels,
                            out.confidence,
                            out.mean_confidence,
                            out.saved,
                            out.model_version,
                        )
                    )

                def on_progress(done: int, total: int, _name: str) -> None:
                    elapsed = time.monotonic() - t0
                    self.progress.emit(job.request_id, done, total, elapsed / done * (total - done) if done else -1.0)

                summary = prelabel_project(
                    project,
                    predictor,
                    version_id=version_id,
                    image_ids=[it.image_id for it in job.items],
                    overwrite_edited=job.overwrite,
                    claims=job.claims,
                    on_result=on_result,
                    on_error=lambda image_id, line: self.imageError.emit(job.request_id, image_id, line),
                    on_progress=on_progress,
                    should_stop=self._cancel.is_set,
                    class_map=job.class_map,
                )
            finally:
                project.close()
        except Exception as e:
            error = _one_line(e)
            self.error.emit(job.request_id, error)
        finally:
            held.close()
            # A batch that never reached the job reports its size with nothing done.
            done = summary or JobSummary(len(job.items), version_id, cancelled=self._cancel.is_set())
            self.finished.emit(
                PrelabelSummary(
                    job.request_id,
                    done.total,
                    done.done,
                    done.saved,
                    done.handed,
                    done.skipped,
                    done.failed,
                    done.cancelled,
                    time.monotonic() - t0,
                    description,
                    version_id,
                    error,
                    mismatch,
                )
            )


@dataclass(frozen=True)
class LearnJob:
    """Train a pixel classifier on the open image's labels plus the project's person-made masks.

    ``labels``: a copy of the open image's label map with every pixel that is not a label
    set to void (255); ``image_path``: its file, decoded in the worker.
    """

    request_id: int
    project_root: Path
    image_id: int
    image_path: Path
    labels: np.ndarray


@dataclass(frozen=True)
class LearnResult:
    """The new version and its prediction of the open image."""

    request_id: int
    image_id: int
    labels: np.ndarray
    confidence: np.ndarray
    mean_confidence: float
    version_id: int
    spec: str
    samples: int
    seconds: float


class LearnWorker(QObject):
    """Trains, saves and predicts in a worker thread (``model.pixel_classifier``; no torch).

    Signals: result(object LearnResult), error(int request_id, str message), finished(int request_id).
    Cancelling is checked between the training images and before saving: a cancelled run saves nothing.
    """

    result = Signal(object)
    error = Signal(int, str)
    finished = Signal(int)

    def __init__(self, job: LearnJob) -> None:
        super().__init__()
        self.job = job
        self._cancel = threading.Event()

    def cancel(self) -> None:
        self._cancel.set()

    @Slot()
    def run(self) -> None:
        job = self.job
        t0 = time.monotonic()
        try:
            from annotation.imageio import load_image
            from annotation.project import Project
            from model.pixel_classifier import Cancelled
            from model.pixel_learning import train_for_project

            image = load_image(job.image_path)
            with Project.open(job.project_root) as project:
                try:
                    clf, vid, path = train_for_project(
                        project, [(job.image_id, image, job.labels)], should_stop=self._cancel.is_set
                    )
                except Cancelled:
                    return
            labels, conf = clf.predict(image)
            self.result.emit(
                LearnResult(
                    job.request_id,
                    job.image_id,
                    labels,
                    conf,
                    float(conf.mean()) / 255.0,
                    vid,
                    str(path),
                    clf.info["samples"],
                    time.monotonic() - t0,
                )
            )
        except Exception as e:
            self.error.emit(job.request_id, _one_line(e))
        finally:
            self.finished.emit(job.request_id)


class StopOnClose(QObject):
    """Stops "Learn from my strokes" when its window gets a close event (its thread must not outlive it)."""

    def __init__(self, window: QObject, stop) -> None:
        super().__init__(window)
        self._stop = stop
        window.installEventFilter(self)

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt's name)
        if event.type() == QEvent.Type.Close:
            self._stop()
        return False


def _one_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return " ".join(text.split())


class WorkerThread:
    """A QThread running one worker object; ``stop()`` cancels and joins it."""

    def __init__(self, worker: QObject, finished_signal: Any) -> None:
        self.worker = worker
        self.thread = QThread()
        self.thread.setObjectName(type(worker).__name__)
        worker.moveToThread(self.thread)
        self.thread.started.connect(worker.run)
        finished_signal.connect(self.thread.quit)

    def start(self) -> None:
        self.thread.start()

    def running(self) -> bool:
        return self.thread.isRunning()

    def stop(self, timeout_ms: int = 60000) -> bool:
        """Cancel, let the event loop end, and wait; True when the thread has ended."""
        cancel = getattr(self.worker, "cancel", None)
        if cancel is not None:
            cancel()
        self.thread.quit()
        return self.thread.wait(timeout_ms)


def registry_names() -> list[str]:
    """The registry's model names, without importing torch (kept in step by a test)."""
    return list(REGISTRY_NAMES)
