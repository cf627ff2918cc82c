"""finetune(): a run saves a version; bad input fails with a clear error and leaves the active model alone."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from annotation.errors import AtrousError
from annotation.masks import write_mask_png
from annotation.project import LabelClass, Project
from model.data import prelabel_path
from model.finetune import FinetuneConfig, FinetuneError, finetune
from model.finetune import training as ft  # the loop looks up seg_loss here, so tests patch it here
from model.weights import WeightsError, load_checkpoint, save_checkpoint

from .ddp_common import FAST, make_tiny_project, one_thread  # noqa: F401  (fixture)
from .helpers import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One finished run shared by several tests (the slow part)."""
    root = tmp_path_factory.mktemp("ft")
    path, masks = make_tiny_project(root, n=6, statuses=("reviewed", "edited", "reviewed"))
    events: list[dict] = []
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = finetune(path, epochs=3, on_progress=events.append, fold_in=1.0, **FAST)
    finally:
        torch.set_num_threads(before)
    return path, result, events


def test_a_run_saves_an_active_version_with_history(trained) -> None:
    path, result, events = trained
    assert result.checkpoint_path is not None and result.checkpoint_path.parent == path / "models"
    assert not result.stopped and result.activated and result.iterations > 0
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    assert all(h["val_miou"] is not None and h["train_loss"] > 0 for h in result.history)
    assert result.best_miou == max(h["val_miou"] for h in result.history)
    assert set(result.per_class_iou) == {"k0", "k1", "k2"}
    phases = [e["phase"] for e in events]
    assert phases[0] == "load" and phases[-1] == "done" and "train" in phases and "eval" in phases
    train = next(e for e in events if e["phase"] == "train")
    assert {"epoch", "iteration", "iterations", "loss", "lr", "fraction", "elapsed", "it_per_s"} <= set(train)
    with Project.open(path) as p:
        active = p.active_model_version
        assert active is not None and active.id == result.version_id
        assert active.metrics["best_val_miou"] == result.best_miou
        assert active.metrics["config"]["epochs"] == 3 and len(active.metrics["history"]) == 3
        assert set(active.metrics["val_images"]).isdisjoint(active.metrics["train_images"])
    loaded = load_checkpoint(result.checkpoint_path)
    assert loaded.meta.class_names == ["k0", "k1", "k2"] and loaded.meta.input_size == 40
    assert loaded.meta.history[0]["epochs"][0]["epoch"] == 1
    side = json.loads(result.checkpoint_path.with_suffix(".json").read_text())
    assert side["iterations"] == result.iterations


def test_continue_from_a_version_with_other_classes_rebuilds_the_heads(trained, tmp_path) -> None:
    src, result, _ = trained
    path, _ = make_tiny_project(tmp_path, n=4, classes=2)
    base = load_checkpoint(result.checkpoint_path)
    r2 = finetune(path, epochs=1, **{**FAST, "base": str(result.checkpoint_path)})
    new = load_checkpoint(r2.checkpoint_path)
    assert new.meta.arch.num_classes == 2 and new.meta.class_names == ["k0", "k1"]
    # backbone weights came from the base (then trained one epoch: close, not random)
    k = "backbone.0.0.weight"
    assert torch.allclose(new.network.state_dict()[k], base.network.state_dict()[k], atol=0.05)
    with Project.open(path) as p:
        assert "heads rebuilt" in p.active_model_version.metrics["heads"]


def test_cancel_keeps_best_so_far_without_activating(tmp_path) -> None:
    path, _ = make_tiny_project(tmp_path, n=6)
    epochs_seen: list[int] = []

    def on_progress(d: dict) -> None:
        if d["phase"] == "epoch":
            epochs_seen.append(d["epoch"])

    r = finetune(path, epochs=50, on_progress=on_progress, should_stop=lambda: len(epochs_seen) >= 2, **FAST)
    assert len(r.history) == 2 and r.iterations > 0
    assert r.stopped and not r.activated and r.checkpoint_path is not None and r.checkpoint_path.exists()
    with Project.open(path) as p:
        assert p.active_model_version is None
        assert [mv.id for mv in p.model_versions()] == [r.version_id]


@pytest.mark.parametrize("when", ["loading", "first step"])
def test_cancel_before_a_validation_saves_nothing(tmp_path, when) -> None:
    path, _ = make_tiny_project(tmp_path, n=4)
    phases: list[str] = []
    stop = (lambda: True) if when == "loading" else (lambda: "warmup" in phases)
    r = finetune(path, epochs=5, should_stop=stop, on_progress=lambda d: phases.append(d["phase"]), **FAST)
    assert r.stopped and r.iterations == 0 and r.checkpoint_path is None
    assert ("warmup" in phases) == (when == "first step") and phases[-1] == "done"
    with Project.open(path) as p:
        assert p.model_versions() == [] and p.active_model_version is None


def test_no_edited_images(tmp_path) -> None:
    path, _ = make_tiny_project(tmp_path, n=3, statuses=("new", "prelabeled"))
    with pytest.raises(FinetuneError, match="no images with status edited or reviewed"):
        finetune(path, epochs=1, **FAST)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ({"lr": float("nan")}, "learning rate must be a positive number"),
        ({"lr": -1.0}, "learning rate must be a positive number"),
        ({"minutes": float("inf"), "epochs": None}, "minutes must be a finite number"),
        ({"input_size": 0}, "input size must be at least 32"),
        ({"fold_in": 0.0}, "fold-in must be in"),
        ({"fold_in": float("nan")}, "fold-in must be in"),
    ],
)
def test_bad_numbers_are_refused_before_anything_runs(tmp_path, option, message) -> None:
    """From the hostile-input table: --lr nan was a torch traceback, --input-size 0 trained anyway."""
    path, _ = make_tiny_project(tmp_path, n=2)
    settings = {**FAST, "epochs": 1, **option}
    with pytest.raises(FinetuneError, match=message):
        finetune(path, **settings)
    with Project.open(path) as p:
        assert p.model_versions() == []


def test_single_class(tmp_path) -> None:
    path, _ = make_tiny_project(tmp_path, n=3)
    with Project.open(path) as p:
        p.set_classes([LabelClass(0, "only", (1, 2, 3))])
    with pytest.raises(FinetuneError, match="single class"):
        finetune(path, epochs=1, **FAST)


def test_images_of_different_sizes_and_void(tmp_path) -> None:
    path, _ = make_tiny_project(tmp_path, n=4, sizes=((40, 56), (64, 48), (30, 90)), void_rows=3)
    events: list[dict] = []
    r = finetune(path, epochs=1, val_fraction=0.0, on_progress=events.append, **FAST)
    assert r.checkpoint_path is not None and r.best_miou is None  # no val split: last weights kept
    assert r.activated
    phases = [e["phase"] for e in events]
    assert phases.index("bn") < phases.index("save")  # statistics re-estimated on whole images first


def test_corrupt_checkpoint_as_base(tmp_path) -> None:
    path, _ = make_tiny_project(tmp_path, n=3)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(WeightsError, match="bad.pt"):
        finetune(path, epochs=1, **{**FAST, "base": str(bad)})
    with pytest.raises(AtrousError, match="no model version v9"):
        finetune(path, epochs=1, **{**FAST, "base": "v9"})
    with Project.open(path) as p:
        assert p.model_versions() == []


def test_out_of_memory_is_a_clear_error_and_changes_nothing(tmp_path, monkeypatch) -> None:
    path, _ = make_tiny_project(tmp_path, n=4)
    with Project.open(path) as p:
        ckpt = tmp_path / "prev.pt"
        loaded = tiny_model(3)
        loaded.meta.class_names = ["k0", "k1", "k2"]
        save_checkpoint(ckpt, loaded.network, loaded.meta)
        p.active_model_version = p.add_model_version("prev", str(ckpt))
    real = ft.seg_loss
    calls = {"n": 0}

    def exploding(*a, **k):
        calls["n"] += 1
        if calls["n"] > 2:  # after the warm-up step
            raise RuntimeError(
                "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried to allocate 99 bytes"
            )
        return real(*a, **k)

    monkeypatch.setattr(ft, "seg_loss", exploding)
    with pytest.raises(FinetuneError, match="out of memory .* smaller --batch-size"):
        finetune(path, epochs=2, **FAST)
    with Project.open(path) as p:
        assert p.active_model_version.name == "prev" and len(p.model_versions()) == 1


def test_bad_settings_are_typed_errors(tmp_path) -> None:
    path, _ = make_tiny_project(tmp_path, n=2)
    for bad in (
        {"epochs": 1, "minutes": 1.0},
        {"epochs": 0},
        {"batch_size": 0},
        {"optimizer": "rmsprop"},
        {"correction_weight": 0.5},
    ):
        with pytest.raises(AtrousError):
            finetune(FinetuneConfig(project=str(path), **{**FAST, **bad}))


def test_correction_weights_use_the_kept_prelabels(tmp_path, monkeypatch) -> None:
    path, masks = make_tiny_project(tmp_path, n=4, statuses=("edited",))
    with Project.open(path) as p:
        for rec, m in zip(p.images(), masks):
            write_mask_png(prelabel_path(p, rec.id), np.zeros_like(m), p.palette())  # the "model" said class 0
    seen: list[float] = []
    real = ft.seg_loss

    def spy(logits, target, weights):
        if weights is not None:
            seen.append(float(weights.max()))
        return real(logits, target, weights)

    monkeypatch.setattr(ft, "seg_loss", spy)
    r = finetune(path, epochs=1, correction_weight=3.0, **FAST)
    assert r.checkpoint_path is not None
    assert seen and max(seen) == pytest.approx(3.0)


def test_a_batch_size_left_open_is_the_devices_default(tmp_path) -> None:
    path, _ = make_tiny_project(tmp_path, n=6)
    events: list[dict] = []
    r = finetune(path, epochs=1, on_progress=events.append, **{**FAST, "batch_size": None})
    assert r.config["batch_size"] == ft.DEFAULT_BATCH["cpu"] == 4
    n_train = next(e["train"] for e in events if e["phase"] == "load" and "train" in e)
    assert r.iterations == -(-n_train // 4)  # one epoch of batches of 4
    with Project.open(path) as p:
        assert p.active_model_version.metrics["config"]["batch_size"] == 4


def test_minutes_budget_stops_on_time(tmp_path) -> None:
    path, _ = make_tiny_project(tmp_path, n=4)
    fake = {"t": 0.0}

    def clock() -> float:
        fake["t"] += 1.0  # every clock read is one "second"
        return fake["t"]

    r = finetune(path, minutes=0.5, clock=clock, **FAST)
    assert 0 < r.iterations < 30 and r.checkpoint_path is not None
    assert all(h["elapsed"] <= 40 for h in r.history)


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_the_fused_optimizer_makes_the_plain_ones_update(name, monkeypatch) -> None:
    torch.manual_seed(0)
    weights = [torch.randn(7, 5), torch.randn(11)]
    grads = [[torch.randn_like(w) for w in weights] for _ in range(3)]

    def run(fused_ok: bool) -> tuple[torch.optim.Optimizer, list[torch.Tensor]]:
        params = [torch.nn.Parameter(w.clone()) for w in weights]
        if not fused_ok:
            real = torch.optim.AdamW if name == "adamw" else torch.optim.SGD

            def refuse(ps, fused=None, **kw):
                if fused:
                    raise RuntimeError("`fused=True` requires all the params to be on a supported device")
                return real(ps, **kw)

            monkeypatch.setattr(torch.optim, "AdamW" if name == "adamw" else "SGD", refuse)
        opt = ft.make_optimizer(params, name, lr=0.01, weight_decay=1e-4, momentum=0.9)
        monkeypatch.undo()
        for g in grads:
            for p, gi in zip(params, g):
                p.grad = gi.clone()
            opt.step()
        return opt, [p.detach() for p in params]

    fused, a = run(True)
    plain, b = run(False)
    assert fused.defaults.get("fused") and not plain.defaults.get("fused")
    assert all(torch.allclose(x, y, atol=1e-6) for x, y in zip(a, b))
    assert not torch.allclose(a[0], weights[0])  # the steps did move the weights


def _count_batches(monkeypatch) -> list[int]:
    """Patch the loop's make_batch to note how many samples each step drew from."""
    seen: list[int] = []
    real = ft.make_batch

    def spy(samples, *args, **kwargs):
        seen.append(len(samples))
        return real(samples, *args, **kwargs)

    monkeypatch.setattr(ft, "make_batch", spy)
    return seen


def test_a_small_project_trains_on_its_val_images_after_the_last_figure(tmp_path, monkeypatch) -> None:
    """#18: holding a fifth of a small project out costs more than it tells, so the val images join late."""
    path, _ = make_tiny_project(tmp_path, n=6)
    seen = _count_batches(monkeypatch)
    events: list[dict] = []
    r = finetune(path, epochs=4, on_progress=events.append, **FAST)
    folds = [h for h in r.history if h.get("fold_in")]
    assert len(folds) == 1 and folds[0]["val_miou"] is not None
    after = r.history[r.history.index(folds[0]) + 1 :]
    assert after and all(h["val_miou"] is None for h in after)  # never scored on images it trained on
    assert r.best_miou == folds[0]["val_miou"]
    with Project.open(path) as p:
        metrics = p.active_model_version.metrics
        n_train, n_val = len(metrics["train_images"]), len(metrics["val_images"])
        assert metrics["val_trained_after_figure"] is True and n_val >= 1
    counts = seen[1:]  # the first call is the warm-up step
    assert set(counts) == {n_train, n_train + n_val}
    assert counts.index(n_train + n_val) == folds[0]["iteration"]  # from the step after the figure on
    assert [e for e in events if e["phase"] == "epoch" and e.get("fold_in")]
    assert not load_checkpoint(r.checkpoint_path).meta.arch.aux_loss  # the default trains without an aux head


def test_an_aux_weight_builds_and_trains_the_aux_head(tmp_path, monkeypatch) -> None:
    path, _ = make_tiny_project(tmp_path, n=4)
    heads: list[int] = []
    real = ft.seg_loss

    def spy(logits, *args):
        heads.append(logits.shape[-1])
        return real(logits, *args)

    monkeypatch.setattr(ft, "seg_loss", spy)
    r = finetune(path, epochs=1, aux_weight=0.5, fold_in=1.0, **FAST)
    assert r.checkpoint_path is not None
    assert len(set(heads[1:])) == 2  # after the warm-up step, the main head (stride 16) and the aux head (stride 8)


def test_fold_in_1_never_trains_on_the_val_images(tmp_path, monkeypatch) -> None:
    path, _ = make_tiny_project(tmp_path, n=6)
    seen = _count_batches(monkeypatch)
    r = finetune(path, epochs=2, fold_in=1.0, **FAST)
    with Project.open(path) as p:
        metrics = p.active_model_version.metrics
        assert metrics["val_trained_after_figure"] is False
        assert set(seen) == {len(metrics["train_images"])}
    assert all(h["val_miou"] is not None for h in r.history)


def test_an_unreadable_mask_or_image_is_left_out_and_named(tmp_path) -> None:
    """#17: one torn mask or missing image made finetune refuse the whole project."""
    path, _ = make_tiny_project(tmp_path, n=6)
    with Project.open(path) as p:
        recs = p.images()
        torn, gone = p.mask_path(recs[1].id), p.image_path(recs[2])
    torn.write_bytes(torn.read_bytes()[:30])
    gone.unlink()
    events: list[dict] = []
    r = finetune(path, epochs=1, fold_in=1.0, on_progress=events.append, **FAST)
    assert r.checkpoint_path is not None
    skipped = [e for e in events if e["phase"] == "skipped"]
    assert len(skipped) == 1
    named = " ".join(item["why"] for item in skipped[0]["images"])
    assert len(skipped[0]["images"]) == 2 and str(torn) in named and gone.name in named


def test_no_usable_image_is_a_clear_error(tmp_path) -> None:
    path, _ = make_tiny_project(tmp_path, n=2)
    with Project.open(path) as p:
        for rec in p.images():
            p.image_path(rec).unlink()
    with pytest.raises(FinetuneError, match="none of the 2 labelled images can be read"):
        finetune(path, epochs=1, **FAST)
    with Project.open(path) as p:
        assert p.model_versions() == []


def test_truncated_train_images_leave_the_val_images_to_learn_from(tmp_path) -> None:
    """X02: truncated images are only found when decoding, after the split; the run used to stop there."""
    from model.data import split_train_val

    path, _ = make_tiny_project(tmp_path, n=4)
    with Project.open(path) as p:
        train, val = split_train_val(p.images(), 0.2, 0)
        for rec in train:
            f = p.image_path(rec)
            f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2])  # the header still reads
    events: list[dict] = []
    r = finetune(path, epochs=1, on_progress=events.append, **FAST)
    assert r.checkpoint_path is not None
    skipped = next(e for e in events if e["phase"] == "skipped")["images"]
    assert len(skipped) == len(train)
    with Project.open(path) as p:
        metrics = p.active_model_version.metrics
        assert metrics["train_images"] == [rec.id for rec in val] and metrics["val_images"] == []
