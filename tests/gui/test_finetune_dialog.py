"""The fine-tune dialog runs model.finetune in a worker thread and shows its progress."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from annotation.project import Project
from gui.finetune_dialog import FinetuneDialog
from model.finetune import DEFAULT_BATCH

from .conftest import CLASSES, H, W, make_images
from .test_prelabel import tiny_checkpoint  # noqa: F401  (session fixture)


@pytest.fixture
def corrected_project(tmp_path: Path):  # noqa: ANN201
    root = tmp_path / "ftproj"
    make_images(tmp_path / "ftimgs", n=5)
    proj = Project.create(root, CLASSES)
    proj.add_images(tmp_path / "ftimgs")
    for k, rec in enumerate(proj.images()):
        mask = np.zeros((H, W), np.uint8)
        mask[:, : W // 2] = 1 + k % 3
        proj.save_mask(rec.id, mask, status="reviewed" if k % 2 else "edited")
    extra = tmp_path / "ftimgs" / "later.png"
    Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(extra)
    proj.add_images([extra])  # one image still to pre-label
    yield proj
    proj.close()


FAST = {"epochs": 2, "crop": 32, "batch_size": 2, "device": "cpu", "precision": "fp32"}


def test_a_run_saves_a_version_and_shows_per_class_iou(qtbot, corrected_project: Project, tiny_checkpoint: Path) -> None:  # noqa: ANN001, F811
    dlg = FinetuneDialog(corrected_project)
    qtbot.addWidget(dlg)
    assert dlg.start_button.isEnabled()
    assert dlg.options()["epochs"] == 30 and "minutes" not in dlg.options()  # the newcomer's defaults
    assert dlg.options()["batch_size"] is None and dlg.batch_spin.text().startswith("auto")
    # the dialog keeps torch out of its imports, so it spells out model.finetune's defaults
    assert f"{DEFAULT_BATCH['cpu']} on the CPU, {DEFAULT_BATCH['gpu']} on a GPU" in dlg.batch_spin.text()
    with qtbot.waitSignal(dlg.runFinished, timeout=120000):
        assert dlg.start(base=str(tiny_checkpoint), **FAST)
        assert not dlg.start()  # one run at a time
    assert dlg.last_error is None, dlg.last_error
    res = dlg.result
    assert res is not None and res.version_id is not None and not res.stopped
    assert [mv.id for mv in corrected_project.model_versions()] == [res.version_id]
    assert dlg.chart.loss and dlg.chart.miou
    assert dlg.table.isVisibleTo(dlg) and dlg.table.rowCount() == len(CLASSES)
    assert dlg.prelabel_button.isEnabled() and "1 new" in dlg.prelabel_button.text()
    with qtbot.waitSignal(dlg.prelabelNewRequested) as blocker:
        dlg.prelabel_button.click()
    assert blocker.args == [res.version_id]
    dlg.shutdown()


def test_cancel_keeps_the_best_checkpoint_so_far(qtbot, corrected_project: Project, tiny_checkpoint: Path) -> None:  # noqa: ANN001, F811
    dlg = FinetuneDialog(corrected_project)
    qtbot.addWidget(dlg)
    with qtbot.waitSignal(dlg.runFinished, timeout=120000):
        dlg.start(base=str(tiny_checkpoint), **{**FAST, "epochs": 500})
        qtbot.waitUntil(lambda: len(dlg.chart.miou) >= 1, timeout=120000)
        dlg.cancel_button.click()
    res = dlg.result
    assert res is not None and res.stopped and res.version_id is not None and not res.activated
    assert corrected_project.active_model_version is None
    assert "kept" in dlg.status_label.text()
    dlg.shutdown()


def test_training_error_is_shown(qtbot, tmp_path: Path) -> None:  # noqa: ANN001
    proj = Project.create(tmp_path / "empty", CLASSES)
    try:
        dlg = FinetuneDialog(proj)
        qtbot.addWidget(dlg)
        assert not dlg.start_button.isEnabled()  # nothing to train on yet
        with qtbot.waitSignal(dlg.runFinished, timeout=60000):
            dlg.start(**FAST)
        assert dlg.last_error and "no images" in dlg.last_error
        assert "failed" in dlg.status_label.text()
    finally:
        proj.close()
