"""Brush latency, undo memory and open time of the editor on a 6000x4000 image.

Measured in one run, against a baseline from the same run:

* **segment**: one brush segment (radius 20 px, 10 px long) through the real
  path: ``MaskDocumentModel.brush_segment`` -> ``changed`` signal -> the
  canvas copies the dirty box into its overlay and repaints that widget
  rectangle synchronously (``repaint(rect)``; offscreen platform).
* **full repaint**: the same edit followed by rebuilding the whole overlay and
  repainting the whole widget (what a canvas without dirty rectangles does).
* **undo**: bytes held by the history after 1,000 strokes (radius 20 px,
  200 px long, each 20 segments in one undo step).
* **open**: decode a 24-megapixel JPEG and its mask PNG, build the document,
  show it on the canvas and paint the window once.

Run: ``.venv/bin/python bench/brush_latency.py`` (prints details, then one summary line).
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from PySide6.QtCore import QPointF  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from annotation.editing import MaskDocument  # noqa: E402
from annotation.masks import make_palette, write_mask_png  # noqa: E402
from gui.canvas import Canvas  # noqa: E402
from gui.document import MaskDocumentModel  # noqa: E402
from gui.tools import ToolSettings  # noqa: E402
from gui.workers import LoadRequest, decode  # noqa: E402

W, H = 6000, 4000


class CountingCanvas(Canvas):
    """The real canvas, counting paint events so the benchmark can prove it repainted."""

    paints = 0

    def paintEvent(self, event) -> None:
        CountingCanvas.paints += 1
        super().paintEvent(event)


def make_scene() -> tuple[np.ndarray, np.ndarray]:
    """A smooth synthetic photo and a blocky 4-class mask, 6000x4000."""
    yy = np.linspace(0, 1, H, dtype=np.float32)[:, None]
    xx = np.linspace(0, 1, W, dtype=np.float32)[None, :]
    rgb = np.empty((H, W, 3), np.uint8)
    rgb[..., 0] = (128 + 100 * np.sin(xx * 17 + yy * 5)).astype(np.uint8)
    rgb[..., 1] = (128 + 100 * np.cos(yy * 23)).astype(np.uint8)
    rgb[..., 2] = (255 * xx * yy).astype(np.uint8)
    mask = np.zeros((H, W), np.uint8)
    mask[500:2500, 1000:3000] = 1
    mask[2000:3800, 3500:5500] = 2
    mask[100:900, 4000:5900] = 3
    return rgb, mask


def p95(values: list[float]) -> float:
    return float(np.percentile(np.asarray(values), 95))


def bench_segments(
    app: QApplication, canvas: Canvas, model: MaskDocumentModel, scale: float, n: int = 300
) -> tuple[list[float], list[float]]:
    canvas.zoom_to(scale, QPointF(canvas.width() / 2, canvas.height() / 2))
    app.processEvents()
    canvas.repaint_immediately = True
    # Stay inside the visible part of the image so every repaint really draws pixels.
    x0, y0 = canvas.widget_to_image(QPointF(100, 100))
    x1, y1 = canvas.widget_to_image(QPointF(canvas.width() - 100, canvas.height() - 100))
    x0, y0, x1, y1 = max(x0, 30), max(y0, 30), min(x1, W - 30), min(y1, H - 30)
    rng = np.random.default_rng(1)
    seg, full = [], []
    x, y = (x0 + x1) / 2, (y0 + y1) / 2
    CountingCanvas.paints = 0
    changed = 0
    model.begin_stroke()
    for i in range(n):
        a = rng.uniform(0, 2 * math.pi)
        nx = min(max(x + 10 * math.cos(a), x0), x1)
        ny = min(max(y + 10 * math.sin(a), y0), y1)
        value = 1 + (i // 50) % 3
        t = time.perf_counter()
        changed += model.brush_segment(x, y, nx, ny, 20, value) is not None
        seg.append(time.perf_counter() - t)
        x, y = nx, ny
    model.end_stroke()
    canvas.repaint_immediately = False
    assert CountingCanvas.paints >= changed > n // 2, (CountingCanvas.paints, changed)
    for i in range(max(n // 6, 20)):
        a = rng.uniform(0, 2 * math.pi)
        nx = min(max(x + 10 * math.cos(a), x0), x1)
        ny = min(max(y + 10 * math.sin(a), y0), y1)
        t = time.perf_counter()
        model.doc.brush_segment(x, y, nx, ny, 20, 1 + i % 3)
        canvas.refresh_all(immediate=True)
        full.append(time.perf_counter() - t)
        x, y = nx, ny
    return seg, full


def bench_undo(mask: np.ndarray) -> float:
    doc = MaskDocument(mask, max_steps=1000, max_bytes=1 << 40)
    rng = np.random.default_rng(2)
    for i in range(1000):
        x, y = rng.uniform(250, W - 250), rng.uniform(250, H - 250)
        a = rng.uniform(0, 2 * math.pi)
        dx, dy = 10 * math.cos(a), 10 * math.sin(a)
        with doc.stroke():
            for k in range(20):
                doc.brush_segment(x + k * dx, y + k * dy, x + (k + 1) * dx, y + (k + 1) * dy, 20, 4 + i % 4)
    assert doc.history.undo_steps == 1000, doc.history.undo_steps
    return doc.history.nbytes / 2**20


def bench_open(app: QApplication, canvas: Canvas, folder: Path, rgb: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    img_path, mask_path = folder / "big.jpg", folder / "big_mask.png"
    Image.fromarray(rgb).save(img_path, quality=90)
    write_mask_png(mask_path, mask, make_palette())
    times: dict[str, list[float]] = {"decode": [], "document": [], "show": [], "total": []}
    for _ in range(3):
        t0 = time.perf_counter()
        d = decode(LoadRequest(1, img_path, mask_path))
        t1 = time.perf_counter()
        model = MaskDocumentModel(1, d.mask)
        t2 = time.perf_counter()
        canvas.set_content(d.rgb, model, make_palette(), 0)
        canvas.repaint()
        t3 = time.perf_counter()
        for k, v in (("decode", t1 - t0), ("document", t2 - t1), ("show", t3 - t2), ("total", t3 - t0)):
            times[k].append(v)
    return {k: min(v) * 1000 for k, v in times.items()}


def main() -> int:
    app = QApplication.instance() or QApplication(sys.argv[:1])
    rgb, mask = make_scene()
    tools = ToolSettings()
    canvas = CountingCanvas(tools)
    canvas.resize(1600, 1000)
    canvas.show()
    from PySide6.QtTest import QTest

    QTest.qWaitForWindowExposed(canvas)
    with tempfile.TemporaryDirectory() as tmp:
        opened = bench_open(app, canvas, Path(tmp), rgb, mask)
    print(
        f"open 24MP: decode JPEG+mask {opened['decode']:.0f} ms, document {opened['document']:.0f} ms, "
        f"show {opened['show']:.0f} ms, total {opened['total']:.0f} ms (best of 3)"
    )
    model = canvas.model
    assert model is not None
    results = {}
    for scale in (1.0, 0.25, 4.0):
        seg, full = bench_segments(app, canvas, model, scale)
        results[scale] = (p95(seg) * 1000, float(np.median(full)) * 1000, float(np.median(seg)) * 1000)
        print(
            f"zoom {scale:>4}: segment p95 {results[scale][0]:.2f} ms (median {results[scale][2]:.2f}), "
            f"full overlay repaint median {results[scale][1]:.1f} ms"
        )
    undo_mb = bench_undo(mask)
    print(f"undo: 1000 strokes (r=20 px, 200 px long) hold {undo_mb:.1f} MB of history")
    seg_p95, full_med, seg_med = results[1.0]
    ratio = full_med / max(seg_med, 1e-9)
    print(
        f"brush: p95 {seg_p95:.2f} ms per segment, {ratio:.0f}x faster than full repaint; "
        f"undo 1000 strokes {undo_mb:.1f} MB; open 24MP {opened['total']:.0f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
