"""The smart tools on the canvas: magic wand, superpixel brush and GrabCut.

The algorithms are Qt-free (:mod:`annotation.smart`); here live each tool's
interaction state, the previews, the superpixel cache and the workers. The
wand runs in the GUI thread (~1 ms on 2 megapixels) and its tolerance follows a
sideways drag; superpixels are computed in a worker when the tool is in use and
cached per image content and granularity (a job for another image is cached
under that image's key, never shown on this one); GrabCut runs in a worker and
a result for a cancelled or superseded request is dropped by its request id.
Every result is painted through the document's paint path with the current
class and the class lock, as one undo step, like the fill tool.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from PySide6.QtCore import QObject, QRectF, QRunnable, Qt, QThreadPool, Signal
from PySide6.QtGui import QColor, QImage, QKeyEvent, QMouseEvent, QPainter, QPen, qRgba

from annotation.editing import Box, capsule_region
from annotation.errors import AtrousError
from annotation.smart import SuperpixelMap, as_rgb8, grabcut, load_superpixel_library, superpixels, wand_region

from .tools import Tool

if TYPE_CHECKING:
    from .canvas import Canvas

SMART_TOOLS = (Tool.WAND, Tool.SUPERPIXEL, Tool.GRABCUT)
#: Screen pixels of sideways drag per step of wand tolerance.
WAND_DRAG_PX_PER_STEP = 2.0

SuperpixelKey = tuple[tuple[Any, ...], str]


def image_key(rgb: np.ndarray) -> tuple[Any, ...]:
    """A cheap content key of an image: its shape and a hash of a subsample (about 512x512 pixels)."""
    h, w = rgb.shape[:2]
    step = max(1, max(h, w) // 512)
    digest = hashlib.blake2b(np.ascontiguousarray(rgb[::step, ::step]).tobytes(), digest_size=16).hexdigest()
    return (h, w, digest)


def _pad4(n: int) -> int:
    return (n + 3) // 4 * 4


def mask_qimage(mask: np.ndarray, colours: dict[int, int]) -> tuple[QImage, np.ndarray]:
    """An Indexed8 QImage over a uint8 index map (rows padded to 4 bytes); ``colours`` maps index -> ARGB."""
    h, w = mask.shape
    buf = np.zeros((h, _pad4(w)), np.uint8)
    buf[:, :w] = mask
    img = QImage(buf.data, w, h, buf.shape[1], QImage.Format.Format_Indexed8)
    table = [qRgba(0, 0, 0, 0)] * 256
    for i, argb in colours.items():
        table[i] = argb
    img.setColorTable(table)
    return img, buf


def region_preview(region: np.ndarray, rgb: tuple[int, int, int]) -> tuple[QImage, np.ndarray]:
    """A preview of a bool region: tinted inside, a white line along its 4-neighbour edge."""
    inner = region.copy()
    inner[1:, :] &= region[:-1, :]
    inner[:-1, :] &= region[1:, :]
    inner[:, 1:] &= region[:, :-1]
    inner[:, :-1] &= region[:, 1:]
    index = region.astype(np.uint8) * 2 - inner.astype(np.uint8)  # 2 = edge, 1 = inside
    return mask_qimage(index, {1: qRgba(*rgb, 185), 2: qRgba(255, 255, 255, 255)})


# --------------------------------------------------------------------------- workers


class _Job(QRunnable):
    """Runs ``fn()`` in a pool thread; reports through ``signals`` and never raises into Qt."""

    def __init__(self, token: object, fn: Callable[[], object], signals: _Worker) -> None:
        super().__init__()
        self.setAutoDelete(False)  # the worker keeps it, so it can take it back from the queue
        self.token, self.fn, self.signals = token, fn, signals

    def run(self) -> None:
        try:
            try:
                result = self.fn()
            except Exception as e:  # a worker reports its errors
                self.signals._failed.emit(self.token, str(e) or type(e).__name__)
            else:
                self.signals._done.emit(self.token, result)
        except RuntimeError:  # the receiver is gone (window closed)
            pass


class _Worker(QObject):
    """One background thread running jobs in order; ``done``/``failed`` arrive in the GUI thread.

    Signals:
        done(object, object): token, result.
        failed(object, str): token, message.
    """

    done = Signal(object, object)
    failed = Signal(object, str)
    _done = Signal(object, object)
    _failed = Signal(object, str)

    def __init__(self, parent: QObject) -> None:
        super().__init__(parent)
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(1)
        self.jobs: dict[object, _Job] = {}  # queued or running, by token
        self._done.connect(lambda token, result: (self.jobs.pop(token, None), self.done.emit(token, result)))
        self._failed.connect(lambda token, msg: (self.jobs.pop(token, None), self.failed.emit(token, msg)))

    def start(self, token: object, fn: Callable[[], object]) -> None:
        self.jobs[token] = job = _Job(token, fn, self)
        self._pool.start(job)

    def drop_queued(self, keep: Callable[[object], bool] = lambda token: False) -> None:
        """Take back the jobs not started yet, except those ``keep`` names (a running one finishes)."""
        for token, job in list(self.jobs.items()):
            if not keep(token) and self._pool.tryTake(job):
                del self.jobs[token]

    def shutdown(self) -> None:
        """Drop queued jobs and wait for the running one."""
        self._pool.clear()
        self._pool.waitForDone()
        self.jobs.clear()


class SuperpixelCache(QObject):
    """Superpixel maps per (image content, granularity), computed one at a time in a worker.

    Signals:
        ready(object): the map for that key arrived (it may be for an image no longer shown).
        failed(object, str): computing that key failed.
    """

    ready = Signal(object)
    failed = Signal(object, str)

    def __init__(self, max_items: int = 6, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._worker = _Worker(self)
        self._worker.done.connect(self._on_done)
        self._worker.failed.connect(self.failed)
        self.max_items = max_items
        self._maps: OrderedDict[SuperpixelKey, SuperpixelMap] = OrderedDict()

    def get(self, key: SuperpixelKey) -> SuperpixelMap | None:
        found = self._maps.get(key)
        if found is not None:
            self._maps.move_to_end(key)
        return found

    def pending(self, key: SuperpixelKey) -> bool:
        return key in self._worker.jobs

    def request(self, key: SuperpixelKey, rgb: np.ndarray) -> None:
        """Compute ``key``'s map in the background unless it is cached or on its way.

        Jobs still queued for other images are dropped first: the person moved on.
        """
        if key in self._maps or key in self._worker.jobs:
            return
        self._worker.drop_queued(keep=lambda other: other[0] == key[0])
        granularity = key[1]
        load_superpixel_library()  # here, not first in the worker (see there)
        self._worker.start(key, lambda: superpixels(rgb, granularity))

    def shutdown(self) -> None:
        self._worker.shutdown()

    def _on_done(self, key: SuperpixelKey, result: SuperpixelMap) -> None:
        self._maps[key] = result
        while len(self._maps) > self.max_items:
            self._maps.popitem(last=False)
        self.ready.emit(key)


# --------------------------------------------------------------------------- controller


class SmartTools(QObject):
    """The wand, superpixel brush and GrabCut of one :class:`Canvas`.

    The canvas hands it mouse and key events (``press``/``move``/``release``/
    ``key`` return True when they consumed the event) and calls :meth:`paint`
    at the end of its paint event.
    """

    def __init__(self, canvas: Canvas) -> None:
        super().__init__(canvas)
        self.canvas = canvas
        self.tools = canvas.tools
        self.superpixels = SuperpixelCache(parent=self)
        self.superpixels.ready.connect(self._superpixels_ready)
        self.superpixels.failed.connect(self._superpixels_failed)
        self._gc_worker = _Worker(self)
        self._gc_worker.done.connect(self._grabcut_done)
        self._gc_worker.failed.connect(self._grabcut_failed)
        self.rgb: np.ndarray | None = None
        self._wand_rgb: np.ndarray | None = None
        self.content_key: tuple[Any, ...] | None = None
        self.message = ""  # the last problem to tell the person (shown in the hint line)
        # one preview at a time (wand region or GrabCut cut-out), in image pixels
        self.preview: tuple[Box, np.ndarray] | None = None
        self._preview_img: tuple[QImage, np.ndarray] | None = None
        self._boundary_img: tuple[QImage, np.ndarray] | None = None
        self._boundary_key: SuperpixelKey | None = None
        # wand drag: image point, widget x at the press, tolerance at the press
        self._wand: tuple[float, float, float, int] | None = None
        # superpixel stroke: the previous point and the superpixels painted so far
        self._sp_last: tuple[float, float] | None = None
        self._sp_done: set[int] = set()
        # GrabCut: the box being dragged, the box, strokes, the stroke in progress, the request
        self._gc_drag: tuple[float, float, float, float] | None = None
        self.gc_box: Box | None = None
        self.gc_fg: list[tuple[list[tuple[float, float]], float]] = []
        self.gc_bg: list[tuple[list[tuple[float, float]], float]] = []
        self._gc_stroke: tuple[list[tuple[float, float]], float, bool] | None = None
        self._gc_request = 0
        self.gc_busy = False
        self._gc_accept = False
        self._last_tool = self.tools.tool

    # ------------------------------------------------------------------ state

    @property
    def active(self) -> bool:
        return self.tools.tool in SMART_TOOLS

    def sp_key(self) -> SuperpixelKey | None:
        return None if self.content_key is None else (self.content_key, self.tools.granularity)

    def current_superpixels(self) -> SuperpixelMap | None:
        key = self.sp_key()
        return None if key is None else self.superpixels.get(key)

    def set_image(self, rgb: np.ndarray) -> None:
        """A new image is shown (the canvas's ``set_content``): drop what belonged to the old one."""
        self.finish()
        self.rgb = as_rgb8(rgb)
        self._wand_rgb = None
        self.content_key = image_key(self.rgb)
        self._boundary_img, self._boundary_key = None, None
        self.message = ""
        self._ensure_superpixels()

    def _ensure_superpixels(self) -> None:
        key = self.sp_key()
        if key is None or self.rgb is None:
            return
        if self.tools.tool is Tool.SUPERPIXEL or self.tools.show_superpixels:
            self.superpixels.request(key, self.rgb)

    def tools_changed(self) -> None:
        """The tool or an option changed (the canvas forwards ToolSettings.changed)."""
        tool = self.tools.tool
        if tool != self._last_tool:
            if self._last_tool is Tool.GRABCUT:
                self.cancel_grabcut()
            if self._last_tool is Tool.WAND:
                self._wand = None
                self.set_preview(None)
            if self._last_tool is Tool.SUPERPIXEL:
                self._end_sp_stroke()
            self._last_tool = tool
            self.message = ""
        self._ensure_superpixels()
        self.canvas.update()

    def finish(self) -> None:
        """Close or drop every interaction in progress (before switching images)."""
        self._end_sp_stroke()
        self._wand = None
        self.cancel_grabcut()
        self.set_preview(None)

    def shutdown(self) -> None:
        """Wait for the workers (tests; the pools also wait when destroyed)."""
        self.superpixels.shutdown()
        self._gc_worker.shutdown()

    # ------------------------------------------------------------------ applying

    def _apply(self, box: Box, region: np.ndarray) -> Box | None:
        """Paint ``region`` of ``box`` with the current class through the document's paint path (one step)."""
        model = self.canvas.model
        if model is None:
            return None
        changed = model.doc.paint(box, region, self.tools.paint_value(), only_over=self.tools.only_over())
        # _edited is the model's one place that emits the change, counts editing time and closes the step.
        return model._edited(changed, step=not model.in_stroke)

    def set_preview(self, result: tuple[Box, np.ndarray] | None) -> None:
        old = self.preview
        self.preview = result
        if result is None:
            self._preview_img = None
        else:
            colour = self.canvas._palette[self.tools.paint_value() % 256]
            self._preview_img = region_preview(result[1], tuple(int(v) for v in colour))
        for r in (old, result):
            if r is not None:
                self.canvas.update(self.canvas.image_box_to_widget(r[0]))

    # ------------------------------------------------------------------ mouse

    def press(self, event: QMouseEvent) -> bool:
        if not self.active or self.canvas.model is None or self.rgb is None:
            return False
        x, y = self.canvas.widget_to_image(event.position())
        left = event.button() == Qt.MouseButton.LeftButton
        right = event.button() == Qt.MouseButton.RightButton
        tool = self.tools.tool
        if tool is Tool.WAND and left:
            self._wand = (x, y, event.position().x(), self.tools.wand_tolerance)
            self.set_preview(self._wand_region(x, y))
            return True
        if tool is Tool.SUPERPIXEL and left:
            sp = self.current_superpixels()
            if sp is None:
                self._ensure_superpixels()
                self.message = "superpixels are still being computed"
                self.canvas.update()
                return True
            self.message = ""
            self.canvas.model.begin_stroke()
            self._sp_done = set()
            self._sp_last = (x, y)
            self._sp_segment(sp, x, y, x, y)
            return True
        if tool is Tool.GRABCUT and (left or right):
            if self.gc_box is None:
                if left:
                    self._gc_drag = (x, y, x, y)
                return True
            fg = left and not event.modifiers() & Qt.KeyboardModifier.ShiftModifier
            self._gc_stroke = ([(x, y)], max(self.tools.radius, 1.0), fg)
            self.canvas.update()
            return True
        return False

    def move(self, event: QMouseEvent) -> None:
        x, y = self.canvas.widget_to_image(event.position())
        if self._wand is not None and self.rgb is not None:
            wx, wy, sx, base = self._wand
            tol = base + round((event.position().x() - sx) / WAND_DRAG_PX_PER_STEP)
            if min(max(tol, 0), 255) != self.tools.wand_tolerance:
                self.tools.wand_tolerance = tol
                self.set_preview(self._wand_region(wx, wy))
        elif self._sp_last is not None:
            sp = self.current_superpixels()
            if sp is not None:
                lx, ly = self._sp_last
                self._sp_segment(sp, lx, ly, x, y)
            self._sp_last = (x, y)
        elif self._gc_drag is not None:
            self._gc_drag = (*self._gc_drag[:2], x, y)
            self.canvas.update()
        elif self._gc_stroke is not None:
            self._gc_stroke[0].append((x, y))
            self.canvas.update()

    def release(self, event: QMouseEvent) -> bool:
        if self._wand is not None and event.button() == Qt.MouseButton.LeftButton:
            self._wand = None
            result = self.preview
            self.set_preview(None)
            if result is not None:
                self._apply(*result)
            return True
        if self._sp_last is not None and event.button() == Qt.MouseButton.LeftButton:
            self._end_sp_stroke()
            return True
        if self._gc_drag is not None and event.button() == Qt.MouseButton.LeftButton:
            x, y = self.canvas.widget_to_image(event.position())
            x0, y0 = self._gc_drag[:2]
            self._gc_drag = None
            box = self._pixel_box(x0, y0, x, y)
            if box is None:
                self.message = "drag a box at least 3 pixels wide around the object"
            else:
                self.gc_box = box
                self._run_grabcut()
            self.canvas.update()
            return True
        if self._gc_stroke is not None and event.button() in (Qt.MouseButton.LeftButton, Qt.MouseButton.RightButton):
            points, radius, fg = self._gc_stroke
            self._gc_stroke = None
            (self.gc_fg if fg else self.gc_bg).append((points, radius))
            self._run_grabcut()
            return True
        return False

    def _wand_region(self, x: float, y: float) -> tuple[Box, np.ndarray] | None:
        assert self.rgb is not None
        if self._wand_rgb is None:
            # floodFill wants a writable image; copy a read-only one once per image, not per move
            self._wand_rgb = self.rgb if self.rgb.flags.writeable else self.rgb.copy()
        try:
            return wand_region(self._wand_rgb, x, y, self.tools.wand_tolerance)
        except AtrousError as e:  # shown in the hint line; an event handler must not raise
            self.message = str(e)
            return None

    def _pixel_box(self, xa: float, ya: float, xb: float, yb: float) -> Box | None:
        """The pixels between two editing points, clipped to the image; None when under 3 px a side."""
        h, w = self.canvas.model.shape if self.canvas.model is not None else (0, 0)
        x0, x1 = sorted((math.floor(xa + 0.5), math.floor(xb + 0.5)))
        y0, y1 = sorted((math.floor(ya + 0.5), math.floor(yb + 0.5)))
        box = Box(y0, x0, y1 + 1, x1 + 1).intersection(Box.full((h, w)))
        if box is None or box.width < 3 or box.height < 3:
            return None
        return box

    # ------------------------------------------------------------------ superpixels

    def _sp_segment(self, sp: SuperpixelMap, x0: float, y0: float, x1: float, y1: float) -> None:
        model = self.canvas.model
        if model is None or sp.shape != model.shape:
            return
        hit = capsule_region(x0, y0, x1, y1, max(self.tools.radius, 0.5), model.shape)
        if hit is None:
            return
        ids = [i for i in sp.ids_in(*hit).tolist() if i not in self._sp_done]
        if not ids:
            return
        self._sp_done.update(ids)
        got = sp.region_of(ids)
        if got is not None:
            self._apply(*got)

    def _end_sp_stroke(self) -> None:
        if self._sp_last is None:
            return
        self._sp_last = None
        self._sp_done = set()
        if self.canvas.model is not None:
            self.canvas.model.end_stroke()

    def _superpixels_ready(self, key: SuperpixelKey) -> None:
        if key == self.sp_key():  # a map for another image or granularity is only cached
            if self.message.startswith("superpixels"):
                self.message = ""
            self.canvas.update()

    def _superpixels_failed(self, key: SuperpixelKey, message: str) -> None:
        if key == self.sp_key():
            self.message = f"superpixels failed: {message}"
            self.canvas.update()

    def _boundaries(self) -> QImage | None:
        key = self.sp_key()
        sp = self.current_superpixels()
        if sp is None:
            return None
        if self._boundary_key != key:
            self._boundary_img = mask_qimage(sp.boundaries().astype(np.uint8), {1: qRgba(255, 230, 0, 190)})
            self._boundary_key = key
        return self._boundary_img[0] if self._boundary_img is not None else None

    # ------------------------------------------------------------------ GrabCut

    def _run_grabcut(self) -> None:
        if self.gc_box is None or self.rgb is None:
            return
        self._gc_request += 1
        token = self._gc_request
        rgb, box = self.rgb, self.gc_box
        fg, bg = [(list(p), r) for p, r in self.gc_fg], [(list(p), r) for p, r in self.gc_bg]
        self.gc_busy = True
        self.message = ""
        self._gc_worker.start(token, lambda: grabcut(rgb, box, fg, bg))
        self.canvas.update()

    def _grabcut_done(self, token: int, result: tuple[Box, np.ndarray] | None) -> None:
        if token != self._gc_request:
            return  # cancelled, or a newer request is on its way
        self.gc_busy = False
        self.set_preview(result)
        if result is None:
            self.message = "GrabCut found no object in this box"
        if self._gc_accept:
            self.accept_grabcut()
        self.canvas.update()

    def _grabcut_failed(self, token: int, message: str) -> None:
        if token == self._gc_request:
            self.gc_busy = False
            self._gc_accept = False
            self.message = message
            self.canvas.update()

    def accept_grabcut(self) -> None:
        """Paint the cut-out into the current class (Enter); waits for a result still on its way."""
        if self.gc_busy:
            self._gc_accept = True
            return
        result = self.preview
        self.cancel_grabcut()
        if result is not None:
            self._apply(*result)

    def cancel_grabcut(self) -> None:
        """Forget the box, the strokes and the cut-out (Esc); a running job's result will be dropped."""
        self._gc_request += 1
        self._gc_worker.drop_queued()
        had = self.gc_box is not None or self._gc_drag is not None
        self.gc_box, self.gc_fg, self.gc_bg = None, [], []
        self._gc_drag, self._gc_stroke = None, None
        self.gc_busy, self._gc_accept = False, False
        if self.tools.tool is Tool.GRABCUT or had:
            self.set_preview(None)
        self.canvas.update()

    # ------------------------------------------------------------------ keys

    def key_press(self, event: QKeyEvent) -> bool:
        key = event.key()
        if key in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and self.tools.tool is Tool.GRABCUT and self.gc_box is not None:
            self.accept_grabcut()
            return True
        if key != Qt.Key.Key_Escape:
            return False
        if self._wand is not None:
            self._wand = None
            self.set_preview(None)
            return True
        if self._sp_last is not None and self.canvas.model is not None:
            self._sp_last = None
            self._sp_done = set()
            self.canvas.model.cancel_stroke()
            return True
        if self.tools.tool is Tool.GRABCUT and (self.gc_box is not None or self._gc_drag is not None):
            self.cancel_grabcut()
            return True
        return False

    # ------------------------------------------------------------------ painting

    def _image_rect(self, box: Box) -> QRectF:
        c = self.canvas
        return QRectF(
            c.offset.x() + box.x0 * c.scale, c.offset.y() + box.y0 * c.scale, box.width * c.scale, box.height * c.scale
        )

    def paint(self, p: QPainter) -> None:
        c = self.canvas
        if c.model is None:
            return
        p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)
        if self.tools.show_superpixels:
            img = self._boundaries()
            if img is not None:
                p.drawImage(self._image_rect(Box.full(c.model.shape)), img)
        if self.preview is not None and self._preview_img is not None:
            p.drawImage(self._image_rect(self.preview[0]), self._preview_img[0])
        p.setBrush(Qt.BrushStyle.NoBrush)
        box = self.gc_box
        if self._gc_drag is not None:
            xa, ya, xb, yb = self._gc_drag
            box = self._pixel_box(xa, ya, xb, yb)
        if box is not None and self.tools.tool is Tool.GRABCUT:
            p.setPen(QPen(QColor(255, 255, 255), 1.5, Qt.PenStyle.DashLine))
            p.drawRect(self._image_rect(box))
        strokes = [(s, QColor(60, 220, 90, 150)) for s in self.gc_fg] + [
            (s, QColor(240, 60, 60, 150)) for s in self.gc_bg
        ]
        if self._gc_stroke is not None:
            pts, r, fg = self._gc_stroke
            strokes.append(((pts, r), QColor(60, 220, 90, 150) if fg else QColor(240, 60, 60, 150)))
        for (pts, r), colour in strokes:
            pen = QPen(colour, max(2 * r * c.scale, 2.0))
            pen.setCapStyle(Qt.PenCapStyle.RoundCap)
            p.setPen(pen)
            w = [c.image_to_widget(x, y) for x, y in pts]
            for a, b in zip(w, w[1:] or w):
                p.drawLine(a, b)
        if self.tools.tool is Tool.SUPERPIXEL and c._mouse is not None and c._pan_from is None:
            rr = max(self.tools.radius * c.scale, 1.0)
            p.setPen(QPen(QColor(255, 230, 0), 1))
            p.drawEllipse(c._mouse, rr, rr)
        if self.active:
            self._paint_hint(p)

    def hint(self) -> str:
        """The one-line help shown in the canvas corner for the current smart tool."""
        tool = self.tools.tool
        if tool is Tool.WAND:
            text = f"Magic wand · tolerance {self.tools.wand_tolerance} · drag sideways to change it"
        elif tool is Tool.SUPERPIXEL:
            key = self.sp_key()
            busy = key is not None and self.superpixels.pending(key) and self.superpixels.get(key) is None
            text = f"Superpixels · {self.tools.granularity} (Shift+S) · boundaries V" + (
                " · computing…" if busy else ""
            )
        else:
            if self.gc_box is None:
                text = "GrabCut · drag a box around the object"
            else:
                text = "GrabCut · left-drag: object · right-drag: background · Enter: accept · Esc: cancel"
            if self.gc_busy:
                text += " · working…"
        return f"{text}  —  {self.message}" if self.message else text

    def _paint_hint(self, p: QPainter) -> None:
        text = self.hint()
        fm = p.fontMetrics()
        rect = QRectF(8, 8, fm.horizontalAdvance(text) + 16, fm.height() + 8)
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(QColor(0, 0, 0, 170))
        p.drawRoundedRect(rect, 4, 4)
        p.setPen(QColor(255, 255, 255))
        p.drawText(rect, Qt.AlignmentFlag.AlignCenter, text)
        p.setBrush(Qt.BrushStyle.NoBrush)


__all__ = ["SMART_TOOLS", "SmartTools", "SuperpixelCache", "image_key", "mask_qimage", "region_preview"]
