"""The low-confidence overlay and the least-confident-first sort."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt

from annotation.confidence import write_confidence
from gui.main_window import SORT_UNCERTAIN, MainWindow

from .conftest import H, W


def _grab(win: MainWindow) -> np.ndarray:
    from PySide6.QtGui import QImage

    img = win.canvas.grab().toImage().convertToFormat(QImage.Format.Format_RGB888)
    rows = np.frombuffer(img.constBits(), np.uint8, img.sizeInBytes()).reshape(img.height(), img.bytesPerLine())
    return rows[:, : 3 * img.width()].copy()  # without the scanline padding


def test_confidence_overlay_toggle_changes_the_rendering(qtbot, window: MainWindow, project_path: Path) -> None:
    conf = np.full((H, W), 250, np.uint8)
    conf[:, :20] = 40  # the model was unsure on the left
    window._remember_confidence(window.current_id, conf)
    window.canvas.set_confidence(window.confidence_map(window.current_id))
    plain = _grab(window)
    qtbot.keyClick(window.canvas, Qt.Key.Key_C)
    assert window.canvas.confidence_visible and window.model_panel.confidence_check.isChecked()
    hatched = _grab(window)
    assert not np.array_equal(plain, hatched)
    marks = window.canvas.confidence_buffer
    assert marks[:, :20].all() and not marks[:, 20:].any()
    # raising the threshold above 250 marks everything
    window.model_panel.threshold_slider.setValue(100)
    assert window.canvas.confidence_buffer.all()
    qtbot.keyClick(window.canvas, Qt.Key.Key_C)
    assert not window.canvas.confidence_visible
    np.testing.assert_array_equal(_grab(window), plain)


def test_confidence_map_is_read_back_from_the_project(window: MainWindow, project_path: Path) -> None:
    ids = [r.id for r in window.project.images()]
    conf = np.arange(H * W, dtype=np.uint32).reshape(H, W).astype(np.uint8)
    write_confidence(project_path, ids[1], conf)
    window.show_image(ids[1])
    assert window.canvas.has_confidence
    np.testing.assert_array_equal(window.confidence_map(ids[1]), conf)


def test_sort_by_uncertainty_puts_least_confident_first(window: MainWindow) -> None:
    ids = [r.id for r in window.project.images()]
    window.project.set_mean_confidence(ids[0], 0.9)
    window.project.set_mean_confidence(ids[2], 0.3)
    # ids[1] was never pre-labelled: last
    window.sort_combo.setCurrentIndex(window.sort_combo.findData(SORT_UNCERTAIN))
    order = [window.image_list.item(i).data(Qt.ItemDataRole.UserRole) for i in range(window.image_list.count())]
    assert order == [ids[2], ids[0], ids[1]]
    assert window.image_list.currentItem().data(Qt.ItemDataRole.UserRole) == window.current_id
    window.sort_combo.setCurrentIndex(0)
    order = [window.image_list.item(i).data(Qt.ItemDataRole.UserRole) for i in range(window.image_list.count())]
    assert order == ids
