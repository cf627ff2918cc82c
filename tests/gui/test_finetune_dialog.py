"""The fine-tune dialog runs the CLI's ``finetune`` in a child process, plots its progress, and is not modal.

Every run here is a real child process on a 5-image 60x40 project with a tiny
checkpoint, 32-pixel crops on the CPU: a few seconds each, most of it the child's
start-up.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from annotation.project import Project
from gui.finetune_dialog import FinetuneDialog
from gui.finetune_process import FinetuneOutcome
from model.finetune import DEFAULT_BATCH

from .conftest import CLASSES, H, W, make_images, shown_window
from .test_finetune_process import WAIT_MS, no_leaked_processes  # noqa: F401  (autouse fixture)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 4-class MobileNetV3 DeepLabV3 saved as an Atrous checkpoint (built once here)."""
    from model.weights import save_checkpoint
    from tests.model.helpers import tiny_model

    loaded = tiny_model(num_classes=len(CLASSES), input_size=64)
    path = tmp_path_factory.mktemp("models") / "tiny.pt"
    save_checkpoint(path, loaded.network, loaded.meta)
    return path


@pytest.fixture
def corrected_root(tmp_path: Path) -> Path:
    """A project of five corrected images (edited/reviewed) and one new image still to pre-label."""
    root = tmp_path / "ftproj"
    make_images(tmp_path / "ftimgs", n=5)
    with Project.create(root, CLASSES) as proj:
        proj.add_images(tmp_path / "ftimgs")
        for k, rec in enumerate(proj.images()):
            mask = np.zeros((H, W), np.uint8)
            mask[:, : W // 2] = 1 + k % 3
            proj.save_mask(rec.id, mask, status="reviewed" if k % 2 else "edited")
        extra = tmp_path / "ftimgs" / "later.png"
        Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(extra)
        proj.add_images([extra])
    return root


@pytest.fixture
def corrected_project(corrected_root: Path):
    proj = Project.open(corrected_root)
    yield proj
    proj.close()


FAST = {"epochs": 2, "crop": 32, "batch_size": 2, "device": "cpu", "precision": "fp32"}
LONG = {**FAST, "epochs": 500}  # runs until a test stops it


def _versions(root: Path) -> tuple[list[int], int | None]:
    """(model version ids, active id) as a fresh connection sees them."""
    with Project.open(root) as proj:
        active = proj.active_model_version
        return [mv.id for mv in proj.model_versions()], None if active is None else active.id


def test_the_app_trains_in_a_child_process_while_the_person_edits(qtbot, corrected_root: Path, tiny_ckpt: Path) -> None:
    gen = shown_window(qtbot, corrected_root)
    win = next(gen)
    try:
        win.open_finetune()
        dlg = win._finetune_dialog
        assert isinstance(dlg, FinetuneDialog) and dlg.isVisible() and not dlg.isModal()
        assert dlg.options()["epochs"] == 30 and "minutes" not in dlg.options()  # the newcomer's defaults
        # the dialog keeps torch out of its imports, so it spells out model.finetune's defaults
        assert f"{DEFAULT_BATCH['cpu']} on the CPU, {DEFAULT_BATCH['gpu']} on a GPU" in dlg.batch_spin.text()
        created: list[tuple[int, bool]] = []
        dlg.versionCreated.connect(lambda v, a: created.append((v, a)))
        with qtbot.waitSignal(dlg.runFinished, timeout=WAIT_MS):
            assert dlg.start(base=str(tiny_ckpt), **FAST)
            assert not dlg.start()  # one run at a time
            pid = dlg.runner.pid()
            assert pid is not None and pid != os.getpid()  # training is another process
            # the person keeps correcting: the editor saves a mask while the child trains
            first = win.project.images()[0].id
            assert win.show_image(first)
            win.current_model.fill(1, 1, 3)
            assert win.save_current()
        assert dlg.last_error is None, dlg.last_error
        res = dlg.result
        assert res is not None and res.version_id is not None and not res.stopped and res.activated
        assert created == [(res.version_id, True)]
        assert _versions(corrected_root) == ([res.version_id], res.version_id)
        assert dlg.chart.loss and dlg.chart.miou  # the JSON progress was plotted
        assert dlg.table.isVisibleTo(dlg) and dlg.table.rowCount() == len(CLASSES)
        assert dlg.prelabel_button.isEnabled() and "1 new" in dlg.prelabel_button.text()
        assert "made it the active model" in dlg.status_label.text()
        # the main window's model panel follows: it lists the new version and, as it became active, chose it
        combo = win.model_panel.model_combo
        listed = [getattr(combo.itemData(i), "version_id", None) for i in range(combo.count())]
        assert res.version_id in listed
        assert win.model_panel.choice().version_id == res.version_id
        assert Path(res.checkpoint_path).is_file()
    finally:
        next(gen, None)


def test_the_result_shows_per_class_iou_and_offers_to_prelabel(qtbot, corrected_project: Project) -> None:
    dlg = FinetuneDialog(corrected_project)
    qtbot.addWidget(dlg)
    outcome = FinetuneOutcome(
        4, "models/x.pt", 0.5, {"background": 0.9, "person": None, "__unused_3": 0.0}, False, True, 9
    )
    with qtbot.waitSignal(dlg.versionCreated) as created:
        dlg._on_result(outcome)  # what the process's result signal calls
    assert created.args == [4, False]
    assert [dlg.table.item(r, 0).text() for r in range(dlg.table.rowCount())] == ["background", "person"]
    assert dlg.table.item(1, 1).text() == "—"
    assert "Stopped early; kept model version v4 (not activated)" in dlg.status_label.text()
    with qtbot.waitSignal(dlg.prelabelNewRequested) as blocker:
        dlg.prelabel_button.click()
    assert blocker.args == [4]


# The editor's own state after a whole run, checked in a fresh interpreter so that nothing this
# test session imported (the tiny checkpoint needs torch) can hide an import the dialog makes.
ISOLATION = r"""
import json, os, random, sys
import numpy as np
from PySide6.QtCore import QEventLoop
from PySide6.QtWidgets import QApplication
app = QApplication([])
from annotation.project import Project
from gui.finetune_dialog import FinetuneDialog
random.seed(1234); np.random.seed(1234)
env, py_state, np_state = dict(os.environ), random.getstate(), np.random.get_state()
proj = Project.open(sys.argv[1])
dlg = FinetuneDialog(proj)
loop = QEventLoop()
dlg.runFinished.connect(loop.quit)
dlg.start(**json.loads(sys.argv[2]))
loop.exec()
after = np.random.get_state()
print(json.dumps({
    "version": None if dlg.result is None else dlg.result.version_id, "error": dlg.last_error,
    "torch": sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")),
    "model": sorted(m for m in sys.modules if m == "model" or m.startswith("model.")),
    "env_same": dict(os.environ) == env, "py_random_same": random.getstate() == py_state,
    "np_random_same": np_state[0] == after[0] and bool((np_state[1] == after[1]).all()) and np_state[2:] == after[2:],
}))
proj.close()
"""


def test_training_leaves_the_editors_process_alone(corrected_root: Path, tiny_ckpt: Path) -> None:
    """Imports (no torch, no model package), os.environ (the allocator's and threads' variables),
    Python's and numpy's global RNG state: all as they were after a whole run from the dialog."""
    opts = json.dumps({"base": str(tiny_ckpt), **FAST})
    out = subprocess.run(
        [sys.executable, "-c", ISOLATION, str(corrected_root), opts],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "QT_QPA_PLATFORM": "offscreen"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["error"] is None and report["version"] is not None
    assert report["torch"] == [] and report["model"] == []
    assert report["env_same"] and report["py_random_same"] and report["np_random_same"]


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX) to kill the child")
def test_killing_the_training_process_shows_an_error_keeps_the_active_model(
    qtbot, corrected_project: Project, tiny_ckpt: Path
) -> None:
    before = corrected_project.add_model_version("before", str(tiny_ckpt))
    corrected_project.active_model_version = before
    dlg = FinetuneDialog(corrected_project)
    qtbot.addWidget(dlg)
    dlg.show()
    with qtbot.waitSignal(dlg.runFinished, timeout=WAIT_MS):
        dlg.start(base=str(tiny_ckpt), **LONG)
        qtbot.waitUntil(lambda: len(dlg.chart.loss) >= 1, timeout=WAIT_MS)  # mid-training
        dlg.close()  # only hides it: the run goes on
        assert dlg.running and not dlg.isVisible()
        os.kill(dlg.runner.pid(), signal.SIGKILL)
    assert dlg.isVisible()  # shown again, with the failure
    assert dlg.result is None
    assert dlg.last_error == (
        "the fine-tune process stopped unexpectedly (killed by signal 9); the active model is unchanged"
    )
    assert dlg.status_label.text().startswith("Fine-tuning failed: the fine-tune process stopped unexpectedly")
    assert _versions(corrected_project.root) == ([before], before)  # nothing recorded, the active one kept
    assert dlg.start_button.isEnabled() and not dlg.running  # the person can try again


def test_cancel_keeps_the_best_checkpoint_so_far(qtbot, corrected_project: Project, tiny_ckpt: Path) -> None:
    dlg = FinetuneDialog(corrected_project)
    qtbot.addWidget(dlg)
    with qtbot.waitSignal(dlg.runFinished, timeout=WAIT_MS):
        dlg.start(base=str(tiny_ckpt), **LONG)
        qtbot.waitUntil(lambda: len(dlg.chart.miou) >= 1, timeout=WAIT_MS)
        dlg.cancel_button.click()
        assert dlg.cancel_button.text() == "Stop now"  # a second click would stop without keeping
    res = dlg.result
    assert dlg.last_error is None, dlg.last_error
    assert res is not None and res.stopped and res.version_id is not None and not res.activated
    assert _versions(corrected_project.root) == ([res.version_id], None)  # kept, not activated, as the CLI does
    assert Path(res.checkpoint_path).is_file()
    assert "kept" in dlg.status_label.text()


def test_closing_the_app_mid_training_asks_then_keeps_the_best_checkpoint(
    qtbot, corrected_root: Path, tiny_ckpt: Path
) -> None:
    gen = shown_window(qtbot, corrected_root)
    win = next(gen)
    try:
        asked: list[bool] = []
        answers = [False, True]  # "Keep editing", then "Stop and close"

        def answer() -> bool:
            asked.append(True)
            return answers.pop(0)

        win.ask_stop_finetune = answer
        win.open_finetune()
        dlg = win._finetune_dialog
        dlg.start(base=str(tiny_ckpt), **LONG)
        qtbot.waitUntil(lambda: len(dlg.chart.miou) >= 1, timeout=WAIT_MS)
        assert not win.close()  # kept editing: the window stays and so does the training
        assert asked == [True] and win.isVisible() and dlg.running
        assert win.close()
        assert asked == [True, True] and not win.isVisible()
        assert not dlg.running and dlg.runner is None  # the child has ended
    finally:
        next(gen, None)
    res = dlg.result
    assert res is not None and res.stopped and res.version_id is not None and not res.activated
    assert _versions(corrected_root) == ([res.version_id], None)  # the best checkpoint is kept, not activated


def test_closing_the_app_without_a_run_asks_nothing(qtbot, corrected_root: Path) -> None:
    gen = shown_window(qtbot, corrected_root)
    win = next(gen)
    win.ask_stop_finetune = lambda: pytest.fail("asked about a fine-tune that is not running")
    win.open_finetune()
    assert win.close()
    next(gen, None)


def test_training_error_is_shown(qtbot, tmp_path: Path) -> None:
    proj = Project.create(tmp_path / "empty", CLASSES)
    try:
        dlg = FinetuneDialog(proj)
        qtbot.addWidget(dlg)
        assert not dlg.start_button.isEnabled()  # nothing to train on yet
        with qtbot.waitSignal(dlg.runFinished, timeout=WAIT_MS):
            dlg.start(**FAST)
        assert dlg.last_error and "no images" in dlg.last_error
        assert "failed" in dlg.status_label.text()
        assert _versions(proj.root) == ([], None)
    finally:
        proj.close()
