"""App pre-label throughput against the command line's, on the same CamVid images and checkpoint.

Both run in this process: ``prelabel PROJECT`` through ``main.main`` and the app's
"Pre-label all new" through a real MainWindow (offscreen Qt, worker thread), each
on a fresh copy of the same project of N CamVid images, alternating, after one
warm-up of each. Each time includes loading the model (the app's predictor cache
is emptied), as a person pressing the button or typing the command would pay it.
The weights are random unless ``--checkpoint`` is given: speed does not depend
on what the network learnt.

    .venv/bin/python bench/app_prelabel.py [--images 24] [--repeats 2] [--checkpoint PATH]

Prints last: ``app pre-label: <a> img/s, CLI <c> img/s (<r>x), N images, <CPU>``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from _common import CACHE, VOID, camvid_classes, camvid_pairs


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--checkpoint", type=Path, default=None)
    args = ap.parse_args()
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

    from PySide6.QtWidgets import QApplication

    tmp = Path(tempfile.mkdtemp(prefix="atrous-app-bench-"))
    os.environ["ATROUS_DATA_DIR"] = str(tmp / "data")  # the app's settings and log stay out of the user's
    app = QApplication.instance() or QApplication([])
    try:
        ckpt = args.checkpoint or random_checkpoint()
        images = [a for a, _ in camvid_pairs("train")][: args.images]
        base = make_project(tmp / "base", images)

        def fresh(tag: str) -> Path:
            dst = tmp / tag
            shutil.copytree(base.parent, dst, symlinks=True)
            return dst / "proj"

        run_cli(fresh("warm-cli"), ckpt)
        run_app(app, fresh("warm-app"), ckpt, len(images))
        cli_t, app_t = [], []
        for r in range(args.repeats):
            app_t.append(run_app(app, fresh(f"app{r}"), ckpt, len(images)))
            cli_t.append(run_cli(fresh(f"cli{r}"), ckpt))
        n = len(images)
        a, c = n / statistics.median(app_t), n / statistics.median(cli_t)
        print(f"runs (s): app {', '.join(f'{t:.2f}' for t in app_t)}; CLI {', '.join(f'{t:.2f}' for t in cli_t)}")
        print(f"app pre-label: {a:.2f} img/s, CLI {c:.2f} img/s ({a / c:.2f}x), {n} images, {cpu_name()}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
