"""Headless project commands: ``new``, ``add``, ``remove``, ``import``, ``export``, ``info``, ``check``.

Each command returns an exit code and prints a short summary; user errors are
raised as :class:`~annotation.errors.AtrousError` (``main.py`` prints them and
exits 2). Heavy imports (pycocotools, the format modules) happen inside the
commands so ``atrous --help`` stays fast.
"""

from __future__ import annotations

import argparse
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
        action="append",
        metavar="DIR",
        help="folder of images (jpg, jpeg, png, bmp, tif, tiff, webp); repeat for several folders",
    )
    p.add_argument("--classes", type=Path, metavar="FILE", help="class list: one name per line, line number = index")
    p.set_defaults(func=cmd_new)

    p = sub.add_parser(
        "add",
        help="add images to a project (only images not already in it)",
        description="Reference the images in DIR (recursive) in place; files whose content is already in the project are skipped.",
    )
    p.add_argument("project", type=Path)
    p.add_argument("images", type=Path, metavar="DIR", nargs="+")
    p.set_defaults(func=cmd_add)

    p = sub.add_parser(
        "remove",
        help="take images out of a project (their masks go too; the image files stay)",
        description="Remove each IMAGE (its file path, the path the project stores, or a file name only one "
        "image has) from PROJECT, with its mask and kept pre-label. The image files are not touched.",
    )
    p.add_argument("project", type=Path)
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--force", action="store_true", help="also remove images a person corrected (edited or reviewed)")
    p.set_defaults(func=cmd_remove)

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
        "--images",
        type=Path,
        metavar="DIR",
        help="coco: where file_name is resolved; labelme: the folder imagePath may lead into (default: SRC); "
        "masks: the image folder (default: the project's images)",
    )
    p.add_argument(
        "--classes",
        type=Path,
        metavar="FILE",
        help="class list file (masks: default the project's classes, else the names are class_N)",
    )
    p.add_argument("--void", type=int, metavar="N", help="masks: label value that means void/ignore (becomes 255)")
    p.add_argument(
        "--binary",
        action="store_true",
        help="masks: 0/255 binary masks (e.g. ISBI): 255 becomes class 1 'foreground' instead of void",
    )
    p.add_argument("--status", default="reviewed", help="status of imported masks (default: reviewed)")
    p.add_argument(
        "--polygon-fill",
        default="auto",
        choices=["auto", "coco", "labelme"],
        help="coco: polygon rasteriser: pycocotools (coco) or PIL like labelme (labelme); auto = labelme for labelme2coco files",
    )
    p.add_argument(
        "--allow-outside",
        action="store_true",
        help="coco, labelme: read images the label file names outside the images folder "
        "(absolute paths, '..', symlinks out); only for files you trust",
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
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="leave out images whose file is gone or whose mask is unreadable (listed) instead of stopping",
    )
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "info",
        help="summarise a project",
        description="Counts by status, class pixel shares, one line per model version, the last edits.",
    )
    p.add_argument("project", type=Path)
    p.add_argument("--json", action="store_true", help="everything, including each version's metrics, as JSON")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser(
        "check",
        help="find (and with --repair fix) missing images, bad masks and leftovers of killed runs",
        description="List what is wrong with a project; exit 0 when clean, 1 when problems remain. "
        "Run --repair while no other program writes to the project.",
    )
    p.add_argument("project", type=Path)
    p.add_argument(
        "--repair",
        action="store_true",
        help="drop images whose file is gone, forget unreadable masks (status back to new), "
        "remove leftovers, finish an interrupted class edit",
    )
    p.set_defaults(func=cmd_check)


def cmd_new(args: argparse.Namespace) -> int:
    """``new PROJECT --images DIR [--images DIR ...] [--classes FILE]``."""
    from .classes import read_class_file
    from .jobs import create_project, create_report

    classes = read_class_file(args.classes)[0] if args.classes else []
    result = create_project(args.project, args.images, classes)
    print("\n".join(create_report(args.project, result, len(classes))))
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    """``add PROJECT DIR [DIR ...]``: add the images of each DIR that the project does not have yet."""
    from .jobs import add_images, add_report

    result = add_images(args.project, args.images)
    print("\n".join(add_report(args.project, result)))
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    """``remove PROJECT IMAGE [IMAGE ...] [--force]``."""
    from .jobs import find_images, remove_images
    from .project import Project

    with Project.open(args.project) as project:
        names = remove_images(project, find_images(project, args.images), force=args.force)
    print(f"removed {len(names)} image(s) from {args.project}: {', '.join(names)}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    """``import PROJECT --format F SRC ...``."""
    from .jobs import ImportOptions, import_report, run_import

    opts = ImportOptions(
        fmt=args.format,
        src=args.src,
        images=args.images,
        classes=args.classes,
        void=args.void,
        binary=args.binary,
        status=args.status,
        polygon_fill=args.polygon_fill,
        allow_outside=args.allow_outside,
    )
    summary, result = run_import(args.project, opts)
    print("\n".join(import_report(args.project, opts, summary, result)))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """``export PROJECT --format voc|coco OUT ...``."""
    from .jobs import ExportOptions, export_report, run_export

    statuses = _statuses(args.status)
    opts = ExportOptions(
        fmt=args.format,
        out=args.out,
        statuses=tuple(statuses) if statuses else None,
        polygons=args.polygons,
        per_class=args.per_class,
        seed=args.seed,
        val_fraction=args.val_fraction,
        devkit=args.devkit,
        lossless_images=args.lossless_images,
        skip_bad=args.skip_bad,
    )
    summary = run_export(args.project, opts)
    print("\n".join(export_report(opts, summary)))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """``info PROJECT [--json]``: counts by status, class pixel shares, model versions, last edits."""
    import json
    import sys

    from .jobs import info_lines, project_info
    from .repair import TolerantProject

    with TolerantProject.open(args.project) as project:
        info = project_info(project, args.project)  # a mask it cannot read counts as none; listed below
        why = {p.image_id: p.message for p in project.missing_images()} | project.unreadable
        bad = [f"{project.image(i).path} (image {i}): {w}" for i, w in sorted(why.items())]
        if args.json:
            print(json.dumps({**info, "problems": bad}, indent=1))
        else:
            print("\n".join(info_lines(info, project.model_versions())))
    for line in bad:
        print(f"warning: {line}", file=sys.stderr)
    if bad:
        print(f"warning: {len(bad)} image(s) with problems; `check {args.project}` lists them all", file=sys.stderr)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """``check PROJECT [--repair]``: list problems, repair what can be; exit 0 clean, 1 problems left."""
    from .project import Project
    from .repair import check_project, repair_project

    with Project.open(args.project, recover=False) as project:
        problems = check_project(project)
        for p in problems:
            print(p.line())
        if args.repair and problems:
            repair_project(project, problems, on_action=lambda line: print(f"repair: {line}", flush=True))
            problems = check_project(project)
            for p in problems:
                print(f"still: {p.line()}")
    print(f"{args.project}: " + (f"{len(problems)} problem(s)" if problems else "no problems found"))
    return 1 if problems else 0
