"""Finding or making the project the app opens: the sample project, a folder, an existing project."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from annotation.classes import LabelClass, read_class_file
from annotation.errors import AtrousError, AtrousReadError
from annotation.jobs import create_project
from annotation.layout import is_project
from annotation.masks import read_mask_png
from annotation.project import Project, scan_images

from .app_log import log_error
from .settings import SAMPLES, data_dir

SAMPLE_PROJECT_NAME = "Sample project"

#: Classes a project made from a plain image folder starts with.
DEFAULT_CLASSES = [
    LabelClass(0, "background", (0, 0, 0), True),
    LabelClass(1, "foreground", (230, 60, 60)),
]


def sample_classes() -> list[LabelClass]:
    """The sample project's classes, read like every other class file."""
    return read_class_file(SAMPLES / "classes.json")[0]


def ensure_sample_project(root: Path | None = None) -> Path:
    """The default project of bundled sample images with starter masks (made on first start).

    The images are copied into the project folder so the project does not
    depend on where the app is installed. A half-made project (no database)
    is simply made again.
    """
    root = Path(root) if root is not None else data_dir() / SAMPLE_PROJECT_NAME
    if is_project(root):
        return root
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    for src in sorted((SAMPLES / "images").iterdir()):
        if src.is_file() and not (images / src.name).exists():
            shutil.copy2(src, images / src.name)
    with Project.create(root, sample_classes()) as proj:
        proj.add_images(images)
        for rec in proj.images():
            mask_file = SAMPLES / "masks" / f"{Path(rec.path).stem}.png"
            if mask_file.is_file():
                proj.save_mask(
                    rec.id,
                    read_mask_png(mask_file),
                    status="prelabeled",
                    source="starter-mask (colour rules, not a model)",
                )
    return root


def open_or_create(
    path: str | Path, confirm: Callable[[str], bool], report: Callable[[str, list[str]], None] | None = None
) -> Project | None:
    """Open the project at ``path``; a plain image folder becomes a project if ``confirm`` agrees.

    When some of the folder's image files could not be added (unreadable, or the same
    picture twice), ``report(text, lines)`` is told which and why, one line per file,
    and the unreadable ones are logged.
    Returns ``None`` when the person declined. Raises AtrousError for anything else.
    """
    p = Path(path)
    if is_project(p):
        return Project.open(p)
    if not p.is_dir():
        raise AtrousReadError(f"{p}: no such project or image folder")
    n = len(scan_images(p))
    if n == 0:
        raise AtrousError(f"{p} holds no images and is not an Atrous project")
    if not confirm(
        f"{p} is not an Atrous project yet.\n\nCreate a project there with its {n} image file(s)? "
        "The images are referenced in place, not copied or changed."
    ):
        return None
    result = create_project(p, [p], DEFAULT_CLASSES)  # the `new` command's job: all or nothing
    proj = Project.open(p)
    lines = [f"{_relative(f, p)}: not readable ({why})" for f, why in result.skipped_unreadable]
    lines += [f"{_relative(f, p)}: the same picture as another file" for f in result.skipped_duplicates]
    for line in lines[: len(result.skipped_unreadable)]:
        log_error("project", f"{p}: {line}")
    if lines and report is not None:
        report(
            f"The project holds {len(result.added)} of the folder's {n} image file(s); "
            f"{len(lines)} were not added:\n\n" + "\n".join(lines[:10]) + ("\n…" if len(lines) > 10 else ""),
            lines,
        )
    return proj


def _relative(f: Path, root: Path) -> str:
    try:
        return str(f.relative_to(root))
    except ValueError:
        return str(f)
