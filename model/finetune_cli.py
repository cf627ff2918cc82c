"""The ``finetune`` command: its arguments and its run (see docs/cli.md and docs/finetuning.md).

Used by ``atrous finetune``, by ``python -m model.finetune`` (the entry torchrun starts on
each process) and, through that command with ``--progress-json``, by the app's fine-tune
process. torch is imported only when it runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from annotation.errors import AtrousError


def add_finetune_arguments(f: argparse.ArgumentParser) -> None:
    f.add_argument("project", type=Path)
    f.add_argument(
        "--base",
        default=None,
        help="starting weights: a registry name, a checkpoint file, a project version (v3), or 'scratch' "
        "(default: the active version, else cached torchvision weights, else a random init)",
    )
    g = f.add_mutually_exclusive_group()
    g.add_argument("--epochs", type=int, help="passes over the training images (default 30)")
    g.add_argument("--minutes", type=float, help="train for this long instead (LR schedule follows the clock)")
    f.add_argument(
        "--batch-size", type=int, default=None, help="images per training step (default: 4 on the CPU, 8 on a GPU)"
    )
    f.add_argument("--crop", type=int, default=320, help="square training crop in pixels (padded with void)")
    f.add_argument(
        "--input-size", type=int, default=None, help="training/inference scale, shorter side (default: the base's)"
    )
    f.add_argument(
        "--normalisation",
        choices=["dataset", "image"],
        default=None,
        help="input normalisation: the base's mean/std, or each image's own (default: the base's; "
        "'image' for a random init)",
    )
    f.add_argument("--optimizer", choices=["adamw", "sgd"], default="adamw")
    f.add_argument("--lr", type=float, default=None, help="peak learning rate (default 2e-3 AdamW, 0.02 SGD)")
    f.add_argument(
        "--correction-weight",
        type=float,
        default=1.0,
        help="loss weight of the pixels a person corrected in the pre-label (1 = no extra weight)",
    )
    f.add_argument("--val-fraction", type=float, default=0.2, help="share of the images held out for val (0.2)")
    f.add_argument(
        "--fold-in",
        type=float,
        default=None,
        metavar="SHARE",
        help="after this share of the run the val images are trained on too and the last weights are saved; "
        "the val mIoU reported is the one measured just before (default 0.75 for projects under 200 images, "
        "1 = never, for larger ones)",
    )
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N")
    f.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    f.add_argument("--no-activate", action="store_true", help="save the version but keep the current active one")
    f.add_argument("--name", default="", help="a name for the new model version")
    f.add_argument("--evals", type=int, default=8, help="with --minutes: about this many val evaluations (default 8)")
    f.add_argument(
        "--progress-json",
        action="store_true",
        help="write one JSON object per line to stdout for every progress report (phase start, load, "
        "warmup, train, eval, epoch, bn, save), then one 'done' line with the result or an 'error' "
        "line; text for people goes to stderr (the app reads this)",
    )


def cmd_finetune(args: argparse.Namespace) -> int:
    """``finetune PROJECT [...]``: train with a progress bar, then a summary ending with the checkpoint path.

    With ``--progress-json`` stdout carries only JSON lines (:class:`model.progress.JsonLines`):
    ``{"phase": "start", "pid"}`` once the Ctrl-C handler is in place, every progress report of
    :func:`model.finetune.finetune` except its own "done", then either ``{"phase": "done",
    "version_id", "checkpoint", "best_miou", "per_class_iou", "activated", "stopped", "iterations",
    "seconds", "it_per_s"}`` (``version_id`` None when nothing was saved) or ``{"phase": "error",
    "message"}``. Everything written for people goes to stderr.
    """
    import contextlib
    import os

    from .finetune import FinetuneConfig, _dist_info, finetune
    from .metrics import SegMetrics, format_metrics
    from .progress import JsonLines, ProgressBar, format_seconds, stop_on_first_sigint

    rank = _dist_info()[0]
    # Only rank 0 reports, so that under torchrun the lines of several processes never interleave.
    lines = JsonLines(sys.stdout) if args.progress_json and rank == 0 else None
    config = FinetuneConfig(
        project=str(args.project),
        base=args.base,
        epochs=args.epochs,
        minutes=args.minutes,
        batch_size=args.batch_size,
        crop=args.crop,
        input_size=args.input_size,
        normalisation=args.normalisation,
        optimizer=args.optimizer,
        lr=args.lr,
        correction_weight=args.correction_weight,
        val_fraction=args.val_fraction,
        fold_in=args.fold_in,
        seed=args.seed,
        device=args.device,
        precision=args.precision,
        activate=not args.no_activate,
        name=args.name,
        evals=args.evals,
    )
    state: dict = {"bar": None, "shown": 0}

    def on_progress(d: dict) -> None:
        if rank != 0:
            return
        phase = d.get("phase")
        if lines is not None and phase != "done":  # the command's own "done" line carries the whole result
            lines.write(d)
        if phase == "load" and "train" in d:
            print(
                f"fine-tuning on {d['train']} image(s), validating on {d['val']}; base: {d['base']} ({d['heads']})",
                file=sys.stderr,
            )
        elif phase == "train":
            if state["bar"] is None:  # steps when they are known, else the share of the time budget
                # The budget started with training, not with this first report: dated from then,
                # the first ETA is not 0:00.
                ago = float(d.get("elapsed") or 0.0)
                state["bar"] = (
                    ProgressBar(d["iterations"], unit="it", started_ago=ago)
                    if d["iterations"]
                    else ProgressBar(100, percent=True, started_ago=ago)
                )
            bar = state["bar"]
            target = d["iteration"] if d["iterations"] else int(d["fraction"] * 100)
            if target > bar.done:
                step = "" if d["iterations"] else f"step {d['iteration']}, "
                bar.update(target - bar.done, f"{step}epoch {d['epoch']} loss {d['loss']:.3f}")
        elif phase == "skipped":
            print(
                f"left out {len(d['images'])} image(s) that cannot be used (`check PROJECT` lists them):",
                file=sys.stderr,
            )
            for item in d["images"]:
                print(f"  {item['why']}", file=sys.stderr)
        elif phase == "epoch" and d.get("val_miou") is not None:
            # No loss when the val images join at an epoch's first step (nothing trained in it yet).
            loss = "" if d.get("train_loss") is None else f"train loss {d['train_loss']:.3f}, "
            print(f"\nepoch {d['epoch']}: {loss}val mIoU {d['val_miou']:.3f}", file=sys.stderr)
            if d.get("fold_in"):
                print("the val images are trained on from here; that was the last val figure", file=sys.stderr)

    # The first Ctrl-C (the app's cancel sends SIGINT too) stops training like the old in-app cancel button:
    # the best checkpoint so far is kept, not activated; a second one interrupts at once.
    stopping = stop_on_first_sigint("\nstopping after this step (Ctrl-C again to abort without saving)")

    def run() -> int:
        result = finetune(config, on_progress=on_progress, should_stop=should_stop)
        if rank != 0:
            return 0
        print()
        print(f"{result.iterations} steps in {format_seconds(result.seconds)} ({result.it_per_s:.2f} it/s)")
        if result.per_class_iou:
            names = list(result.per_class_iou)
            m = SegMetrics(result.best_miou or 0.0, float("nan"), list(result.per_class_iou.values()), names)
            print("\n".join(format_metrics(m).splitlines()[:-1]))  # the val pixel accuracy is in the JSON record
        else:
            print("no val images (too few edited/reviewed images), so no val mIoU; the last weights were kept")
        if lines is not None:
            lines.write(
                {
                    "phase": "done",
                    "version_id": result.version_id,
                    "checkpoint": result.checkpoint_path,
                    "best_miou": result.best_miou,
                    "per_class_iou": result.per_class_iou,
                    "activated": result.activated,
                    "stopped": result.stopped,
                    "iterations": result.iterations,
                    "seconds": result.seconds,
                    "it_per_s": result.it_per_s,
                }
            )
        if result.checkpoint_path is None:
            print("nothing saved (stopped before the first validation)")
            return 1
        state_txt = "active" if result.activated else "not activated"
        print(f"model version v{result.version_id} ({state_txt})")
        print(f"saved {os.fspath(result.checkpoint_path)}")
        return 0

    with stopping as should_stop:
        if lines is None:
            return run()
        # stdout belongs to the JSON lines: anything printed for people (here or deeper down) goes to stderr.
        with contextlib.redirect_stdout(sys.stderr):
            lines.write({"phase": "start", "pid": os.getpid()})
            try:
                return run()
            except AtrousError as e:
                lines.write({"phase": "error", "message": str(e)})
                raise  # the caller prints it for people and exits with 2
            except KeyboardInterrupt:
                lines.write({"phase": "error", "message": "interrupted; nothing was saved"})
                raise


def main_finetune(argv: list[str]) -> int:
    """``python -m model.finetune PROJECT [options]`` (the torchrun entry point)."""
    parser = argparse.ArgumentParser(prog="python -m model.finetune", description="fine-tune (torchrun-friendly)")
    add_finetune_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return cmd_finetune(args)
    except AtrousError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
