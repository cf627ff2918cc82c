"""The headless loop from the command line: prelabel PROJECT, finetune, evaluate, models, activate."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

import main
from annotation.confidence import read_confidence
from annotation.errors import AtrousError
from annotation.masks import read_mask_png
from annotation.project import DB_NAME, Project
from model.weights import save_checkpoint

from .ddp_common import make_tiny_project, one_thread  # noqa: F401  (fixture)
from .helpers import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def tiny_ckpt(tmp_path):
    loaded = tiny_model(num_classes=3, input_size=40)
    loaded.meta.class_names = ["k0", "k1", "k2"]
    path = tmp_path / "tiny.pt"
    save_checkpoint(path, loaded.network, loaded.meta)
    return path


def test_prelabel_project_keeps_prelabels_confidence_and_skips_edited(tmp_path, tiny_ckpt, capsys) -> None:
    path, masks = make_tiny_project(tmp_path, n=4, statuses=("new", "new", "edited", "prelabeled"))
    code = main.main(["prelabel", str(path), "--model", str(tiny_ckpt), "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "pre-labelled 3 of 3" in out and "1 edited/reviewed image(s) left alone" in out
    with Project.open(path) as p:
        recs = p.images()
        edited = [r for r in recs if r.status == "edited"]
        assert len(edited) == 1 and np.array_equal(p.read_mask(edited[0].id), masks[2])  # untouched
        pre = [r for r in recs if r.status == "prelabeled"]
        assert len(pre) == 3
        version = p.model_versions()[0]
        for r in pre:
            assert r.prelabel_model_version == version.id
            assert r.mean_confidence is not None and 0 < r.mean_confidence <= 1
            kept = read_mask_png(path / "prelabels" / f"{r.id}.png")
            assert np.array_equal(kept, p.read_mask(r.id))
            # the confidence map the editor's overlay shows, whose mean is the stored one
            conf = read_confidence(path, r.id)
            assert conf is not None and conf.shape == kept.shape
            assert abs(conf.mean() / 255.0 - r.mean_confidence) < 1e-6
        assert not (path / "prelabels" / f"{edited[0].id}.png").exists()
        assert read_confidence(path, edited[0].id) is None
    # --overwrite-edited replaces the edited mask too; the external model keeps one version
    assert main.main(["prelabel", str(path), "--model", str(tiny_ckpt), "--device", "cpu", "--overwrite-edited"]) == 0
    with Project.open(path) as p:
        assert {r.status for r in p.images()} == {"prelabeled"}
        assert len(p.model_versions()) == 1


def test_prelabel_project_refuses_a_model_for_other_classes(tmp_path, capsys) -> None:
    path, _ = make_tiny_project(tmp_path, n=2, statuses=("new",))
    other = tiny_model(num_classes=5, input_size=40)
    ckpt = tmp_path / "other.pt"
    save_checkpoint(ckpt, other.network, other.meta)
    code = main.main(["prelabel", str(path), "--model", str(ckpt), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "classes" in err and "finetune" in err
    assert main.main(["prelabel", str(path), "--out", str(tmp_path / "x")]) == 2
    assert main.main(["prelabel", str(tmp_path / "imgs")]) == 2  # a folder needs --out
    assert main.main(["evaluate", str(path), "--model", str(ckpt)]) == 2  # no masks to evaluate


def test_finetune_evaluate_models_activate_and_use_in_another_project(tmp_path, capsys) -> None:
    path, _ = make_tiny_project(tmp_path / "a", n=6)
    base = ["--batch-size", "2", "--crop", "32", "--input-size", "40", "--precision", "fp32", "--device", "cpu"]
    assert main.main(["finetune", str(path), "--epochs", "2", *base]) == 0
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    assert "the val images are trained on from here" in err  # 6 images: a small project folds them in
    assert lines[-1].startswith("saved ") and lines[-1].endswith(".pt")
    ckpt1 = lines[-1][len("saved ") :]
    assert any("mIoU" in ln for ln in lines) and "v1 (active)" in lines[-2]
    assert main.main(["finetune", str(path), "--epochs", "1", "--base", "v1", "--no-activate", *base]) == 0
    capsys.readouterr()

    assert main.main(["models", str(path)]) == 0
    out = capsys.readouterr().out
    assert "* v1" in out and "  v2" in out
    assert main.main(["activate", str(path), "v2"]) == 0
    assert main.main(["activate", str(path), "1"]) == 0  # roll back
    with Project.open(path) as p:
        assert p.active_model_version.id == 1
    assert main.main(["activate", str(path), "v7"]) == 2
    capsys.readouterr()

    assert main.main(["evaluate", str(path), "--json", "--device", "cpu"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert set(d) >= {"miou", "pixel_accuracy", "per_class_iou"}
    assert set(d["per_class_iou"]) == {"k0", "k1", "k2"} and 0 <= d["miou"] <= 1 and d["images"] == 6
    assert main.main(["evaluate", str(path), "--split", "val", "--status", "reviewed", "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    assert "mIoU" in out and "pixel accuracy" in out
    assert "trained on its val images after its val figure was taken" in err  # so the score is optimistic

    # the checkpoint file pre-labels and evaluates another project with the same classes
    other, _ = make_tiny_project(tmp_path / "b", n=3, statuses=("new", "reviewed", "new"), seed=3)
    assert main.main(["prelabel", str(other), "--model", ckpt1, "--device", "cpu"]) == 0
    assert main.main(["evaluate", str(other), "--model", ckpt1, "--json", "--device", "cpu"]) == 0
    d2 = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert d2["images"] == 1


def test_finetune_cli_bad_input_exit_codes(tmp_path, capsys) -> None:
    path, _ = make_tiny_project(tmp_path, n=2, statuses=("new",))
    assert main.main(["finetune", str(path), "--epochs", "1", "--device", "cpu"]) == 2
    assert "no images with status edited or reviewed" in capsys.readouterr().err
    labelled, _ = make_tiny_project(tmp_path / "b", n=2)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"")
    assert main.main(["finetune", str(labelled), "--base", str(bad)]) == 2
    assert "empty" in capsys.readouterr().err
    for proj in (path, labelled):
        with Project.open(proj) as p:
            assert p.model_versions() == [] and p.active_model_version is None


def test_old_database_gains_the_confidence_column(tmp_path) -> None:
    path, _ = make_tiny_project(tmp_path, n=1, statuses=("new",))
    con = sqlite3.connect(path / DB_NAME)
    con.execute("ALTER TABLE images DROP COLUMN mean_confidence")
    con.commit()
    con.close()
    with Project.open(path) as p:
        rec = p.images()[0]
        assert rec.mean_confidence is None
        p.set_mean_confidence(rec.id, 0.25)
        assert p.image(rec.id).mean_confidence == 0.25
        with pytest.raises(AtrousError, match="mean confidence must be in"):
            p.set_mean_confidence(rec.id, 2.0)


def test_finetune_batch_size_help_names_the_real_defaults() -> None:
    import argparse

    from model.cli import add_finetune_arguments
    from model.finetune import DEFAULT_BATCH

    p = argparse.ArgumentParser()
    add_finetune_arguments(p)
    action = next(a for a in p._actions if "--batch-size" in a.option_strings)
    assert action.default is None  # left open, so finetune picks by device
    assert f"{DEFAULT_BATCH['cpu']} on the CPU, {DEFAULT_BATCH['gpu']} on a GPU" in action.help


def test_first_ctrl_c_asks_to_stop_and_a_second_interrupts() -> None:
    import os
    import signal

    from model.progress import stop_on_first_sigint

    with stop_on_first_sigint("stopping") as should_stop:
        assert not should_stop()
        os.kill(os.getpid(), signal.SIGINT)
        assert should_stop()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_ctrl_c_during_prelabel_prints_the_summary(tmp_path, tiny_ckpt, capsys, monkeypatch) -> None:
    """#17 item 15: Ctrl-C printed only 'interrupted'."""
    import contextlib

    import model.progress

    calls = {"n": 0}

    @contextlib.contextmanager
    def ctrl_c_after_two_images(message):
        def should_stop() -> bool:
            calls["n"] += 1
            return calls["n"] > 2

        yield should_stop

    monkeypatch.setattr(model.progress, "stop_on_first_sigint", ctrl_c_after_two_images)
    path, _ = make_tiny_project(tmp_path, n=4, statuses=("new",))
    code = main.main(["prelabel", str(path), "--model", str(tiny_ckpt), "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 130
    assert "pre-labelled 2 of 4 images" in out and "stopped by Ctrl-C after 2 of 4" in out
    with Project.open(path) as p:
        assert sorted(r.status for r in p.images()) == ["new", "new", "prelabeled", "prelabeled"]


def test_finetune_cli_reports_a_fold_in_that_lands_before_any_step_of_its_epoch(tmp_path, monkeypatch, capsys) -> None:
    """The val images can join at an epoch's first step, when it has no loss yet: the line says so, no crash."""
    import model.finetune as ft
    from model.finetune.config import FinetuneResult

    def fake(config, on_progress, should_stop):
        on_progress(
            {"phase": "epoch", "epoch": 3, "iteration": 40, "train_loss": None, "val_miou": 0.4, "fold_in": True}
        )
        on_progress({"phase": "epoch", "epoch": 4, "iteration": 50, "train_loss": 0.25, "val_miou": 0.5})
        return FinetuneResult(None, None, [], 0.4, {}, False, False, 50, 1.0, 50.0)

    monkeypatch.setattr(ft, "finetune", fake)
    code = main.main(["finetune", str(tmp_path / "p"), "--minutes", "0.1"])
    captured = capsys.readouterr()
    assert code == 1 and "nothing saved" in captured.out
    assert "epoch 3: val mIoU 0.400" in captured.err and "that was the last val figure" in captured.err
    assert "epoch 4: train loss 0.250, val mIoU 0.500" in captured.err
