"""The pre-label job's rules: people's work is never replaced, claimed images are handed over, errors are per image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from annotation.layout import confidence_path, prelabel_path
from annotation.project import Project
from model.jobs import Claims, evaluate_project, prelabel_project
from model.versions import load_predictor
from model.weights import save_checkpoint

from .ddp_common import make_tiny_project, one_thread  # noqa: F401  (fixture)
from .helpers import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def predictor(tmp_path: Path):
    loaded = tiny_model(num_classes=3, input_size=40, class_names=["k0", "k1", "k2"])
    path = tmp_path / "tiny.pt"
    save_checkpoint(path, loaded.network, loaded.meta)
    return load_predictor(str(path), device="cpu", precision="fp32")


def test_a_mask_saved_by_a_person_during_the_job_is_kept(tmp_path: Path, predictor) -> None:
    path, _ = make_tiny_project(tmp_path, n=4, statuses=("new",))
    person = np.full((40, 56), 2, np.uint8)
    with Project.open(path) as p, Project.open(path) as other:
        ids = [r.id for r in p.images()]

        def person_saves_the_last_image(done: int, total: int, name: str) -> None:
            if done == 1:  # after the job read its to-do list, before it reaches image 4
                other.save_mask(ids[3], person, status="edited")

        summary = prelabel_project(p, predictor, version_id=None, on_progress=person_saves_the_last_image)
        assert summary.saved == 3 and [i for i, _ in summary.skipped] == [ids[3]]
        assert "not overwritten" in summary.skipped[0][1]
        assert np.array_equal(p.read_mask(ids[3]), person) and p.image(ids[3]).status == "edited"
        assert not prelabel_path(path, ids[3]).exists() and not confidence_path(path, ids[3]).exists()


def test_claimed_images_are_handed_over_and_not_written(tmp_path: Path, predictor) -> None:
    path, _ = make_tiny_project(tmp_path, n=3, statuses=("new",))
    with Project.open(path) as p:
        ids = [r.id for r in p.images()]
        handed = []
        summary = prelabel_project(
            p,
            predictor,
            version_id=None,
            claims=Claims({ids[1]}),
            on_result=lambda o: handed.append(o) if not o.saved else None,
        )
        assert summary.saved == 2 and summary.handed == 1
        assert [o.image_id for o in handed] == [ids[1]] and handed[0].labels.shape == (40, 56)
        assert p.image(ids[1]).status == "new" and not prelabel_path(path, ids[1]).exists()


def test_explicit_list_skips_people_work_unless_asked(tmp_path: Path, predictor) -> None:
    path, masks = make_tiny_project(tmp_path, n=2, statuses=("reviewed", "new"))
    with Project.open(path) as p:
        ids = [r.id for r in p.images()]
        s = prelabel_project(p, predictor, version_id=None, image_ids=ids)
        assert s.saved == 1 and s.skipped == [
            (ids[0], f"{p.image(ids[0]).name}: reviewed by a person; not overwritten")
        ]
        assert np.array_equal(p.read_mask(ids[0]), masks[0])
        s = prelabel_project(p, predictor, version_id=None, image_ids=ids, overwrite_edited=True)
        assert s.saved == 2 and p.image(ids[0]).status == "prelabeled"


def test_an_image_replaced_on_disk_is_one_failure(tmp_path: Path, predictor) -> None:
    from PIL import Image

    path, _ = make_tiny_project(tmp_path, n=3, statuses=("reviewed",))
    with Project.open(path) as p:
        recs = p.images()
        Image.fromarray(np.zeros((30, 20, 3), np.uint8)).save(p.image_path(recs[1]))  # same name, other size
        summary = prelabel_project(p, predictor, version_id=None, overwrite_edited=True)
        assert summary.saved == 2 and len(summary.failed) == 1 and "20x30" in summary.failed[0][1]
        ev = evaluate_project(p, predictor, p.images())
        assert ev.images == 2 and len(ev.failed) == 1 and recs[1].name in ev.failed[0]


def test_a_locked_database_leaves_a_reviewed_mask_untouched(tmp_path: Path, predictor) -> None:  # noqa: ANN001
    """LOCK2: the reviewed mask on disk used to be replaced before the row's commit failed."""
    import sqlite3

    path, masks = make_tiny_project(tmp_path, n=1, statuses=("reviewed",))
    holder = sqlite3.connect(path / "atrous.sqlite", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another program holds the write lock
    try:
        with Project.open(path) as p:
            p._conn.execute("PRAGMA busy_timeout=200")  # do not wait the default 30 s in a test
            rec = p.images()[0]
            summary = prelabel_project(p, predictor, version_id=None, overwrite_edited=True)
            assert summary.saved == 0 and len(summary.failed) == 1 and "busy" in summary.failed[0][1]
            assert not prelabel_path(path, rec.id).exists()  # the kept copy goes with the mask or not at all
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    with Project.open(path) as p:
        rec = p.images()[0]
        assert rec.status == "reviewed" and np.array_equal(p.read_mask(rec.id), masks[0])


def test_a_failed_mask_write_leaves_no_kept_copy(tmp_path: Path, predictor, monkeypatch) -> None:  # noqa: ANN001
    from annotation import project as project_module
    from annotation.errors import AtrousWriteError

    path, _ = make_tiny_project(tmp_path, n=2, statuses=("new",))

    def full_disk(*_a, **_k):  # noqa: ANN002, ANN003, ANN202
        raise AtrousWriteError("Cannot write mask: No space left on device")

    monkeypatch.setattr(project_module, "write_mask_png", full_disk)
    with Project.open(path) as p:
        summary = prelabel_project(p, predictor, version_id=None)
        assert summary.saved == 0 and len(summary.failed) == 2 and "No space left" in summary.failed[0][1]
        for rec in p.images():
            assert rec.status == "new" and not prelabel_path(path, rec.id).exists()
        kept = path / "prelabels"
        assert not kept.exists() or list(kept.iterdir()) == []  # no copy, and no staged temp file left
