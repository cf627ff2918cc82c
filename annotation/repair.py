"""Checking a project for damage, and repairing what can be repaired without guessing.

``check`` lists what a crash, a killed run or a hand edit of the folder left behind:

* images whose source file is gone (``missing-image``; repair: drop the image's row),
* image files that changed size since they were added, or do not decode (truncated
  copies) (``bad-image``; left for a person: put the original back, or delete the file
  and repair drops the image),
* masks that are missing, torn, of the wrong size or too large to decode
  (``bad-mask``; repair: forget the mask, the image's status goes back to new),
* masks holding values that are neither a class nor void (``unknown-values``; left
  for a person: a class edit or the brush fixes them, a repair would have to guess),
* masks whose row committed but which a crash left beside ``masks/<id>.png``
  (``unplaced-mask``; repair: put the committed mask in place, as opening the project
  normally does; see :mod:`annotation.mask_commit`),
* masks written for a save or an import that never committed, staging folders of
  class edits, whose process is gone, and temporary files of atomic writes a kill cut
  short (``leftover``; repair: remove them),
* a class edit that was committed but not moved into place (``class-edit``; repair:
  finish it, as opening the project normally does).

Each repair is all or nothing per image and goes through :class:`Project` methods.
Run ``--repair`` while no other program writes to the project: a temporary file of a
write in progress looks the same as one a kill left behind.

:class:`TolerantProject` is the project ``info`` reads: a mask it cannot read is
recorded and counted as no mask, instead of stopping the whole summary.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .class_edits import PENDING_KEY, STAGING_PREFIX, _alive, finish_interrupted_edit
from .errors import AtrousError, AtrousReadError, AtrousWriteError
from .layout import PROJECT_DIRS
from .mask_commit import finish_mask_commits, scan
from .masks import VOID, read_mask_png
from .project import ImageRecord, Project


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a project, and what ``--repair`` does about it (None: nothing)."""

    kind: str  # missing-image, bad-image, bad-mask, unknown-values, unplaced-mask, leftover, class-edit
    path: Path
    message: str
    image_id: int | None = None
    fix: str | None = None
    modified: float | None = None  # the image row's stamp when it was checked

    def line(self) -> str:
        """One readable line: the file, the problem and the repair."""
        what = f" (image {self.image_id})" if self.image_id is not None else ""
        fix = f"; --repair: {self.fix}" if self.fix else "; not repaired automatically"
        return f"{self.kind}: {self.path}{what}: {self.message}{fix}"


class TolerantProject(Project):
    """A project whose unreadable masks read as no mask, each recorded in :attr:`unreadable`."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.unreadable: dict[int, str] = {}

    def read_mask(self, image_id: int) -> np.ndarray | None:
        try:
            return super().read_mask(image_id)
        except AtrousReadError as e:
            self.unreadable[int(image_id)] = str(e)
            return None

    def missing_images(self) -> list[Problem]:
        """Images whose source file is gone (cheap: no file is read)."""
        return [
            Problem("missing-image", self.image_path(r), "source image not found", r.id, "drop the image's row")
            for r in self.images()
            if not self.image_path(r).is_file()
        ]


class SkipBadProject(TolerantProject):
    """A project whose :meth:`images` leaves out images an export cannot use, each in :attr:`skipped`.

    For ``export --skip-bad``: an image whose file is gone, changed size or does not decode
    (truncated), or whose mask cannot be read (missing, torn, wrong size, too large), is left out
    and named instead of stopping the export. Each image and mask is read once more here; only a
    run that asked to skip pays for it.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.skipped: dict[int, tuple[str, str]] = {}  # image id -> (stored path, why)

    def images(self, status: str | Iterable[str] | None = None) -> list[ImageRecord]:
        keep = []
        for rec in super().images(status):
            why = None if self.image_path(rec).is_file() else "source image not found"
            if why is None:
                why = _unusable_image(self, rec)
            if why is None and rec.has_mask:
                try:
                    Project.read_mask(self, rec.id)
                except AtrousReadError as e:
                    why = str(e)
            if why is None:
                keep.append(rec)
            else:
                self.skipped[rec.id] = (rec.path, why)
        return keep

    def skipped_lines(self) -> list[str]:
        """One line per image left out, for the export's summary."""
        return [f"  left out {path} (image {i}): {why}" for i, (path, why) in sorted(self.skipped.items())]


def _stale_staging(folder: Path, prefix: str) -> list[Path]:
    """Staging folders under ``folder`` whose process (the pid after ``prefix``) is gone."""
    try:
        found = [p for p in folder.iterdir() if p.name.startswith(prefix) and p.is_dir()]
    except OSError:
        return []
    stale = []
    for p in found:
        pid = p.name[len(prefix) :].split("-")[0]
        if not (pid.isdigit() and _alive(int(pid))):
            stale.append(p)
    return stale


def _mask_commits(project: Project) -> list[Problem]:
    """Masks committed but not moved into place, and stale ones that never committed (lists masks/ only)."""
    found = scan(project)
    out = [
        Problem(
            "unplaced-mask",
            f.path,
            "a saved mask whose row committed was not moved into place",
            f.image_id,
            "put the committed mask in place",
        )
        for f in found.files
        if f.committed
    ]
    whole = set()  # stale import folders holding nothing committed: one problem for the folder
    for folder, stale in found.folders.items():
        if stale and not any(f.committed and f.path.parent == folder for f in found.files):
            whole.add(folder)
            out.append(Problem("leftover", folder, "staging folder of an import that never finished", fix="remove it"))
    out += [
        Problem("leftover", f.path, "a mask written for a save that never committed", f.image_id, "remove it")
        for f in found.files
        if not f.committed and f.stale and f.path.parent not in whole
    ]
    return out


def _leftovers(root: Path) -> list[Problem]:
    out = [
        Problem("leftover", p, "staging folder of a class edit that never committed", fix="remove it")
        for p in _stale_staging(root, STAGING_PREFIX)
    ]
    for sub in PROJECT_DIRS:  # temporary files (annotation.atomic: .NAME.HEX.tmp)
        folder = root / sub
        if folder.is_dir():
            out += [
                Problem("leftover", p, "temporary file of a write that was cut short", fix="remove it")
                for p in sorted(folder.glob("*.tmp"))
                if p.is_file()
            ]
    return out


def _unusable_image(project: Project, rec: ImageRecord) -> str | None:
    """Why an image file that exists cannot be used (changed size since it was added, truncated,
    not decodable), or None. Decodes it: the truncation of a copy shows only there."""
    from .formats import check_image_fits

    path = project.image_path(rec)
    try:
        check_image_fits(project, rec)
        project.load_image(rec.id)
    except AtrousError as e:
        why = str(e).removeprefix(f"{path}: ")
        if "--repair" in why:  # check_image_fits already says what to do
            return why
        return f"{why}; put the original file back (or delete the file: --repair then drops the image)"
    return None


def check_project(project: Project, on_image: Callable[[int, int], None] | None = None) -> list[Problem]:
    """Every problem of ``project`` (reads every mask; a mask too large to decode is refused, not read)."""
    root = Path(project.root)
    problems: list[Problem] = []
    pending = project._query("SELECT value FROM meta WHERE key=?", (PENDING_KEY,))
    if pending:
        problems.append(
            Problem("class-edit", root / pending[0][0], "a class edit was cut short after its commit", fix="finish it")
        )
    commits = _mask_commits(project)  # first: --repair places them before it judges a mask
    problems += commits
    unplaced = {p.image_id: p.path for p in commits if p.kind == "unplaced-mask"}  # the image's mask to be
    known = {c.index for c in project.classes()} | {VOID}
    records = project.images()
    for n, rec in enumerate(records, 1):
        if on_image is not None:
            on_image(n, len(records))
        image = project.image_path(rec)
        if not image.is_file():
            problems.append(
                Problem("missing-image", image, "source image not found", rec.id, "drop the image's row", rec.modified)
            )
        else:
            why = _unusable_image(project, rec)
            if why:
                problems.append(Problem("bad-image", image, why, rec.id))
        if not rec.has_mask:
            continue
        mask_file = unplaced.get(rec.id, project.mask_path(rec.id))
        try:
            mask = read_mask_png(mask_file)
        except AtrousReadError as e:
            why = str(e).removeprefix(f"{mask_file}: ")
            problems.append(
                Problem("bad-mask", mask_file, why, rec.id, "forget the mask (status back to new)", rec.modified)
            )
            continue
        if mask.shape != (rec.height, rec.width):
            why = f"mask is {mask.shape[1]}x{mask.shape[0]}, the image is {rec.width}x{rec.height}"
            problems.append(
                Problem("bad-mask", mask_file, why, rec.id, "forget the mask (status back to new)", rec.modified)
            )
            continue
        values = np.flatnonzero(np.bincount(mask.ravel(), minlength=256))
        unknown = [int(v) for v in values if int(v) not in known]
        if unknown:
            shown = ", ".join(map(str, unknown[:10])) + (" ..." if len(unknown) > 10 else "")
            problems.append(Problem("unknown-values", mask_file, f"values that are no class: {shown}", rec.id))
    committed = {p.path for p in problems if p.kind == "class-edit"}  # finished, never removed
    return problems + [p for p in _leftovers(root) if p.path not in committed]


def repair_project(
    project: Project, problems: list[Problem], on_action: Callable[[str], None] | None = None
) -> list[Problem]:
    """Repair what can be repaired; returns the problems left. ``on_action`` hears each step before it is done."""
    if project.read_only:
        raise AtrousWriteError(f"{project.root}: the project is read-only; nothing can be repaired")
    say = on_action or (lambda _line: None)
    left: list[Problem] = []
    dropped: set[int] = set()
    placed = False
    for p in problems:
        if p.image_id in dropped and p.kind != "missing-image":
            continue  # its image is gone from the project
        if p.fix is None:
            left.append(p)
        elif p.kind == "unplaced-mask":
            say(f"putting the committed mask of image {p.image_id} in place ({p.path})")
            if not placed:  # one pass places every committed mask and removes the stale ones
                finish_mask_commits(project)
                placed = True
        elif p.kind == "class-edit":
            say(f"finishing the interrupted class edit in {p.path}")
            finish_interrupted_edit(project, clean_leftovers=False)
        elif p.kind == "missing-image" and p.image_id is not None:
            say(f"dropping image {p.image_id} ({p.path}): its source file is gone")
            project.forget_image(p.image_id)
            dropped.add(p.image_id)
        elif p.kind == "bad-mask" and p.image_id is not None:
            say(f"forgetting the mask of image {p.image_id} ({p.path}): {p.message}")
            if not project.forget_mask(p.image_id, float(p.modified or 0.0)):
                say(f"  image {p.image_id} changed meanwhile; left as it is")
                left.append(p)
        elif p.kind == "leftover":
            say(f"removing {p.path}")
            try:
                if p.path.is_dir():
                    shutil.rmtree(p.path)
                else:
                    p.path.unlink(missing_ok=True)
            except OSError as e:
                raise AtrousWriteError(f"Cannot remove {p.path}: {e.strerror or e}") from e
        else:
            left.append(p)
    return left
