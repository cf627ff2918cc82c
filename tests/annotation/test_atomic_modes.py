"""Files written atomically get the modes any other tool's output gets: 0666 less the umask."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from annotation.atomic import atomic_write_bytes
from annotation.formats.coco import export_coco
from annotation.formats.voc import export_voc
from annotation.project import LabelClass, Project

CLASSES = [LabelClass(0, "background", (0, 0, 0), True), LabelClass(1, "thing", (200, 40, 40))]

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits (umask) are absent on this OS")


@pytest.fixture
def umask() -> Iterator[None]:
    """Restore the process umask after a test that sets it."""
    # Reading the umask means setting it; a test runs no threads of its own that could write meanwhile.
    old = os.umask(0o022)
    os.umask(old)
    yield
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _tiny_project(root: Path) -> Project:
    images = root / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (16, 20, 3), dtype=np.uint8)).save(images / f"img{i}.png")
    project = Project.create(root / "proj", CLASSES)
    project.add_images(images)
    for rec in project.images():
        mask = np.zeros((rec.height, rec.width), np.uint8)
        mask[2:9, 3:12] = 1
        project.save_mask(rec.id, mask, status="edited")
    return project


@pytest.mark.usefixtures("umask")
@pytest.mark.parametrize(
    ("mask", "want_file", "want_dir"), [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700), (0o002, 0o664, 0o775)]
)
def test_export_and_masks_follow_the_umask(tmp_path: Path, mask: int, want_file: int, want_dir: int) -> None:
    os.umask(mask)
    with _tiny_project(tmp_path) as project:
        export_voc(project, tmp_path / "voc", devkit=True)
        export_coco(project, tmp_path / "coco")
        mask_files = [project.mask_path(rec.id) for rec in project.images()]

    voc_files = [p for p in (tmp_path / "voc").rglob("*") if p.is_file()]
    coco_files = [p for p in (tmp_path / "coco").rglob("*") if p.is_file()]
    assert len(voc_files) >= 5 and coco_files  # images, masks and the split lists really were written
    for path in voc_files + coco_files + mask_files:
        assert _mode(path) == want_file, f"{path}: {oct(_mode(path))}, want {oct(want_file)}"
    for path in [tmp_path / "voc", *(p for p in (tmp_path / "voc").rglob("*") if p.is_dir())]:
        assert _mode(path) == want_dir, f"{path}: {oct(_mode(path))}, want {oct(want_dir)}"


@pytest.mark.usefixtures("umask")
def test_overwrite_takes_the_umask_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "f.bin"
    os.umask(0o077)
    atomic_write_bytes(target, b"one")
    assert _mode(target) == 0o600
    os.umask(0o022)
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two" and _mode(target) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]
