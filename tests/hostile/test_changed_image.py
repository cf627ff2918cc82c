"""An image replaced on disk after labelling (same name, other size) is refused by name, never exported as a pair."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from annotation.errors import AtrousReadError
from annotation.project import Project

from ..badfiles import photo
from .conftest import Atrous
from .makers import H, W


@pytest.fixture
def changed(tmp_path: Path, atrous: Atrous) -> Path:
    """A project of two labelled 60x40 images, then ``b.png`` replaced by a 30x20 image."""
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    for i, name in enumerate("ab"):
        Image.fromarray(photo(H, W, seed=i)).save(images / f"{name}.png")
        Image.fromarray(np.full((H, W), i % 2, np.uint8), mode="L").save(labels / f"{name}.png")
    (tmp_path / "classes.txt").write_text("background\nthing\n")
    proj = tmp_path / "proj"
    run = atrous("import", proj, "--format", "masks", labels, "--images", images, "--classes", tmp_path / "classes.txt")
    assert run.rc == 0, run.err
    Image.fromarray(photo(20, 30, seed=9)).save(images / "b.png")
    return proj


@pytest.mark.parametrize("fmt", ["voc", "coco"])
def test_export_refuses_a_changed_image(changed: Path, tmp_path: Path, atrous: Atrous, fmt: str) -> None:
    out = tmp_path / f"out-{fmt}"
    line = atrous("export", changed, "--format", fmt, out).refused("b.png", "30x20", "60x40")
    assert "changed on disk" in line
    assert not out.exists() or not any(out.iterdir())  # nothing half-exported


def test_finetune_refuses_a_changed_image(changed: Path, atrous: Atrous) -> None:
    from model.finetune.config import FinetuneConfig
    from model.finetune.prepare import _training_records

    with Project.open(changed) as project, pytest.raises(AtrousReadError, match=r"b\.png.*30x20"):
        _training_records(project, FinetuneConfig(project=str(changed)))
    before = sorted(p.name for p in changed.rglob("*"))
    run = atrous("finetune", changed, "--base", "scratch", "--epochs", "1")
    assert run.rc != 0 and "b.png" in run.err and "30x20" in run.err, run.err
    assert sorted(p.name for p in changed.rglob("*")) == before  # no model written


def test_unchanged_images_still_export(changed: Path, tmp_path: Path, atrous: Atrous) -> None:
    Image.fromarray(photo(H, W, seed=1)).save(changed.parent / "images" / "b.png")  # the same size again
    run = atrous("export", changed, "--format", "voc", tmp_path / "out")
    assert run.rc == 0, run.err
    assert sorted(p.name for p in (tmp_path / "out" / "SegmentationClass").iterdir()) == ["a.png", "b.png"]
