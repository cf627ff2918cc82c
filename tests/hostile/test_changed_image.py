"""An image replaced on disk after labelling (same name, other size) is refused by name, never exported as a pair."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

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


def test_finetune_leaves_out_a_changed_image_and_names_it(changed: Path, atrous: Atrous) -> None:
    """It trains on the rest (one bad image no longer stops the run) and says which image it left out."""
    from model.finetune.config import FinetuneConfig
    from model.finetune.prepare import _training_records

    with Project.open(changed) as project:
        usable, skipped = _training_records(project, FinetuneConfig(project=str(changed)))
        assert [Path(r.path).name for r in usable] == ["a.png"]
    assert len(skipped) == 1 and skipped[0][0].endswith("b.png") and "30x20" in skipped[0][1]
    run = atrous("finetune", changed, "--base", "scratch", "--epochs", "1", "--crop", "32", "--device", "cpu")
    assert run.rc == 0, run.err
    assert "left out 1 image(s)" in run.err and "b.png" in run.err and "30x20" in run.err, run.err
    with Project.open(changed) as project:
        metrics = project.active_model_version.metrics
        assert len(metrics["train_images"]) + len(metrics["val_images"]) == 1  # a.png only


def test_finetune_with_every_image_changed_is_refused(changed: Path, atrous: Atrous) -> None:
    Image.fromarray(photo(20, 30, seed=8)).save(changed.parent / "images" / "a.png")
    before = sorted(p.name for p in changed.rglob("*"))
    line = atrous("finetune", changed, "--base", "scratch", "--epochs", "1").refused("none of the 2 labelled images")
    assert "30x20" in line
    assert sorted(p.name for p in changed.rglob("*")) == before  # no model written


def test_unchanged_images_still_export(changed: Path, tmp_path: Path, atrous: Atrous) -> None:
    Image.fromarray(photo(H, W, seed=1)).save(changed.parent / "images" / "b.png")  # the same size again
    run = atrous("export", changed, "--format", "voc", tmp_path / "out")
    assert run.rc == 0, run.err
    assert sorted(p.name for p in (tmp_path / "out" / "SegmentationClass").iterdir()) == ["a.png", "b.png"]
