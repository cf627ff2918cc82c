"""Keeping a run's result: the weights to save, the checkpoint, its JSON record and the new model version."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from annotation.atomic import atomic_write_bytes
from annotation.layout import MODELS_DIR, models_dir
from annotation.project import Project

from ..cputrain import plain_convs
from ..weights import ModelMeta, save_checkpoint
from .config import FinetuneResult
from .evaluation import recompute_bn_stats
from .prepare import RunSetup
from .training import Best


def final_network(run: RunSetup, best: Best | None, report: Callable[[dict[str, Any]], None]) -> nn.Module:
    """A plain CPU copy of the network in eval mode, holding the weights worth keeping.

    Those are the best validated weights (their BatchNorm statistics were
    recomputed before validation); without a val split, the last ones, with
    their statistics recomputed now.
    """
    net = run.net
    if best is None:
        report({"phase": "bn"})
        recompute_bn_stats(
            net,
            run.samples_train,
            run.mean,
            run.std,
            run.device,
            run.dtype,
            run.config.channels_last,
            per_image=run.per_image,
        )
    final = plain_convs(copy.deepcopy(net)).cpu().eval()
    if best is not None:
        final.load_state_dict(best[1])
    return final


def save_version(
    project: Project,
    run: RunSetup,
    best: Best | None,
    result: FinetuneResult,
    report: Callable[[dict[str, Any]], None],
    *,
    folded: bool = False,
) -> None:
    """Save the checkpoint and its record under ``models/``, add the model version, activate it when asked.

    ``best`` None: the last weights. ``folded``: the val images were trained on after the
    val figure was taken (recorded, so ``evaluate --split val`` can say so).
    Fills in ``result``'s version id, checkpoint path and ``activated``.
    """
    config = run.config
    final = final_network(run, best, report)
    report({"phase": "save"})
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder = models_dir(project.root)
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"finetune-{stamp}"
    k = 1
    while (folder / f"{stem}.pt").exists():
        k += 1
        stem = f"finetune-{stamp}-{k}"
    ckpt = folder / f"{stem}.pt"
    summary = {
        "base": run.base_desc,
        "heads": run.head_note,
        "train_images": [r.id for r in run.train_recs],
        "val_images": [r.id for r in run.val_recs],
        "iterations": result.iterations,
        "seconds": round(result.seconds, 2),
        "it_per_s": round(result.it_per_s, 4),
        "stopped": result.stopped,
        "best_val_miou": result.best_miou,
        "val_trained_after_figure": folded,
        "per_class_iou": result.per_class_iou,
        "device": str(run.device),
        "precision": {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[run.dtype],
        "world_size": run.world,
        "normalisation": run.normalisation,
    }
    meta = ModelMeta(
        arch=final.spec,
        class_names=run.class_names,
        colours=run.colours,
        mean=run.mean,
        std=run.std,
        input_size=run.input_size,
        normalisation=run.normalisation,
        name=config.name or stem,
        source=f"finetuned on {project.root.name} from {run.base_desc}",
        history=[{"config": config.to_dict(), "summary": summary, "epochs": result.history}],
    )
    save_checkpoint(ckpt, final, meta)
    record = {"config": config.to_dict(), "history": result.history, **summary}
    atomic_write_bytes(folder / f"{stem}.json", json.dumps(record, indent=1).encode())
    version_id = project.add_model_version(config.name or stem, f"{MODELS_DIR}/{ckpt.name}", record)
    activated = False
    if config.activate and not result.stopped:
        project.active_model_version = version_id
        activated = True
    result.version_id, result.checkpoint_path, result.activated = version_id, ckpt, activated
