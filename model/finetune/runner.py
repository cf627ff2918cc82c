"""The fine-tune entry point: :func:`finetune` opens the project and runs set-up, training and the save in turn."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from annotation.project import Project

from ..cputrain import keep_freed_memory
from .config import FinetuneConfig, FinetuneResult, _Cancelled, _check_config
from .prepare import load_samples, prepare_run
from .saving import save_version
from .training import start_training, train, warm_up


def finetune(
    project_or_config: FinetuneConfig | Project | str | os.PathLike[str],
    *,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    clock: Callable[[], float] = time.perf_counter,
    **overrides: Any,
) -> FinetuneResult:
    """Fine-tune on the project's ``edited``/``reviewed`` masks and save a new model version.

    Args:
        project_or_config: a :class:`FinetuneConfig`, an open :class:`Project`, or a project path.
        on_progress: called with a dict (see docs/finetuning.md): ``phase`` ("load", "train",
            "warmup", "eval", "epoch", "bn", "save", "done"). "load": ``images``, ``train``, ``val``, ``base``,
            ``heads``. "train" (every step): ``epoch``, ``epochs`` (None with minutes), ``iteration``,
            ``iterations`` (None with minutes), ``fraction`` (0..1 of the budget), ``loss``, ``lr``,
            ``elapsed``, ``it_per_s``. "epoch": ``epoch``, ``train_loss``, ``val_miou`` (None when not
            evaluated), ``per_class_iou``, ``best_miou``. "done": ``saved`` (path or None), ``version``, ``stopped``.
        should_stop: polled every step; when it returns True the run stops, keeps the best
            checkpoint so far as a (not activated) model version, and returns ``stopped=True``.
        clock: the time source for ``minutes`` and the reported rates (a benchmark that
            interleaves two trainings passes one that stops while the other runs).
        **overrides: FinetuneConfig fields (e.g. ``minutes=5``).

    Raises:
        FinetuneError (or another AtrousError) with a message for a person; the project's
        active model is then unchanged.
    """
    if isinstance(project_or_config, FinetuneConfig):
        config = replace(project_or_config, **overrides)
        project, own = None, True
    elif isinstance(project_or_config, Project):
        config = FinetuneConfig(project=str(project_or_config.root), **overrides)
        project, own = project_or_config, False
    else:
        config = FinetuneConfig(project=os.fspath(project_or_config), **overrides)
        project, own = None, True
    if project is None:
        project = Project.open(config.project)
    try:
        with keep_freed_memory():
            return _run(project, config, on_progress or (lambda d: None), should_stop or (lambda: False), clock)
    finally:
        if own:
            project.close()


def _run(
    project: Project,
    config: FinetuneConfig,
    report: Callable[[dict[str, Any]], None],
    should_stop: Callable[[], bool],
    clock: Callable[[], float],
) -> FinetuneResult:
    """Set up, train, and (on rank 0) save; see :func:`finetune` for the arguments."""
    _check_config(config)
    t_start = clock()
    run = prepare_run(project, config)
    report(
        {
            "phase": "load",
            "images": len(run.records),
            "train": len(run.train_recs),
            "val": len(run.val_recs),
            "base": run.base_desc,
            "heads": run.head_note,
        }
    )
    try:
        load_samples(run, project, report, should_stop)
    except _Cancelled:
        report({"phase": "done", "saved": None, "stopped": True})
        return FinetuneResult(None, None, [], None, {}, True, False, 0, clock() - t_start, 0.0, run.config.to_dict())

    if run.skipped:
        report({"phase": "skipped", "images": [{"path": p, "why": why} for p, why in run.skipped]})
    trainer = start_training(run)
    warm_up(run, trainer, report)
    out = train(run, trainer, report, should_stop, clock)

    seconds = clock() - t_start
    train_seconds = max(1e-9, clock() - out.train_t0 - out.eval_seconds)
    it_per_s = out.iterations / train_seconds
    best = out.best
    result = FinetuneResult(
        version_id=None,
        checkpoint_path=None,
        history=out.history,
        best_miou=best[0] if best else None,
        per_class_iou=dict(zip(run.class_names, best[2].per_class_iou)) if best else {},
        stopped=out.stopped,
        activated=False,
        iterations=out.iterations,
        seconds=seconds,
        it_per_s=it_per_s,
        config=run.config.to_dict(),
    )
    if run.distributed:
        import torch.distributed as dist

        dist.barrier()
    if run.rank != 0:
        if trainer.own_group:
            import torch.distributed as dist

            dist.destroy_process_group()
        return result
    if out.iterations == 0:
        report({"phase": "done", "saved": None, "stopped": out.stopped})
        return result
    if out.stopped and best is None:
        report({"phase": "done", "saved": None, "stopped": True})
        return result  # cancelled before anything was validated: nothing worth keeping

    # After a fold-in the last weights have learnt from every image: keep those, not the validated copy.
    save_version(project, run, None if out.folded else best, result, report, folded=out.folded)
    report(
        {
            "phase": "done",
            "saved": str(result.checkpoint_path),
            "version": result.version_id,
            "stopped": out.stopped,
            "best_miou": result.best_miou,
        }
    )
    if trainer.own_group:
        import torch.distributed as dist

        dist.destroy_process_group()
    return result
