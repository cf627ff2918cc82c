"""Fine-tuning in a child process: the command line's ``finetune --progress-json``, driven by QProcess.

Training in its own process keeps everything it sets — global RNG seeds, torch's
thread count, glibc allocator settings, gigabytes of retained heap — out of the
editor, and lets a person keep correcting masks while it runs. The child is the
same command a person runs in a terminal, so the app and the CLI cannot drift.

The child writes one JSON object per line on stdout (see ``model/finetune_cli.py``
``cmd_finetune``); this module parses them into signals. Cancelling sends SIGINT,
which the command treats like Ctrl-C: it stops after the current step and keeps
the best checkpoint so far as a (not activated) model version. A second cancel,
or a child that has not stopped ``kill_after_ms`` after the first, is killed.

This module imports neither torch nor ``model``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import weakref
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QProcess, QProcessEnvironment, QTimer, Signal

from .app_log import log_error, log_info

#: How long a cancelled child may take to finish its step and save before it is killed.
KILL_AFTER_MS = 120_000

# Dialog option -> command-line flag. Options whose value is None are left to the command's defaults.
_FLAGS: dict[str, str] = {
    "base": "--base",
    "epochs": "--epochs",
    "minutes": "--minutes",
    "batch_size": "--batch-size",
    "crop": "--crop",
    "input_size": "--input-size",
    "normalisation": "--normalisation",
    "optimizer": "--optimizer",
    "lr": "--lr",
    "correction_weight": "--correction-weight",
    "val_fraction": "--val-fraction",
    "seed": "--seed",
    "device": "--device",
    "precision": "--precision",
    "name": "--name",
    "evals": "--evals",
}

_live: weakref.WeakSet[FinetuneProcess] = weakref.WeakSet()


def running_processes() -> list[FinetuneProcess]:
    """The fine-tune processes of this app that have not finished (tests check none is left)."""
    return [p for p in list(_live) if p.running]


def main_script() -> Path | None:
    """The ``main.py`` beside the ``gui`` package: the repository root in a checkout, site-packages
    in an installed wheel (``main`` is a top-level module there too); None when it is missing."""
    path = Path(__file__).resolve().parent.parent / "main.py"
    return path if path.is_file() else None


def finetune_arguments(project_root: str | os.PathLike[str], options: dict[str, Any]) -> list[str]:
    """The ``finetune`` command-line arguments for ``options`` (the dialog's settings).

    Raises:
        ValueError: an option the command does not have (a programming error, not a user's).
    """
    args = ["finetune", os.fspath(project_root)]
    for key, value in options.items():
        if key == "activate":
            if not value:
                args.append("--no-activate")
            continue
        if key not in _FLAGS:
            raise ValueError(f"finetune has no option {key!r}")
        if value is None or (key == "name" and not value):
            continue
        args += [_FLAGS[key], str(value)]
    args.append("--progress-json")
    return args


@dataclass(frozen=True)
class FinetuneOutcome:
    """What a finished run reported (the command's "done" line). ``version_id`` is None when nothing was saved."""

    version_id: int | None
    checkpoint_path: str | None
    best_miou: float | None
    per_class_iou: dict[str, float | None] = field(default_factory=dict)
    activated: bool = False
    stopped: bool = False
    iterations: int = 0
    seconds: float = 0.0
    it_per_s: float = 0.0

    @classmethod
    def from_record(cls, d: dict[str, Any]) -> FinetuneOutcome:
        """Build from a ``{"phase": "done", ...}`` record."""
        vid = d.get("version_id")
        return cls(
            version_id=None if vid is None else int(vid),
            checkpoint_path=d.get("checkpoint"),
            best_miou=d.get("best_miou"),
            per_class_iou=dict(d.get("per_class_iou") or {}),
            activated=bool(d.get("activated")),
            stopped=bool(d.get("stopped")),
            iterations=int(d.get("iterations") or 0),
            seconds=float(d.get("seconds") or 0.0),
            it_per_s=float(d.get("it_per_s") or 0.0),
        )


class FinetuneProcess(QObject):
    """One ``finetune`` child process and its reports.

    Signals (all in the GUI thread; exactly one of result/error, then finished, per start):
        progress(object dict): every progress record of the run ("start", "load", "warmup",
            "train", "eval", "epoch", "bn", "save"; see ``model.finetune.finetune``).
        result(object FinetuneOutcome): the run ended with a "done" line, or was cancelled
            before it could keep anything (then ``version_id`` is None and ``stopped`` True).
        error(str): one line for a person: the command's error, or how the process died.
        finished(): the process has ended (always last).
    """

    progress = Signal(object)
    result = Signal(object)
    error = Signal(str)
    finished = Signal()

    def __init__(
        self,
        project_root: str | os.PathLike[str],
        options: dict[str, Any],
        parent: QObject | None = None,
        *,
        kill_after_ms: int = KILL_AFTER_MS,
    ) -> None:
        super().__init__(parent)
        self.project_root = Path(project_root)
        self.arguments = finetune_arguments(self.project_root, options)
        self.kill_after_ms = kill_after_ms
        self.proc: QProcess | None = None
        self.outcome: FinetuneOutcome | None = None
        self.error_message: str | None = None
        self.cancel_requested = False
        self._started_line = False  # the child's SIGINT handler is in place
        self._stdout_buf = b""
        self._stderr_tail: deque[str] = deque(maxlen=40)
        self._stderr_buf = b""
        self._ended = False
        self._kill_timer = QTimer(self)
        self._kill_timer.setSingleShot(True)
        self._kill_timer.timeout.connect(self.kill)
        _live.add(self)

    # ---- starting

    def program(self) -> tuple[str, list[str]]:
        """The program and arguments the child runs (``python main.py finetune ... --progress-json``)."""
        script = main_script()
        head = [str(script)] if script is not None else ["-m", "main"]
        # -u: unbuffered, so stderr's last lines are there even when the child is killed
        argv = [sys.executable, "-u", *head, *self.arguments]
        # Training takes every core it is given; a lower priority keeps the editor responsive while
        # a person corrects masks. `nice` execs the command, so the process id (for SIGINT) is the child's.
        nice = shutil.which("nice") if os.name == "posix" else None
        if nice is not None:
            argv = [nice, "-n", "10", *argv]
        return argv[0], argv[1:]

    def start(self) -> None:
        """Start the child. Failing to start is reported through ``error`` and ``finished``."""
        if self.proc is not None:
            raise RuntimeError("a FinetuneProcess runs once; make a new one")
        proc = QProcess(self)
        proc.setProcessChannelMode(QProcess.ProcessChannelMode.SeparateChannels)
        env = QProcessEnvironment.systemEnvironment()
        env.insert("PYTHONUNBUFFERED", "1")
        env.insert("PYTHONIOENCODING", "utf-8")
        proc.setProcessEnvironment(env)
        proc.readyReadStandardOutput.connect(self._read_stdout)
        proc.readyReadStandardError.connect(self._read_stderr)
        proc.finished.connect(self._on_finished)
        proc.errorOccurred.connect(self._on_process_error)
        self.proc = proc
        program, args = self.program()
        log_info("fine-tune", f"started for {self.project_root}: finetune {' '.join(self.arguments)}")
        proc.start(program, args)

    # ---- state

    @property
    def running(self) -> bool:
        """True from :meth:`start` until the child has ended."""
        return self.proc is not None and not self._ended

    def pid(self) -> int | None:
        """The child's process id while it runs."""
        if self.proc is None or self.proc.state() == QProcess.ProcessState.NotRunning:
            return None
        return int(self.proc.processId()) or None

    def stderr_tail(self) -> str:
        """The last lines the child wrote for people (for error messages and logs)."""
        return "\n".join(self._stderr_tail)

    # ---- stopping

    def cancel(self) -> None:
        """Ask the child to stop after its current step and keep its best checkpoint (SIGINT, like Ctrl-C).

        Before the child has installed its handler, and on a second call, it is killed instead:
        until then it has nothing to keep. It is also killed if it has not ended ``kill_after_ms`` later.
        """
        if not self.running:
            return
        if self.cancel_requested or not self._started_line or not hasattr(signal, "SIGKILL"):
            # a second cancel, nothing to keep yet, or no POSIX signals (Windows): end it now
            self.cancel_requested = True
            self.kill()
            return
        self.cancel_requested = True
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):  # it has just ended; finished() follows
                os.kill(pid, signal.SIGINT)
        self._kill_timer.start(self.kill_after_ms)

    def kill(self) -> None:
        """End the child at once (SIGKILL); what it has not saved is lost, saved versions stay."""
        self._kill_timer.stop()
        if self.proc is not None and self.proc.state() != QProcess.ProcessState.NotRunning:
            self.proc.kill()

    def stop_and_wait(self, timeout_ms: int = 30_000) -> bool:
        """Cancel, wait up to ``timeout_ms`` for the child to save and end, then kill it; True when it has ended.

        Blocks the calling thread (for closing the app, where nothing else is left to do).
        """
        if self.proc is None or not self.running:
            return True
        self.cancel()
        if not self.proc.waitForFinished(timeout_ms):
            self.kill()
            self.proc.waitForFinished(10_000)
        return self.proc.state() == QProcess.ProcessState.NotRunning

    # ---- child output

    def _read_stdout(self) -> None:
        assert self.proc is not None
        self._stdout_buf += bytes(self.proc.readAllStandardOutput().data())
        *lines, self._stdout_buf = self._stdout_buf.split(b"\n")
        for line in lines:
            self._handle_line(line)

    def _read_stderr(self) -> None:
        assert self.proc is not None
        self._stderr_buf += bytes(self.proc.readAllStandardError().data())
        # progress bars redraw with \r; keep what a person would see last on each line
        *lines, self._stderr_buf = self._stderr_buf.replace(b"\r", b"\n").split(b"\n")
        for line in lines:
            text = line.decode("utf-8", "replace").rstrip()
            if text:
                self._stderr_tail.append(text)

    def _handle_line(self, raw: bytes) -> None:
        text = raw.decode("utf-8", "replace").strip()
        if not text:
            return
        try:
            record = json.loads(text)
        except ValueError:
            record = None
        if not isinstance(record, dict) or "phase" not in record:
            self._stderr_tail.append(text)  # a stray print from a library; keep it for the log
            return
        phase = record["phase"]
        if phase == "done":
            self.outcome = FinetuneOutcome.from_record(record)
        elif phase == "error":
            self.error_message = str(record.get("message") or "fine-tuning failed")
        else:
            if phase == "start":
                self._started_line = True
            self.progress.emit(record)

    # ---- the end

    def _on_process_error(self, err: QProcess.ProcessError) -> None:
        if err == QProcess.ProcessError.FailedToStart and not self._ended:
            assert self.proc is not None
            self._finish_with_error(f"could not start the fine-tune process: {self.proc.errorString()}")

    def _on_finished(self, exit_code: int, status: QProcess.ExitStatus) -> None:
        if self._ended:
            return
        assert self.proc is not None
        self._read_stdout()
        self._read_stderr()
        for rest in (self._stdout_buf,):
            if rest.strip():
                self._handle_line(rest)
        self._stdout_buf = b""
        if self._stderr_buf.strip():
            self._stderr_tail.append(self._stderr_buf.decode("utf-8", "replace").strip())
        self._kill_timer.stop()
        if self.outcome is not None:
            self._ended = True
            self._log_outcome()
            self.result.emit(self.outcome)
            self.finished.emit()
        elif self.error_message is not None:
            self._finish_with_error(self.error_message)
        elif self.cancel_requested:
            # stopped (or killed after a cancel) before it had anything worth keeping
            self.outcome = FinetuneOutcome(None, None, None, stopped=True)
            self._ended = True
            self._log_outcome()
            self.result.emit(self.outcome)
            self.finished.emit()
        else:
            self._finish_with_error(self._death_message(exit_code, status))

    def _death_message(self, exit_code: int, status: QProcess.ExitStatus) -> str:
        if status == QProcess.ExitStatus.CrashExit:
            how = f"killed by signal {exit_code}" if exit_code > 0 else "crashed"
        else:
            how = f"exit code {exit_code}"
        last = self._stderr_tail[-1] if self._stderr_tail else ""
        tail = f": {last}" if last and status != QProcess.ExitStatus.CrashExit else ""
        return f"the fine-tune process stopped unexpectedly ({how}){tail}; the active model is unchanged"

    def _log_outcome(self) -> None:
        o = self.outcome
        assert o is not None
        if o.version_id is None:
            log_info("fine-tune", f"{self.project_root}: stopped before it had a checkpoint worth keeping")
        else:
            miou = "n/a" if o.best_miou is None else f"{o.best_miou:.3f}"
            log_info(
                "fine-tune",
                f"{self.project_root}: saved model version v{o.version_id} (val mIoU {miou}, "
                f"{o.iterations} iterations in {o.seconds:.0f} s{', stopped early' if o.stopped else ''}"
                f"{', activated' if o.activated else ', not activated'})",
            )

    def _finish_with_error(self, message: str) -> None:
        tail = self.stderr_tail()
        log_error("fine-tune", f"{self.project_root}: {message}" + (f"\nlast output:\n{tail}" if tail else ""))
        self._ended = True
        self._kill_timer.stop()
        self.error_message = message
        self.error.emit(message)
        self.finished.emit()


__all__ = [
    "FinetuneOutcome",
    "FinetuneProcess",
    "KILL_AFTER_MS",
    "finetune_arguments",
    "main_script",
    "running_processes",
]
