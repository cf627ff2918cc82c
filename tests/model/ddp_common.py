"""A tiny synthetic project for the fine-tune tests (also used by the DDP worker process)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from annotation.project import LabelClass, Project


def tiny_mask(h: int, w: int, rng: np.random.Generator, classes: int) -> np.ndarray:
    """A vertical split (class 0 | class 1) with class 2 on top when there are three classes."""
    m = np.zeros((h, w), np.uint8)
    m[:, int(rng.integers(w // 4, 3 * w // 4)) :] = 1
    if classes > 2:
        m[: h // 3] = 2
    return m


def tiny_image(m: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Colours that follow the mask, plus noise, so a network can learn it in a few steps."""
    img = np.stack([m * 90 + 20, 200 - m * 70, (m == 2) * 150 + 30], -1).astype(np.int64)
    return np.clip(img + rng.integers(-15, 15, img.shape), 0, 255).astype(np.uint8)


def make_tiny_project(
    root: Path,
    *,
    n: int = 6,
    sizes: Sequence[tuple[int, int]] = ((40, 56),),
    statuses: Sequence[str] = ("reviewed",),
    classes: int = 3,
    seed: int = 0,
    void_rows: int = 0,
) -> tuple[Path, list[np.ndarray]]:
    """A project at ``root/proj`` with ``n`` images (sizes cycle) and masks saved with ``statuses`` (cycled).

    A status of ``new`` leaves the image without a mask. Returns the project path and the true masks.
    """
    imgs = root / "imgs"
    imgs.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    masks = []
    for i in range(n):
        h, w = sizes[i % len(sizes)]
        m = tiny_mask(h, w, rng, classes)
        if void_rows:
            m[-void_rows:] = 255
        Image.fromarray(tiny_image(np.where(m == 255, 0, m), rng)).save(imgs / f"im{i:02d}.png")
        masks.append(m)
    path = root / "proj"
    with Project.create(path, [LabelClass(k, f"k{k}", (60 * k, 120, 200 - 50 * k)) for k in range(classes)]) as p:
        p.add_images(imgs)
        for i, rec in enumerate(p.images()):
            status = statuses[i % len(statuses)]
            if status != "new":
                p.save_mask(rec.id, masks[i], status=status)
    return path, masks


#: Small, fast settings for tests: fp32 (no bf16 kernel set-up), tiny crops.
FAST = dict(batch_size=2, crop=32, input_size=40, precision="fp32", device="cpu", base="scratch")


@pytest.fixture
def one_thread():
    """Run torch on one thread: tiny tensors gain nothing from two, and OpenMP threads
    spinning against another busy process make each step ten times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
