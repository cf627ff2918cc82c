"""An export a kill cuts short is marked incomplete, and exporting again into its folder works (K9b)."""

from __future__ import annotations

from pathlib import Path

import pytest

from annotation.formats import INCOMPLETE_MARK
from annotation.jobs import ExportOptions, run_export

from .conftest import Atrous
from .makers import labelled_project


@pytest.fixture
def project(tmp_path: Path, atrous: Atrous) -> Path:
    return labelled_project(tmp_path, atrous, 3)


@pytest.mark.parametrize("fmt", ["voc", "coco"])
def test_an_export_in_progress_is_marked_and_the_mark_goes_when_it_finishes(project: Path, tmp_path: Path, fmt) -> None:
    out = tmp_path / "out"
    seen: list[bool] = []
    run_export(
        project, ExportOptions(fmt=fmt, out=out), on_progress=lambda *a: seen.append((out / INCOMPLETE_MARK).is_file())
    )
    assert seen and all(seen)  # a kill at any of these moments leaves the mark behind
    assert not (out / INCOMPLETE_MARK).exists() and any(out.iterdir())


def test_exporting_again_into_a_killed_exports_folder_clears_it(project: Path, tmp_path: Path, atrous: Atrous) -> None:
    out = tmp_path / "out"
    (out / "JPEGImages").mkdir(parents=True)  # what a kill -9 half-way left: no ImageSets, a temp file
    (out / "JPEGImages" / "0.jpg").write_bytes(b"half")
    (out / "JPEGImages" / ".1.jpg.0a1b.tmp").write_bytes(b"cut")
    (out / INCOMPLETE_MARK).write_text("...")
    run = atrous("export", project, "--format", "voc", out)
    assert run.rc == 0, run.err
    assert "held an export that was cut short; it was cleared" in run.out
    assert not (out / INCOMPLETE_MARK).exists() and not list(out.rglob("*.tmp"))
    assert sorted(p.name for p in (out / "ImageSets" / "Segmentation").iterdir()) == [
        "train.txt",
        "trainval.txt",
        "val.txt",
    ]


def test_a_folder_of_someone_elses_files_is_still_refused(project: Path, tmp_path: Path, atrous: Atrous) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    run = atrous("export", project, "--format", "voc", out)
    assert run.rc == 2 and "not empty" in run.err
    assert (out / "notes.txt").read_text() == "keep me"
