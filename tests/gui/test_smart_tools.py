"""The smart tools driven with real mouse and key events on a real canvas (and main window)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QPoint, Qt

from annotation.masks import make_palette
from gui.canvas import Canvas
from gui.document import MaskDocumentModel
from gui.smart_tools import image_key
from gui.tools import Tool, ToolSettings

H, W = 40, 60


def scene(h: int = H, w: int = W) -> np.ndarray:
    """A dark image with a bright rectangle (rows 10..30, cols 15..45) and a mid-grey right strip."""
    rgb = np.full((h, w, 3), 30, np.uint8)
    rgb[10:30, 15:45] = (220, 200, 40)
    rgb[:, 52:] = 120
    return rgb


@pytest.fixture
def canvas(qtbot):
    tools = ToolSettings()
    c = Canvas(tools)
    qtbot.addWidget(c)
    c.resize(400, 300)
    c.show()
    qtbot.waitExposed(c)
    mask = np.zeros((H, W), np.uint8)
    mask[:, 40:] = 2
    c.set_content(scene(), MaskDocumentModel(1, mask), make_palette(), 0)
    c.tools_ref = tools
    yield c
    c.smart.shutdown()


def at(c: Canvas, x: float, y: float) -> QPoint:
    return c.image_to_widget(x, y).toPoint()


def drag(qtbot, c: Canvas, points: list[QPoint], button=Qt.MouseButton.LeftButton) -> None:
    qtbot.mousePress(c, button, pos=points[0])
    for p in points[1:]:
        qtbot.mouseMove(c, p)
    qtbot.mouseRelease(c, button, pos=points[-1])


# --------------------------------------------------------------------------- wand


def test_wand_click_paints_the_similar_region_as_one_step(qtbot, canvas: Canvas) -> None:
    canvas.tools.tool = Tool.WAND
    canvas.tools.class_value = 3
    qtbot.mouseClick(canvas, Qt.MouseButton.LeftButton, pos=at(canvas, 20, 15))
    m = canvas.model.label_map
    assert (m[10:30, 15:45] == 3).all()
    assert (m[:10] != 3).all() and (m[:, :15] != 3).all()
    assert canvas.model.doc.history.undo_steps == 1
    np.testing.assert_array_equal(canvas.overlay_buffer, m)
    assert canvas.smart.preview is None  # the preview is gone once applied
    canvas.model.undo()
    assert not (canvas.model.label_map == 3).any()


def test_wand_drag_changes_tolerance_live_and_escape_cancels(qtbot, canvas: Canvas) -> None:
    # A horizontal ramp: the region grows with the tolerance.
    ramp = np.repeat(np.repeat(np.arange(W, dtype=np.uint8)[None, :, None] * 4, H, 0), 3, 2)
    canvas.set_content(ramp, canvas.model, make_palette(), 0)
    canvas.tools.tool = Tool.WAND
    canvas.tools.wand_tolerance = 4
    canvas.tools.class_value = 1
    start = at(canvas, 30, 20)
    qtbot.mousePress(canvas, Qt.MouseButton.LeftButton, pos=start)
    narrow = canvas.smart.preview[0].width
    qtbot.mouseMove(canvas, start + QPoint(40, 0))
    assert canvas.tools.wand_tolerance == 4 + 20
    wide = canvas.smart.preview[0].width
    assert wide > narrow
    qtbot.keyClick(canvas, Qt.Key.Key_Escape)
    qtbot.mouseRelease(canvas, Qt.MouseButton.LeftButton, pos=start + QPoint(40, 0))
    assert canvas.smart.preview is None
    assert not (canvas.model.label_map == 1).any()  # cancelled: nothing painted

    qtbot.mousePress(canvas, Qt.MouseButton.LeftButton, pos=start)
    qtbot.mouseMove(canvas, start - QPoint(30, 0))  # narrower
    qtbot.mouseRelease(canvas, Qt.MouseButton.LeftButton, pos=start - QPoint(30, 0))
    assert canvas.tools.wand_tolerance == 24 - 15
    painted = np.flatnonzero((canvas.model.label_map == 1).any(axis=0))
    assert 30 in painted and painted.size < wide


def test_wand_respects_the_class_lock(qtbot, canvas: Canvas) -> None:
    canvas.tools.tool = Tool.WAND
    canvas.tools.class_value = 3
    canvas.tools.lock = 2  # only over class 2 (columns 40..)
    qtbot.mouseClick(canvas, Qt.MouseButton.LeftButton, pos=at(canvas, 20, 15))
    m = canvas.model.label_map
    assert (m[10:30, 40:45] == 3).all()
    assert (m[10:30, 15:40] == 0).all()


def test_wand_on_a_one_pixel_image(qtbot, canvas: Canvas) -> None:
    canvas.set_content(
        np.full((1, 1, 3), 9, np.uint8), MaskDocumentModel(2, np.zeros((1, 1), np.uint8)), make_palette()
    )
    canvas.tools.tool = Tool.WAND
    canvas.tools.class_value = 2
    qtbot.mouseClick(canvas, Qt.MouseButton.LeftButton, pos=at(canvas, 0, 0))
    assert canvas.model.label_map[0, 0] == 2


# --------------------------------------------------------------------------- superpixels


def wait_superpixels(qtbot, c: Canvas) -> None:
    qtbot.waitUntil(lambda: c.smart.current_superpixels() is not None, timeout=20000)


def test_superpixel_stroke_paints_whole_superpixels_as_one_step(qtbot, canvas: Canvas) -> None:
    canvas.tools.granularity = "fine"
    canvas.tools.tool = Tool.SUPERPIXEL  # choosing the tool starts the job
    assert "computing" in canvas.smart.hint() or canvas.smart.current_superpixels() is not None
    wait_superpixels(qtbot, canvas)
    sp = canvas.smart.current_superpixels()
    assert sp.shape == (H, W)
    canvas.tools.class_value = 1
    canvas.tools.radius = 1
    drag(qtbot, canvas, [at(canvas, x, 20) for x in (5, 12, 20, 28)])
    m = canvas.model.label_map
    full = sp.labels[np.ix_(sp.rows, sp.cols)]
    touched = np.unique(full[m == 1])
    assert m[20, 5] == 1 and m[20, 28] == 1
    # Every touched superpixel is painted whole (the lock is off), nothing else.
    np.testing.assert_array_equal(m == 1, np.isin(full, touched))
    assert canvas.model.doc.history.undo_steps == 1
    canvas.model.undo()
    assert not (canvas.model.label_map == 1).any()


def test_superpixel_escape_cancels_the_stroke_and_boundaries_toggle(qtbot, canvas: Canvas) -> None:
    canvas.tools.tool = Tool.SUPERPIXEL
    wait_superpixels(qtbot, canvas)
    canvas.tools.class_value = 3
    before = canvas.model.label_map.copy()
    qtbot.mousePress(canvas, Qt.MouseButton.LeftButton, pos=at(canvas, 20, 20))
    assert (canvas.model.label_map == 3).any()
    qtbot.keyClick(canvas, Qt.Key.Key_Escape)
    qtbot.mouseRelease(canvas, Qt.MouseButton.LeftButton, pos=at(canvas, 20, 20))
    np.testing.assert_array_equal(canvas.model.label_map, before)
    assert canvas.smart._boundaries() is not None
    canvas.tools.show_superpixels = True
    shot = canvas.grab().toImage()
    assert not shot.isNull()
    canvas.tools.next_granularity()
    assert canvas.tools.granularity == "fine"


def test_switching_image_while_a_superpixel_job_runs_never_applies_stale_labels(qtbot, canvas: Canvas) -> None:
    a = np.random.default_rng(1).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    b = scene()
    canvas.set_content(a, MaskDocumentModel(7, np.zeros((120, 160), np.uint8)), make_palette())
    canvas.tools.tool = Tool.SUPERPIXEL  # job for image a starts
    key_a = canvas.smart.sp_key()
    canvas.set_content(b, MaskDocumentModel(8, np.zeros((H, W), np.uint8)), make_palette())
    key_b = canvas.smart.sp_key()
    assert key_a != key_b and key_b[0] == image_key(b)
    wait_superpixels(qtbot, canvas)
    canvas.smart.superpixels.shutdown()  # a's job, if it ran, has finished and reported by now
    qtbot.wait(50)
    sp = canvas.smart.current_superpixels()
    assert sp.shape == (H, W)  # b's map, never a's
    canvas.tools.class_value = 2
    drag(qtbot, canvas, [at(canvas, 20, 20)])
    assert canvas.model.label_map[20, 20] == 2
    # Going back to a: its map is computed (or was cached) for a, at a's size.
    canvas.set_content(a, MaskDocumentModel(7, np.zeros((120, 160), np.uint8)), make_palette())
    wait_superpixels(qtbot, canvas)
    assert canvas.smart.current_superpixels().shape == (120, 160)


def test_superpixel_stroke_before_the_labels_arrive_paints_nothing(qtbot, canvas: Canvas) -> None:
    canvas.smart.superpixels.request = lambda key, rgb: None  # a job that never finishes
    canvas.tools.tool = Tool.SUPERPIXEL
    before = canvas.model.label_map.copy()
    drag(qtbot, canvas, [at(canvas, 20, 20), at(canvas, 30, 20)])
    np.testing.assert_array_equal(canvas.model.label_map, before)
    assert "still being computed" in canvas.smart.hint()


# --------------------------------------------------------------------------- GrabCut


def wait_grabcut(qtbot, c: Canvas) -> None:
    qtbot.waitUntil(lambda: not c.smart.gc_busy, timeout=10000)


def test_grabcut_box_preview_then_enter_accepts(qtbot, canvas: Canvas) -> None:
    canvas.tools.tool = Tool.GRABCUT
    canvas.tools.class_value = 1
    drag(qtbot, canvas, [at(canvas, 10, 5), at(canvas, 30, 18), at(canvas, 49, 34)])
    assert canvas.smart.gc_box is not None
    wait_grabcut(qtbot, canvas)
    box, region = canvas.smart.preview
    assert not (canvas.model.label_map == 1).any()  # only a preview so far
    qtbot.keyClick(canvas, Qt.Key.Key_Return)
    m = canvas.model.label_map
    obj = np.zeros((H, W), bool)
    obj[10:30, 15:45] = True
    iou = (obj & (m == 1)).sum() / (obj | (m == 1)).sum()
    assert iou > 0.85, iou
    assert canvas.model.doc.history.undo_steps == 1
    assert canvas.smart.gc_box is None and canvas.smart.preview is None


def cut_out(c: Canvas) -> np.ndarray:
    full = np.zeros(c.model.shape, bool)
    if c.smart.preview is not None:
        box, region = c.smart.preview
        full[box.slices] = region
    return full


def test_grabcut_strokes_refine_and_escape_cancels(qtbot, canvas: Canvas) -> None:
    canvas.tools.tool = Tool.GRABCUT
    canvas.tools.class_value = 1
    canvas.tools.radius = 2
    drag(qtbot, canvas, [at(canvas, 10, 5), at(canvas, 57, 35)])
    wait_grabcut(qtbot, canvas)
    assert not cut_out(canvas)[20, 54]  # the grey strip is not taken at first
    # Left-drag over the strip: object.
    drag(qtbot, canvas, [at(canvas, 54, 8), at(canvas, 54, 24)])
    wait_grabcut(qtbot, canvas)
    assert cut_out(canvas)[20, 54] and cut_out(canvas)[20, 30]
    # Right-drag over the strip's lower end: background there.
    drag(qtbot, canvas, [at(canvas, 54, 30), at(canvas, 54, 34)], Qt.MouseButton.RightButton)
    assert len(canvas.smart.gc_fg) == 1 and len(canvas.smart.gc_bg) == 1
    wait_grabcut(qtbot, canvas)
    got = cut_out(canvas)
    assert not got[31:34, 53:56].any() and got[15, 54] and got[20, 30]
    qtbot.keyClick(canvas, Qt.Key.Key_Escape)
    assert canvas.smart.gc_box is None and canvas.smart.preview is None
    assert not (canvas.model.label_map == 1).any()


def test_grabcut_escape_mid_computation_drops_the_result(qtbot, canvas: Canvas) -> None:
    canvas.tools.tool = Tool.GRABCUT
    drag(qtbot, canvas, [at(canvas, 10, 5), at(canvas, 49, 34)])
    qtbot.keyClick(canvas, Qt.Key.Key_Escape)  # before (or while) the worker answers
    canvas.smart.shutdown()
    qtbot.wait(50)  # deliver the queued result, if the job ran
    assert canvas.smart.preview is None and canvas.smart.gc_box is None
    qtbot.keyClick(canvas, Qt.Key.Key_Return)
    assert not (canvas.model.label_map == canvas.tools.class_value).any()


def test_grabcut_enter_while_busy_accepts_when_the_result_arrives(qtbot, canvas: Canvas) -> None:
    canvas.tools.tool = Tool.GRABCUT
    canvas.tools.class_value = 3
    canvas.tools.lock = 0  # only over background: the class-2 strip stays
    drag(qtbot, canvas, [at(canvas, 10, 5), at(canvas, 49, 34)])
    qtbot.keyClick(canvas, Qt.Key.Key_Enter)
    wait_grabcut(qtbot, canvas)
    qtbot.waitUntil(lambda: (canvas.model.label_map == 3).any(), timeout=10000)
    m = canvas.model.label_map
    assert (m[:, 40:] == 2).all()
    assert m[20, 25] == 3


def test_grabcut_tiny_box_says_so(qtbot, canvas: Canvas) -> None:
    canvas.tools.tool = Tool.GRABCUT
    drag(qtbot, canvas, [at(canvas, 10, 5), at(canvas, 11, 5)])
    assert canvas.smart.gc_box is None
    assert "at least 3 pixels" in canvas.smart.hint()


def test_switching_tool_drops_a_grabcut_in_progress(qtbot, canvas: Canvas) -> None:
    canvas.tools.tool = Tool.GRABCUT
    drag(qtbot, canvas, [at(canvas, 10, 5), at(canvas, 49, 34)])
    wait_grabcut(qtbot, canvas)
    canvas.tools.tool = Tool.BRUSH
    assert canvas.smart.gc_box is None and canvas.smart.preview is None


# --------------------------------------------------------------------------- main window


@pytest.fixture
def window(qtbot, project_path: Path):
    from tests.gui.conftest import shown_window

    gen = shown_window(qtbot, project_path)
    win = next(gen)
    yield win
    win.canvas.smart.shutdown()
    next(gen, None)


def test_window_keys_choose_the_smart_tools(qtbot, window) -> None:
    for key, tool in ((Qt.Key.Key_W, Tool.WAND), (Qt.Key.Key_S, Tool.SUPERPIXEL), (Qt.Key.Key_G, Tool.GRABCUT)):
        qtbot.keyClick(window.canvas, key)
        assert window.tools.tool is tool
        assert window.tool_actions[tool].isChecked()
    qtbot.keyClick(window.canvas, Qt.Key.Key_V)
    assert window.tools.show_superpixels
    granularity = window.tools.granularity
    qtbot.keyClick(window.canvas, Qt.Key.Key_S, Qt.KeyboardModifier.ShiftModifier)
    assert window.tools.granularity != granularity


def test_window_wand_edit_marks_the_image_unsaved_and_undoes(qtbot, window) -> None:
    qtbot.keyClick(window.canvas, Qt.Key.Key_W)
    qtbot.keyClick(window.canvas, Qt.Key.Key_3)
    c = window.canvas
    before = c.model.label_map.copy()
    qtbot.mouseClick(c, Qt.MouseButton.LeftButton, pos=at(c, 50, 20))
    assert (c.model.label_map == 3).any()
    assert c.model.dirty
    qtbot.keyClick(c, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    np.testing.assert_array_equal(c.model.label_map, before)
