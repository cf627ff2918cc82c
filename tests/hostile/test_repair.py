"""One bad image must not make a whole project unusable: ``info`` lists it and goes on, ``check``
finds it and ``check --repair`` fixes it, image by image (#17 item 13)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from annotation.class_edits import PENDING_KEY
from annotation.layout import DB_NAME, mask_path, models_dir
from annotation.project import Project
from annotation.repair import check_project, repair_project

from ..badfiles import png_bomb
from .conftest import Atrous, run_capped, snapshot
from .makers import H, W, labelled_project


@pytest.fixture
def project(tmp_path: Path, atrous: Atrous) -> Path:
    """Four 60x40 images (ids 1..4, files 0..3.png) with masks of classes 0/1, images outside the project."""
    return labelled_project(tmp_path, atrous, 4)


def _tear(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _damage(project: Path) -> None:
    """Image 1's file gone, image 2's mask torn, image 3's mask the wrong size, image 4's mask holds 7."""
    (project.parent / "images" / "0.png").unlink()
    _tear(mask_path(project, 2))
    Image.fromarray(np.zeros((H + 1, W), np.uint8), mode="L").save(mask_path(project, 3))
    values = np.ones((H, W), np.uint8)
    values[0, 0] = 7
    Image.fromarray(values, mode="L").save(mask_path(project, 4))
    (project / "masks" / ".staging-999999999-1").mkdir()
    (project / "masks" / ".staging-999999999-1" / "1.png").write_bytes(b"half")
    models_dir(project).mkdir(exist_ok=True)
    (models_dir(project) / ".finetune-1.pt.0123ab.tmp").write_bytes(b"cut short")


def test_info_names_the_bad_images_and_goes_on(project: Path, atrous: Atrous) -> None:
    (project.parent / "images" / "0.png").unlink()
    _tear(mask_path(project, 2))
    before = snapshot(project)
    run = atrous("info", project)
    assert run.rc == 0, run.err
    assert "4 image(s), 3 mask(s)" in run.out  # the torn mask is not counted; the others are
    warnings = run.err.splitlines()
    assert any("0.png (image 1)" in w and "not found" in w for w in warnings), run.err
    assert any("1.png (image 2)" in w and str(mask_path(project, 2)) in w for w in warnings), run.err
    assert all(w.startswith("warning: ") for w in warnings)
    assert snapshot(project) == before


def test_info_json_lists_problems(project: Path, atrous: Atrous) -> None:
    import json

    _tear(mask_path(project, 3))
    run = atrous("info", project, "--json")
    assert run.rc == 0, run.err
    problems = json.loads(run.out)["problems"]
    assert len(problems) == 1 and "(image 3)" in problems[0]


def test_check_clean_project(project: Path, atrous: Atrous) -> None:
    run = atrous("check", project)
    assert run.rc == 0 and "no problems found" in run.out, run.out + run.err


def test_check_lists_every_problem_and_writes_nothing(project: Path, atrous: Atrous) -> None:
    _damage(project)
    before = snapshot(project)
    run = atrous("check", project)
    assert run.rc == 1, run.err
    lines = run.out.splitlines()
    kinds = sorted(line.split(":")[0] for line in lines[:-1])
    assert kinds == ["bad-mask", "bad-mask", "leftover", "leftover", "missing-image", "unknown-values"]
    assert any("(image 3)" in line and "60x41" in line for line in lines)
    assert any("(image 4)" in line and "values that are no class: 7" in line for line in lines)
    assert lines[-1].endswith("6 problem(s)")
    assert snapshot(project) == before


def test_check_repair(project: Path, atrous: Atrous) -> None:
    _damage(project)
    run = atrous("check", project, "--repair")
    # The mask with a value that is no class is left for a person: problems remain.
    assert run.rc == 1, run.err
    assert "repair: dropping image 1" in run.out
    assert run.out.splitlines()[-1].endswith("1 problem(s)")
    with Project.open(project) as p:
        assert [r.id for r in p.images()] == [2, 3, 4]
        assert [(r.status, r.has_mask) for r in p.images()] == [("new", False), ("new", False), ("reviewed", True)]
        assert p.last_edits(1)[0].source == "repair"
    assert not mask_path(project, 1).exists() and not mask_path(project, 2).exists()
    assert not mask_path(project, 3).exists() and mask_path(project, 4).exists()
    assert not (project / "masks" / ".staging-999999999-1").exists()
    assert not list(models_dir(project).iterdir())
    # What is left works again: export, and a second check finds only the value 7.
    assert atrous("export", project, "--format", "coco", project.parent / "out").rc == 0
    assert atrous("check", project).out.splitlines()[0].startswith("unknown-values")


def test_repair_leaves_an_image_saved_meanwhile(project: Path) -> None:
    _tear(mask_path(project, 2))
    with Project.open(project) as p:
        problems = check_project(p)
        assert [x.kind for x in problems] == ["bad-mask"]
        p.save_mask(2, np.ones((H, W), np.uint8))  # a person saves a new mask after the check
        left = repair_project(p, problems)
        assert left == problems
        assert p.image(2).has_mask and p.read_mask(2) is not None


def test_bomb_mask_is_checked_and_forgotten_never_decoded(project: Path) -> None:
    png_bomb(mask_path(project, 1), 20000, 20000)
    run = run_capped("check", project, "--repair")
    assert run.rc == 0, run.err
    assert "too large" in run.out and "forgetting the mask of image 1" in run.out
    assert not mask_path(project, 1).exists()


def test_interrupted_class_edit_listed_then_finished(project: Path, atrous: Atrous) -> None:
    staging = project / ".class-edit-999999999-1"
    (staging / "masks").mkdir(parents=True)
    Image.fromarray(np.zeros((H, W), np.uint8), mode="L").save(staging / "masks" / "2.png")
    with sqlite3.connect(project / DB_NAME) as c:
        c.execute("INSERT INTO meta VALUES (?, ?)", (PENDING_KEY, staging.name))
    c.close()
    run = atrous("check", project)
    assert run.rc == 1
    assert run.out.splitlines()[0].startswith(f"class-edit: {staging}")
    assert "leftover" not in run.out  # the committed staging folder is never removed as a leftover
    assert staging.exists()
    run = atrous("check", project, "--repair")
    assert run.rc == 0, run.out + run.err
    assert not staging.exists()
    with Project.open(project) as p:
        assert not p.read_mask(2).any()  # the staged mask is in place


def test_check_refuses_to_repair_a_read_only_project(project: Path, atrous: Atrous, monkeypatch) -> None:
    import annotation.project as project_module

    _tear(mask_path(project, 2))
    before = snapshot(project)
    monkeypatch.setattr(project_module, "_writable", lambda path: False)
    atrous("check", project, "--repair").refused(project, "read-only")
    assert snapshot(project) == before


@pytest.mark.parametrize("fmt", ["voc", "coco"])
def test_export_skip_bad_leaves_out_and_names_the_bad_images(
    project: Path, tmp_path: Path, atrous: Atrous, fmt: str
) -> None:
    (project.parent / "images" / "0.png").unlink()
    _tear(mask_path(project, 2))
    refused = tmp_path / "refused"
    run = atrous("export", project, "--format", fmt, refused)
    assert run.rc == 2 and not (refused.exists() and any(refused.iterdir()))
    out = tmp_path / "out"
    run = atrous("export", project, "--format", fmt, out, "--skip-bad")
    assert run.rc == 0, run.err
    assert "exported 2 image(s)" in run.out
    assert "0.png (image 1): source image not found" in run.out
    assert "1.png (image 2)" in run.out and "truncated" in run.out
    if fmt == "voc":
        assert sorted(f.name for f in (out / "SegmentationClass").iterdir()) == ["2.png", "3.png"]


def test_check_finds_a_truncated_or_resized_image_and_export_skip_bad_leaves_it_out(
    project: Path, tmp_path: Path, atrous: Atrous
) -> None:
    """X03/X05: a truncated copy passed check, and --skip-bad still stopped the export on it."""
    images = project.parent / "images"
    _tear(images / "1.png")  # image 2: the header still reads, the pixels do not
    Image.fromarray(np.zeros((H // 2, W // 2, 3), np.uint8)).save(images / "3.png")  # image 4: other size
    run = atrous("check", project)
    assert run.rc == 1, run.err
    bad = [line for line in run.out.splitlines() if line.startswith("bad-image")]
    assert len(bad) == 2 and "(image 2)" in bad[0] and "(image 4)" in bad[1]
    assert f"{W // 2}x{H // 2}" in bad[1] and all("put the original" in line.lower() for line in bad)
    out = tmp_path / "out"
    run = atrous("export", project, "--format", "voc", out, "--skip-bad")
    assert run.rc == 0, run.err
    assert "exported 2 image(s)" in run.out and "(image 2)" in run.out and "(image 4)" in run.out
    assert sorted(f.name for f in (out / "SegmentationClass").iterdir()) == ["0.png", "2.png"]
    # check --repair leaves them for a person; once the file is deleted it drops the image
    (images / "1.png").unlink()
    assert "dropping image 2" in atrous("check", project, "--repair").out
    with Project.open(project) as p:
        assert [r.id for r in p.images()] == [1, 3, 4]
