"""Import and export of VOC, COCO, labelme and plain mask folders.

Every importer is split in two steps so an import is all-or-nothing:

1. ``read_*`` parses and checks everything in memory and returns an
   :class:`ImportResult` (image paths, masks, class list). Any malformed file
   raises an :class:`~annotation.errors.AtrousReadError` naming the file; nothing
   has been written yet.
2. :func:`apply_import` probes every image, checks mask sizes, merges the class
   list with the project's and hands everything to
   :meth:`Project.import_batch`, which writes masks and database rows as one unit.

Exporters write into a new or empty folder only, never outside it, and remove
what they wrote when a write fails (see :class:`ExportFolder`).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_bytes
from ..classes import LabelClass
from ..errors import AtrousError, AtrousReadError, AtrousWriteError, ImageReadError
from ..imageio import exif_transpose_array, read_image_info
from ..masks import VOID
from ..project import Project, file_sha256

#: The 21 PASCAL VOC class names, used when a VOC root has no class list.
VOC_CLASSES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)


@dataclass
class ImportedItem:
    """One image to import, with its mask (upright frame or raw frame; None = no labels)."""

    image_path: Path
    mask: np.ndarray | None
    source: Path  # the label file it came from, for messages
    #: image bytes from the label file, used instead of ``image_path`` (which then only names it):
    #: the image file is missing, or lies outside the folder the import may read
    embedded_image: bytes | None = None


@dataclass
class ImportResult:
    """Everything an importer read, before anything is written."""

    items: list[ImportedItem]
    classes: list[LabelClass]
    warnings: list[str] = field(default_factory=list)
    #: True when the reader had no class list and made the names up (the values are all it knows)
    classes_guessed: bool = False


@dataclass
class ImportSummary:
    """What :func:`apply_import` did."""

    added: int
    updated: int
    with_mask: int
    without_mask: int
    warnings: list[str]


# ---------------------------------------------------------------------- helpers


_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(name: str) -> str:
    """A file-name stem that cannot leave its folder: separators, '..' and odd characters become '_'."""
    s = _SAFE.sub("_", Path(name.replace("\\", "/")).name if "/" in name or "\\" in name else name)
    s = s.strip(".") or "image"
    return s[:150]


def unique_names(stems: Sequence[str]) -> list[str]:
    """Make sanitised stems unique (case-insensitively) by appending _2, _3, ..."""
    used: set[str] = set()
    out = []
    for stem in stems:
        base = safe_name(stem)
        name, k = base, 1
        while name.lower() in used:
            k += 1
            name = f"{base}_{k}"
        used.add(name.lower())
        out.append(name)
    return out


class Cancelled(AtrousError):
    """An import or export was stopped by the person; nothing of it was written."""


def _merge_classes(
    existing: list[LabelClass], imported: list[LabelClass], source: str, *, guessed: bool = False
) -> tuple[list[LabelClass] | None, np.ndarray | None, list[str]]:
    """The class list after an import (None: the project's stays), a value map for the masks (None: unchanged)
    and notes on what changed.

    Classes are matched by name (an imported background class matches the project's background),
    so labels whose indices differ from the project's land on the project's classes. A class the
    project lacks is added at its own index when that is free, else at the first free one.
    ``guessed``: the reader made the names up (no class list), so the values are the project's
    indices and nothing is added (a value the project has no class for is then refused).
    """
    if not existing:
        return imported, None, []
    if guessed:
        return None, None, ["no class list: the label values are taken as this project's class indices"]
    by_name = {c.name: c for c in existing}
    background = next((c for c in existing if c.is_background), None)
    merged = list(existing)
    used = {c.index for c in existing}
    lut = np.arange(256, dtype=np.uint8)
    notes: list[str] = []
    fresh: list[LabelClass] = []
    for c in imported:
        match = by_name.get(c.name)
        if match is None and c.is_background and background is not None:
            match = background
        if match is not None:
            lut[c.index] = match.index
        else:
            fresh.append(c)
    for c in fresh:
        index = c.index if c.index not in used else next((i for i in range(VOID) if i not in used), None)
        if index is None:
            raise AtrousError(f"{source}: no free class index left (0..254) for class {c.name!r}")
        name = c.name if c.name not in by_name else f"{c.name}_{index}"
        new = LabelClass(index, name, c.colour, c.is_background and background is None)
        merged.append(new)
        used.add(index)
        by_name[name] = new
        lut[c.index] = index
        notes.append(f"class {name!r} is new to the project; added as index {index}")
    moved = [(i, int(lut[i])) for i in range(256) if int(lut[i]) != i]
    if moved:
        notes.append(
            "classes matched by name: "
            + ", ".join(f"{i} -> {j}" for i, j in moved[:10])
            + (f" (+{len(moved) - 10} more)" if len(moved) > 10 else "")
            + " (file index -> project index)"
        )
    return (merged if fresh else None), (lut if moved else None), notes


def apply_import(
    project_path: str | os.PathLike[str],
    result: ImportResult,
    *,
    status: str = "reviewed",
    source: str = "import",
    on_progress: Callable[[int, int, str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> ImportSummary:
    """Write an :class:`ImportResult` into a project (created when missing), all or nothing.

    Images are probed (size, EXIF orientation, hash) and every mask is checked
    against its image: a mask of the upright size is used as is; a mask of the
    raw (stored) size of an EXIF-rotated image is turned upright; anything else
    is an error naming the label file. If anything fails the project is left as
    it was (a project created here is removed again). ``on_progress(done, total, name)``
    follows the images; ``should_stop()`` true before the final write raises :class:`Cancelled`,
    with the same clean-up as any error.
    """
    root = Path(project_path)
    created = not (root / "atrous.sqlite").exists()
    if created and root.exists() and any(root.iterdir()):
        raise AtrousWriteError(f"{root}: folder exists, is not empty and is not a project")
    # Everything below that can fail on bad data runs before the project is touched,
    # except embedded images, which must be written to be probed.
    probed: list[tuple[Path, tuple[int, int, int, str], np.ndarray | None]] = []
    written_images: list[Path] = []
    project: Project | None = None
    try:
        project = Project.create(root) if created else Project.open(root)
        classes_after, lut, notes = _merge_classes(
            project.classes(),
            result.classes,
            str(result.items[0].source) if result.items else source,
            guessed=result.classes_guessed,
        )
        result.warnings.extend(notes)
        known = {c.index for c in (classes_after if classes_after is not None else project.classes())}
        seen_hash: dict[str, Path] = {}
        for done, item in enumerate(result.items):
            if should_stop is not None and should_stop():
                raise Cancelled("import cancelled; the project is unchanged")
            path = item.image_path
            if item.embedded_image is not None:  # the reader chose the copy in the label file
                path = root / "images" / f"{safe_name(path.stem)}{path.suffix.lower() or '.png'}"
                k = 1
                while path.exists() or path in written_images:
                    k += 1
                    path = path.with_name(f"{safe_name(item.image_path.stem)}_{k}{path.suffix}")
                atomic_write_bytes(path, item.embedded_image)
                written_images.append(path)
            try:
                info = read_image_info(path)
                sha = file_sha256(path)
            except ImageReadError as e:
                raise AtrousReadError(f"{item.source}: image {e}") from e
            if sha in seen_hash:
                result.warnings.append(f"{path}: same content as {seen_hash[sha]}; labels of the later file win")
            seen_hash[sha] = path
            mask = item.mask if item.mask is None or lut is None else lut[item.mask]
            if mask is not None:
                mask = _to_upright(mask, info.width, info.height, info.orientation, item.source, path)
                bad = np.setdiff1d(np.unique(mask), np.array(sorted(known | {VOID}), dtype=np.int64))
                if bad.size:
                    raise AtrousReadError(f"{item.source}: mask values {bad.tolist()} are not classes of the project")
            probed.append((path, (info.width, info.height, info.orientation, sha), mask))
            if on_progress is not None:
                on_progress(done + 1, len(result.items), path.name)
        if should_stop is not None and should_stop():
            raise Cancelled("import cancelled; the project is unchanged")
        before = {r.id for r in project.images()}
        ids = project.import_batch(probed, status=status, classes=classes_after, source=source)
    except BaseException:
        if project is not None:
            project.close()
        for p in written_images:
            p.unlink(missing_ok=True)
        if created:
            shutil.rmtree(root, ignore_errors=True)
        raise
    project.close()
    n_mask = sum(1 for _, _, m in probed if m is not None)
    return ImportSummary(
        added=len(set(ids) - before),
        updated=len(set(ids) & before),
        with_mask=n_mask,
        without_mask=len(probed) - n_mask,
        warnings=result.warnings,
    )


def _to_upright(mask: np.ndarray, width: int, height: int, orientation: int, source: Path, image: Path) -> np.ndarray:
    if mask.shape == (height, width):
        return mask
    if orientation in (5, 6, 7, 8):
        raw = (width, height)  # upright size swapped back
    else:
        raw = (height, width)
    if orientation != 1 and mask.shape == raw:
        return exif_transpose_array(mask, orientation)
    raise AtrousReadError(
        f"{source}: mask is {mask.shape[1]}x{mask.shape[0]} but image {image} is {width}x{height} (width x height)"
    )


# ---------------------------------------------------------------------- export folder


#: Written first into an export folder and removed when the export finishes: a folder that still
#: holds it is an export a kill cut short (every file in it is ours, so a new export may clear it).
INCOMPLETE_MARK = "EXPORT-INCOMPLETE.txt"


class ExportFolder:
    """A new or empty output folder that is cleaned up if the export fails.

    Use as a context manager; :meth:`path` maps a relative name to a path inside
    the folder and refuses anything that would land outside it. While it is being
    written the folder holds :data:`INCOMPLETE_MARK`; a folder left with it by a killed
    export is cleared and written again (``cleared`` says so) instead of refused.
    """

    def __init__(self, out: str | os.PathLike[str]) -> None:
        self.out = Path(out)
        self._created = False
        self.cleared = False  # the folder held an interrupted export, which was removed

    def __enter__(self) -> ExportFolder:
        out = self.out
        if out.exists():
            if not out.is_dir():
                raise AtrousWriteError(f"{out}: exists and is not a folder")
            if (out / INCOMPLETE_MARK).is_file():
                self._clear()
                self.cleared = True
            elif any(out.iterdir()):
                raise AtrousWriteError(f"{out}: export folder is not empty; choose a new or empty folder")
        else:
            try:
                out.mkdir(parents=True)
            except OSError as e:
                raise AtrousWriteError(f"Cannot create export folder {out}: {e.strerror or e}") from e
            self._created = True
        try:
            self.write(
                INCOMPLETE_MARK,
                b"An Atrous export was writing this folder and did not finish (killed or still running).\n"
                b"Export again into this folder: it is cleared first.\n",
            )
        except BaseException as e:
            self.__exit__(type(e), e, None)  # __exit__ is not called when __enter__ fails
            raise
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc is None:
            (self.out / INCOMPLETE_MARK).unlink(missing_ok=True)
            return
        # Remove what we wrote: the folder itself if we made it, else its contents.
        if self._created:
            shutil.rmtree(self.out, ignore_errors=True)
        else:
            self._clear()

    def _clear(self) -> None:
        for child in list(self.out.iterdir()):
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)

    def path(self, relative: str) -> Path:
        """``OUT/relative``, checked to stay inside OUT."""
        target = (self.out / relative).resolve()
        base = self.out.resolve()
        if target != base and base not in target.parents:
            raise AtrousWriteError(f"{relative}: refusing to write outside the export folder {self.out}")
        return self.out / relative

    def write(self, relative: str, data: bytes) -> Path:
        """Write bytes atomically at ``OUT/relative``."""
        target = self.path(relative)
        atomic_write_bytes(target, data)
        return target


def check_stop(should_stop: Callable[[], bool] | None, what: str = "export") -> None:
    """Raise :class:`Cancelled` when ``should_stop()`` says so (inside an :class:`ExportFolder`, which then cleans up)."""
    if should_stop is not None and should_stop():
        raise Cancelled(f"{what} cancelled; nothing was written")


def check_image_fits(project: Project, rec, mask: np.ndarray | None = None) -> None:
    """Refuse an image whose file changed size since it was added (header only), or whose mask does not fit.

    Export and fine-tuning call this so a replaced image never becomes a mismatched pair.
    """
    path = project.image_path(rec)
    info = read_image_info(path)
    size = (info.width, info.height)
    if size != (rec.width, rec.height) or (mask is not None and mask.shape[:2] != (rec.height, rec.width)):
        got = f"its mask is {mask.shape[1]}x{mask.shape[0]}" if mask is not None else "its mask was made for that"
        raise AtrousReadError(
            f"{path}: the image is now {size[0]}x{size[1]} but was {rec.width}x{rec.height} when added ({got}); "
            "it changed on disk after it was labelled. Put the original back (or delete the file: "
            "`check PROJECT --repair` then drops the image)"
        )


def export_image_bytes(
    project: Project, record_id: int, *, lossless: bool, jpeg_quality: int = 95
) -> tuple[bytes, str, bool]:
    """Bytes and extension for exporting an image in the upright frame.

    JPEG originals without an EXIF rotation are copied byte for byte. Anything
    else is decoded upright and encoded as JPEG (``lossless=False``) or PNG.
    Returns ``(data, extension, copied)``.
    """
    from io import BytesIO

    from PIL import Image

    rec = project.image(record_id)
    path = project.image_path(rec)
    info = read_image_info(path)
    if info.orientation == 1 and (info.format == "JPEG" or (lossless and info.format == "PNG")):
        try:
            return path.read_bytes(), (".jpg" if info.format == "JPEG" else ".png"), True
        except OSError as e:
            raise ImageReadError(f"{path}: cannot read ({e.strerror or e})") from e
    pixels = project.load_image(rec.id)
    buf = BytesIO()
    if lossless:
        Image.fromarray(pixels).save(buf, format="PNG")
        return buf.getvalue(), ".png", False
    Image.fromarray(pixels).save(buf, format="JPEG", quality=jpeg_quality, subsampling=0)
    return buf.getvalue(), ".jpg", False
