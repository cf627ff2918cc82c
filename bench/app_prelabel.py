"""App pre-label throughput against the command line's, on the same CamVid images and checkpoint.

``prelabel PROJECT`` through ``main.main`` and the app's "Pre-label all new" through
a real MainWindow (offscreen Qt, worker thread), each on fresh copies of the same
project of N CamVid images, each side in a process of its own (alternating app and
CLI processes), after one warm-up run in each process. Each time includes loading
the model (the app's predictor cache is emptied), as a person pressing the button or
typing the command would pay it.
The weights are random unless ``--checkpoint`` is given: speed does not depend
on what the network learnt.

    .venv/bin/python bench/app_prelabel.py [--images 24] [--repeats 3] [--rounds 2] [--checkpoint PATH]

Prints last: ``app pre-label: <a> img/s, CLI <c> img/s (<r>x), N images, <CPU>``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import CACHE, VOID, camvid_classes, camvid_pairs, cpu_name


def random_checkpoint() -> Path:
    """A random-init MobileNetV3 DeepLabV3 with CamVid's classes (cached)."""
    import torch

    from model.deeplabv3 import build_deeplabv3
    from model.weights import ModelMeta, default_colours, save_checkpoint

    path = CACHE / "camvid_random_mobilenet.pt"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    names = camvid_classes()
    torch.manual_seed(0)
    net = build_deeplabv3(backbone="mobilenet_v3_large", num_classes=len(names), atrous_rates=(12, 24, 36)).eval()
    meta = ModelMeta(
        arch=net.spec, class_names=names, colours=default_colours(len(names)), input_size=520, name="random"
    )
    save_checkpoint(path, net, meta)
    return path


def make_project(root: Path, images: list[Path]) -> Path:
    from annotation.classes import LabelClass, default_colour
    from annotation.project import Project

    folder = root / "images"
    folder.mkdir(parents=True)
    for p in images:
        os.symlink(p, folder / p.name)
    classes = [LabelClass(i, n, default_colour(i)) for i, n in enumerate(camvid_classes()) if i != VOID]
    with Project.create(root / "proj", classes) as proj:
        proj.add_images(folder)
    return root / "proj"


def run_cli(project: Path, ckpt: Path) -> float:
    import contextlib
    import io

    import main

    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = main.main(["prelabel", str(project), "--model", str(ckpt), "--device", "cpu"])
    if code != 0:
        raise SystemExit(f"prelabel exited with {code}")
    return time.perf_counter() - start


def run_app(app, project: Path, ckpt: Path, n: int) -> float:
    from PySide6.QtCore import QEventLoop, QTimer

    from annotation.project import Project
    from gui import model_worker
    from gui.main_window import MainWindow

    model_worker._predictor_cache.clear()
    win = MainWindow(Project.open(project))
    win.resize(1280, 800)
    win.show()
    settle = QEventLoop()  # let the window show its first image (and prefetch neighbours), as before a click
    QTimer.singleShot(1000, settle.quit)
    settle.exec()
    win.model_panel.add_file(str(ckpt))
    win.model_panel.device_combo.setCurrentIndex(win.model_panel.device_combo.findData("cpu"))
    loop = QEventLoop()
    done: list = []
    win.prelabel.finished.connect(lambda s: (done.append(s), loop.quit()))
    QTimer.singleShot(600_000, loop.quit)
    start = time.perf_counter()
    if not win.prelabel_images("new"):
        raise SystemExit("the app did not start pre-labelling")
    loop.exec()
    seconds = time.perf_counter() - start
    if not done or done[0].saved + done[0].handed != n:
        raise SystemExit(f"the app pre-labelled {done[0].saved + done[0].handed if done else 0} of {n} images")
    win.close()
    win.cache.shutdown()
    app.processEvents()
    return seconds


def side(which: str, images: int, repeats: int, checkpoint: Path | None) -> list[float]:
    """Time ``repeats`` runs of one side (after one warm-up) in this process; returns the seconds."""
    tmp = Path(tempfile.mkdtemp(prefix="atrous-app-bench-"))
    os.environ["ATROUS_DATA_DIR"] = str(tmp / "data")  # the app's settings and log stay out of the user's
    try:
        ckpt = checkpoint or random_checkpoint()
        paths = [a for a, _ in camvid_pairs("train")][:images]
        base = make_project(tmp / "base", paths)

        def fresh(tag: str) -> Path:
            dst = tmp / tag
            shutil.copytree(base.parent, dst, symlinks=True)
            return dst / "proj"

        if which == "cli":
            return [run_cli(fresh(f"cli{r}"), ckpt) for r in range(-1, repeats)][1:]
        from PySide6.QtWidgets import QApplication

        app = QApplication.instance() or QApplication([])
        return [run_app(app, fresh(f"app{r}"), ckpt, len(paths)) for r in range(-1, repeats)][1:]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per side and process")
    ap.add_argument("--rounds", type=int, default=2, help="app and CLI processes, alternating")
    ap.add_argument("--checkpoint", type=Path, default=None)
    ap.add_argument("--side", choices=["app", "cli"], help=argparse.SUPPRESS)  # one side, in a child process
    args = ap.parse_args()
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    if args.side:
        print(json.dumps(side(args.side, args.images, args.repeats, args.checkpoint)))
        return
    # Each side runs in a process of its own, as people run them: a process whose main thread has run
    # torch (the CLI) makes torch in any other thread of it (the app's worker) 10-15 % slower on 2 cores,
    # so timing both in one process measured the benchmark, not the app.
    random_checkpoint()  # made once, before the timed processes
    times: dict[str, list[float]] = {"app": [], "cli": []}
    for _ in range(args.rounds):
        for which in ("app", "cli"):
            cmd = [
                sys.executable,
                __file__,
                "--side",
                which,
                "--images",
                str(args.images),
                "--repeats",
                str(args.repeats),
            ]
            if args.checkpoint:
                cmd += ["--checkpoint", str(args.checkpoint)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            times[which] += json.loads(out.strip().splitlines()[-1])
    n = args.images
    a, c = n / statistics.median(times["app"]), n / statistics.median(times["cli"])
    print(
        f"runs (s): app {', '.join(f'{t:.2f}' for t in times['app'])}; CLI {', '.join(f'{t:.2f}' for t in times['cli'])}"
    )
    print(f"app pre-label: {a:.2f} img/s, CLI {c:.2f} img/s ({a / c:.2f}x), {n} images, {cpu_name()}")


if __name__ == "__main__":
    main()
