"""Progress for headless commands: a text bar with an ETA for people, JSON lines for programs.

:class:`ProgressBar` draws one line on stderr. :class:`JsonLines` writes one JSON
object per line (``finetune --progress-json``), which the app's fine-tune dialog
reads from the child process it starts.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TextIO


def format_seconds(s: float) -> str:
    """``75`` -> ``"1:15"``, ``3725`` -> ``"1:02:05"``."""
    s = max(0, int(round(s)))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


class ProgressBar:
    """``[#####.....] 12/40  3.1 img/s  ETA 0:09  name`` redrawn in place on a TTY, line by line otherwise."""

    def __init__(
        self,
        total: int,
        *,
        unit: str = "img",
        stream: TextIO | None = None,
        width: int = 24,
        percent: bool = False,
        started_ago: float = 0.0,
    ) -> None:
        """``percent``: ``total`` is 100 and ``done`` a share of a time budget: shown as ``37 %``,
        without a rate (a rate of percent per second tells nobody anything). ``started_ago``:
        seconds the work ran before the bar was made (the ETA counts from then)."""
        self.total = max(0, total)
        self.unit = unit
        self.percent = percent
        self.stream = stream or sys.stderr
        self.width = width
        self.done = 0
        self.start = time.perf_counter() - started_ago
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def eta(self) -> float | None:
        """Seconds left, from the mean rate so far (None before the first item)."""
        if self.done == 0:
            return None
        rate = self.done / max(1e-9, time.perf_counter() - self.start)
        return (self.total - self.done) / rate

    def update(self, n: int = 1, label: str = "") -> None:
        self.done = min(self.total, self.done + n)
        elapsed = max(1e-9, time.perf_counter() - self.start)
        filled = int(self.width * self.done / self.total) if self.total else self.width
        eta = self.eta()
        count = (
            f"{self.done} %" if self.percent else f"{self.done}/{self.total}  {self.done / elapsed:.1f} {self.unit}/s"
        )
        line = (
            f"[{'#' * filled}{'.' * (self.width - filled)}] {count}  "
            f"ETA {format_seconds(eta) if eta is not None else '?'}  {label}"
        )
        if self._tty:
            self.stream.write("\r" + line[:120].ljust(120))
            if self.done >= self.total:
                self.stream.write("\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def json_safe(value: Any) -> Any:
    """``value`` as plain JSON data: NaN and infinities become None (strict JSON has no NaN),
    paths become strings, tuples lists, numpy scalars and arrays Python numbers and lists."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_safe(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    tolist = getattr(value, "tolist", None)  # numpy scalars and arrays, without importing numpy here
    if callable(tolist):
        return json_safe(tolist())
    return str(value)


class JsonLines:
    """Writes one JSON object per line to ``stream`` and flushes it, so a reading process sees
    each report as it happens rather than when a pipe buffer fills.

    Every record has a ``phase`` key; see ``finetune --progress-json`` in ``model/cli.py``
    for the records that command writes.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, record: Mapping[str, Any]) -> None:
        """Write ``record`` (made :func:`json_safe`) as one line."""
        self.stream.write(json.dumps(json_safe(record), allow_nan=False, separators=(",", ":")) + "\n")
        self.stream.flush()


@contextlib.contextmanager
def stop_on_first_sigint(message: str) -> Iterator[Callable[[], bool]]:
    """Within the block, the first Ctrl-C only asks the work to stop: the yielded ``should_stop()``
    turns True and ``message`` is printed; a second Ctrl-C interrupts at once (KeyboardInterrupt).

    Outside the main thread (where Python cannot install a handler) nothing changes.
    """
    stop = threading.Event()

    def on_sigint(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print(message, file=sys.stderr)

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield stop.is_set
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
