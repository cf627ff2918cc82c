"""Pre-labelling and fine-tuning off the GUI thread.

The only gui module that reaches ``model/`` — and only inside functions that run
in the worker thread, so opening the window never imports torch.

Workers never touch widgets: a :class:`PrelabelWorker` gets plain data (the
project folder, image ids and paths, the model spec, a set of *claimed* image
ids) and reports through signals that Qt queues to the GUI thread. It opens its
own :class:`Project` connection, writes masks of images nobody has open with
``Project.save_mask(status="prelabeled")``, and hands the predictions of images
the GUI holds a document for back to the GUI, which applies them as one undo
step. Cancelling is cooperative: the flag is checked before every image.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, QThread, Signal, Slot

from annotation.confidence import write_confidence

#: Statuses that mean a person worked on the mask.
PERSON_STATUSES = ("edited", "reviewed")


class Claims:
    """Image ids the GUI holds a document for; thread-safe.

    The worker saves an image's mask only while holding the lock and only if
    the image is not claimed, so the GUI never opens a document on a mask the
    worker is writing behind its back: a claim either waits for that one save or
    makes the worker hand the prediction to the GUI instead.
    """

    def __init__(self, ids: set[int] | None = None) -> None:
        self.lock = threading.Lock()
        self._ids: set[int] = set(ids or ())

    def claim(self, image_id: int) -> None:
        with self.lock:
            self._ids.add(int(image_id))

    def release(self, image_id: int) -> None:
        with self.lock:
            self._ids.discard(int(image_id))

    def is_claimed(self, image_id: int) -> bool:
        """Call with :attr:`lock` held."""
        return int(image_id) in self._ids


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


# A loaded predictor is kept for the next batch (loading weights costs seconds).
_predictor_cache: dict[tuple[str, str, float], Any] = {}
_predictor_lock = threading.Lock()


def load_predictor(choice: ModelChoice) -> Any:
    """A ``model.predictor.Predictor`` for ``choice`` (cached; raises AtrousError subclasses)."""
    import os

    from model.predictor import Predictor
    from model.weights import load_model

    mtime = 0.0
    if os.path.exists(choice.spec):
        mtime = os.path.getmtime(choice.spec)
    key = (choice.spec, choice.device, mtime)
    with _predictor_lock:
        hit = _predictor_cache.get(key)
        if hit is not None:
            return hit
        pred = Predictor(load_model(choice.spec), device=choice.device, batch_size=1)
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
        saved = handed = done = 0
        skipped: list[tuple[int, str]] = []
        failed: list[tuple[int, str]] = []
        description = ""
        self.started.emit(job.request_id, len(job.items))
        try:
            from annotation.errors import AtrousError
            from annotation.imageio import load_image
            from annotation.project import Project

            try:
                predictor = load_predictor(job.model)
            except Exception as e:  # noqa: BLE001  a worker reports, never raises into Qt
                self.error.emit(job.request_id, _one_line(e))
                return
            description = predictor.description
            self.modelLoaded.emit(job.request_id, description, predictor.meta.name, list(predictor.meta.class_names))
            if not job.items:
                return
            project = Project.open(job.project_root)
            try:
                for item in job.items:
                    if self._cancel.is_set():
                        break
                    try:
                        rec = project.image(item.image_id)
                        if rec.status in PERSON_STATUSES and not job.overwrite:
                            skipped.append((item.image_id, f"{item.name}: {rec.status} by a person; not overwritten"))
                        else:
                            pred = predictor.predict(load_image(item.path))
                            labels = np.ascontiguousarray(pred.labels, dtype=np.uint8)
                            conf = np.ascontiguousarray(pred.confidence, dtype=np.uint8)
                            mean = float(pred.mean_confidence)
                            with job.claims.lock:
                                own = not job.claims.is_claimed(item.image_id)
                                if own:
                                    # Re-read: the person may have saved this image since the batch began.
                                    rec = project.image(item.image_id)
                                    if rec.status in PERSON_STATUSES and not job.overwrite:
                                        skipped.append((item.image_id, f"{item.name}: {rec.status} by a person; not overwritten"))
                                        own = None
                                    else:
                                        project.save_mask(
                                            item.image_id, labels, status="prelabeled",
                                            model_version=job.model.version_id, source="prelabel",
                                        )
                                        project.set_mean_confidence(item.image_id, min(max(mean, 0.0), 1.0))
                            if own is not None:
                                try:
                                    write_confidence(job.project_root, item.image_id, conf)
                                except AtrousError:
                                    pass  # the confidence file is a convenience; the mask is what matters
                                saved += bool(own)
                                handed += not own
                                self.result.emit(PrelabelResult(
                                    job.request_id, item.image_id, labels, conf, mean, bool(own), job.model.version_id,
                                ))
                    except (AtrousError, OSError, ValueError, RuntimeError) as e:
                        failed.append((item.image_id, f"{item.name}: {_one_line(e)}"))
                        self.imageError.emit(job.request_id, item.image_id, failed[-1][1])
                    except Exception as e:  # noqa: BLE001  one bad image must not end the batch
                        failed.append((item.image_id, f"{item.name}: {type(e).__name__}: {_one_line(e)}"))
                        self.imageError.emit(job.request_id, item.image_id, failed[-1][1])
                    done += 1
                    elapsed = time.monotonic() - t0
                    eta = elapsed / done * (len(job.items) - done) if done else -1.0
                    self.progress.emit(job.request_id, done, len(job.items), eta)
            finally:
                project.close()
        except Exception as e:  # noqa: BLE001
            self.error.emit(job.request_id, _one_line(e))
        finally:
            self.finished.emit(PrelabelSummary(
                job.request_id, len(job.items), done, saved, handed, skipped, failed,
                self._cancel.is_set() and done < len(job.items), time.monotonic() - t0, description,
            ))


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
        self.thread.started.connect(worker.run)  # type: ignore[attr-defined]
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


# --------------------------------------------------------------------------- fine-tuning


class FinetuneWorker(QObject):
    """Runs ``model.finetune.finetune`` in a worker thread; progress dicts go out as signals.

    Signals:
        progress(object dict): every ``on_progress`` report of the run.
        result(object FinetuneResult)
        error(str)
        finished()
    """

    progress = Signal(object)
    result = Signal(object)
    error = Signal(str)
    finished = Signal()

    def __init__(self, project_root: Path, options: dict[str, Any]) -> None:
        super().__init__()
        self.project_root = Path(project_root)
        self.options = dict(options)
        self._cancel = threading.Event()

    def cancel(self) -> None:
        self._cancel.set()

    @Slot()
    def run(self) -> None:
        try:
            from model.finetune import finetune

            res = finetune(
                str(self.project_root), on_progress=lambda d: self.progress.emit(dict(d)),
                should_stop=self._cancel.is_set, **self.options,
            )
            self.result.emit(res)
        except Exception as e:  # noqa: BLE001
            self.error.emit(_one_line(e))
        finally:
            self.finished.emit()


def registry_names() -> list[str]:
    """The registry's model names, without importing torch (kept in step by a test)."""
    return ["deeplabv3_mobilenet_v3_large", "deeplabv3_resnet50", "deeplabv3_resnet101"]
