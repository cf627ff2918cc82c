"""Pre-label on a Ray cluster: ``prelabel IMAGES|PROJECT|LIST --ray [ADDRESS] --out OUT`` (docs/cluster.md).

Ray Data reads the image list and predicts with ``map_batches`` on an actor pool. On a
CPU-only cluster each actor decodes its own images (``Predictor.predict_files`` with its
prefetch thread, as the CLI does), so no decode tasks compete with the actors for the
CPUs and no decoded image goes through the object store; with GPU actors, CPU workers
decode ahead of them (``map``). Each actor loads the model once through
:func:`model.versions.load_predictor`, so the CLI's whole Predictor path (precision,
channels-last, tiles, out-of-memory fallbacks) runs there, and writes each image's
palette mask (``OUT/masks/``, the writer of ``prelabel DIR --out``) and confidence
map (``OUT/confidence/``) atomically. The driver appends one JSON line per image
to ``OUT/results.jsonl`` as results stream in, and rewrites it compacted at the end.

Exactly once: outputs are written atomically, so a file is complete or absent. A
rerun (``--resume``) skips the images whose outputs the manifest lists and that
are still there; outputs without a manifest line (the driver died before writing
it) are verified and adopted; an actor retried after it died adopts what it had
already written. ``OUT/run.json`` names the model (spec, checkpoint sha256,
classes): a folder holding another model's results is refused.

Neither ray nor torch is imported with this module (the actors import torch).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from PIL import Image

from annotation.errors import AtrousError, AtrousReadError

from .cluster_run import (
    CONFIDENCE_DIR,
    EXTRA,
    MASKS_DIR,
    RUN_FILE,
    TEST_EXIT_ENV,
    ClusterError,
    Item,
    ResultsLog,
    adopted_line,
    check_out,
    common_root,
    found_fields,
    list_file,
    listed_done,
    make_items,
    model_identity,
    output_paths,
    read_results,
    read_run,
    result_line,
    verify_outputs,
    write_results,
)

#: How often a dead actor is restarted (and its batch retried) before the run fails.
ACTOR_RESTARTS = 3


def _bounded_restarts() -> dict:
    """Ray's options for each actor it starts: restarts and batch retries, bounded."""
    return {"max_restarts": ACTOR_RESTARTS, "max_task_retries": ACTOR_RESTARTS}


def import_ray():
    """``ray`` with Ray Data, or a :class:`ClusterError` naming the extra to install."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise ClusterError(f"--ray needs Ray Data, which the base install leaves out: {EXTRA}") from e
    return ray


# --------------------------------------------------------------------------- the Ray side


def _decode(row: dict) -> dict:
    """Ray Data ``map`` on CPU workers: the image, or an empty one and the reason it cannot be read."""
    from annotation.imageio import load_image

    try:
        image, error = load_image(row["path"]), ""
    except AtrousError as e:
        image, error = np.zeros((0, 0, 3), np.uint8), str(e)
    except Exception as e:  # a decoder bug fails one image, not the run
        image, error = np.zeros((0, 0, 3), np.uint8), f"{row['path']}: cannot decode ({type(e).__name__}: {e})"
    return {**row, "image": image, "error": error}


class PredictActor:
    """A Ray Data actor: loads the model once, predicts batches, writes each image's outputs atomically."""

    def __init__(
        self,
        spec: str,
        out: str,
        *,
        device: str,
        precision: str,
        batch_size: int | None,
        class_names: list[str] | None,
        threads: int,
        test_exit: str = "",
    ) -> None:
        import torch

        from annotation.masks import make_palette

        from .versions import load_predictor

        if threads > 0:
            torch.set_num_threads(threads)
        self.predictor = load_predictor(
            spec, device=device, precision=precision, batch_size=batch_size, class_names=class_names
        )
        self.palette = make_palette(self.predictor.meta.colours)
        self.out = Path(out)
        self.test_exit = test_exit

    def __call__(self, batch: dict) -> dict:
        """One batch of rows (``path``, ``name``, and ``image``/``error`` when decoded upstream) ->
        small result rows (``path``, ``result``: the manifest fields as JSON); the outputs go to files."""
        from annotation.imageio import load_image

        paths = [str(p) for p in batch["path"]]
        names = dict(zip(paths, (str(n) for n in batch["name"])))
        if "image" in batch:  # decoded by CPU workers upstream (GPU actors)
            images = {Path(p): im for p, im in zip(paths, batch["image"])}
            errors = [str(e) for e in batch["error"]]
            loader = images.__getitem__
        else:  # decoded here, ahead of inference, by predict_files' prefetch thread
            errors, loader = [""] * len(paths), load_image
        results: dict[str, dict] = {}
        todo: list[Path] = []
        for p, error in zip(paths, errors):
            if error:
                results[p] = {"error": error}
            elif self._written(p, names[p], loader):
                # written by this actor's previous life before it died and its batch was retried: adopt, never rewrite
                results[p] = found_fields(self.out, names[p], adopted=True)
            else:
                todo.append(Path(p))
        for path, pred in self.predictor.predict_files(todo, loader=loader):
            p = str(path)
            try:
                if isinstance(pred, BaseException):
                    raise pred
                self._write(names[p], pred)
                results[p] = found_fields(self.out, names[p], adopted=False)
            except AtrousError as e:
                results[p] = {"error": str(e)}
            except Exception as e:  # one bad image must not end the run
                results[p] = {"error": f"{p}: {type(e).__name__}: {e}"}
            self._maybe_exit(path)
        return {"path": np.asarray(paths), "result": np.asarray([json.dumps(results[p]) for p in paths])}

    def _written(self, path: str, name: str, loader) -> bool:
        """True when complete outputs of this image's size are there (the image is decoded only then)."""
        if verify_outputs(self.out, name) is None:
            return False
        try:
            h, w = loader(Path(path)).shape[:2]
        except Exception:  # unreadable now: predict_files reports why
            return False
        return verify_outputs(self.out, name, (w, h)) is not None

    def _write(self, name: str, pred) -> None:
        from annotation.confidence import write_confidence_png
        from annotation.masks import write_mask_png

        mask, conf = output_paths(self.out, name)
        write_confidence_png(conf, pred.confidence)
        write_mask_png(mask, pred.labels, self.palette)  # last: a mask means both are there

    def _maybe_exit(self, path: Path) -> None:
        target, _, marker = self.test_exit.partition(":")
        if target and path.name == target and marker and not os.path.exists(marker):
            Path(marker).touch()
            os._exit(1)


def _check_reachable(address: str) -> None:
    """Fail in seconds, not minutes, when nothing listens at ``HOST:PORT`` (or ``ray://HOST:PORT``)."""
    host, _, port = address.split("://", 1)[-1].rstrip("/").rpartition(":")
    if not port.isdigit():
        raise ClusterError(f"--ray {address}: expected HOST:PORT (e.g. 10.0.0.5:6379), ray://HOST:10001, auto or local")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=3).close()
    except OSError as e:
        raise ClusterError(
            f"cannot reach a Ray cluster at {address} ({e.strerror or e}); check the address, start one there with "
            "`ray start --head`, or leave the address out to run a local Ray"
        ) from e


def connect(ray, address: str | None) -> bool:
    """Join the cluster of ``address`` (None/'' : $RAY_ADDRESS, else a local Ray); True if we must shut it down."""
    address = address or os.environ.get("RAY_ADDRESS") or ""
    if address not in ("", "local", "auto"):
        _check_reachable(address)
    if ray.is_initialized():  # a driver that joined a cluster already (a notebook, the tests) keeps it
        return False
    address = address or "local"
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=True)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as e:
        raise ClusterError(f"cannot join the Ray cluster at {address}: {e}") from e
    return True


@dataclass
class Plan:
    """How the actor pool is sized on this cluster."""

    actors: int
    actor_cpus: float
    actor_gpus: float
    #: torch intra-op threads per actor (0: leave torch's default, for GPU actors).
    threads: int
    #: CPUs per decode task; 0: the actors decode their own images (CPU-only clusters).
    decode_cpus: float = 0.0
    #: Images per actor call (and per block of the input list).
    batch: int = 4


def plan_pool(ray, actors: int | None, device: str, batch_size: int | None) -> Plan:
    """GPU actors (one GPU each, one per GPU) when the cluster has GPUs and ``device`` allows; else CPU actors.

    GPU actors are fed by decode tasks on a CPU each. CPU actors split the CPUs between them and
    decode their own images: a separate decode stage would take CPUs from inference and copy every
    decoded image through the object store, for no gain (the actor's prefetch thread overlaps them).
    """
    res = ray.cluster_resources()
    gpus = int(res.get("GPU", 0))
    cpus = float(res.get("CPU", 1))
    if (gpus and device == "auto") or device.startswith("cuda"):
        if not gpus:
            raise ClusterError(f"--device {device}: the Ray cluster has no GPUs")
        n = actors or gpus
        return Plan(n, 1.0, 1.0, 0, decode_cpus=1.0, batch=batch_size or 8)
    node_cpus = max((float(n.get("Resources", {}).get("CPU", 0)) for n in ray.nodes() if n.get("Alive")), default=cpus)
    n = actors or max(1, int(cpus // 4))
    each = min(max(0.5, math.floor(cpus / n * 4) / 4), max(0.5, node_cpus))
    return Plan(n, each, 0.0, max(1, int(each + 0.5)), batch=batch_size or 4)


@dataclass
class RunSummary:
    total: int
    done: int = 0
    adopted: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    stopped: bool = False
    seconds: float = 0.0


def run_pass(ray, items: list[Item], spec: str, out: Path, plan: Plan, options: dict) -> object:
    """Yield a list of (item, manifest fields) per batch, as Ray Data returns them."""
    by_path = {it.path: it for it in items}
    rows = [{"path": it.path, "name": it.name, "image_id": it.image_id} for it in items]
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    blocks = max(1, min(len(rows), math.ceil(len(rows) / plan.batch), 4096))
    ds = ray.data.from_items(rows, override_num_blocks=blocks)
    if plan.decode_cpus:
        ds = ds.map(_decode, num_cpus=plan.decode_cpus)
    ds = ds.map_batches(
        PredictActor,
        batch_size=plan.batch,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=plan.actors),
        num_cpus=plan.actor_cpus,
        num_gpus=plan.actor_gpus or None,
        fn_constructor_args=(spec, str(out)),
        fn_constructor_kwargs={**options, "threads": plan.threads, "test_exit": os.environ.get(TEST_EXIT_ENV, "")},
        # A dead actor is restarted and its batch retried, a bounded number of times: an image that
        # kills every actor it meets (a decoder crash, a driver bug) ends the run instead of looping.
        # Ray 2.60 deprecates this keyword form (removed in 2.64, which has no named option for it yet).
        **_bounded_restarts(),
    )
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        yield [(by_path[str(p)], json.loads(str(r))) for p, r in zip(batch["path"], batch["result"])]


def prelabel_on_ray(
    items: list[Item],
    missing: list[Item],
    *,
    out: Path,
    spec: str,
    identity: dict,
    resume: bool,
    address: str | None,
    actors: int | None,
    options: dict,
    should_stop=lambda: False,
    on_progress=None,
) -> RunSummary:
    """The run: skip what is done, adopt complete unlisted outputs, predict the rest on Ray, retry failures once."""
    from annotation.atomic import atomic_write_bytes

    t0 = time.monotonic()
    summary = RunSummary(len(items) + len(missing))
    old = read_results(out) if resume else {}
    lines: dict[str, dict] = {}
    todo: list[Item] = []
    for it in items:
        line = old.get(it.path)
        if line is not None and listed_done(out, line):
            lines[it.path] = line
            summary.skipped += 1
            continue
        found = verify_outputs(out, it.name) if line is None or not line.get("error") else None
        if found is not None:
            lines[it.path] = adopted_line(out, it, identity)
            summary.adopted += 1
            continue
        todo.append(it)
    for it in missing:
        lines[it.path] = result_line(it, identity, error=f"{it.path}: file not found")
        summary.failed.append((it.path, lines[it.path]["error"]))
    out.mkdir(parents=True, exist_ok=True)
    if read_run(out) is None:
        atomic_write_bytes(out / RUN_FILE, (json.dumps(identity, indent=1) + "\n").encode("utf-8"))
        atomic_write_bytes(out / "labels.txt", ("\n".join(identity["classes"]) + "\n").encode("utf-8"))
    if resume:  # temporary files of writes a crash interrupted (annotation.atomic names them .NAME.HEX.tmp)
        for tmp in [*out.glob(".*.tmp"), *(out / MASKS_DIR).rglob(".*.tmp"), *(out / CONFIDENCE_DIR).rglob(".*.tmp")]:
            tmp.unlink(missing_ok=True)
    order = {it.path: n for n, it in enumerate(items + missing)}
    log = ResultsLog(out, sorted(lines.values(), key=lambda d: order.get(d["path"], 0)))
    ray = None
    owns = False
    try:
        if todo:
            ray = import_ray()
            owns = connect(ray, address)
            plan = plan_pool(ray, actors, options["device"], options["batch_size"])
            failed: list[Item] = []
            if on_progress is not None:
                on_progress(len(todo), None)
            for attempt in (1, 2):
                for results in run_pass(ray, todo, spec, out, plan, options):
                    batch = [
                        result_line(it, identity, **f, **({"retried": True} if attempt == 2 else {}))
                        for it, f in results
                    ]
                    log.append(batch)
                    for (it, _), line in zip(results, batch):
                        lines[it.path] = line
                        if line["error"]:
                            failed.append(it)
                        else:  # an actor adopts only what it wrote itself before it died and was retried
                            summary.done += 1
                        if on_progress is not None and attempt == 1:
                            on_progress(len(todo), it)
                    if should_stop():
                        summary.stopped = True
                        break
                if summary.stopped or not failed or attempt == 2:
                    break
                todo, failed = failed, []  # the failures, once more
                plan.actors = min(plan.actors, len(todo))
            summary.failed += [(it.path, lines[it.path]["error"]) for it in failed]
    finally:
        log.close()
        write_results(out, sorted(lines.values(), key=lambda d: order.get(d["path"], 0)))
        if owns:
            ray.shutdown()
        summary.seconds = time.monotonic() - t0
    return summary


# --------------------------------------------------------------------------- back into the project


def record_results(project, out: Path, version_id: int, *, overwrite_edited: bool, class_map=None) -> int:
    """Record OUT's finished images as the project's pre-labels with ``record_prelabel``, as ``prelabel PROJECT``
    does; print what happened; return how many could not be recorded.

    Images are matched by path. People's work is left alone unless ``overwrite_edited``; an image this
    version already pre-labelled is not written again (a resumed run records only what is new).
    """
    from annotation.masks import read_mask_png
    from annotation.prelabels import record_prelabel, writable_statuses

    by_path = {str(project.image_path(r).resolve()): r for r in project.images()}
    lut = None if class_map is None else class_map.lut()
    n = {"recorded": 0, "already pre-labelled by this version": 0, "edited/reviewed left alone": 0, "not in it": 0}
    failed: list[str] = []
    for line in read_results(out).values():
        rec = None if line.get("error") else by_path.get(str(line["path"]))
        if rec is None:
            n["not in it"] += not line.get("error")
        elif rec.status == "prelabeled" and rec.prelabel_model_version == version_id and rec.has_mask:
            n["already pre-labelled by this version"] += 1
        elif rec.status not in writable_statuses(overwrite_edited):
            n["edited/reviewed left alone"] += 1
        else:
            mask, conf = output_paths(out, str(line["name"]))
            try:
                labels = read_mask_png(mask)
                with Image.open(conf) as im:
                    confidence = np.asarray(im.convert("L"), dtype=np.uint8)
                labels = labels if lut is None else lut[labels]
                mean = line.get("mean_confidence")
                ok = record_prelabel(
                    project, rec.id, labels, confidence, mean, version_id, overwrite_edited=overwrite_edited
                )
                n["recorded" if ok else "edited/reviewed left alone"] += 1
            except (AtrousError, OSError) as e:
                failed.append(f"{line['path']}: {e}")
    tail = "; ".join(f"{v} {k}" for k, v in n.items() if v and k != "recorded")
    print(f"recorded {n['recorded']} pre-label(s) in {project.root} as v{version_id}" + (f" ({tail})" if tail else ""))
    for why in failed:
        print(f"  not recorded: {why}")
    return len(failed)


def _project_map(args: argparse.Namespace, project, meta):
    """``--map`` for a project, checked against the model's classes (the same as ``prelabel PROJECT``)."""
    from .cli import _class_map, _read_map
    from .versions import check_classes_match

    class_map = _class_map(_read_map(args), project, meta)
    check_classes_match(project, meta, class_map)
    return class_map


def cmd_import_results(args: argparse.Namespace) -> int:
    """``prelabel PROJECT --import-results OUT``: a finished (or partial) cluster run's results as pre-labels."""
    from annotation.layout import is_project
    from annotation.project import Project

    from .versions import ModelRef, ensure_version

    out = Path(args.import_results)
    if not is_project(args.images):
        raise ClusterError(f"{args.images}: not a project; --import-results records a run's results in a project")
    run = read_run(out)
    if run is None:
        raise ClusterError(f"{out}: no {RUN_FILE}; not the output folder of `prelabel ... --ray --out`")
    meta = SimpleNamespace(class_names=run["classes"], colours=[tuple(c) for c in run["colours"]], name=run["name"])
    with Project.open(args.images) as project:
        class_map = _project_map(args, project, meta)
        version_id = ensure_version(project, ModelRef(run["model"], None, run["label"]), run["name"] or "", class_map)
        failed = record_results(project, out, version_id, overwrite_edited=args.overwrite_edited, class_map=class_map)
    return 1 if failed else 0


# --------------------------------------------------------------------------- the command


def _inputs(args: argparse.Namespace, out: Path, project) -> tuple[list[Path], Path, list[int] | None, int]:
    """(image paths, the root their output names are relative to, project ids, duplicates dropped)."""
    from annotation.imageio import scan_images

    from .jobs import check_output_folder, prelabel_todo

    source = Path(args.images)
    if project is not None:
        todo, _, _ = prelabel_todo(project, None, args.overwrite_edited)
        if not todo:
            raise AtrousError(f"{source}: no images to pre-label (all are edited or reviewed; see --overwrite-edited)")
        paths = [project.image_path(r).resolve() for r in todo]
        return paths, common_root(paths), [r.id for r in todo], 0
    if source.is_file():
        paths, dups = list_file(source)
        return paths, common_root(paths), None, dups
    if not source.is_dir():
        raise AtrousReadError(f"{source}: neither a folder, a project nor an image list file")
    check_output_folder(source, out, overwrite=True)
    inside = out.resolve().is_relative_to(source.resolve())
    paths = [p.resolve() for p in scan_images(source) if not (inside and p.resolve().is_relative_to(out.resolve()))]
    if not paths:
        raise AtrousReadError(f"{source}: no images found (looked for .jpg .jpeg .png .bmp .tif .tiff .webp)")
    return paths, source.resolve(), None, 0


def cmd_prelabel_ray(args: argparse.Namespace) -> int:
    """``prelabel IMAGES_DIR|PROJECT|LIST_FILE --ray [ADDRESS] --out OUT [--actors N] [--resume]``."""
    import contextlib

    from annotation.layout import is_project
    from annotation.project import Project

    from .cli import STOP_MESSAGE
    from .progress import ProgressBar, format_seconds, stop_on_first_sigint
    from .versions import ensure_version, resolve
    from .weights import load_model

    if getattr(args, "import_results", None) is not None:
        return cmd_import_results(args)
    if args.out is None:
        raise ClusterError(
            "--ray writes into a folder: give --out OUT (a new folder, or an earlier run's with --resume)"
        )
    if args.overwrite:
        raise ClusterError("--overwrite does not apply with --ray: OUT holds one run, which --resume continues")
    if args.actors is not None and args.actors < 1:
        raise ClusterError(f"--actors must be at least 1, got {args.actors}")
    if args.batch_size is not None and args.batch_size < 1:
        raise AtrousError(f"batch size must be at least 1, got {args.batch_size}")
    in_project = is_project(args.images)
    if not in_project and (args.overwrite_edited or args.map is not None):
        raise AtrousError("--overwrite-edited and --map apply to projects only")
    import_ray()  # before loading a model: no Ray or no cluster, no run
    address = args.ray or os.environ.get("RAY_ADDRESS") or ""
    if address not in ("", "local", "auto"):
        _check_reachable(address)
    out = Path(args.out)
    from annotation.classes import read_class_names

    class_names = read_class_names(args.classes) if args.classes is not None else None
    with Project.open(args.images) if in_project else contextlib.nullcontext() as project:
        ref = resolve(project, args.model)
        meta = load_model(ref.spec, class_names=class_names).meta  # the model is checked before the cluster starts
        class_map = version_id = None
        if project is not None:
            class_map = _project_map(args, project, meta)
            version_id = ensure_version(project, ref, meta.name, class_map)
        paths, root, ids, dups = _inputs(args, out, project)
        identity = model_identity(ref.spec, ref.label or meta.name, meta)
        if check_out(out, identity, args.resume):
            old_root = (read_run(out) or {}).get("root")
            if old_root and all(p.is_relative_to(old_root) for p in paths):
                root = Path(old_root)  # the names the first run gave
        identity["root"] = str(root)
        items = make_items(paths, root, ids)
        missing = [it for it in items if not Path(it.path).is_file()]
        present = [it for it in items if Path(it.path).is_file()]
        if dups:
            print(f"{args.images}: {dups} duplicate line(s) ignored", file=sys.stderr)
        print(f"pre-labelling {len(items)} image(s) with {identity['label']} on Ray -> {out}", file=sys.stderr)
        bar: ProgressBar | None = None

        def on_progress(total: int, item: Item | None) -> None:
            nonlocal bar
            if bar is None:
                bar = ProgressBar(total)
            if item is not None:
                bar.update(1, Path(item.path).name)

        options = {"device": args.device, "precision": args.precision, "batch_size": args.batch_size}
        options["class_names"] = class_names
        with stop_on_first_sigint(STOP_MESSAGE) as should_stop:
            s = prelabel_on_ray(
                present,
                missing,
                out=out,
                spec=ref.spec,
                identity=identity,
                resume=args.resume,
                address=args.ray,
                actors=args.actors,
                options=options,
                should_stop=should_stop,
                on_progress=on_progress,
            )
        print(
            f"done {s.done}, skipped {s.skipped + s.adopted} (already done"
            + (f"; {s.adopted} adopted from an earlier run" if s.adopted else "")
            + f"), failed {len(s.failed)} of {s.total} image(s) in {format_seconds(s.seconds)} -> {out}"
        )
        if s.failed:
            print(f"failed {len(s.failed)} image(s) (each tried twice):")
            for _, why in s.failed:
                print(f"  {why}")
        bad = 0
        if project is not None:
            bad = record_results(project, out, version_id, overwrite_edited=args.overwrite_edited, class_map=class_map)
    if s.stopped:
        print("stopped by Ctrl-C; run the same command with --resume to do the rest")
        return 130
    return 1 if s.failed or bad else 0
