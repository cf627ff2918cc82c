"""The canvas turns real mouse events into the right paint calls, at any zoom."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QPoint, QPointF, Qt

from annotation.editing import VOID, brush_segment
from annotation.masks import make_palette
from gui.canvas import Canvas, outline_of
from gui.document import MaskDocumentModel
from gui.tools import LOCK_UNLABELLED, Tool, ToolSettings

H, W = 40, 60


@pytest.fixture
def canvas(qtbot):
    tools = ToolSettings()
    tools.background = 0  # as the window sets it from a project whose class 0 is the background
    c = Canvas(tools)
    qtbot.addWidget(c)
    c.resize(400, 300)
    c.show()
    qtbot.waitExposed(c)
    mask = np.zeros((H, W), np.uint8)
    mask[:, 40:] = 2
    model = MaskDocumentModel(1, mask)
    rgb = np.full((H, W, 3), 128, np.uint8)
    c.set_content(rgb, model, make_palette(), 0)
    c.tools_ref = tools  # keep the QObject alive with the widget
    return c


def _drag(qtbot, c: Canvas, points: list[QPoint]) -> None:
    qtbot.mousePress(c, Qt.MouseButton.LeftButton, pos=points[0])
    for p in points[1:]:
        qtbot.mouseMove(c, p)
    qtbot.mouseRelease(c, Qt.MouseButton.LeftButton, pos=points[-1])


@pytest.mark.parametrize("scale", [0.75, 1.0, 3.0, 8.0])
def test_drag_paints_the_pixels_under_the_path(qtbot, canvas: Canvas, scale: float) -> None:
    canvas.zoom_to(scale, QPointF(0, 0))
    canvas.offset = QPointF(7, 5)
    canvas.tools.radius = 2.0
    canvas.tools.class_value = 1
    # Widget points over image pixels (5, 10) -> (25, 12) -> (30, 20).
    img_pts = [(5, 10), (25, 12), (30, 20)]
    pts = [canvas.image_to_widget(x, y).toPoint() for x, y in img_pts]
    before = canvas.model.label_map.copy()
    _drag(qtbot, canvas, pts)

    # Expected: the same brush swept through the points the canvas actually received.
    expected = before.copy()
    coords = [canvas.widget_to_image(p) for p in pts]
    brush_segment(expected, *coords[0], *coords[0], 2.0, 1)
    for a, b in zip(coords, coords[1:]):
        brush_segment(expected, *a, *b, 2.0, 1)
    got = canvas.model.label_map
    np.testing.assert_array_equal(got, expected)
    # Independent checks: the path is painted, far pixels are not, one undo step.
    for x, y in img_pts + [(15, 11)]:
        assert got[y, x] == 1, (x, y)
    assert got[35, 55] == 2 and got[0, 0] == 0
    assert canvas.model.doc.history.undo_steps == 1
    # The overlay mirrors the mask.
    np.testing.assert_array_equal(canvas.overlay_buffer, got)


def test_stroke_is_one_undo_step(qtbot, canvas: Canvas) -> None:
    before = canvas.model.label_map.copy()
    pts = [canvas.image_to_widget(x, 10).toPoint() for x in range(2, 30, 3)]
    _drag(qtbot, canvas, pts)
    assert (canvas.model.label_map != before).any()
    canvas.model.undo()
    np.testing.assert_array_equal(canvas.model.label_map, before)
    np.testing.assert_array_equal(canvas.overlay_buffer, before)


def test_eraser_paints_background_or_void(qtbot, canvas: Canvas) -> None:
    canvas.tools.tool = Tool.ERASER
    p = canvas.image_to_widget(50, 20).toPoint()
    _drag(qtbot, canvas, [p])
    assert canvas.model.label_map[20, 50] == 0
    canvas.tools.erase_to_void = True
    p = canvas.image_to_widget(45, 30).toPoint()
    _drag(qtbot, canvas, [p])
    assert canvas.model.label_map[30, 45] == VOID


def test_fill_click(qtbot, canvas: Canvas) -> None:
    canvas.tools.tool = Tool.FILL
    canvas.tools.class_value = 3
    qtbot.mouseClick(canvas, Qt.MouseButton.LeftButton, pos=canvas.image_to_widget(50, 5).toPoint())
    m = canvas.model.label_map
    assert (m[:, 40:] == 3).all()
    assert (m[:, :40] == 0).all()


def test_polygon_enter_and_double_click_and_escape(qtbot, canvas: Canvas) -> None:
    canvas.tools.tool = Tool.POLYGON
    canvas.tools.class_value = 1
    for x, y in [(2, 2), (20, 2), (20, 20), (2, 20)]:
        qtbot.mouseClick(canvas, Qt.MouseButton.LeftButton, pos=canvas.image_to_widget(x, y).toPoint())
    assert len(canvas.polygon_points) == 4
    qtbot.keyClick(canvas, Qt.Key.Key_Return)
    m = canvas.model.label_map
    assert (m[3:20, 3:20] == 1).all() and m[30, 10] == 0
    assert canvas.polygon_points == []

    # Esc cancels without painting.
    before = m.copy()
    for x, y in [(25, 25), (35, 25), (35, 35)]:
        qtbot.mouseClick(canvas, Qt.MouseButton.LeftButton, pos=canvas.image_to_widget(x, y).toPoint())
    qtbot.keyClick(canvas, Qt.Key.Key_Escape)
    np.testing.assert_array_equal(canvas.model.label_map, before)

    # Double-click closes the polygon.
    for x, y in [(25, 25), (35, 25)]:
        qtbot.mouseClick(canvas, Qt.MouseButton.LeftButton, pos=canvas.image_to_widget(x, y).toPoint())
    last = canvas.image_to_widget(35, 35).toPoint()
    qtbot.mouseClick(canvas, Qt.MouseButton.LeftButton, pos=last)
    qtbot.mouseDClick(canvas, Qt.MouseButton.LeftButton, pos=last)
    assert canvas.model.label_map[30, 33] == 1
    assert canvas.model.label_map[26, 26] in (0, 1)
    assert canvas.model.label_map[34, 26] == 0  # outside the triangle


def test_lock_paints_only_over_chosen_class(qtbot, canvas: Canvas) -> None:
    canvas.tools.radius = 30
    canvas.tools.class_value = 1
    canvas.tools.lock = 2  # only over class 2
    _drag(qtbot, canvas, [canvas.image_to_widget(40, 20).toPoint()])
    m = canvas.model.label_map
    assert (m[:, :40] == 0).all()
    assert (m[:, 40:] == 1).any()
    canvas.model.undo()
    canvas.tools.lock = LOCK_UNLABELLED
    _drag(qtbot, canvas, [canvas.image_to_widget(40, 20).toPoint()])
    m = canvas.model.label_map
    assert (m[:, 40:] == 2).all()
    assert (m[:, 10:40] == 1).any()


def test_wheel_zooms_around_cursor_and_ctrl_wheel_sizes_brush(qtbot, canvas: Canvas) -> None:
    from PySide6.QtCore import QPoint as P
    from PySide6.QtGui import QWheelEvent
    from PySide6.QtWidgets import QApplication

    anchor = canvas.image_to_widget(30, 20)
    before_scale = canvas.scale
    ev = QWheelEvent(
        anchor,
        canvas.mapToGlobal(anchor),
        P(0, 0),
        P(0, 120),
        Qt.MouseButton.NoButton,
        Qt.KeyboardModifier.NoModifier,
        Qt.ScrollPhase.NoScrollPhase,
        False,
    )
    QApplication.sendEvent(canvas, ev)
    assert canvas.scale > before_scale
    x, y = canvas.widget_to_image(anchor)
    assert abs(x - 30) < 1e-6 and abs(y - 20) < 1e-6  # the point under the cursor stayed put
    r = canvas.tools.radius
    ev = QWheelEvent(
        anchor,
        canvas.mapToGlobal(anchor),
        P(0, 0),
        P(0, 120),
        Qt.MouseButton.NoButton,
        Qt.KeyboardModifier.ControlModifier,
        Qt.ScrollPhase.NoScrollPhase,
        False,
    )
    QApplication.sendEvent(canvas, ev)
    assert canvas.tools.radius > r


def test_middle_drag_pans_without_painting(qtbot, canvas: Canvas) -> None:
    before = canvas.model.label_map.copy()
    off = QPointF(canvas.offset)
    qtbot.mousePress(canvas, Qt.MouseButton.MiddleButton, pos=QPoint(100, 100))
    qtbot.mouseMove(canvas, QPoint(130, 110))
    qtbot.mouseRelease(canvas, Qt.MouseButton.MiddleButton, pos=QPoint(130, 110))
    assert canvas.offset.x() - off.x() == pytest.approx(30) and canvas.offset.y() - off.y() == pytest.approx(10)
    np.testing.assert_array_equal(canvas.model.label_map, before)


def test_outline_mode_keeps_only_edges(qtbot, canvas: Canvas) -> None:
    canvas.set_outline(True)
    buf = canvas.overlay_buffer
    assert buf[20, 39] == 0 and buf[20, 40] == 2  # the class edge stays
    assert buf[20, 50] == 0  # the inside is transparent
    # an edit updates the outline of the dirty box only, consistently with a full rebuild
    canvas.tools.class_value = 1
    _drag(qtbot, canvas, [canvas.image_to_widget(10, 10).toPoint(), canvas.image_to_widget(20, 12).toPoint()])
    np.testing.assert_array_equal(canvas.overlay_buffer, outline_of(canvas.model.label_map, 0))
    canvas.set_outline(False)
    np.testing.assert_array_equal(canvas.overlay_buffer, canvas.model.label_map)


def test_grab_shows_overlay_colour(qtbot, canvas: Canvas) -> None:
    """The rendered widget really blends the class colour where the mask says so."""
    canvas.set_opacity(1.0)
    img = canvas.grab().toImage()
    p_bg = canvas.image_to_widget(10, 10).toPoint()
    p_cls = canvas.image_to_widget(50, 10).toPoint()
    assert img.pixelColor(p_bg).getRgb()[:3] == (128, 128, 128)
    pal = make_palette()
    assert img.pixelColor(p_cls).getRgb()[:3] == tuple(int(v) for v in pal[2])
    canvas.set_overlay_visible(False)
    img = canvas.grab().toImage()
    assert img.pixelColor(p_cls).getRgb()[:3] == (128, 128, 128)
