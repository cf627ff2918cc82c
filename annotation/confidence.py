"""Confidence maps of pre-labels: one greyscale PNG per image (255 = the model was certain).

Written by whoever pre-labels (the app's worker, ``prelabel PROJECT``), read by the
editor's low-confidence overlay. Qt-free and torch-free like the rest of ``annotation``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .atomic import atomic_write_with
from .layout import CONFIDENCE_DIR, confidence_path

__all__ = ["CONFIDENCE_DIR", "confidence_path", "read_confidence", "write_confidence", "write_confidence_png"]


def write_confidence(project_root: Path, image_id: int, confidence: np.ndarray) -> None:
    """Save an image's confidence map in the project, atomically."""
    write_confidence_png(confidence_path(project_root, image_id), confidence)


def write_confidence_png(path: Path, confidence: np.ndarray) -> None:
    """Save a confidence map atomically as a greyscale PNG at ``path`` (a project's or a cluster run's)."""
    img = Image.fromarray(np.ascontiguousarray(confidence, dtype=np.uint8), mode="L")
    atomic_write_with(path, lambda fh: img.save(fh, format="PNG"))


def read_confidence(project_root: Path, image_id: int) -> np.ndarray | None:
    """The stored confidence map of an image, or None when there is none (or it is unreadable)."""
    p = confidence_path(project_root, image_id)
    if not p.is_file():
        return None
    try:
        with Image.open(p) as im:
            return np.asarray(im.convert("L"), dtype=np.uint8).copy()
    except (OSError, ValueError):
        return None
