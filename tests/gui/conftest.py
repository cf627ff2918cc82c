"""Fixtures for the GUI tests: an isolated data folder, small projects, a main window."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from annotation.project import LabelClass, Project

CLASSES = [
    LabelClass(0, "background", (0, 0, 0), True),
    LabelClass(1, "person", (200, 50, 50)),
    LabelClass(2, "car", (50, 200, 50)),
    LabelClass(3, "tree", (50, 50, 200)),
]
W, H = 60, 40


@pytest.fixture(autouse=True)
def isolated_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Settings, logs and the sample project go to a temporary folder, never the user's."""
    d = tmp_path / "atrous-data"
    monkeypatch.setenv("ATROUS_DATA_DIR", str(d))
    return d


@pytest.fixture(autouse=True)
def no_modal_dialogs(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Fail loudly instead of blocking if a test opens a dialog it did not expect."""
    from gui import dialogs

    seen: list[tuple] = []

    def unexpected(*args, **kwargs):
        seen.append(args)
        raise AssertionError(f"unexpected dialog: {args[1:]}")

    monkeypatch.setattr(dialogs, "confirm", unexpected)
    monkeypatch.setattr(dialogs, "show_error", unexpected)
    monkeypatch.setattr(dialogs, "save_failed", unexpected)
    return seen


def make_images(folder: Path, n: int = 3) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        arr = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
        p = folder / f"img{i:02d}.png"
        Image.fromarray(arr).save(p)
        paths.append(p)
    return paths


@pytest.fixture
def project_path(tmp_path: Path) -> Path:
    """A project of three 60x40 images; the first has a mask (left half class 1, pre-labelled)."""
    root = tmp_path / "proj"
    make_images(tmp_path / "images")
    with Project.create(root, CLASSES) as proj:
        proj.add_images(tmp_path / "images")
        first = proj.images()[0]
        mask = np.zeros((H, W), np.uint8)
        mask[:, : W // 2] = 1
        proj.save_mask(first.id, mask, status="prelabeled")
    return root


def shown_window(qtbot, project_path: Path):
    """Open a MainWindow on ``project_path``, yield it shown, then close it and stop its workers."""
    from gui.main_window import MainWindow

    win = MainWindow(Project.open(project_path))
    qtbot.addWidget(win)
    win.resize(900, 600)
    win.show()
    qtbot.waitExposed(win)
    yield win
    if win.isVisible():
        win.close()
    win.cache.shutdown()


@pytest.fixture
def window(qtbot, project_path: Path):
    yield from shown_window(qtbot, project_path)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 4-class MobileNetV3 DeepLabV3 saved as an Atrous checkpoint (built once)."""
    from model.weights import save_checkpoint
    from tests.model.helpers import tiny_model

    # Named like the test project's classes: a model with other classes is refused, in the app as on the CLI.
    loaded = tiny_model(num_classes=len(CLASSES), input_size=64, class_names=[c.name for c in CLASSES])
    path = tmp_path_factory.mktemp("models") / "tiny.pt"
    save_checkpoint(path, loaded.network, loaded.meta)
    return path
