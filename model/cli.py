"""Headless model commands: ``prelabel``, ``models``, ``activate``, ``finetune``, ``evaluate`` (see docs/cli.md).

torch is imported only when a command runs, so ``atrous --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from annotation.errors import AtrousError, AtrousReadError
from annotation.imageio import is_image_file


def register(sub: argparse._SubParsersAction) -> None:
    """Add the model subcommands to the top-level parser."""
    p = sub.add_parser(
        "prelabel",
        help="pre-label a folder of images, or a project's new images, with a DeepLabV3 model",
        description=(
            "IMAGES_DIR --out MASKS_DIR: predict a label map for every image under IMAGES_DIR (recursively) and "
            "write one palette PNG per image into --out, keeping sub-folders and file stems. "
            "PROJECT: pre-label the project's images with status new or prelabeled (edited and reviewed images "
            "only with --overwrite-edited), store the masks as 'prelabeled' with the model version, keep a copy "
            "in PROJECT/prelabels/ (to count corrections) and the mean confidence per image. "
            "Unreadable images are listed and skipped."
        ),
    )
    p.add_argument("images", metavar="IMAGES_DIR|PROJECT", type=Path)
    p.add_argument("--out", type=Path, metavar="MASKS_DIR", help="folder for the label PNGs (folder mode only)")
    p.add_argument(
        "--overwrite-edited", action="store_true", help="project mode: also replace edited and reviewed masks"
    )
    p.add_argument(
        "--overwrite", action="store_true", help="folder mode: write into a --out folder that already holds files"
    )
    add_model_arguments(p, default=None)
    p.set_defaults(func=cmd_prelabel)

    m = sub.add_parser(
        "models",
        help="list the named models, or a project's model versions",
        description="Without PROJECT: the registry models and whether their weights are cached. "
        "With PROJECT: its model versions, their val mIoU, and which one is active.",
    )
    m.add_argument("project", nargs="?", type=Path, help="a project folder")
    m.set_defaults(func=cmd_models)

    a = sub.add_parser(
        "activate",
        help="choose the project's active model version (used by prelabel and as the fine-tune base)",
        description="Make VERSION (an id such as 3 or v3, see `models PROJECT`) the active model version; "
        "`none` clears it. Rolling back is activating an older version.",
    )
    a.add_argument("project", type=Path)
    a.add_argument("version")
    a.set_defaults(func=cmd_activate)

    f = sub.add_parser(
        "finetune",
        help="fine-tune on the project's edited/reviewed masks; saves a new model version",
        description="Train on the images with status edited or reviewed (a seeded split is held out for val mIoU), "
        "save the best checkpoint under PROJECT/models/ as a new model version and make it active. Runs under "
        "`torchrun --nproc_per_node N -m model.finetune PROJECT ...` for several GPUs/processes.",
    )
    add_finetune_arguments(f)
    f.set_defaults(func=cmd_finetune)

    e = sub.add_parser(
        "evaluate",
        help="per-class IoU, mIoU and pixel accuracy of a model on a project's masks",
        description="Predict the project's images that have masks with the chosen statuses and compare at full "
        "resolution (255 = void is ignored). Default model: the active version.",
    )
    e.add_argument("project", type=Path)
    e.add_argument(
        "--status", default="edited,reviewed", help="comma-separated statuses to evaluate (default: %(default)s)"
    )
    e.add_argument(
        "--split",
        choices=["all", "val", "train"],
        default="all",
        help="only the fine-tune val (or train) split of --seed/--val-fraction (default: all)",
    )
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--val-fraction", type=float, default=0.2)
    e.add_argument("--json", action="store_true", help="print one JSON object: miou, pixel_accuracy, per_class_iou")
    add_model_arguments(e, default=None)
    e.set_defaults(func=cmd_evaluate)


def add_model_arguments(p: argparse.ArgumentParser, default: str | None = None) -> None:
    """The options every command that runs the network shares.

    ``default=None``: resolved per command (a project's active version, else the registry default).
    """
    from .versions import DEFAULT_MODEL

    p.add_argument(
        "--model",
        default=default,
        help="registry name (see `models`), an Atrous checkpoint, a torchvision DeepLabV3 state-dict file, or for a "
        f"project a version (v3) (default: a project's active version, else {DEFAULT_MODEL})",
    )
    p.add_argument("--classes", type=Path, help="class names, one per line, for a plain state-dict file")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N, mps")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--batch-size", type=int, default=None, help="images per batch (default: 1 on CPU, 8 on GPU)")


def make_predictor(args: argparse.Namespace, ref=None):
    """Load ``ref`` (default: ``--model`` resolved without a project) with the device/precision options."""
    from .versions import load_predictor, resolve

    ref = ref if ref is not None else resolve(None, args.model)
    return load_predictor(
        ref, device=args.device, precision=args.precision, batch_size=args.batch_size, classes_file=args.classes
    )


def _scan(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise AtrousReadError(f"{folder}: not a folder")
    return sorted(p for p in folder.rglob("*") if p.is_file() and is_image_file(p))


def cmd_prelabel(args: argparse.Namespace) -> int:
    """Pre-label every image in a folder (or a project's new images); 0, or 1 when some images were skipped."""
    from annotation.atomic import atomic_write_bytes
    from annotation.layout import is_project
    from annotation.masks import make_palette, write_mask_png

    from .progress import ProgressBar, format_seconds, stop_on_first_sigint

    if is_project(args.images):
        if args.out is not None:
            raise AtrousError(f"{args.images} is a project: its masks are stored in it, leave out --out")
        if args.overwrite:
            raise AtrousError("--overwrite applies to folder mode; in a project use --overwrite-edited")
        return cmd_prelabel_project(args)
    if args.out is None:
        raise AtrousError(f"{args.images}: not a project; give --out MASKS_DIR for the label PNGs of a folder")
    if args.overwrite_edited:
        raise AtrousError("--overwrite-edited applies to projects only")
    from .jobs import check_output_folder, mask_names

    check_output_folder(args.images, args.out, overwrite=args.overwrite)
    out_inside = args.out.resolve().is_relative_to(args.images.resolve())
    paths = [p for p in _scan(args.images) if not (out_inside and p.resolve().is_relative_to(args.out.resolve()))]
    if not paths:
        raise AtrousReadError(f"{args.images}: no images found (looked for .jpg .jpeg .png .bmp .tif .tiff .webp)")
    names = mask_names(paths, args.images)
    renamed = sum(1 for p in paths if names[p].name != p.with_suffix(".png").name)
    predictor = make_predictor(args)
    meta = predictor.meta
    palette = make_palette(meta.colours)
    atomic_write_bytes(args.out / "labels.txt", ("\n".join(meta.class_names) + "\n").encode("utf-8"))
    print(
        f"pre-labelling {len(paths)} images with {meta.name or args.model} on {predictor.description}", file=sys.stderr
    )
    bar = ProgressBar(len(paths))
    failed: list[str] = []
    written = 0
    start = time.perf_counter()
    done = 0
    results = predictor.predict_files(paths)
    with stop_on_first_sigint(STOP_MESSAGE) as should_stop:
        for path, result in results:
            if isinstance(result, AtrousError):
                failed.append(str(result))
            else:
                try:
                    write_mask_png(args.out / names[path], result.labels, palette)
                    written += 1
                except AtrousError as e:
                    failed.append(str(e))
            done += 1
            bar.update(1, path.name)
            if should_stop():
                break
    results.close()
    elapsed = time.perf_counter() - start
    if renamed:
        print(f"{renamed} image(s) share a file stem with another image; their masks are named <file name>.png")
    print(
        f"pre-labelled {written} of {len(paths)} images in {format_seconds(elapsed)} "
        f"({written / max(elapsed, 1e-9):.2f} img/s, {predictor.description}) -> {args.out}"
    )
    if done < len(paths):
        print(f"stopped by Ctrl-C after {done} of {len(paths)} images; the masks written so far are complete")
        return 130
    return _report_skipped(failed)


#: What the first Ctrl-C of a pre-label run prints; the run stops after the image in hand.
STOP_MESSAGE = "\nstopping after this image (Ctrl-C again to stop at once)"


def _report_skipped(failed: list[str]) -> int:
    """Print the images a pre-label run skipped, one line each; exit code 1 if any."""
    if not failed:
        return 0
    print(f"skipped {len(failed)} image(s):")
    for line in failed:
        print(f"  {line}")
    return 1


def cmd_models(args: argparse.Namespace) -> int:
    """List registry models and where their weights are (or would be) cached; or a project's versions."""
    import os

    if args.project is not None:
        return _list_versions(args.project)

    from .weights import REGISTRY, torchvision_cache_dir

    cache = torchvision_cache_dir()
    for entry in REGISTRY.values():
        fname = os.path.basename(entry.torchvision_weights().url)
        state = "cached" if (cache / fname).exists() else "not cached (needs one download)"
        print(f"{entry.name:32s} {state:34s} {entry.description}")
    print(f"cache folder: {cache}")
    return 0


# --------------------------------------------------------------------------- project commands


def _list_versions(root: Path) -> int:
    from annotation.project import Project

    with Project.open(root) as project:
        versions = project.model_versions()
        active = project.active_model_version
        if not versions:
            print(f"{root}: no model versions yet (run `finetune {root}`)")
            return 0
        import datetime

        from .versions import REGISTRY_NAMES, version_ref

        print(f"{'':2s}{'version':8s} {'created':19s} {'val mIoU':>8s}  {'images':>6s}  checkpoint")
        for mv in versions:
            mark = "* " if active is not None and active.id == mv.id else "  "
            miou = mv.metrics.get("best_val_miou")
            n = len(mv.metrics.get("train_images", [])) or ""
            when = datetime.datetime.fromtimestamp(mv.created).isoformat(sep=" ", timespec="seconds")
            spec = version_ref(project, mv, check=False).spec
            missing = "" if spec in REGISTRY_NAMES or Path(spec).is_file() else "  (missing)"
            print(f"{mark}v{mv.id:<7d} {when} {'-' if miou is None else f'{miou:.3f}':>8s}  {n!s:>6s}  {spec}{missing}")
        print(
            "* = active (change with `activate PROJECT VERSION`)"
            if active
            else "no active version (set one with `activate PROJECT VERSION`)"
        )
    return 0


def cmd_activate(args: argparse.Namespace) -> int:
    """``activate PROJECT VERSION|none``."""
    from annotation.project import Project

    from .versions import parse_version_id, version_ref

    with Project.open(args.project) as project:
        text = str(args.version)
        if text.lower() == "none":
            project.active_model_version = None
            print(f"{args.project}: no active model version")
            return 0
        vid = parse_version_id(text)
        if vid is None:
            raise AtrousError(f"{text!r} is not a version id; use e.g. 3 or v3 (see `models {args.project}`)")
        project.active_model_version = vid
        mv = project.active_model_version
        ref = version_ref(project, mv, check=False)
        print(f"{args.project}: active model version is now v{mv.id} ({ref.spec})")
    return 0


def cmd_prelabel_project(args: argparse.Namespace) -> int:
    """``prelabel PROJECT [--model ...] [--overwrite-edited]``."""
    from annotation.project import Project

    from .jobs import prelabel_project
    from .progress import ProgressBar, format_seconds, stop_on_first_sigint
    from .versions import check_classes_match, ensure_version, resolve

    with Project.open(args.images) as project:
        ref = resolve(project, args.model)
        predictor = make_predictor(args, ref)
        check_classes_match(project, predictor.meta)
        version_id = ensure_version(project, ref, predictor.meta.name)
        bar: ProgressBar | None = None

        def on_progress(done: int, total: int, name: str) -> None:
            nonlocal bar
            if bar is None:
                bar = ProgressBar(total)
            bar.update(done - bar.done, name)

        print(
            f"pre-labelling {args.images} with v{version_id} ({predictor.meta.name}) on {predictor.description}",
            file=sys.stderr,
        )
        with stop_on_first_sigint(STOP_MESSAGE) as should_stop:
            summary = prelabel_project(
                project,
                predictor,
                version_id=version_id,
                overwrite_edited=args.overwrite_edited,
                on_progress=on_progress,
                should_stop=should_stop,
            )
    print(
        f"pre-labelled {summary.written} of {summary.total} images in {format_seconds(summary.seconds)} "
        f"with model version v{version_id}"
        + (
            f"; {summary.left_alone} edited/reviewed image(s) left alone (--overwrite-edited replaces them)"
            if summary.left_alone
            else ""
        )
    )
    if summary.cancelled:
        print(f"stopped by Ctrl-C after {summary.done} of {summary.total}; run the same command again to do the rest")
        return 130
    return _report_skipped([why for _, why in summary.failed + summary.skipped])


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
    f.add_argument("--val-fraction", type=float, default=0.2)
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
            if state["bar"] is None:
                total = d["iterations"] if d["iterations"] else 1000
                state["bar"] = ProgressBar(total, unit="it")
            bar = state["bar"]
            target = d["iteration"] if d["iterations"] else int(round(d["fraction"] * bar.total))
            if target > bar.done:
                bar.update(target - bar.done, f"epoch {d['epoch']} loss {d['loss']:.3f}")
        elif phase == "epoch" and d.get("val_miou") is not None:
            print(
                f"\nepoch {d['epoch']}: train loss {d['train_loss']:.3f}, val mIoU {d['val_miou']:.3f}", file=sys.stderr
            )

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


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``evaluate PROJECT [--model ...] [--status ...] [--json]``."""
    import json

    from annotation.project import STATUSES, Project

    from .data import split_train_val
    from .jobs import evaluate_project
    from .metrics import format_metrics
    from .versions import check_classes_match, resolve

    statuses = [s.strip() for s in args.status.split(",") if s.strip()]
    for s in statuses:
        if s not in STATUSES:
            raise AtrousError(f"unknown status {s!r}; use a comma-separated list of {', '.join(STATUSES)}")
    with Project.open(args.project) as project:
        ref = resolve(project, args.model)
        records = [r for r in project.images(statuses) if r.has_mask]
        if args.split != "all":
            train, val = split_train_val(records, args.val_fraction, args.seed)
            records = val if args.split == "val" else train
        if not records:
            raise AtrousError(f"{args.project}: no images with masks and status {' or '.join(statuses)} to evaluate on")
        predictor = make_predictor(args, ref)
        check_classes_match(project, predictor.meta)
        result = evaluate_project(project, predictor, records)
    if args.json:
        d = result.metrics.to_dict()
        d.update({"images": result.images, "model": ref.spec, "skipped": result.failed})
        print(json.dumps(d))
    else:
        print(f"{result.images} image(s), model {ref.label or ref.spec}")
        print(format_metrics(result.metrics))
        for line in result.failed:
            print(f"skipped: {line}")
    return 1 if result.failed else 0
