"""0/255 masks (ISBI's kind) imported without a class list: say how much became void, or keep 255 with --binary."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from annotation.project import Project

from ..badfiles import photo
from .conftest import Atrous
from .makers import H, W


def _binary_dataset(root: Path, extra: int | None = None) -> tuple[Path, Path]:
    images, labels = root / "images", root / "labels"
    images.mkdir(parents=True)
    labels.mkdir()
    for i in range(2):
        Image.fromarray(photo(H, W, seed=i)).save(images / f"{i}.png")
        mask = np.zeros((H, W), np.uint8)
        mask[:, : 3 * W // 4] = 255  # 75 % foreground
        if extra is not None:
            mask[0, 0] = extra
        Image.fromarray(mask, mode="L").save(labels / f"{i}.png")
    return images, labels


def test_without_binary_the_summary_says_how_much_became_void(tmp_path: Path, atrous: Atrous) -> None:
    images, labels = _binary_dataset(tmp_path)
    run = atrous("import", tmp_path / "p", "--format", "masks", labels, "--images", images)
    assert run.rc == 0, run.err
    assert "75.0 % of the mask pixels are 255" in run.out and "--binary" in run.out


def test_binary_keeps_255_as_the_foreground_class(tmp_path: Path, atrous: Atrous) -> None:
    images, labels = _binary_dataset(tmp_path)
    run = atrous("import", tmp_path / "p", "--format", "masks", labels, "--images", images, "--binary")
    assert run.rc == 0, run.err
    assert "% of the mask pixels are 255" not in run.out
    with Project.open(tmp_path / "p") as p:
        assert [(c.index, c.name) for c in p.classes()] == [(0, "background"), (1, "foreground")]
        mask = p.read_mask(p.images()[0].id)
        assert set(np.unique(mask).tolist()) == {0, 1} and mask.mean() == 0.75


def test_binary_refuses_a_mask_with_other_values(tmp_path: Path, atrous: Atrous) -> None:
    images, labels = _binary_dataset(tmp_path, extra=7)
    line = atrous("import", tmp_path / "p", "--format", "masks", labels, "--images", images, "--binary").refused(
        "0.png", "only 0 and 255"
    )
    assert "[7]" in line and not (tmp_path / "p").exists()
