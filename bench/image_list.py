"""The image list with tens of thousands of images: does each step stay as cheap as with a thousand?

Builds two projects in one run, a small one (``--small``, default 1 000 images) and a big
one (``--n``, default 20 000), opens the main window on each (offscreen Qt) and times what
a person does all day:

* one pre-label result arriving (``_refresh_record``: the item restyled, the progress line),
* one step to the next image (``navigate``, the list part; the image itself is one of three
  real files, so decoding costs the same in both),
* one key typed in the search box (the filter applied to every item),
* building the list (opening the project, adding or removing images, changing the sort).

Each figure is printed for both sizes with the ratio big/small. A step that does not
depend on the project's size gives about 1x; one that walks every image gives about
n/small (20x with the defaults). The image rows are inserted directly (3 real image files,
the rest stand-ins that are never decoded), so building the projects takes seconds.

    .venv/bin/python bench/image_list.py [--n 20000] [--small 1000] [--repeat 50] [--repo PATH]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("ATROUS_DATA_DIR", tempfile.mkdtemp(prefix="atrous-bench-"))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from _common import REPO, cpu_name  # noqa: E402  (puts this checkout on sys.path)

# --repo PATH measures another checkout (e.g. an older commit made with `git worktree add`): first on the path.
_repo = sys.argv[sys.argv.index("--repo") + 1] if "--repo" in sys.argv[:-1] else str(REPO)
sys.path.insert(0, _repo)


def make_project(root: Path, n: int) -> Path:
    """A project of 3 real 64x48 images and ``n`` stand-in rows after them."""
    from annotation.classes import LabelClass
    from annotation.project import Project

    img = root / "img"
    img.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((48, 64, 3), 40 * i, np.uint8)).save(img / f"a{i}.png")
    classes = [LabelClass(0, "background", (0, 0, 0), True), LabelClass(1, "thing", (200, 50, 50))]
    with Project.create(root / "project", classes) as p:
        p.add_images(img)
        p._insert_images([(img / f"z{i:06d}.png", (64, 48, 1, f"{i:064x}")) for i in range(n)])
    for name in ("z000000.png", "z000100.png"):  # the stand-ins the window prefetches: real files too
        Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(img / name)
    return root / "project"


def measure(project_root: Path, repeat: int) -> dict[str, float]:
    """Milliseconds per operation (median of ``repeat``; the list build once per 5 repeats)."""
    from PySide6.QtWidgets import QApplication

    from annotation.project import Project
    from gui.main_window import MainWindow

    app = QApplication.instance() or QApplication([])
    win = MainWindow(Project.open(project_root))
    win.show()
    app.processEvents()
    ids = list(win._records)
    out: dict[str, list[float]] = {"pre-label result": [], "next image": [], "search key": [], "build list": []}
    for k in range(repeat):
        t = time.perf_counter()
        win._refresh_record(ids[k % len(ids)])
        out["pre-label result"].append(time.perf_counter() - t)
        win.show_image(ids[k % 3])  # one of the real images, so the step below is the list's work
        t = time.perf_counter()
        win._neighbour(1)
        out["next image"].append(time.perf_counter() - t)
        t = time.perf_counter()
        win.search_edit.setText("z0001" if k % 2 == 0 else "")
        app.processEvents()
        out["search key"].append(time.perf_counter() - t)
        if k % 5 == 0:
            t = time.perf_counter()
            win._fill_image_list()
            out["build list"].append(time.perf_counter() - t)
    win.close()
    win.cache.shutdown()
    win.deleteLater()
    app.processEvents()
    return {name: 1000 * statistics.median(v) for name, v in out.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20000, help="images in the big project (default 20000)")
    ap.add_argument("--small", type=int, default=1000, help="images in the small project (default 1000)")
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--repo", help="measure the Atrous checkout at this path instead of this one")
    args = ap.parse_args()
    print(
        f"image list, {args.small + 3} vs {args.n + 3} images, offscreen Qt, code in {_repo}; CPU {cpu_name()}",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        small = measure(make_project(Path(tmp) / "small", args.small), args.repeat)
        big = measure(make_project(Path(tmp) / "big", args.n), args.repeat)
    print(f"{'operation':18s} {'small ms':>9s} {'big ms':>9s} {'big/small':>9s}")
    for name in small:
        print(f"{name:18s} {small[name]:9.2f} {big[name]:9.2f} {big[name] / max(small[name], 1e-6):8.1f}x")
    r = {name: big[name] / max(small[name], 1e-6) for name in small}
    print(
        f"image list: a pre-label result {big['pre-label result']:.1f} ms and a step {big['next image']:.2f} ms "
        f"with {args.n + 3} images ({r['pre-label result']:.1f}x and {r['next image']:.1f}x the "
        f"{args.small + 3}-image figures; size ratio {(args.n + 3) / (args.small + 3):.0f}x)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
