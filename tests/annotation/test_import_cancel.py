"""Cancel while an import reads its source: every format stops within one file, nothing is written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from annotation.formats import Cancelled, apply_import
from annotation.formats.maskdir import read_mask_folder
from annotation.jobs import ImportOptions, run_import
from annotation.project import Project

N = 6  # files in each source
STOP_AFTER = 2  # files read before the stop turns true
SIZE = 12


def _image(path: Path, k: int) -> None:
    rng = np.random.default_rng(k)  # distinct content: the project skips duplicate images
    Image.fromarray(rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)).save(path)


def _mask(k: int) -> np.ndarray:
    m = np.zeros((SIZE, SIZE), np.uint8)
    m[: 2 + k, :] = 1
    return m


def make_source(fmt: str, base: Path) -> ImportOptions:
    """A small source of ``N`` images in ``fmt`` under ``base``, and the options that import it."""
    images = base / "images"
    images.mkdir(parents=True)
    for k in range(N):
        _image(images / f"im{k}.png", k)
    if fmt == "voc":
        (base / "SegmentationClass").mkdir()
        images.rename(base / "JPEGImages")
        for k in range(N):
            Image.fromarray(_mask(k), "L").save(base / "SegmentationClass" / f"im{k}.png")
        return ImportOptions(fmt="voc", src=base)
    if fmt == "masks":
        (base / "labels").mkdir()
        for k in range(N):
            Image.fromarray(_mask(k), "L").save(base / "labels" / f"im{k}.png")
        return ImportOptions(fmt="masks", src=base / "labels", images=images)
    if fmt == "labelme":
        for k in range(N):
            shape = {"label": "thing", "shape_type": "rectangle", "points": [[0, 0], [5, 3 + k]]}
            doc = {"shapes": [shape], "imagePath": f"im{k}.png", "imageHeight": SIZE, "imageWidth": SIZE}
            (images / f"im{k}.json").write_text(json.dumps(doc))
        return ImportOptions(fmt="labelme", src=images)
    assert fmt == "coco"
    doc = {
        "images": [{"id": k + 1, "file_name": f"im{k}.png", "width": SIZE, "height": SIZE} for k in range(N)],
        "annotations": [
            {"id": k + 1, "image_id": k + 1, "category_id": 1, "segmentation": [[0, 0, 6, 0, 6, 3 + k, 0, 3 + k]]}
            for k in range(N)
        ],
        "categories": [{"id": 1, "name": "thing"}],
    }
    (base / "coco.json").write_text(json.dumps(doc))
    return ImportOptions(fmt="coco", src=base / "coco.json", images=images)


class StopAfter:
    """``should_stop`` that turns true once ``n`` files were reported read; records every report."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.reports: list[tuple[int, int, str]] = []

    def on_progress(self, done: int, total: int, name: str) -> None:
        self.reports.append((done, total, name))

    def should_stop(self) -> bool:
        return len(self.reports) >= self.n


def _snapshot(root: Path) -> tuple[object, ...]:
    with Project.open(root) as p:
        records = [(r.path, r.status, r.has_mask) for r in p.images()]
        classes = p.classes()
        masks = {r.path: p.read_mask(r.id).tobytes() for r in p.images() if r.has_mask}
    files = sorted(str(f.relative_to(root)) for f in root.rglob("*") if f.is_file() and "sqlite" not in f.name)
    return records, classes, masks, files


FORMATS = ["voc", "coco", "labelme", "masks"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_cancel_while_reading_stops_within_one_file_and_creates_nothing(fmt: str, tmp_path: Path) -> None:
    opts = make_source(fmt, tmp_path / "src")
    stop = StopAfter(STOP_AFTER)
    with pytest.raises(Cancelled, match="import cancelled"):
        run_import(tmp_path / "new", opts, on_progress=stop.on_progress, should_stop=stop.should_stop)
    # Exactly STOP_AFTER reports: the stop was seen before the next file was read, in the read phase.
    assert len(stop.reports) == STOP_AFTER, stop.reports
    assert [d for d, _, _ in stop.reports] == list(range(1, STOP_AFTER + 1))
    total = N * 2 if fmt == "coco" else N  # COCO counts images, then annotations
    assert all(t == total and name.startswith("reading ") for _, t, name in stop.reports), stop.reports
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("fmt", FORMATS)
def test_cancel_while_reading_leaves_an_existing_project_unchanged(fmt: str, tmp_path: Path) -> None:
    opts = make_source(fmt, tmp_path / "src")
    root = tmp_path / "proj"
    seed = make_source("masks", tmp_path / "seed")
    assert seed.images is not None
    apply_import(root, read_mask_folder(seed.src, seed.images))
    before = _snapshot(root)
    stop = StopAfter(STOP_AFTER)
    with pytest.raises(Cancelled):
        run_import(root, opts, on_progress=stop.on_progress, should_stop=stop.should_stop)
    assert len(stop.reports) == STOP_AFTER
    assert _snapshot(root) == before


@pytest.mark.parametrize("fmt", FORMATS)
def test_read_progress_counts_every_file_and_the_import_goes_on(fmt: str, tmp_path: Path) -> None:
    """Without a stop the reader reports up to its total, then the write phase reports the images."""
    opts = make_source(fmt, tmp_path / "src")
    reports: list[tuple[int, int, str]] = []
    summary, _ = run_import(tmp_path / "p", opts, on_progress=lambda d, t, n: reports.append((d, t, n)))
    reading = [r for r in reports if r[2].startswith("reading ")]
    writing = reports[len(reading) :]
    assert reading and reading[-1][0] == reading[-1][1]  # the last read report is total / total
    assert [d for d, _, _ in writing] == list(range(1, N + 1)) and all(t == N for _, t, _ in writing)
    assert summary.added == N and summary.with_mask == N


def test_readers_without_callbacks_read_as_before(tmp_path: Path) -> None:
    """The CLI passes no callbacks: the readers behave as they always did."""
    opts = make_source("masks", tmp_path / "src")
    assert opts.images is not None
    res = read_mask_folder(opts.src, opts.images)
    assert len(res.items) == N and np.array_equal(res.items[3].mask, _mask(3))


def test_coco_stops_between_annotations_too(tmp_path: Path) -> None:
    opts = make_source("coco", tmp_path / "src")
    stop = StopAfter(N + 1)  # every image checked, the first annotation decoded
    with pytest.raises(Cancelled):
        run_import(tmp_path / "new", opts, on_progress=stop.on_progress, should_stop=stop.should_stop)
    assert [d for d, _, _ in stop.reports] == list(range(1, N + 2))
    assert stop.reports[-1][2] == "reading annotation 1" and not (tmp_path / "new").exists()
