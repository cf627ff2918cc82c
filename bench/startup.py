"""Start-up time: ``atrous --help``, ``atrous info`` and the app's first window.

Each figure is a ratio to ``python -c "import PySide6.QtWidgets"`` measured in
the same run with the same interpreter, so machines of different speed give
comparable numbers. Every child is a fresh process (nothing cached in memory
but the OS page cache); the runs of the different commands are interleaved so
a slow moment of the machine hits all of them alike; the median of ``--runs``
is reported.

"First window" runs the app's real entry point, ``main.main([PROJECT])``, on a
small temporary project; an application-wide event filter ends the process
(``os._exit``) at the first Expose event of a visible top-level window, so the
figure is "typed the command -> the window is on screen", without tear-down.

    .venv/bin/python bench/startup.py [--runs 5] [--repo PATH_TO_ANOTHER_CHECKOUT]

``--repo`` measures another checkout of Atrous (e.g. an older commit made with
``git worktree add``) with this interpreter.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from _common import cpu_name

REPO = Path(__file__).resolve().parents[1]

# Run in the child: the real entry point, stopped once the window is exposed.
FIRST_WINDOW = r"""
import os, sys
from PySide6.QtCore import QEvent, QObject
from PySide6.QtGui import QWindow
from PySide6.QtWidgets import QApplication

class QuitOnExpose(QObject):
    def eventFilter(self, obj, event):
        if event.type() == QEvent.Type.Expose and isinstance(obj, QWindow) and obj.isExposed():
            sys.stdout.write("torch loaded\n" if "torch" in sys.modules else "no torch\n")
            sys.stdout.flush()
            os._exit(0)
        return False

app = QApplication(sys.argv[:1])
flt = QuitOnExpose()
app.installEventFilter(flt)
sys.path.insert(0, os.getcwd())
import main
sys.exit(main.main([sys.argv[1]]))
"""


def make_project(repo: Path, root: Path) -> Path:
    """A 3-image, 3-class project made with ``repo``'s own annotation package."""
    images = root / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)).save(images / f"img{i}.png")
    script = (
        "import sys\n"
        "from annotation.project import LabelClass, Project\n"
        "classes = [LabelClass(0, 'background', (0, 0, 0), True), LabelClass(1, 'a', (200, 0, 0)),"
        " LabelClass(2, 'b', (0, 200, 0))]\n"
        "with Project.create(sys.argv[1], classes) as p:\n"
        "    p.add_images(sys.argv[2])\n"
    )
    project = root / "project"
    subprocess.run([sys.executable, "-c", script, str(project), str(images)], cwd=repo, check=True)
    return project


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    """Wall time of ``cmd`` from start to exit, and its stdout; a failure ends the benchmark."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return elapsed, proc.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5, help="runs of each command; the median is reported")
    ap.add_argument("--repo", type=Path, default=REPO, help="the Atrous checkout to measure (default: this one)")
    args = ap.parse_args()
    repo = args.repo.resolve()

    with tempfile.TemporaryDirectory(prefix="atrous-startup-") as tmp:
        tmp_path = Path(tmp)
        project = make_project(repo, tmp_path)
        env = dict(os.environ)
        # Settings, logs and recent projects go to the temporary folder, never the user's.
        env["ATROUS_DATA_DIR"] = str(tmp_path / "data")
        env.setdefault("QT_QPA_PLATFORM", "offscreen")
        py = sys.executable
        commands = {
            "baseline": [py, "-c", "import PySide6.QtWidgets"],
            "--help": [py, "main.py", "--help"],
            "info": [py, "main.py", "info", str(project)],
            "first window": [py, "-c", FIRST_WINDOW, str(project)],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        window_note = ""
        # One unmeasured round warms the page cache, so run 1 is not an outlier.
        for cmd in commands.values():
            timed(cmd, repo, env)
        for _ in range(args.runs):
            for name, cmd in commands.items():
                elapsed, out = timed(cmd, repo, env)
                times[name].append(elapsed)
                if name == "first window":
                    window_note = out.strip()

    base = statistics.median(times["baseline"])
    print(f"start-up of {repo} on {cpu_name()}, Python {platform.python_version()}, median of {args.runs} runs")
    print(f"{'command':<14}{'median s':>10}{'ratio':>8}")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"{name:<14}{med:>10.3f}{med / base:>8.2f}")
    print(f"first window: {window_note or 'no report'} when it was exposed")


if __name__ == "__main__":
    main()
