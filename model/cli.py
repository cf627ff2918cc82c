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

from .finetune_cli import add_finetune_arguments, cmd_finetune


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
    # Ray cluster runs (docs/cluster.md; model/cluster.py).
    p.add_argument(
        "--ray",
        nargs="?",
        const="",
        metavar="ADDRESS",
        help="run on a Ray cluster (HOST:PORT, ray://HOST:10001, auto; bare: $RAY_ADDRESS, else a local Ray); "
        "the input may also be a file listing image paths; needs `pip install 'atrous[cluster]'`",
    )
    p.add_argument("--actors", type=int, help="with --ray: model actors (default: one per GPU, else CPUs/4)")
    p.add_argument("--resume", action="store_true", help="with --ray: continue the run in --out, skipping done images")
    p.add_argument(
        "--import-results", type=Path, metavar="OUT", help="PROJECT: record a --ray run's results in OUT as pre-labels"
    )
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
        help="registry name (see `models`), an Atrous checkpoint, a torchvision DeepLabV3 state-dict file, a saved "
        "pixel classifier (.npz), or for a project a version (v3); `prelabel PROJECT --model pixel-classifier` "
        "trains a pixel classifier on the project's edited/reviewed masks first "
        f"(default: a project's active version, else {DEFAULT_MODEL})",
    )
    p.add_argument("--classes", type=Path, help="class names, one per line, for a plain state-dict file")
    p.add_argument(
        "--map",
        type=Path,
        metavar="FILE",
        help="project mode: map a model whose classes are not the project's onto them; lines "
        "`model class = project class` (or `= void`), `* = background|void` for the rest, others matched by "
        "name (docs/formats.md); a version recorded with a map (`<name> mapped`) reuses it without --map, and "
        "--map given wins",
    )
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
    import os

    if args.ray is not None or args.import_results is not None or args.resume or os.environ.get("RAY_ADDRESS"):
        from .cluster import cmd_prelabel_ray

        return cmd_prelabel_ray(args)
    if args.actors is not None:
        raise AtrousError("--actors applies with --ray")
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
    if args.map is not None:
        raise AtrousError("--map applies to projects only (a folder's masks keep the model's classes)")
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

        from .versions import REGISTRY_NAMES, version_kind, version_ref

        print(f"{'':2s}{'version':8s} {'created':19s} {'val mIoU':>8s}  {'images':>6s}  {'kind':16s}  checkpoint")
        for mv in versions:
            mark = "* " if active is not None and active.id == mv.id else "  "
            miou = mv.metrics.get("best_val_miou")
            n = len(mv.metrics.get("train_images", [])) or mv.metrics.get("images") or ""
            when = datetime.datetime.fromtimestamp(mv.created).isoformat(sep=" ", timespec="seconds")
            spec = version_ref(project, mv, check=False).spec
            missing = "" if spec in REGISTRY_NAMES or Path(spec).is_file() else "  (missing)"
            kind = version_kind(spec)
            print(
                f"{mark}v{mv.id:<7d} {when} {'-' if miou is None else f'{miou:.3f}':>8s}  {n!s:>6s}  {kind:16s}  "
                f"{spec}{missing}"
            )
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
    from annotation.locks import project_lock
    from annotation.project import Project

    from .jobs import prelabel_project
    from .progress import ProgressBar, format_seconds, stop_on_first_sigint
    from .versions import check_classes_match, ensure_version, resolve

    map_file = _read_map(args)
    # Shared: class changes wait for (or refuse during) the job; other mask writers go on.
    with project_lock(args.images, exclusive=False, what="a pre-label job"), Project.open(args.images) as project:
        ref = _train_pixel_classifier(project, args) if args.model == PIXEL_CLASSIFIER else resolve(project, args.model)
        predictor = make_predictor(args, ref)
        class_map = _class_map(map_file, project, predictor.meta, ref)
        check_classes_match(project, predictor.meta, class_map)
        version_id = ensure_version(project, ref, predictor.meta.name, class_map)
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
                class_map=class_map,
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


#: ``prelabel PROJECT --model pixel-classifier`` trains one from the project's edited/reviewed masks first.
PIXEL_CLASSIFIER = "pixel-classifier"


def _train_pixel_classifier(project, args: argparse.Namespace):
    """Train a pixel classifier on the project's edited/reviewed masks, save it as a version; its ModelRef."""
    from .pixel_learning import train_for_project
    from .versions import check_batch_size, version_ref

    check_batch_size(args.batch_size)  # refused before anything is written, as for the other models
    t0 = time.perf_counter()
    print(f"training a pixel classifier on {project.root}'s edited and reviewed masks", file=sys.stderr)
    clf, version_id, path = train_for_project(project)
    mv = next(mv for mv in project.model_versions() if mv.id == version_id)
    print(
        f"pixel classifier v{version_id}: {clf.info['samples']} pixels of {clf.info['images']} image(s) in "
        f"{time.perf_counter() - t0:.1f} s -> {path}",
        file=sys.stderr,
    )
    return version_ref(project, mv)


def _read_map(args: argparse.Namespace):
    """``--map FILE`` parsed (its syntax checked before the model loads), or None."""
    if args.map is None:
        return None
    from .class_map import read_map_file

    return read_map_file(args.map)


def _class_map(map_file, project, meta, ref=None):
    """The class map for this model and project, printed: ``--map``'s (names checked), else the one the
    chosen version ``ref`` was recorded with (a ``<name> mapped`` version), else None.

    ``--map`` wins over a recorded map; when they differ that is said, and the run is recorded under
    the version of ``--map``'s map (``ensure_version``), so the recorded version keeps its own map.
    """
    from .class_map import ClassMapError, recorded_class_map

    mv = None
    if ref is not None and ref.version_id is not None:
        mv = next((v for v in project.model_versions() if v.id == ref.version_id), None)
    label = ref.label if ref is not None and ref.label else "the chosen version"
    if map_file is None:
        if mv is None:
            return None
        cmap = recorded_class_map(mv.metrics, meta.class_names, project.classes(), label)
        if cmap is not None:
            print(f"class map (recorded with {label}): {cmap.describe()}", file=sys.stderr)
        return cmap
    cmap = map_file.resolve(meta.class_names, project.classes())
    print(f"class map ({map_file.source}): {cmap.describe()}", file=sys.stderr)
    try:
        stored = recorded_class_map(mv.metrics, meta.class_names, project.classes(), label) if mv else None
    except ClassMapError:
        stored = None  # it no longer fits; --map replaces it
    if stored is not None and (stored.pairs(), stored.unmapped) != (cmap.pairs(), cmap.unmapped):
        print(
            f"note: --map differs from the class map recorded with {label}; using --map "
            "(recorded as a model version of its own)",
            file=sys.stderr,
        )
    return cmap


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
    map_file = _read_map(args)
    with Project.open(args.project) as project:
        ref = resolve(project, args.model)
        records = [r for r in project.images(statuses) if r.has_mask]
        if args.split != "all":
            train, val = split_train_val(records, args.val_fraction, args.seed)
            records = val if args.split == "val" else train
        version = next((v for v in project.model_versions() if v.id == ref.version_id), None)
        if args.split == "val" and version is not None and version.metrics.get("val_trained_after_figure"):
            print(
                f"note: {ref.label or ref.spec} was trained on its val images after its val figure was taken "
                f"(a small project's fold-in), so this score is optimistic; its held-out val mIoU was "
                f"{version.metrics.get('best_val_miou')}",
                file=sys.stderr,
            )
        if not records:
            raise AtrousError(f"{args.project}: no images with masks and status {' or '.join(statuses)} to evaluate on")
        predictor = make_predictor(args, ref)
        class_map = _class_map(map_file, project, predictor.meta, ref)
        check_classes_match(project, predictor.meta, class_map)
        result = evaluate_project(project, predictor, records, class_map=class_map)
    if args.json:
        d = result.metrics.to_dict()
        d.update({"images": result.images, "model": ref.spec, "skipped": result.failed})
        if class_map is not None:
            d["class_map"] = class_map.record()
        print(json.dumps(d))
    else:
        print(f"{result.images} image(s), model {ref.label or ref.spec}")
        print(format_metrics(result.metrics))
        for line in result.failed:
            print(f"skipped: {line}")
    return 1 if result.failed else 0
