"""The image view: the photo, the mask overlay, and mouse input turned into paint calls.

Rendering: the RGB image and the overlay are QImages that *wrap numpy
buffers* (no copies). The overlay is an ``Indexed8`` image over a padded
mirror of the label map whose colour table is the class palette (background
transparent), so an edit costs one copy of the dirty box into the mirror (or
an outline recomputation of that box) and a repaint of that box mapped to
widget coordinates. ``paintEvent`` draws only the image pixels under the
exposed rectangle, so a small repaint stays cheap on a 24-megapixel image.

Coordinates follow ``annotation.editing``: pixel ``(r, c)`` is centred at
``(x=c, y=r)``. A widget point ``w`` maps to the continuous image point
``s = (w - offset) / scale`` and to editing coordinates ``s - 0.5``.
"""

from __future__ import annotations

import math

import numpy as np
from PySide6.QtCore import QPoint, QPointF, QRect, QRectF, Qt, Signal
from PySide6.QtGui import (
    QColor,
    QImage,
    QKeyEvent,
    QMouseEvent,
    QPainter,
    QPaintEvent,
    QPen,
    QResizeEvent,
    QWheelEvent,
    qRgba,
)
from PySide6.QtWidgets import QWidget

from annotation.editing import VOID, Box

from .document import MaskDocumentModel
from .smart_tools import SmartTools
from .tools import Tool, ToolSettings

MIN_SCALE = 1 / 64
MAX_SCALE = 64.0
ZOOM_STEP = 1.25


def _pad4(n: int) -> int:
    return (n + 3) // 4 * 4


def rgb_qimage(rgb: np.ndarray) -> tuple[QImage, np.ndarray]:
    """A QImage wrapping an (H, W, 3) uint8 array; returns it with the buffer it wraps.

    Rows are padded to 4 bytes when needed (QImage wants aligned scanlines);
    otherwise the array is wrapped as it is.
    """
    h, w = rgb.shape[:2]
    stride = _pad4(3 * w)
    if stride == 3 * w and rgb.flags.c_contiguous:
        buf = rgb
    else:
        buf = np.zeros((h, stride), np.uint8)
        buf[:, : 3 * w] = rgb.reshape(h, 3 * w)
    return QImage(buf.data, w, h, stride, QImage.Format.Format_RGB888), buf


def outline_of(mask: np.ndarray, transparent: int) -> np.ndarray:
    """``mask`` where a pixel differs from a 4-neighbour, ``transparent`` elsewhere."""
    edge = np.zeros(mask.shape, bool)
    edge[1:, :] |= mask[1:, :] != mask[:-1, :]
    edge[:-1, :] |= mask[:-1, :] != mask[1:, :]
    edge[:, 1:] |= mask[:, 1:] != mask[:, :-1]
    edge[:, :-1] |= mask[:, :-1] != mask[:, 1:]
    return np.where(edge, mask, np.uint8(transparent))


class Canvas(QWidget):
    """Shows one image with its mask and edits the mask with the current tool.

    Signals:
        cursorMoved(int, int): image pixel under the mouse (-1, -1 when outside).
        viewChanged(): zoom or pan changed.
        reviewRequested(): Space was tapped (not used to pan).
    """

    cursorMoved = Signal(int, int)
    viewChanged = Signal()
    reviewRequested = Signal()

    def __init__(self, tools: ToolSettings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.tools = tools
        self.setMouseTracking(True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)
        self.setMinimumSize(200, 150)
        self.setCursor(Qt.CursorShape.CrossCursor)
        self.model: MaskDocumentModel | None = None
        self._image: QImage | None = None
        self._image_buf: np.ndarray | None = None
        self._overlay: QImage | None = None
        self._mirror: np.ndarray | None = None
        self._palette = np.zeros((256, 3), np.uint8)
        self._transparent: int = 0
        self.scale = 1.0
        self.offset = QPointF(0, 0)
        self.overlay_visible = True
        self.opacity = 0.5
        self.outline = False
        #: Repaint synchronously on each edit (benchmarks); normally Qt coalesces update()s.
        self.repaint_immediately = False
        self._fit_pending = True
        self._auto_fit = True
        # interaction state
        self._last_img: tuple[float, float] | None = None  # brush: previous point of the stroke
        self._stroking = False
        self._pan_from: QPointF | None = None
        self._space_down = False
        self._space_used = False
        self._mouse: QPointF | None = None
        self.polygon_points: list[tuple[float, float]] = []
        # low-confidence overlay: pixels of the last pre-label the model was unsure of
        self._confidence: np.ndarray | None = None
        self._conf_buf: np.ndarray | None = None
        self._conf_image: QImage | None = None
        self.confidence_visible = False
        self.confidence_threshold = 128  # 0..255: pixels below are marked
        self.smart = SmartTools(self)  # magic wand, superpixel brush, GrabCut
        tools.changed.connect(self._tools_changed)

    # ------------------------------------------------------------------ content

    @property
    def image_size(self) -> tuple[int, int]:
        """(width, height) of the shown image, (0, 0) when none."""
        if self.model is None:
            return (0, 0)
        h, w = self.model.shape
        return (w, h)

    def set_content(
        self,
        rgb: np.ndarray,
        model: MaskDocumentModel,
        palette: np.ndarray,
        transparent: int = 0,
        *,
        keep_view: bool = False,
    ) -> None:
        """Show ``rgb`` with the mask of ``model``; ``palette`` is (256, 3); ``transparent`` is not drawn."""
        if rgb.shape[:2] != model.shape:
            raise ValueError(f"image {rgb.shape[:2]} and mask {model.shape} differ in size")
        self._detach_model()
        self.model = model
        model.changed.connect(self._model_changed)
        self._image, self._image_buf = rgb_qimage(rgb)
        h, w = model.shape
        self._mirror = np.zeros((h, _pad4(w)), np.uint8)
        self._overlay = QImage(self._mirror.data, w, h, self._mirror.shape[1], QImage.Format.Format_Indexed8)
        self._palette = np.asarray(palette, np.uint8).copy()
        self._transparent = int(transparent)
        self._apply_colour_table()
        self._rebuild_overlay(None)
        self._confidence = None
        self._rebuild_confidence()
        self.polygon_points = []
        self.smart.set_image(rgb)
        if not keep_view or self._fit_pending:
            self.fit()
        self.update()

    def clear(self) -> None:
        """Show no image (the shown one left the project)."""
        self._detach_model()
        self.model = None
        self._image = self._image_buf = self._overlay = self._mirror = None
        self._confidence = self._conf_buf = self._conf_image = None
        self._fit_pending = True
        self.update()

    def _detach_model(self) -> None:
        """Finish what was being drawn on the shown mask and stop following its changes."""
        if self.model is not None:
            self._finish_interaction()
            try:
                self.model.changed.disconnect(self._model_changed)
            except (RuntimeError, TypeError):
                pass

    def set_palette(self, palette: np.ndarray, transparent: int | None = None) -> None:
        """Change class colours (e.g. after a recolour) and repaint."""
        self._palette = np.asarray(palette, np.uint8).copy()
        if transparent is not None and transparent != self._transparent:
            self._transparent = int(transparent)
            self._rebuild_overlay(None)
        self._apply_colour_table()
        self.update()

    def _apply_colour_table(self) -> None:
        if self._overlay is None:
            return
        table = [qRgba(int(r), int(g), int(b), 255) for r, g, b in self._palette]
        table[self._transparent] = qRgba(0, 0, 0, 0)
        self._overlay.setColorTable(table)

    def set_overlay_visible(self, on: bool) -> None:
        self.overlay_visible = bool(on)
        self.update()

    def set_opacity(self, opacity: float) -> None:
        self.opacity = float(min(max(opacity, 0.0), 1.0))
        self.update()

    def set_outline(self, on: bool) -> None:
        if bool(on) != self.outline:
            self.outline = bool(on)
            self._rebuild_overlay(None)
            self.update()

    # ---- confidence

    def set_confidence(self, confidence: np.ndarray | None) -> None:
        """The confidence map (uint8, 255 = certain) of the shown image's pre-label, or None."""
        if confidence is not None and (self.model is None or confidence.shape != self.model.shape):
            confidence = None  # a map for another size (the mask was replaced): not shown
        self._confidence = None if confidence is None else np.asarray(confidence, np.uint8)
        self._rebuild_confidence()
        self.update()

    def set_confidence_visible(self, on: bool) -> None:
        self.confidence_visible = bool(on)
        self.update()

    def set_confidence_threshold(self, threshold: int) -> None:
        """Mark pixels whose confidence is below ``threshold`` (0..255)."""
        self.confidence_threshold = int(min(max(threshold, 0), 255))
        self._rebuild_confidence()
        self.update()

    @property
    def has_confidence(self) -> bool:
        return self._confidence is not None

    @property
    def confidence_buffer(self) -> np.ndarray | None:
        """The low-confidence marks (0 = none, 1/2 = hatch stripes), without row padding; for tests."""
        if self._conf_buf is None or self._confidence is None:
            return None
        return self._conf_buf[:, : self._confidence.shape[1]]

    def _rebuild_confidence(self) -> None:
        conf = self._confidence
        if conf is None:
            self._conf_buf, self._conf_image = None, None
            return
        h, w = conf.shape
        buf = np.zeros((h, _pad4(w)), np.uint8)
        low = conf < self.confidence_threshold
        # Diagonal hatching in image pixels: two alternating tints, so the marks
        # read as "unsure" and never as another class colour.
        yy, xx = np.ogrid[:h, :w]
        stripe = np.where((xx + yy) % 6 < 2, 1, 2).astype(np.uint8)
        buf[:, :w] = np.where(low, stripe, 0)
        img = QImage(buf.data, w, h, buf.shape[1], QImage.Format.Format_Indexed8)
        table = [qRgba(0, 0, 0, 0)] * 256
        table[1] = qRgba(255, 0, 200, 165)  # the stripes
        table[2] = qRgba(255, 0, 200, 35)  # a faint tint between them keeps the area readable as one
        img.setColorTable(table)
        self._conf_buf, self._conf_image = buf, img

    @property
    def overlay_buffer(self) -> np.ndarray | None:
        """The overlay's index buffer (without row padding); for tests and tools."""
        if self._mirror is None or self.model is None:
            return None
        return self._mirror[:, : self.model.shape[1]]

    def _rebuild_overlay(self, box: Box | None) -> None:
        """Copy (or outline) the mask into the overlay buffer, inside ``box`` or everywhere."""
        if self.model is None or self._mirror is None:
            return
        mask = self.model.label_map
        h, w = mask.shape
        if box is None:
            box = Box.full(mask.shape)
        if not self.outline:
            self._mirror[box.slices] = mask[box.slices]
            return
        # An outline pixel depends on its neighbours: recompute one pixel beyond the box.
        ext = Box(max(box.y0 - 1, 0), max(box.x0 - 1, 0), min(box.y1 + 1, h), min(box.x1 + 1, w))
        big = Box(max(ext.y0 - 1, 0), max(ext.x0 - 1, 0), min(ext.y1 + 1, h), min(ext.x1 + 1, w))
        out = outline_of(mask[big.slices], self._transparent)
        self._mirror[ext.slices] = out[big.offset(ext).slices]

    def _model_changed(self, box: Box) -> None:
        self.refresh_box(box, immediate=self.repaint_immediately)

    def refresh_box(self, box: Box, *, immediate: bool = False) -> QRect:
        """Update the overlay inside ``box`` and repaint its widget rectangle; returns that rectangle."""
        self._rebuild_overlay(box)
        rect = self.image_box_to_widget(box)
        if immediate:
            self.repaint(rect)
        else:
            self.update(rect)
        return rect

    def refresh_all(self, *, immediate: bool = False) -> None:
        """Rebuild the whole overlay and repaint everything (the slow path, for comparison)."""
        self._rebuild_overlay(None)
        if immediate:
            self.repaint()
        else:
            self.update()

    # ------------------------------------------------------------------ view

    def widget_to_image(self, pos: QPointF | QPoint) -> tuple[float, float]:
        """Editing coordinates (pixel centres on integers) of a widget point."""
        p = QPointF(pos)
        return ((p.x() - self.offset.x()) / self.scale - 0.5, (p.y() - self.offset.y()) / self.scale - 0.5)

    def image_to_widget(self, x: float, y: float) -> QPointF:
        """Widget point of editing coordinates ``(x, y)`` (a pixel centre for integers)."""
        return QPointF((x + 0.5) * self.scale + self.offset.x(), (y + 0.5) * self.scale + self.offset.y())

    def image_box_to_widget(self, box: Box) -> QRect:
        """The widget rectangle covering an image box (rounded outwards, plus a pixel of margin)."""
        x0 = math.floor(box.x0 * self.scale + self.offset.x()) - 1
        y0 = math.floor(box.y0 * self.scale + self.offset.y()) - 1
        x1 = math.ceil(box.x1 * self.scale + self.offset.x()) + 1
        y1 = math.ceil(box.y1 * self.scale + self.offset.y()) + 1
        return QRect(x0, y0, x1 - x0, y1 - y0).intersected(self.rect())

    def fit(self) -> None:
        """Zoom so the whole image fits the widget, centred."""
        w, h = self.image_size
        if not w or not h or self.width() <= 1 or self.height() <= 1:
            self._fit_pending = True
            return
        self._fit_pending = False
        s = min(self.width() / w, self.height() / h) * 0.98
        self._set_view(s, QPointF((self.width() - w * s) / 2, (self.height() - h * s) / 2))
        self._auto_fit = True  # keep fitting on resize until the person zooms or pans

    def actual_size(self) -> None:
        """1:1 zoom around the widget centre."""
        self.zoom_to(1.0, QPointF(self.width() / 2, self.height() / 2))

    def zoom_to(self, scale: float, anchor: QPointF) -> None:
        """Set the zoom keeping the image point under ``anchor`` (widget coords) in place."""
        self._auto_fit = False
        scale = min(max(scale, MIN_SCALE), MAX_SCALE)
        sx = (anchor.x() - self.offset.x()) / self.scale
        sy = (anchor.y() - self.offset.y()) / self.scale
        self._set_view(scale, QPointF(anchor.x() - sx * scale, anchor.y() - sy * scale))

    def zoom_by(self, factor: float, anchor: QPointF | None = None) -> None:
        self.zoom_to(self.scale * factor, anchor or QPointF(self.width() / 2, self.height() / 2))

    def _set_view(self, scale: float, offset: QPointF) -> None:
        self.scale = float(scale)
        self.offset = QPointF(offset)
        self.update()
        self.viewChanged.emit()

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        if self._fit_pending or self._auto_fit:
            self.fit()

    # ------------------------------------------------------------------ painting

    def paintEvent(self, event: QPaintEvent) -> None:
        p = QPainter(self)
        r = event.rect()
        p.fillRect(r, QColor(48, 48, 52))
        if self._image is not None and self.model is not None:
            w, h = self.image_size
            # Only the image pixels under the exposed rectangle are drawn.
            x0 = max(math.floor((r.left() - self.offset.x()) / self.scale) - 1, 0)
            y0 = max(math.floor((r.top() - self.offset.y()) / self.scale) - 1, 0)
            x1 = min(math.ceil((r.right() + 1 - self.offset.x()) / self.scale) + 1, w)
            y1 = min(math.ceil((r.bottom() + 1 - self.offset.y()) / self.scale) + 1, h)
            if x1 > x0 and y1 > y0:
                src = QRectF(x0, y0, x1 - x0, y1 - y0)
                dst = QRectF(
                    self.offset.x() + x0 * self.scale,
                    self.offset.y() + y0 * self.scale,
                    (x1 - x0) * self.scale,
                    (y1 - y0) * self.scale,
                )
                p.setClipRect(r)
                # Crisp pixels when zoomed in; smoothing only helps when shrinking.
                p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, self.scale < 1.0)
                p.drawImage(dst, self._image, src)
                if self.overlay_visible and self._overlay is not None:
                    p.setOpacity(1.0 if self.outline else self.opacity)
                    p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)
                    p.drawImage(dst, self._overlay, src)
                    p.setOpacity(1.0)
                if self.confidence_visible and self._conf_image is not None:
                    p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)
                    p.drawImage(dst, self._conf_image, src)
        self._paint_tool(p)
        p.end()

    def _paint_tool(self, p: QPainter) -> None:
        p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        if self.polygon_points:
            pts = [self.image_to_widget(x, y) for x, y in self.polygon_points]
            if self._mouse is not None:
                pts.append(self._mouse)
            p.setPen(QPen(QColor(255, 255, 255), 1.5, Qt.PenStyle.DashLine))
            for a, b in zip(pts, pts[1:]):
                p.drawLine(a, b)
            p.setPen(QPen(QColor(255, 220, 0), 1))
            for a in pts[: len(self.polygon_points)]:
                p.drawEllipse(a, 3, 3)
        if self._mouse is not None and self.tools.tool in (Tool.BRUSH, Tool.ERASER) and self._pan_from is None:
            rr = self._brush_screen_radius()
            p.setBrush(Qt.BrushStyle.NoBrush)
            p.setPen(QPen(QColor(0, 0, 0), 3))
            p.drawEllipse(self._mouse, rr, rr)
            p.setPen(QPen(QColor(255, 255, 255), 1))
            p.drawEllipse(self._mouse, rr, rr)
        self.smart.paint(p)

    def _brush_screen_radius(self) -> float:
        return max(self.tools.radius * self.scale, 1.0)

    def _cursor_rect(self, pos: QPointF | None) -> QRect:
        if pos is None:
            return QRect()
        rr = math.ceil(self._brush_screen_radius()) + 4
        return QRect(int(pos.x()) - rr, int(pos.y()) - rr, 2 * rr + 1, 2 * rr + 1)

    def _tools_changed(self) -> None:
        if self.tools.tool is not Tool.POLYGON and self.polygon_points:
            self.polygon_points = []
            self.update()
        else:
            self.update(self._cursor_rect(self._mouse))
        self.smart.tools_changed()

    # ------------------------------------------------------------------ mouse

    def _editable(self) -> bool:
        return self.model is not None

    def mousePressEvent(self, event: QMouseEvent) -> None:
        pos = event.position()
        if event.button() == Qt.MouseButton.MiddleButton or (
            event.button() == Qt.MouseButton.LeftButton and self._space_down
        ):
            self._pan_from = pos
            self._space_used = True
            self.setCursor(Qt.CursorShape.ClosedHandCursor)
            return
        if self.smart.press(event):
            return
        if event.button() != Qt.MouseButton.LeftButton or not self._editable():
            return
        x, y = self.widget_to_image(pos)
        tool = self.tools.tool
        assert self.model is not None
        if event.modifiers() & Qt.KeyboardModifier.ControlModifier and tool in (Tool.BRUSH, Tool.FILL):
            # Click-to-accept: the whole connected pre-label region becomes the current class.
            self.model.accept_region(x, y, self.tools.class_value, only_over=self.tools.only_over())
            return
        if tool in (Tool.BRUSH, Tool.ERASER):
            self.model.begin_stroke()
            self._stroking = True
            self._last_img = (x, y)
            self.model.brush_segment(
                x, y, x, y, self.tools.radius, self.tools.paint_value(), only_over=self.tools.only_over()
            )
        elif tool is Tool.FILL:
            self.model.fill(x, y, self.tools.paint_value(), only_over=self.tools.only_over())
        elif tool is Tool.POLYGON:
            self.polygon_points.append((x, y))
            self.update()

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        pos = event.position()
        old = self._mouse
        self._mouse = QPointF(pos)
        if self._pan_from is not None:
            d = pos - self._pan_from
            self._pan_from = QPointF(pos)
            self._auto_fit = False
            self._set_view(self.scale, self.offset + d)
            return
        x, y = self.widget_to_image(pos)
        if self._stroking and self.model is not None and self._last_img is not None:
            lx, ly = self._last_img
            self.model.brush_segment(
                lx, ly, x, y, self.tools.radius, self.tools.paint_value(), only_over=self.tools.only_over()
            )
            self._last_img = (x, y)
        self.smart.move(event)
        w, h = self.image_size
        ix, iy = round(x), round(y)
        self.cursorMoved.emit(*((ix, iy) if 0 <= ix < w and 0 <= iy < h else (-1, -1)))
        if self.polygon_points:
            self.update()
        else:
            self.update(self._cursor_rect(old).united(self._cursor_rect(self._mouse)))

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if self._pan_from is not None and event.button() in (Qt.MouseButton.MiddleButton, Qt.MouseButton.LeftButton):
            self._pan_from = None
            self.setCursor(Qt.CursorShape.OpenHandCursor if self._space_down else Qt.CursorShape.CrossCursor)
            return
        if self.smart.release(event):
            return
        if event.button() == Qt.MouseButton.LeftButton and self._stroking:
            self._end_stroke()

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:
        # The first click of the pair already added the vertex; the second closes the polygon.
        if self.tools.tool is Tool.POLYGON and event.button() == Qt.MouseButton.LeftButton:
            self.finish_polygon()
        else:
            self.mousePressEvent(event)

    def leaveEvent(self, event) -> None:
        old, self._mouse = self._mouse, None
        self.update(self._cursor_rect(old))
        self.cursorMoved.emit(-1, -1)
        super().leaveEvent(event)

    def wheelEvent(self, event: QWheelEvent) -> None:
        steps = event.angleDelta().y() / 120.0
        if not steps:
            return
        if event.modifiers() & Qt.KeyboardModifier.ControlModifier:
            self.tools.grow(1 if steps > 0 else -1)
            self.update(self._cursor_rect(self._mouse))
        else:
            self.zoom_to(self.scale * ZOOM_STEP**steps, event.position())
        event.accept()

    def _end_stroke(self) -> None:
        self._stroking = False
        self._last_img = None
        if self.model is not None:
            self.model.end_stroke()

    def _finish_interaction(self) -> None:
        """Close a stroke in progress and drop a half-drawn polygon (before switching images)."""
        if self._stroking:
            self._end_stroke()
        self.polygon_points = []
        self._pan_from = None
        self.smart.finish()

    # ------------------------------------------------------------------ polygon

    def finish_polygon(self) -> None:
        """Fill the polygon drawn so far with the current class (needs 3 vertices)."""
        pts, self.polygon_points = self.polygon_points, []
        if len(pts) >= 3 and self.model is not None:
            self.model.polygon(pts, self.tools.paint_value(), only_over=self.tools.only_over())
        self.update()

    def cancel_polygon(self) -> None:
        self.polygon_points = []
        self.update()

    # ------------------------------------------------------------------ keys

    def keyPressEvent(self, event: QKeyEvent) -> None:
        key = event.key()
        if key == Qt.Key.Key_Space:
            if not event.isAutoRepeat():
                self._space_down = True
                self._space_used = False
                self.setCursor(Qt.CursorShape.OpenHandCursor)
            return
        if self.smart.key_press(event):
            return
        if key in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and self.polygon_points:
            self.finish_polygon()
            return
        if key == Qt.Key.Key_Escape:
            if self.polygon_points:
                self.cancel_polygon()
            elif self._stroking and self.model is not None:
                self._stroking = False
                self._last_img = None
                self.model.cancel_stroke()
            return
        super().keyPressEvent(event)

    def keyReleaseEvent(self, event: QKeyEvent) -> None:
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space_down = False
            self.setCursor(Qt.CursorShape.CrossCursor)
            if not self._space_used:
                self.reviewRequested.emit()
            return
        super().keyReleaseEvent(event)

    def current_class_at(self, x: int, y: int) -> int | None:
        """The class index at image pixel (x, y), or None outside the image."""
        if self.model is None:
            return None
        h, w = self.model.shape
        if 0 <= x < w and 0 <= y < h:
            return int(self.model.label_map[y, x])
        return None


__all__ = ["Canvas", "outline_of", "rgb_qimage", "VOID"]
