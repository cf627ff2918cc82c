"""Headless project commands: ``new``, ``add``, ``import``, ``export``, ``info``.

Each command returns an exit code and prints a short summary; user errors are
raised as :class:`~annotation.errors.AtrousError` (``main.py`` prints them and
exits 2). Heavy imports (pycocotools, the format modules) happen inside the
commands so ``atrous --help`` stays fast.
"""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path

from .errors import AtrousError


def _statuses(text: str | None) -> list[str] | None:
    if not text:
        return None
    from .project import STATUSES

    out = [s.strip() for s in text.split(",") if s.strip()]
    for s in out:
        if s not in STATUSES:
            raise AtrousError(f"unknown status {s!r}; use a comma-separated list of {', '.join(STATUSES)}")
    return out


def register(sub: argparse._SubParsersAction) -> None:
    """Add the project subcommands to the top-level parser."""
    p = sub.add_parser(
        "new",
        help="create a project from a folder of images",
        description="Create a project that references the images in DIR (recursive) in place.",
    )
    p.add_argument("project", type=Path, help="project folder to create")
    p.add_argument(
        "--images",
        type=Path,
        required=True,
        metavar="DIR",
        help="folder of images (jpg, jpeg, png, bmp, tif, tiff, webp)",
    )
    p.add_argument("--classes", type=Path, metavar="FILE", help="class list: one name per line, line number = index")
    p.set_defaults(func=cmd_new)

    p = sub.add_parser(
        "add",
        help="add images to a project (only images not already in it)",
        description="Reference the images in DIR (recursive) in place; files whose content is already in the project are skipped.",
    )
    p.add_argument("project", type=Path)
    p.add_argument("images", type=Path, metavar="DIR")
    p.set_defaults(func=cmd_add)

    p = sub.add_parser(
        "import",
        help="import labelled data (voc, coco, labelme, masks) into a project",
        description="Import labels into PROJECT (created if missing). All or nothing: a bad file leaves the project unchanged.",
    )
    p.add_argument("project", type=Path)
    p.add_argument("--format", required=True, choices=["voc", "coco", "labelme", "masks"])
    p.add_argument(
        "src",
        type=Path,
        help="voc: VOC root; coco: the JSON file; labelme: folder of JSONs; masks: folder of label PNGs",
    )
    p.add_argument(
        "--images", type=Path, metavar="DIR", help="coco: where file_name is resolved; masks: the image folder"
    )
    p.add_argument(
        "--classes", type=Path, metavar="FILE", help="class list file (masks: required unless names should be class_N)"
    )
    p.add_argument("--void", type=int, metavar="N", help="masks: label value that means void/ignore (becomes 255)")
    p.add_argument("--status", default="reviewed", help="status of imported masks (default: reviewed)")
    p.add_argument(
        "--polygon-fill",
        default="auto",
        choices=["auto", "coco", "labelme"],
        help="coco: polygon rasteriser: pycocotools (coco) or PIL like labelme (labelme); auto = labelme for labelme2coco files",
    )
    p.set_defaults(func=cmd_import)

    p = sub.add_parser(
        "export",
        help="export masks as a VOC folder or a COCO JSON",
        description="Export into a new or empty folder OUT.",
    )
    p.add_argument("project", type=Path)
    p.add_argument("--format", required=True, choices=["voc", "coco"])
    p.add_argument("out", type=Path)
    p.add_argument("--status", help="only images with these statuses, e.g. edited,reviewed")
    p.add_argument(
        "--polygons", action="store_true", help="coco: polygons instead of RLE (components with holes stay RLE)"
    )
    p.add_argument(
        "--per-class", action="store_true", help="coco: one annotation per class per image instead of per component"
    )
    p.add_argument("--seed", type=int, default=0, help="voc: seed of the train/val split (default 0)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="voc: share of images in val (default 0.2)")
    p.add_argument(
        "--devkit", action="store_true", help="voc: write into OUT/VOCdevkit/VOC2012 (torchvision root = OUT)"
    )
    p.add_argument(
        "--lossless-images", action="store_true", help="voc: store non-JPEG images as PNG instead of JPEG q95"
    )
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("info", help="summarise a project")
    p.add_argument("project", type=Path)
    p.set_defaults(func=cmd_info)


def cmd_new(args: argparse.Namespace) -> int:
    """``new PROJECT --images DIR [--classes FILE]``."""
    from .classes import read_class_file
    from .project import Project

    if not args.images.is_dir():
        raise AtrousError(f"{args.images}: image folder not found")
    classes = read_class_file(args.classes)[0] if args.classes else []
    created_root = not args.project.exists()
    project = Project.create(args.project, classes=classes)
    try:
        result = project.add_images(args.images)
    except BaseException:
        project.close()
        if created_root:
            import shutil

            shutil.rmtree(args.project, ignore_errors=True)
        raise
    project.close()
    print(f"created {args.project}: {len(result.added)} images, {len(classes)} classes")
    for p, why in result.skipped_unreadable:
        print(f"  skipped unreadable {p}: {why}")
    if result.skipped_duplicates:
        print(f"  skipped {len(result.skipped_duplicates)} duplicate image(s) (same content)")
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    """``add PROJECT DIR``: add the images of DIR that the project does not have yet."""
    from .project import Project

    with Project.open(args.project) as project:
        result = project.add_images(args.images)
    print(f"added {len(result.added)} image(s) to {args.project}; {len(result.skipped_duplicates)} already present")
    for p, why in result.skipped_unreadable:
        print(f"  skipped unreadable {p}: {why}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    """``import PROJECT --format F SRC ...``."""
    from . import formats
    from .project import STATUSES

    if args.status not in STATUSES:
        raise AtrousError(f"unknown status {args.status!r}; use one of {', '.join(STATUSES)}")
    fmt = args.format
    if fmt == "voc":
        from .formats.voc import read_voc

        result = read_voc(args.src, args.classes)
    elif fmt == "coco":
        from .formats.coco import read_coco

        result = read_coco(args.src, args.images, polygon_fill=args.polygon_fill)
    elif fmt == "labelme":
        from .formats.labelme import read_labelme

        result = read_labelme(args.src, args.classes)
    else:
        from .formats.maskdir import read_mask_folder

        if args.images is None:
            raise AtrousError("--format masks needs --images DIR (the images the label PNGs belong to)")
        result = read_mask_folder(args.src, args.images, args.classes, args.void)
    summary = formats.apply_import(args.project, result, status=args.status, source=f"import {fmt} {args.src}")
    for w in summary.warnings:
        print(f"note: {w}")
    print(
        f"imported {fmt} from {args.src} into {args.project}: {summary.added} new image(s), "
        f"{summary.updated} already present, {summary.with_mask} mask(s) ({args.status}), "
        f"{summary.without_mask} without mask, {len(result.classes)} classes"
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """``export PROJECT --format voc|coco OUT ...``."""
    from .project import Project

    statuses = _statuses(args.status)
    with Project.open(args.project) as project:
        if args.format == "voc":
            from .formats.voc import export_voc

            s = export_voc(
                project,
                args.out,
                statuses=statuses,
                val_fraction=args.val_fraction,
                seed=args.seed,
                devkit=args.devkit,
                lossless_images=args.lossless_images,
            )
            print(
                f"exported {s.images} image(s) as VOC to {args.out}: {s.copied_images} copied, "
                f"{s.reencoded_images} re-encoded; frame: upright"
            )
            if s.overflow_instances:
                print(f"  {s.overflow_instances} instance(s) past 254 written as 255 in SegmentationObject")
        else:
            from .formats.coco import export_coco

            s = export_coco(project, args.out, statuses=statuses, polygons=args.polygons, per_class=args.per_class)
            print(
                f"exported {s.images} image(s), {s.annotations} annotation(s) as COCO to {args.out}/annotations.json; frame: upright"
            )
            if args.polygons and s.inexact_polygons:
                print(f"  {s.inexact_polygons} region(s) with holes kept as RLE (a polygon cannot be exact)")
        if s.skipped_without_mask:
            print(f"  {s.skipped_without_mask} selected image(s) without a mask were left out")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """``info PROJECT``: counts by status, class pixel shares, model versions, last edits."""
    from .masks import VOID
    from .project import Project

    with Project.open(args.project) as project:
        st = project.stats()
        print(f"project {args.project}: {st.n_images} image(s), {st.n_masks} mask(s)")
        print("status: " + ", ".join(f"{k} {v}" for k, v in st.by_status.items()))
        print("classes:")
        total = max(st.total_pixels, 1)
        for c in project.classes():
            share = st.class_pixels.get(c.index, 0) / total
            bg = " (background)" if c.is_background else ""
            print(f"  {c.index:3d} {c.name}{bg}  rgb{c.colour}  {share:6.1%}")
        if st.class_pixels.get(VOID):
            print(f"  255 void  {st.class_pixels[VOID] / total:6.1%}")
        versions = project.model_versions()
        active = project.active_model_version
        print(f"model versions: {len(versions)}")
        for mv in versions:
            mark = " (active)" if active is not None and active.id == mv.id else ""
            print(f"  {mv.id} {mv.name}{mark} {mv.checkpoint_path} {mv.metrics}")
        edits = project.last_edits(10)
        print("last edits:" if edits else "last edits: none")
        for e in edits:
            when = datetime.datetime.fromtimestamp(e.time).isoformat(sep=" ", timespec="seconds")
            rec = project.image(e.image_id)
            extra = f" {e.changed_pixels} px" if e.changed_pixels else ""
            print(f"  {when} {rec.path} -> {e.status}{extra} ({e.source or 'edit'})")
    return 0
