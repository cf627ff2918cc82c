"""Emitting a signal must not eat references to None, True or False.

PySide6 6.12.0 does: every ``emit()`` drops a reference to ``True`` it never took,
and a queued emission of a dict drops dozens of references to ``None``. On
Python 3.11 those objects are not immortal, so after some thousands of signals
(brush strokes, fine-tune progress, pre-label results) the interpreter aborts
with ``bool_dealloc`` or ``none_dealloc`` and the app dies with unsaved edits.
pyproject.toml keeps such a release out; this test fails on one that slips in.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from PySide6.QtCore import QCoreApplication, QEvent, QObject, QThread, Signal, Slot

N = 200  # emits per test: far below what it takes to crash, far above noise


def _counts() -> tuple[int, int, int]:
    return sys.getrefcount(None), sys.getrefcount(True), sys.getrefcount(False)


@contextmanager
def _measured() -> Iterator[list[tuple[int, int, int]]]:
    """Reference counts before and after the block, with the cyclic collector held off.

    Without that, objects of earlier tests freed in between (by the collector, or
    by Qt's deferred deletes once an event loop runs) take their references to
    None, True and False with them (tens, seen in the full suite): a false drop.
    """
    for _ in range(3):
        QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
        QCoreApplication.processEvents()
        gc.collect()
    gc.disable()
    seen = [_counts()]
    try:
        yield seen
        seen.append(_counts())
    finally:
        gc.enable()


def _no_leak(before: tuple[int, ...], after: tuple[int, ...]) -> bool:
    """No count fell by about one per emit (the fatal kind of bug) nor grew so (a leak).

    A few new references are fine: a finished thread, pending events and the
    test's own objects hold some.
    """
    return all(abs(b - a) < N // 4 for a, b in zip(before, after))


class _Source(QObject):
    progress = Signal(object)
    count = Signal(int)
    done = Signal()

    def run(self) -> None:
        for i in range(N):
            self.progress.emit({"phase": "train", "epochs": None, "loss": float(i), "flag": True})
        self.done.emit()


class _Sink(QObject):
    def __init__(self) -> None:
        super().__init__()
        self.seen = 0

    @Slot(object)
    def on_progress(self, d: dict) -> None:
        self.seen += 1


def test_emit_in_one_thread_keeps_reference_counts(qapp) -> None:
    src, sink = _Source(), _Sink()
    src.progress.connect(sink.on_progress)
    src.count.emit(0)  # first emissions may create cached objects
    with _measured() as counts:
        for i in range(N):
            src.count.emit(i)
            src.progress.emit({"value": None, "ok": True, "bad": False})
    assert sink.seen == N
    assert _no_leak(*counts), counts


def test_queued_emit_from_a_worker_thread_keeps_reference_counts(qapp, qtbot) -> None:
    src, sink = _Source(), _Sink()
    thread = QThread()
    src.moveToThread(thread)
    thread.started.connect(src.run)
    src.progress.connect(sink.on_progress)
    finished: list[bool] = []
    src.done.connect(lambda: finished.append(True))
    with _measured() as counts:
        thread.start()
        try:
            qtbot.waitUntil(lambda: bool(finished) and sink.seen == N, timeout=20000)
        finally:
            thread.quit()
            thread.wait()
    assert _no_leak(*counts), counts
