"""'Learn from my strokes': a pixel classifier trained in a worker thread, previewed on the open image."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from annotation.layout import prelabel_path
from annotation.prelabels import record_prelabel
from annotation.project import Project
from gui.main_window import MainWindow
from model.versions import version_kind

from .conftest import CLASSES, H, W, shown_window


def disc_image(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A bright disc (class 1) on a dark, noisy ground (class 0)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:H, :W]
    truth = ((yy - H // 2) ** 2 + (xx - (20 + 5 * seed)) ** 2 <= 12**2).astype(np.uint8)
    grey = np.clip(50 + 140 * truth + rng.normal(0, 10, (H, W)), 0, 255).astype(np.uint8)
    return np.dstack([grey, grey // 2 + 40, grey]), truth


@pytest.fixture
def disc_project(tmp_path: Path) -> Path:
    folder = tmp_path / "discs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(disc_image(i)[0]).save(folder / f"d{i}.png")
    root = tmp_path / "proj"
    with Project.create(root, CLASSES) as proj:
        proj.add_images(folder)
    return root


@pytest.fixture
def win(qtbot, disc_project: Path):
    yield from shown_window(qtbot, disc_project)


def _stroke(win: MainWindow) -> None:
    """One stroke of class 1 across the middle of the disc (the rest of the blank mask is background)."""
    m = win.current_model
    m.begin_stroke()
    m.brush_segment(14, H // 2, 26, H // 2, 2, 1)
    m.end_stroke()


def test_learn_previews_the_open_image_and_prelabels_the_new_ones(qtbot, win: MainWindow) -> None:
    ids = [r.id for r in win.project.images()]
    win.show_image(ids[0])
    _stroke(win)
    painted = win.current_model.label_map.copy()
    assert (painted == 1).sum() < 100
    assert win.learn_from_strokes()
    assert win.model_panel.learn_button.text() == "Stop learning"
    qtbot.waitUntil(lambda: not win.learning and win.model_panel.learn_button.text() != "Stop learning", timeout=60000)
    assert win.model_panel.progress_label.text().startswith("Learned v"), win.model_panel.progress_label.text()
    now = win.current_model.label_map
    truth = disc_image(0)[1]
    assert (now == truth).mean() > 0.9  # the whole disc, not just the stroke
    assert (now[painted == 1] == 1).all()  # the person's pixels stay
    version = win.project.model_versions()[-1]
    assert version.metrics["kind"] == "pixel-classifier"
    choice = win.model_panel.choice()
    assert choice is not None and choice.version_id == version.id and version_kind(choice.spec) == "pixel-classifier"
    rec = win.project.image(ids[0])
    assert rec.status == "prelabeled" and rec.prelabel_model_version == version.id
    assert prelabel_path(win.project.root, ids[0]).is_file() and win.canvas.has_confidence
    # One undo step gives the strokes back.
    win.current_model.undo()
    np.testing.assert_array_equal(win.current_model.label_map, painted)
    win.current_model.redo()
    # "Pre-label all new" uses the new version through the ordinary job.
    with qtbot.waitSignal(win.prelabel.finished, timeout=60000) as blocker:
        assert win.prelabel_images("new")
    summary = blocker.args[0]
    assert summary.saved == 2 and not summary.failed and summary.version_id == version.id
    for i, image_id in enumerate(ids[1:], 1):
        assert (win.project.read_mask(image_id) == disc_image(i)[1]).mean() > 0.9


def test_strokes_on_a_voided_image_count_as_in_ilastik(qtbot, win: MainWindow) -> None:
    ids = [r.id for r in win.project.images()]
    win.show_image(ids[2])
    m = win.current_model
    m.fill(0, 0, 255)  # the blank filled with void: now background strokes count too
    for value, (x0, y0, x1, y1) in ((0, (2, 2, 58, 2)), (0, (2, 37, 58, 37)), (1, (25, 20, 40, 20))):
        m.begin_stroke()
        m.brush_segment(x0, y0, x1, y1, 1.5, value)
        m.end_stroke()
    strokes = m.label_map.copy()
    assert win.learn_from_strokes()
    qtbot.waitUntil(lambda: win.model_panel.progress_label.text().startswith("Learned v"), timeout=60000)
    now = m.label_map
    assert not (now == 255).any() and (now == disc_image(2)[1]).mean() > 0.95
    np.testing.assert_array_equal(now[strokes != 255], strokes[strokes != 255])  # only void pixels changed


def test_a_persons_earlier_mask_is_kept_and_only_its_void_is_filled(qtbot, win: MainWindow) -> None:
    ids = [r.id for r in win.project.images()]
    mask = disc_image(1)[1].copy()
    mask[:, 45:] = 255  # left unlabelled
    mask[0, :3] = 1  # a deliberate label the classifier would not agree with
    win.project.save_mask(ids[1], mask, status="edited")  # a person's, from an earlier session
    win.cache.drop(ids[1])
    win._refresh_record(ids[1])
    win.show_image(ids[1])
    assert win.learn_from_strokes()
    qtbot.waitUntil(lambda: win.model_panel.progress_label.text().startswith("Learned v"), timeout=60000)
    now = win.current_model.label_map
    np.testing.assert_array_equal(now[:, :45], mask[:, :45])
    assert not (now == 255).any()


def _prelabelled(win: MainWindow, image_id: int) -> None:
    """Give an image a pre-label: its pixels are the model's, not the person's."""
    assert record_prelabel(win.project, image_id, disc_image(1)[1], None, None, None)
    win.cache.drop(image_id)
    win._refresh_record(image_id)


def test_strokes_of_one_class_on_a_prelabelled_image_are_refused(qtbot, win: MainWindow) -> None:
    ids = [r.id for r in win.project.images()]
    _prelabelled(win, ids[1])
    win.show_image(ids[1])
    m = win.current_model
    m.begin_stroke()
    m.brush_segment(2, 2, 8, 2, 1, 2)  # class 2 only
    m.end_stroke()
    assert win.learn_from_strokes()
    qtbot.waitUntil(lambda: not win.learning, timeout=60000)
    qtbot.waitUntil(lambda: "only one class" in win.model_panel.progress_label.text(), timeout=5000)
    assert win.project.model_versions() == []


def test_no_strokes_at_all_is_a_clear_message(qtbot, win: MainWindow) -> None:
    ids = [r.id for r in win.project.images()]
    _prelabelled(win, ids[1])
    win.show_image(ids[1])
    assert win.learn_from_strokes()
    qtbot.waitUntil(lambda: "no labelled pixels" in win.model_panel.progress_label.text(), timeout=60000)
    assert win.project.model_versions() == []


def test_cancel_mid_training_saves_nothing(qtbot, win: MainWindow, monkeypatch) -> None:
    import model.pixel_classifier as pc

    ids = [r.id for r in win.project.images()]
    win.show_image(ids[0])
    _stroke(win)
    before = win.current_model.label_map.copy()
    inside, release = threading.Event(), threading.Event()
    real = pc.labelled_samples

    def slow(*a, **kw):
        inside.set()
        release.wait(30)  # the person presses "Stop learning" while the features are computed
        return real(*a, **kw)

    monkeypatch.setattr(pc, "labelled_samples", slow)
    assert win.learn_from_strokes()
    qtbot.waitUntil(inside.is_set, timeout=30000)
    win.model_panel.learn_button.click()  # "Stop learning"
    release.set()
    qtbot.waitUntil(lambda: not win.learning, timeout=60000)
    qtbot.waitUntil(lambda: "cancelled" in win.model_panel.progress_label.text(), timeout=5000)
    assert win.project.model_versions() == []
    assert not list((win.project.root / "models").glob("*.npz"))
    np.testing.assert_array_equal(win.current_model.label_map, before)
    assert win.model_panel.learn_button.text() == "Learn from my strokes"


def test_closing_the_window_stops_learning(qtbot, disc_project: Path, monkeypatch) -> None:
    import model.pixel_classifier as pc

    gen = shown_window(qtbot, disc_project)
    win = next(gen)
    win.show_image(win.project.images()[0].id)
    _stroke(win)
    inside = threading.Event()
    real = pc.labelled_samples

    def slow(*a, **kw):
        inside.set()
        return real(*a, **kw)

    monkeypatch.setattr(pc, "labelled_samples", slow)
    assert win.learn_from_strokes()
    qtbot.waitUntil(inside.is_set, timeout=30000)
    win.close()
    assert not win.learning  # joined before the window went away
    next(gen, None)
