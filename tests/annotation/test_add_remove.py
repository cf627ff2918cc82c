"""Adding images to a project and taking them out again, from the command line and as jobs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import main
from annotation import jobs
from annotation.errors import AtrousError
from annotation.formats import Cancelled
from annotation.layout import prelabel_path
from annotation.project import Project

from ..badfiles import photo


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def folder(path: Path, names: list[str], seed: int = 0) -> Path:
    path.mkdir(parents=True)
    for i, name in enumerate(names):
        Image.fromarray(photo(24, 32, seed=seed + i)).save(path / name)
    return path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    with Project.create(root) as p:
        p.add_images(folder(tmp_path / "first", ["a.png", "b.png", "c.png"]))
    return root


def names(root: Path) -> list[str]:
    with Project.open(root) as p:
        return sorted(r.name for r in p.images())


def test_add_several_folders_skips_what_is_there_and_names_unreadable_files(
    project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    more = folder(tmp_path / "more", ["d.png", "e.png"], seed=10)
    (more / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    code, out, _ = run(capsys, "add", project, tmp_path / "first", more)
    assert code == 0
    assert "added 2 image(s)" in out and "3 already present" in out
    assert "skipped unreadable" in out and "broken.png" in out
    assert names(project) == ["a.png", "b.png", "c.png", "d.png", "e.png"]
    code, _, err = run(capsys, "add", project, tmp_path / "nowhere")
    assert code == 2 and "image folder not found" in err


def test_a_cancelled_add_adds_nothing(project: Path, tmp_path: Path) -> None:
    more = folder(tmp_path / "more", ["d.png", "e.png", "f.png"], seed=10)
    seen: list[tuple[int, int]] = []

    def stop() -> bool:
        return len(seen) >= 2  # after two files were read

    with pytest.raises(Cancelled, match="no image was added"):
        jobs.add_images(project, [more], on_progress=lambda d, t, _n: seen.append((d, t)), should_stop=stop)
    assert seen[:2] == [(0, 3), (1, 3)]
    assert names(project) == ["a.png", "b.png", "c.png"]
    result = jobs.add_images(project, [more], on_progress=lambda d, t, _n: seen.append((d, t)))
    assert len(result.added) == 3 and seen[-1] == (3, 3)


def test_remove_by_name_or_path_keeps_the_image_file(
    project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Project.open(project) as p:
        a, b = p.images()[:2]
        p.save_mask(a.id, np.ones((24, 32), np.uint8), status="prelabeled", source="test")
        prelabel_path(project, a.id).parent.mkdir(parents=True, exist_ok=True)
        prelabel_path(project, a.id).write_bytes(b"kept pre-label")
    code, out, _ = run(capsys, "remove", project, "a.png", tmp_path / "first" / "b.png")
    assert code == 0 and "removed 2 image(s)" in out and "a.png, b.png" in out
    assert names(project) == ["c.png"]
    assert (tmp_path / "first" / "a.png").is_file()  # the image itself stays
    assert not (project / "masks" / f"{a.id}.png").exists() and not prelabel_path(project, a.id).exists()
    with Project.open(project) as p:
        assert not [e for e in p.last_edits(50) if e.image_id in (a.id, b.id)]


def test_remove_refuses_unknown_ambiguous_and_corrected_images_and_removes_nothing(
    project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder(tmp_path / "other", ["a.png"], seed=20)  # a second a.png, different content
    run(capsys, "add", project, tmp_path / "other")
    code, _, err = run(capsys, "remove", project, "zzz.png")
    assert code == 2 and "no image of the project" in err
    code, _, err = run(capsys, "remove", project, "a.png")
    assert code == 2 and "2 images have this name" in err
    with Project.open(project) as p:
        c = next(r for r in p.images() if r.name == "c.png")
        p.save_mask(c.id, np.ones((24, 32), np.uint8), status="edited", source="editor")
    code, _, err = run(capsys, "remove", project, "b.png", "c.png")
    assert code == 2 and "c.png (edited)" in err and "--force" in err and "nothing was removed" in err
    assert names(project) == ["a.png", "a.png", "b.png", "c.png"]
    code, out, _ = run(capsys, "remove", project, "b.png", "c.png", "--force")
    assert code == 0 and "removed 2 image(s)" in out
    assert names(project) == ["a.png", "a.png"]
    assert not (project / "masks" / f"{c.id}.png").exists()


def test_find_images_matches_stored_paths_and_reports_each_once(project: Path, tmp_path: Path) -> None:
    with Project.open(project) as p:
        recs = p.images()
        ids = jobs.find_images(p, [recs[0].path, recs[0].name, str(tmp_path / "first" / "b.png")])
        assert ids == [recs[0].id, recs[1].id]
        with pytest.raises(AtrousError, match="has this path or name"):
            jobs.find_images(p, [str(tmp_path / "first" / "nope.png")])
