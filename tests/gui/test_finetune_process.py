"""FinetuneProcess: the CLI's ``finetune --progress-json`` as a child process, and how it ends.

The fast tests replace the child's program with a few lines of Python that behave
like the command at its edges (no start line, an ignored SIGINT, a crash); the
real command runs in tests/gui/test_finetune_dialog.py.
"""

from __future__ import annotations

import json
import math
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from gui.finetune_process import FinetuneOutcome, FinetuneProcess, finetune_arguments, main_script, running_processes
from model.progress import JsonLines, json_safe

WAIT_MS = 120_000  # a generous bound on a busy 2-core machine; no test asserts how long anything took


@pytest.fixture(autouse=True)
def no_leaked_processes() -> Iterator[None]:
    """Fail a test that leaves a fine-tune child process running (and end it)."""
    yield
    left = running_processes()
    for p in left:
        p.kill()
        if p.proc is not None:
            p.proc.waitForFinished(10_000)
    assert not left, f"test left fine-tune processes running: {[p.pid() for p in left]}"


def fake(tmp_path: Path, code: str, **kwargs: object) -> FinetuneProcess:
    """A FinetuneProcess whose child runs ``code`` instead of the real command."""
    script = tmp_path / "child.py"
    script.write_text(code)
    proc = FinetuneProcess(tmp_path, {}, **kwargs)
    proc.program = lambda: (sys.executable, ["-u", str(script)])
    return proc


def run_to_end(qtbot, proc: FinetuneProcess) -> list:
    """Start ``proc``, wait for ``finished``; returns the ("result"|"error", payload) it emitted."""
    got: list = []
    proc.result.connect(lambda r: got.append(("result", r)))
    proc.error.connect(lambda m: got.append(("error", m)))
    with qtbot.waitSignal(proc.finished, timeout=WAIT_MS):
        proc.start()
    return got


# ---------------------------------------------------------------- the command line it runs


def test_options_become_the_commands_flags(tmp_path: Path) -> None:
    args = finetune_arguments(
        tmp_path,
        {
            "base": "v2",
            "epochs": 3,
            "batch_size": None,
            "crop": 64,
            "correction_weight": 2.5,
            "device": "cpu",
            "activate": False,
            "name": "",
            "evals": 4,
        },
    )
    assert args[:2] == ["finetune", str(tmp_path)] and args[-1] == "--progress-json"
    assert args[2:-1] == [
        "--base",
        "v2",
        "--epochs",
        "3",
        "--crop",
        "64",
        "--correction-weight",
        "2.5",
        "--device",
        "cpu",
        "--no-activate",
        "--evals",
        "4",
    ]
    with pytest.raises(ValueError, match="no option 'epoch'"):
        finetune_arguments(tmp_path, {"epoch": 3})


def test_the_child_is_this_interpreter_running_main_py(tmp_path: Path) -> None:
    script = main_script()
    assert script is not None and script.name == "main.py"
    assert "def main(" in script.read_text()  # the `atrous` entry point (main:main)
    program, args = FinetuneProcess(tmp_path, {"epochs": 1}).program()
    argv = [program, *args]
    assert sys.executable in argv and str(script) in argv
    assert argv[argv.index(str(script)) + 1 :] == ["finetune", str(tmp_path), "--epochs", "1", "--progress-json"]


def test_json_lines_are_strict_json(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    with out.open("w") as f:
        w = JsonLines(f)
        w.write(
            {
                "phase": "epoch",
                "val_miou": float("nan"),
                "per_class_iou": {"a": np.float32(0.5), "b": math.inf},
                "path": tmp_path,
                "shape": (2, 3),
            }
        )
        w.write({"phase": "done"})
    lines = out.read_text().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0], parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert first == {
        "phase": "epoch",
        "val_miou": None,
        "per_class_iou": {"a": 0.5, "b": None},
        "path": str(tmp_path),
        "shape": [2, 3],
    }
    assert json_safe(np.arange(3)) == [0, 1, 2]


# ---------------------------------------------------------------- how a run ends


def test_done_line_becomes_the_result_and_stray_lines_are_ignored(qtbot, tmp_path: Path) -> None:
    proc = fake(
        tmp_path,
        (
            "import json\n"
            "print(json.dumps({'phase': 'start', 'pid': 1}))\n"
            "print('a stray line from a library')\n"
            "print(json.dumps({'phase': 'train', 'iteration': 1, 'loss': 0.5}))\n"
            "print(json.dumps({'phase': 'done', 'version_id': 7, 'checkpoint': 'models/x.pt', 'best_miou': 0.4,"
            " 'per_class_iou': {'a': None}, 'activated': True, 'stopped': False, 'iterations': 3}))\n"
        ),
    )
    seen: list[dict] = []
    proc.progress.connect(seen.append)
    got = run_to_end(qtbot, proc)
    assert [d["phase"] for d in seen] == ["start", "train"]
    assert got == [("result", FinetuneOutcome(7, "models/x.pt", 0.4, {"a": None}, True, False, 3))]
    assert "a stray line from a library" in proc.stderr_tail()
    assert not proc.running


def test_an_error_line_is_reported_as_is(qtbot, tmp_path: Path) -> None:
    proc = fake(
        tmp_path,
        (
            "import json, sys\n"
            "print(json.dumps({'phase': 'error', 'message': 'proj: no images with status edited or reviewed'}))\n"
            "sys.exit(2)\n"
        ),
    )
    assert run_to_end(qtbot, proc) == [("error", "proj: no images with status edited or reviewed")]


def test_a_crash_without_a_done_line_says_how_it_ended(qtbot, tmp_path: Path) -> None:
    proc = fake(tmp_path, "import sys\nsys.stderr.write('Traceback...\\nRuntimeError: boom\\n')\nsys.exit(3)\n")
    [(kind, message)] = run_to_end(qtbot, proc)
    assert kind == "error"
    assert message == (
        "the fine-tune process stopped unexpectedly (exit code 3): RuntimeError: boom; the active model is unchanged"
    )


def test_a_program_that_cannot_start_is_an_error(qtbot, tmp_path: Path) -> None:
    proc = FinetuneProcess(tmp_path, {})
    proc.program = lambda: (str(tmp_path / "no-such-python"), [])
    [(kind, message)] = run_to_end(qtbot, proc)
    assert kind == "error" and message.startswith("could not start the fine-tune process")
    assert not proc.running


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals (SIGINT, SIGKILL)")
def test_cancel_before_the_start_line_ends_the_child_and_keeps_nothing(qtbot, tmp_path: Path) -> None:
    proc = fake(tmp_path, "import time\nprint('starting', flush=True)\ntime.sleep(600)\n")
    got: list = []
    proc.result.connect(lambda r: got.append(r))
    proc.start()
    qtbot.waitUntil(lambda: "starting" in proc.stderr_tail(), timeout=WAIT_MS)  # stray stdout lands in the tail
    with qtbot.waitSignal(proc.finished, timeout=WAIT_MS):
        proc.cancel()
    assert got == [FinetuneOutcome(None, None, None, stopped=True)]


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals (SIGINT, SIGKILL)")
@pytest.mark.parametrize("how", ["second cancel", "kill timer"])
def test_a_child_that_ignores_the_first_cancel_is_killed(qtbot, tmp_path: Path, how: str) -> None:
    proc = fake(
        tmp_path,
        (
            "import json, signal, sys, time\n"
            "signal.signal(signal.SIGINT, lambda *a: sys.stderr.write('got SIGINT\\n'))\n"
            "print(json.dumps({'phase': 'start', 'pid': 0}), flush=True)\n"
            "while True:\n"
            "    time.sleep(0.05)\n"
        ),
        kill_after_ms=WAIT_MS if how == "second cancel" else 300,
    )
    proc.start()
    qtbot.waitUntil(lambda: proc._started_line, timeout=WAIT_MS)
    with qtbot.waitSignal(proc.finished, timeout=WAIT_MS):
        proc.cancel()
        qtbot.waitUntil(lambda: "got SIGINT" in proc.stderr_tail(), timeout=WAIT_MS)
        if how == "second cancel":
            assert proc.running  # SIGINT alone did not end it
            proc.cancel()
    assert proc.outcome == FinetuneOutcome(None, None, None, stopped=True)
