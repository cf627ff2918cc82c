"""The project jobs the command line and the app share: create, import, export, summarise.

One function per job, taking the command's options as plain data. The CLI prints the
lines the ``*_report`` functions return and the app's dialogs show the same lines, so
both say the same thing. Long jobs take ``on_progress(done, total, name)`` and
``should_stop()`` callbacks (as :mod:`model.jobs` does); a stop raises
:class:`~annotation.formats.Cancelled` and leaves nothing half-written.

The format modules are imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import datetime
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .classes import LabelClass
from .errors import AtrousError, ImageReadError
from .imageio import read_image_info, scan_images
from .layout import DB_NAME, MASK_DIR, is_project
from .locks import project_lock
from .records import STATUSES, AddResult, ModelVersion

if TYPE_CHECKING:
    from .formats import ImportResult, ImportSummary
    from .formats.voc import ExportSummary
    from .project import Project

Progress = Callable[[int, int, str], None]
Stop = Callable[[], bool]

IMPORT_FORMATS = ("voc", "coco", "labelme", "masks")
EXPORT_FORMATS = ("voc", "coco")
#: Images added per transaction when a project is created (progress and cancel between them).
_ADD_CHUNK = 32


def _stop(should_stop: Stop | None, what: str) -> None:
    from .formats import Cancelled

    if should_stop is not None and should_stop():
        raise Cancelled(what)


def check_status(status: str) -> None:
    """Refuse an unknown status with the CLI's message."""
    if status not in STATUSES:
        raise AtrousError(f"unknown status {status!r}; use one of {', '.join(STATUSES)}")


# ---------------------------------------------------------------------- new project


@dataclass
class FolderScan:
    """The images under some folders, and the files among them that cannot be read."""

    images: list[Path] = field(default_factory=list)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)


def image_files(folders: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """The image files under ``folders`` (recursive), each once; a folder that is not there is an error."""
    folders = [Path(f) for f in folders]
    for f in folders:
        if not f.is_dir():
            raise AtrousError(f"{f}: image folder not found")
    out: list[Path] = []
    seen: set[Path] = set()
    for f in folders:
        for p in scan_images(f):
            key = Path(os.path.abspath(p))
            if key not in seen:
                seen.add(key)
                out.append(p)
    return out


def scan_folders(folders: Sequence[str | os.PathLike[str]], should_stop: Stop | None = None) -> FolderScan:
    """The image files under ``folders`` (recursive, each once) with their headers checked.

    What a new project would hold; the unreadable files are listed with the reason.
    """
    out = FolderScan()
    for p in image_files(folders):
        _stop(should_stop, "scan cancelled")
        try:
            read_image_info(p)
        except ImageReadError as e:
            out.unreadable.append((p, str(e)))
        else:
            out.images.append(p)
    return out


def create_project(
    root: str | os.PathLike[str],
    image_folders: Sequence[str | os.PathLike[str]],
    classes: Sequence[LabelClass] = (),
    *,
    on_progress: Progress | None = None,
    should_stop: Stop | None = None,
) -> AddResult:
    """Create a project at ``root`` referencing the images under ``image_folders``, all or nothing.

    ``root`` may be new, an existing folder (an image folder, as the app does with a plain
    folder) or anything that is not a project yet. If anything fails or is cancelled, what
    was made is removed again: the folder if it was made here, else the index and ``masks/``.
    Holds the project lock exclusively, so two creations of one folder never mix.
    """
    with project_lock(root, exclusive=True, what="a project creation"):
        return _create_project(root, image_folders, classes, on_progress=on_progress, should_stop=should_stop)


def _create_project(
    root: str | os.PathLike[str],
    image_folders: Sequence[str | os.PathLike[str]],
    classes: Sequence[LabelClass],
    *,
    on_progress: Progress | None,
    should_stop: Stop | None,
) -> AddResult:
    from .project import Project
    from .records import remove_db_files

    root = Path(root)
    if not image_folders:
        raise AtrousError("choose at least one image folder")
    paths = image_files(image_folders)
    made_root = not root.exists()
    had_masks = (root / MASK_DIR).exists()
    project = Project.create(root, classes=classes)
    result = AddResult()
    try:
        for start in range(0, len(paths), _ADD_CHUNK):
            _stop(should_stop, "new project cancelled; nothing was created")
            part = project.add_images(paths[start : start + _ADD_CHUNK])
            result.added += part.added
            result.skipped_duplicates += part.skipped_duplicates
            result.skipped_unreadable += part.skipped_unreadable
            if on_progress is not None:
                done = min(start + _ADD_CHUNK, len(paths))
                on_progress(done, len(paths), paths[done - 1].name)
        _stop(should_stop, "new project cancelled; nothing was created")
    except BaseException:
        project.close()
        if made_root:
            shutil.rmtree(root, ignore_errors=True)
        else:
            remove_db_files(root / DB_NAME)
            if not had_masks:
                shutil.rmtree(root / MASK_DIR, ignore_errors=True)
        raise
    project.close()
    return result


def create_report(root: Path, result: AddResult, n_classes: int) -> list[str]:
    """What ``new`` prints (and the app shows) after a project was made."""
    lines = [f"created {root}: {len(result.added)} images, {n_classes} classes"]
    lines += [f"  skipped unreadable {p}: {why.removeprefix(f'{p}: ')}" for p, why in result.skipped_unreadable]
    if result.skipped_duplicates:
        lines.append(f"  skipped {len(result.skipped_duplicates)} duplicate image(s) (same content)")
    return lines


# ---------------------------------------------------------------------- add and remove images


def add_images(
    root: str | os.PathLike[str],
    folders: Sequence[str | os.PathLike[str]],
    *,
    on_progress: Progress | None = None,
    should_stop: Stop | None = None,
) -> AddResult:
    """``add``'s job: reference the images under ``folders`` that the project does not have yet.

    Every file is read (header and content hash) first, with progress and cancel; the rows
    are then inserted in one transaction, so a cancel or an error adds nothing.
    """
    from .project import Project

    if not folders:
        raise AtrousError("choose at least one image folder")
    paths = image_files(folders)

    def each(i: int, n: int, path: Path) -> None:
        _stop(should_stop, "adding cancelled; no image was added")
        if on_progress is not None:
            on_progress(i, n, path.name)

    with Project.open(root) as project:
        result = project.add_images(paths, on_file=each)
        if on_progress is not None:
            on_progress(len(paths), len(paths), "")
    return result


def add_report(root: str | os.PathLike[str], result: AddResult) -> list[str]:
    """What ``add`` prints (and the app shows) after images were added."""
    lines = [f"added {len(result.added)} image(s) to {root}; {len(result.skipped_duplicates)} already present"]
    lines += [f"  skipped unreadable {p}: {why.removeprefix(f'{p}: ')}" for p, why in result.skipped_unreadable]
    return lines


#: Statuses whose mask is a person's work: removing such an image needs a second yes.
LABELLED = ("edited", "reviewed")


def find_images(project: Project, names: Sequence[str | os.PathLike[str]]) -> list[int]:
    """The ids of the images ``names`` name: an image file's path, the path as the project
    stores it, or a file name that only one image has. Raises naming what matches nothing."""
    recs = project.images()
    by_stored = {r.path: r.id for r in recs}
    by_file: dict[str, int] = {}  # resolved only when a name is not a stored path (a realpath per image)
    by_name: dict[str, list[int]] = {}
    for r in recs:
        by_name.setdefault(r.name, []).append(r.id)
    ids: list[int] = []
    for name in names:
        text = str(name)
        hit = by_stored.get(text)
        if hit is None:
            if not by_file:
                by_file.update((os.path.realpath(project.image_path(r)), r.id) for r in recs)
            hit = by_file.get(os.path.realpath(text))
        if hit is None:
            many = by_name.get(Path(text).name, []) if Path(text).name == text else []
            if len(many) > 1:
                raise AtrousError(f"{text}: {len(many)} images have this name; give its path")
            if not many:
                raise AtrousError(f"{text}: no image of the project has this path or name")
            hit = many[0]
        if hit not in ids:
            ids.append(hit)
    return ids


def remove_images(project: Project, image_ids: Sequence[int], *, force: bool = False) -> list[str]:
    """``remove``'s job: take images out of ``project``, with their masks and kept pre-labels.

    The image files stay where they are. An image whose mask a person made (edited or
    reviewed) is removed only with ``force``; otherwise nothing is removed and the error
    names them. Holds the project lock shared, as mask writers do, so no class edit
    remaps the masks meanwhile. Returns the removed images' names.
    """
    with project_lock(project.root, exclusive=False, what="a removal of images"):
        recs = [project.image(i) for i in image_ids]
        labelled = [r for r in recs if r.has_mask and r.status in LABELLED]
        if labelled and not force:
            names = ", ".join(f"{r.name} ({r.status})" for r in labelled[:5])
            more = f" and {len(labelled) - 5} more" if len(labelled) > 5 else ""
            one = len(labelled) == 1
            raise AtrousError(
                f"{names}{more}: corrected by a person; {'its mask' if one else 'their masks'} would be deleted. "
                f"Add --force to remove {'it' if one else 'them'} anyway (nothing was removed)"
            )
        project.forget_images([r.id for r in recs])
    return [r.name for r in recs]


# ---------------------------------------------------------------------- import


@dataclass(frozen=True)
class ImportOptions:
    """The options of ``import`` (see ``import --help`` and docs/cli.md)."""

    fmt: str
    src: Path
    images: Path | None = None  # coco: where file_name is resolved; masks: the image folder
    classes: Path | None = None  # class list file
    void: int | None = None  # masks: the label value that means void
    binary: bool = False  # masks: 0/255 binary masks, 255 is class 1
    status: str = "reviewed"
    polygon_fill: str = "auto"  # coco: auto, coco or labelme
    allow_outside: bool = False  # coco, labelme: read images the file names outside the images folder


def read_import(
    project_root: str | os.PathLike[str],
    opts: ImportOptions,
    *,
    on_progress: Progress | None = None,
    should_stop: Stop | None = None,
) -> ImportResult:
    """Read what ``opts`` names, checked in memory; nothing is written.

    A mask folder imported into an existing project pairs with that project's images when
    no image folder is given, and takes its classes when no class file is given.
    ``on_progress(done, total, name)`` follows the files read; ``should_stop()`` is asked
    between files and raises :class:`~annotation.formats.Cancelled`.
    """
    check_status(opts.status)
    cb: dict[str, Any] = {"on_progress": on_progress, "should_stop": should_stop}
    if opts.fmt == "voc":
        from .formats.voc import read_voc

        return read_voc(opts.src, opts.classes, **cb)
    if opts.fmt == "coco":
        from .formats.coco import read_coco

        return read_coco(opts.src, opts.images, polygon_fill=opts.polygon_fill, allow_outside=opts.allow_outside, **cb)
    if opts.fmt == "labelme":
        from .formats.labelme import read_labelme

        return read_labelme(opts.src, opts.classes, images_dir=opts.images, allow_outside=opts.allow_outside, **cb)
    if opts.fmt == "masks":
        from .formats.maskdir import read_mask_folder
        from .project import Project

        images: Path | list[Path] | None = opts.images
        project_classes = None
        if is_project(project_root):
            with Project.open(project_root) as project:
                if opts.classes is None:
                    project_classes = project.classes()
                if images is None:
                    images = [project.image_path(r) for r in project.images()] or None
        if images is None:
            raise AtrousError("--format masks needs --images DIR (the images the label PNGs belong to)")
        return read_mask_folder(
            opts.src, images, opts.classes, opts.void, binary=opts.binary, project_classes=project_classes, **cb
        )
    raise AtrousError(f"unknown import format {opts.fmt!r}; use one of {', '.join(IMPORT_FORMATS)}")


def run_import(
    project_root: str | os.PathLike[str],
    opts: ImportOptions,
    *,
    on_progress: Progress | None = None,
    should_stop: Stop | None = None,
) -> tuple[ImportSummary, ImportResult]:
    """Read and write one import into ``project_root`` (created when missing), all or nothing.

    Progress names the phase: ``"reading NAME"`` while the source is read, then the image names
    while they are checked and written; a stop in either phase leaves the project unchanged.
    """
    from . import formats

    reading = None if on_progress is None else (lambda d, t, n: on_progress(d, t, f"reading {n}"))
    # Exclusive: an import may create the project or merge its class list (see annotation.locks).
    with project_lock(project_root, exclusive=True, what="an import"):
        result = read_import(project_root, opts, on_progress=reading, should_stop=should_stop)
        _stop(should_stop, "import cancelled; the project is unchanged")
        summary = formats.apply_import(
            project_root,
            result,
            status=opts.status,
            source=f"import {opts.fmt} {opts.src}",
            on_progress=on_progress,
            should_stop=should_stop,
        )
    return summary, result


def import_report(
    project_root: str | os.PathLike[str], opts: ImportOptions, summary: ImportSummary, result: ImportResult
) -> list[str]:
    """What ``import`` prints (and the app shows) after an import."""
    lines = [f"note: {w}" for w in summary.warnings]
    lines.append(
        f"imported {opts.fmt} from {opts.src} into {project_root}: {summary.added} new image(s), "
        f"{summary.updated} already present, {summary.with_mask} mask(s) ({opts.status}), "
        f"{summary.without_mask} without mask, {len(result.classes)} classes"
    )
    return lines


# ---------------------------------------------------------------------- export


@dataclass(frozen=True)
class ExportOptions:
    """The options of ``export`` (see ``export --help`` and docs/cli.md)."""

    fmt: str
    out: Path
    statuses: tuple[str, ...] | None = None  # only images with these statuses
    polygons: bool = False  # coco
    per_class: bool = False  # coco
    seed: int = 0  # voc
    val_fraction: float = 0.2  # voc
    devkit: bool = False  # voc
    lossless_images: bool = False  # voc
    skip_bad: bool = False  # leave out (and name) images whose file or mask is unusable, instead of stopping


def run_export(
    project_root: str | os.PathLike[str],
    opts: ExportOptions,
    *,
    on_progress: Progress | None = None,
    should_stop: Stop | None = None,
) -> ExportSummary:
    """Export the project into the new or empty folder ``opts.out``; a failure or a stop removes what it wrote."""
    from .project import Project
    from .repair import SkipBadProject

    for s in opts.statuses or ():
        check_status(s)
    if not 0 <= opts.val_fraction <= 1:  # nan too; before any image is encoded, for the app as for the CLI
        raise AtrousError(f"--val-fraction must be in [0, 1], got {opts.val_fraction}")
    statuses = list(opts.statuses) if opts.statuses else None
    with (SkipBadProject if opts.skip_bad else Project).open(project_root) as project:
        summary = _export(project, opts, statuses, on_progress, should_stop)
        if isinstance(project, SkipBadProject):
            summary.left_out = project.skipped_lines()
        return summary


def _export(project, opts: ExportOptions, statuses, on_progress, should_stop) -> ExportSummary:
    if opts.fmt == "voc":
        from .formats.voc import export_voc

        return export_voc(
            project,
            opts.out,
            statuses=statuses,
            val_fraction=opts.val_fraction,
            seed=opts.seed,
            devkit=opts.devkit,
            lossless_images=opts.lossless_images,
            on_progress=on_progress,
            should_stop=should_stop,
        )
    if opts.fmt == "coco":
        from .formats.coco import export_coco

        return export_coco(
            project,
            opts.out,
            statuses=statuses,
            polygons=opts.polygons,
            per_class=opts.per_class,
            on_progress=on_progress,
            should_stop=should_stop,
        )
    raise AtrousError(f"unknown export format {opts.fmt!r}; use one of {', '.join(EXPORT_FORMATS)}")


def export_report(opts: ExportOptions, s: ExportSummary) -> list[str]:
    """What ``export`` prints (and the app shows) after an export."""
    if opts.fmt == "voc":
        lines = [
            f"exported {s.images} image(s) as VOC to {opts.out}: {s.copied_images} copied, "
            f"{s.reencoded_images} re-encoded; frame: upright"
        ]
        if s.overflow_instances:
            lines.append(f"  {s.overflow_instances} instance(s) past 254 written as 255 in SegmentationObject")
    else:
        lines = [
            f"exported {s.images} image(s), {s.annotations} annotation(s) as COCO to "
            f"{opts.out}/annotations.json; frame: upright"
        ]
        if opts.polygons and s.inexact_polygons:
            lines.append(f"  {s.inexact_polygons} region(s) with holes kept as RLE (a polygon cannot be exact)")
    if s.skipped_without_mask:
        lines.append(f"  {s.skipped_without_mask} selected image(s) without a mask were left out")
    lines.extend(s.left_out)
    if s.cleared_interrupted:
        lines.append(f"  {opts.out} held an export that was cut short; it was cleared and written again")
    return lines


# ---------------------------------------------------------------------- info


def _when(t: float) -> str:
    return datetime.datetime.fromtimestamp(t).isoformat(sep=" ", timespec="seconds")


def version_line(mv: ModelVersion, active: bool) -> str:
    """One readable line per model version: name, date, base, training images, val mIoU."""
    m = mv.metrics
    base = m.get("base") or ("external checkpoint" if m.get("external") else "-")
    n = len(m.get("train_images") or [])
    miou = m.get("best_val_miou")
    parts = [
        f"v{mv.id}",
        mv.name + (" (active)" if active else ""),
        _when(mv.created),
        f"base {base}",
        f"images {n if n else '-'}",
        f"val mIoU {'-' if miou is None else f'{float(miou):.3f}'}",
    ]
    return "  " + "  ".join(parts)


def project_info(project: Project, root: str | os.PathLike[str], last: int = 10) -> dict[str, Any]:
    """Everything ``info`` knows about a project, as JSON-ready data (``info --json``)."""
    from .masks import VOID

    st = project.stats()
    total = max(st.total_pixels, 1)
    active = project.active_model_version
    edits = []
    for e in project.last_edits(last):
        edits.append(
            {
                "time": _when(e.time),
                "image": project.image(e.image_id).path,
                "status": e.status,
                "changed_pixels": e.changed_pixels,
                "source": e.source or "edit",
            }
        )
    return {
        "project": str(root),
        "images": st.n_images,
        "masks": st.n_masks,
        "status": st.by_status,
        "classes": [
            {
                "index": c.index,
                "name": c.name,
                "colour": list(c.colour),
                "background": c.is_background,
                "pixel_share": st.class_pixels.get(c.index, 0) / total,
            }
            for c in project.classes()
        ],
        "void_pixel_share": st.class_pixels.get(VOID, 0) / total,
        "model_versions": [
            {
                "id": mv.id,
                "name": mv.name,
                "created": _when(mv.created),
                "active": active is not None and active.id == mv.id,
                "checkpoint": mv.checkpoint_path,
                "metrics": mv.metrics,
            }
            for mv in project.model_versions()
        ],
        "last_edits": edits,
    }


def info_lines(info: dict[str, Any], versions: Sequence[ModelVersion]) -> list[str]:
    """The readable ``info`` text of :func:`project_info`'s data."""
    lines = [f"project {info['project']}: {info['images']} image(s), {info['masks']} mask(s)"]
    lines.append("status: " + ", ".join(f"{k} {v}" for k, v in info["status"].items()))
    lines.append("classes:")
    for c in info["classes"]:
        bg = " (background)" if c["background"] else ""
        lines.append(f"  {c['index']:3d} {c['name']}{bg}  rgb{tuple(c['colour'])}  {c['pixel_share']:6.1%}")
    if info["void_pixel_share"]:
        lines.append(f"  255 void  {info['void_pixel_share']:6.1%}")
    lines.append(f"model versions: {len(versions)}")
    active = {v["id"] for v in info["model_versions"] if v["active"]}
    lines += [version_line(mv, mv.id in active) for mv in versions]
    lines.append("last edits:" if info["last_edits"] else "last edits: none")
    for e in info["last_edits"]:
        extra = f" {e['changed_pixels']} px" if e["changed_pixels"] else ""
        lines.append(f"  {e['time']} {e['image']} -> {e['status']}{extra} ({e['source']})")
    return lines
