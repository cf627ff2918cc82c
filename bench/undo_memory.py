"""Benchmark the mask editor's paint ops and undo memory on a 6000x4000 label map.

Run from the project root:  python bench/undo_memory.py

Prints absolute figures and ratios against baselines measured in the same run:
patch-based undo against full-mask copies (labelme style), and the row-interval
brush against a per-pixel distance brush.
"""

from __future__ import annotations

import gc
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from annotation.editing import Box, MaskDocument, brush_segment, fill, paint_region

H, W = 4000, 6000


def blobby_map(rng: np.random.Generator) -> np.ndarray:
    """Smooth multi-class map like a pre-label: ~100 overlapping thick strokes on background."""
    labels = np.zeros((H, W), dtype=np.uint8)
    for _ in range(100):
        x, y = rng.uniform(0, W), rng.uniform(0, H)
        brush_segment(
            labels,
            x,
            y,
            x + rng.uniform(-800, 800),
            y + rng.uniform(-800, 800),
            rng.uniform(20, 120),
            int(rng.integers(1, 6)),
        )
    return labels


def bench_fill(rng: np.random.Generator) -> None:
    print("fill on 6000x4000 (best of 3, includes the write):")
    cases: list[tuple[str, np.ndarray]] = []
    cases.append(("uniform map, whole image", np.zeros((H, W), dtype=np.uint8)))
    ob = np.zeros((H, W), dtype=np.uint8)
    ob[1000:3000, 2000:2600] = 3
    cases.append(("whole image around an obstacle", ob))
    cases.append(("background of a blobby pre-label", blobby_map(rng)))
    sp = np.zeros((H, W), dtype=np.uint8)
    sp[rng.random((H, W)) < 0.05] = 1
    cases.append(("5% salt noise (speckled, ~1M runs)", sp))
    camvid = Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid_small" / "train" / "labels"
    real = sorted(camvid.glob("*.png"))
    if real:
        from PIL import Image

        from annotation.masks import read_mask_png

        small = read_mask_png(real[0])  # 480x360 CamVid label, upscaled like a pre-label
        big = np.array(Image.fromarray(small).resize((W, H), Image.NEAREST))
        cls = int(np.bincount(big.ravel()).argmax())  # its largest class (road or sky)
        cases.append((f"CamVid label x12.5, class {cls}", np.where(big == cls, 0, np.where(big == 0, cls, big))))
    for name, labels in cases:
        y, x = map(int, np.argwhere(labels == 0)[0])

        def run(labels: np.ndarray = labels, x: int = x, y: int = y) -> None:
            work = labels.copy()
            t = time.perf_counter()
            res = fill(work, x, y, 9)
            run.dt = time.perf_counter() - t
            run.count = res.count if res else 0

        best = float("inf")
        for _ in range(3):
            run()
            best = min(best, run.dt)
        print(f"  {name:40s} {best * 1000:8.1f} ms   ({run.count / 1e6:.1f} Mpx filled)")


def dense_brush(labels: np.ndarray, x0: float, y0: float, x1: float, y1: float, r: float, value: int) -> None:
    """Baseline brush: a float distance for every pixel of the segment's box."""
    ya, yb = max(int(np.ceil(min(y0, y1) - r)), 0), min(int(np.floor(max(y0, y1) + r)), H - 1) + 1
    xa, xb = max(int(np.ceil(min(x0, x1) - r)), 0), min(int(np.floor(max(x0, x1) + r)), W - 1) + 1
    yy, xx = np.mgrid[ya:yb, xa:xb].astype(np.float64)
    dx, dy = x1 - x0, y1 - y0
    l2 = dx * dx + dy * dy
    t = np.clip(((xx - x0) * dx + (yy - y0) * dy) / l2, 0, 1) if l2 else 0.0
    region = (xx - x0 - t * dx) ** 2 + (yy - y0 - t * dy) ** 2 <= r * r
    paint_region(labels, Box(ya, xa, yb, xb), region, value)


def bench_brush(rng: np.random.Generator) -> None:
    print("brush segment, radius 20, on 6000x4000 (mean per call):")
    labels = blobby_map(rng)
    for length, n in ((20, 3000), (200, 1000), (2000, 100)):
        starts = rng.uniform([100, 100], [W - 2100, H - 2100], size=(n, 2))
        angles = rng.uniform(0, 2 * np.pi, size=n)
        ends = starts + length * np.stack([np.cos(angles), np.sin(angles)], axis=1)
        for name, op in (("row intervals", brush_segment), ("per-pixel distance baseline", dense_brush)):
            work = labels.copy()
            t = time.perf_counter()
            for (x0, y0), (x1, y1), v in zip(starts, ends, rng.integers(1, 6, size=n)):
                op(work, x0, y0, x1, y1, 20.0, int(v))
            dt = (time.perf_counter() - t) / n
            if name == "row intervals":
                ours = dt
                print(f"  {length:5d} px segment: {dt * 1e6:8.1f} us", end="")
            else:
                print(f"   (baseline {dt * 1e6:8.1f} us, ratio {dt / ours:4.1f}x)")


def bench_undo_memory(rng: np.random.Generator) -> None:
    print("undo memory, 1000 strokes (radius 20, 200 px, 10 mouse events each) on 6000x4000:")
    doc = MaskDocument(blobby_map(rng))
    gc.collect()
    tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    t_ops = t_end = 0.0
    for _ in range(1000):
        x, y = rng.uniform(300, W - 300), rng.uniform(300, H - 300)
        a = rng.uniform(0, 2 * np.pi)
        value = int(rng.integers(0, 6))
        doc.begin_stroke()
        t = time.perf_counter()
        for _ in range(10):
            nx, ny = x + 20 * np.cos(a), y + 20 * np.sin(a)
            doc.brush_segment(x, y, nx, ny, 20.0, value)
            x, y = nx, ny
        t_ops += time.perf_counter() - t
        t = time.perf_counter()
        doc.end_stroke()
        t_end += time.perf_counter() - t
    gc.collect()
    used, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    full_copies = 1000 * doc.label_map.nbytes
    print(f"  history.nbytes      {doc.history.nbytes / 2**20:8.2f} MB ({doc.history.undo_steps} steps)")
    print(f"  tracemalloc growth  {(used - base) / 2**20:8.2f} MB")
    print(f"  full-copy baseline  {full_copies / 2**20:8.0f} MB   ratio {full_copies / doc.history.nbytes:6.0f}x")
    print(
        f"  brush op {t_ops / 10_000 * 1e6:.1f} us per 20 px segment (under tracemalloc), end_stroke merge {t_end / 1000 * 1e3:.3f} ms"
    )
    t = time.perf_counter()
    for _ in range(100):
        doc.undo()
    t_undo = (time.perf_counter() - t) / 100
    t = time.perf_counter()
    for _ in range(100):
        doc.redo()
    t_redo = (time.perf_counter() - t) / 100
    print(f"  undo {t_undo * 1e3:.3f} ms, redo {t_redo * 1e3:.3f} ms per stroke")


def main() -> None:
    rng = np.random.default_rng(0)
    bench_fill(rng)
    bench_brush(rng)
    bench_undo_memory(rng)


if __name__ == "__main__":
    main()
