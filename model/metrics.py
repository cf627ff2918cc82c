"""Segmentation metrics from a confusion matrix (torchvision ``references/segmentation/utils.py``).

One ``bincount`` per update turns (target, prediction) pairs into a
``num_classes x num_classes`` matrix (rows = truth, columns = prediction);
pixels whose target is 255 (void) or outside ``0..num_classes-1`` are ignored.
IoU per class = TP / (TP + FP + FN); mIoU averages the classes that occur in the
ground truth or the predictions (a class absent from both has no IoU, ``None``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

VOID = 255


@dataclass
class SegMetrics:
    """The summary a fine-tune run and ``evaluate`` report."""

    miou: float
    pixel_accuracy: float
    per_class_iou: list[float | None]  # by class index; None = class absent in truth and predictions
    class_names: list[str] = field(default_factory=list)
    n_pixels: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``miou``, ``pixel_accuracy``, ``per_class_iou`` (name -> IoU or null), ``n_pixels``."""
        names = self.class_names or [str(i) for i in range(len(self.per_class_iou))]
        return {
            "miou": self.miou,
            "pixel_accuracy": self.pixel_accuracy,
            "per_class_iou": {n: v for n, v in zip(names, self.per_class_iou)},
            "n_pixels": self.n_pixels,
        }


class ConfusionMatrix:
    """Accumulates a confusion matrix over many label maps (numpy or torch, any shape)."""

    def __init__(self, num_classes: int) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.mat = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def update(self, target: Any, prediction: Any) -> None:
        """Add one (or a batch of) target/prediction label maps of the same shape."""
        t = _as_numpy(target).ravel().astype(np.int64)
        p = _as_numpy(prediction).ravel().astype(np.int64)
        if t.shape != p.shape:
            raise ValueError(f"target has {t.size} pixels, prediction {p.size}")
        n = self.num_classes
        keep = (t >= 0) & (t < n)  # drops void (255) and unknown labels
        p = np.clip(p[keep], 0, n - 1)
        self.mat += np.bincount(n * t[keep] + p, minlength=n * n).reshape(n, n)

    def merge(self, other: ConfusionMatrix) -> None:
        """Add another matrix (e.g. from another process)."""
        self.mat += other.mat

    def reset(self) -> None:
        self.mat[:] = 0

    def compute(self, class_names: list[str] | None = None) -> SegMetrics:
        """Per-class IoU, mean IoU over present classes, and pixel accuracy."""
        m = self.mat.astype(np.float64)
        tp = np.diag(m)
        union = m.sum(0) + m.sum(1) - tp
        total = m.sum()
        ious: list[float | None] = [float(tp[i] / union[i]) if union[i] > 0 else None for i in range(self.num_classes)]
        present = [v for v in ious if v is not None]
        return SegMetrics(
            miou=float(np.mean(present)) if present else 0.0,
            pixel_accuracy=float(tp.sum() / total) if total > 0 else 0.0,
            per_class_iou=ious,
            class_names=list(class_names or []),
            n_pixels=int(total),
        )


def _as_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor; keep this module importable without torch
        return x.detach().cpu().numpy()
    return np.asarray(x)


def format_metrics(metrics: SegMetrics) -> str:
    """A small table: one line per class, then mIoU and pixel accuracy."""
    names = metrics.class_names or [str(i) for i in range(len(metrics.per_class_iou))]
    width = max([len(n) for n in names] + [5])
    lines = [f"{'class':{width}s}  IoU"]
    for n, v in zip(names, metrics.per_class_iou):
        lines.append(f"{n:{width}s}  {'-' if v is None else f'{v:.3f}'}")
    lines.append(f"{'mIoU':{width}s}  {metrics.miou:.3f}")
    lines.append(f"{'pixel accuracy':{width}s}  {metrics.pixel_accuracy:.3f}")
    return "\n".join(lines)
