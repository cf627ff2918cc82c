"""Changing a project's class list: add, delete, merge, reorder, choose the background.

Every change is a :class:`ClassEdit`: the new class list and a 256-entry lookup
table (LUT) that carries each stored value to its new index. Adding classes or
choosing the background leaves the LUT the identity; deleting, merging and
reordering rewrite masks. One function applies any edit to a project,
:func:`apply_class_edit`, and the editor calls :func:`remap_document` for the
masks it holds open, so both go through the same LUT.

Rules kept here (``docs/formats.md`` states them for people):

* Indices stay dense: deleting or merging a class moves every class after it up
  one index, as a reorder moves two neighbours; exports and models see the same
  0..N-1 they would for a project created with the new list.
* The background is the class flagged ``is_background``, or none; without one the
  eraser and new masks use void (255), the VOC convention for "not labelled".
* Pre-label copies (``prelabels/``) go through the same LUT, so corrections
  (mask != copy) stay exactly the pixels a person changed. Confidence maps hold no
  class indices and stay as they are.

All or nothing: every changed mask and copy is computed and written into a
staging folder first, then one transaction changes the classes and records the
staging folder as pending (the commit point), then the staged files are moved into
place and the mark is cleared. A crash before the commit leaves the old project
(the staging folder is removed on the next open); a crash after it is finished on
the next open by :func:`finish_interrupted_edit`, which moves the remaining files.

Each edit also keeps an undo record of itself (:mod:`annotation.class_undo`), named in
the same transaction; :func:`annotation.class_undo.undo_class_edit` restores the last one the same way.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .class_undo import UNDO_KEY, UndoRecorder, remove_stale_records
from .classes import BACKGROUND_NAMES, LabelClass, default_colour, validate_classes
from .errors import AtrousError, AtrousWriteError
from .layout import mask_path, prelabel_path
from .locks import project_lock
from .masks import VOID, make_palette, read_mask_png, write_mask_png

#: The meta key that marks a class edit committed but not yet moved into place.
PENDING_KEY = "pending_class_edit"
#: Staging folders are made inside the project with this prefix.
STAGING_PREFIX = ".class-edit-"
#: At most this many classes (indices 0..254; 255 is void).
MAX_CLASSES = VOID


def identity_lut() -> np.ndarray:
    """The LUT that changes nothing."""
    return np.arange(256, dtype=np.uint8)


@dataclass(frozen=True)
class ClassEdit:
    """A new class list and the LUT that carries stored values to it."""

    classes: tuple[LabelClass, ...]
    lut: np.ndarray = field(default_factory=identity_lut)
    description: str = ""

    @property
    def remaps(self) -> bool:
        """True when masks must be rewritten (some value moves)."""
        return not np.array_equal(self.lut, identity_lut())


@dataclass
class EditImpact:
    """What an edit changes in the stored masks (for the confirmation)."""

    images: int = 0  # masks where some pixel changes class
    pixels: int = 0  # pixels whose class (name, or void) changes
    masks_rewritten: int = 0  # masks whose stored values change (includes index shifts)
    prelabels_rewritten: int = 0


@dataclass
class EditResult:
    """What :func:`apply_class_edit` did."""

    changed_ids: list[int] = field(default_factory=list)
    masks_rewritten: int = 0
    prelabels_rewritten: int = 0


# --------------------------------------------------------------------------- the background


def background_index(classes: Iterable[LabelClass]) -> int:
    """What the eraser paints and new masks start as: the background class, else void (255)."""
    return next((c.index for c in classes if c.is_background), VOID)


def set_background(classes: Sequence[LabelClass], index: int | None) -> ClassEdit:
    """Make class ``index`` the background (None: no background class; the eraser paints void)."""
    if index is not None and index not in {c.index for c in classes}:
        raise AtrousError(f"no class with index {index}")
    new = tuple(replace(c, is_background=c.index == index) for c in classes)
    name = next((c.name for c in classes if c.index == index), None)
    return ClassEdit(
        new, description="leave no class as the background" if name is None else f"make {name} the background"
    )


# --------------------------------------------------------------------------- planning edits


def _by_index(classes: Sequence[LabelClass]) -> list[LabelClass]:
    return sorted(classes, key=lambda c: c.index)


def _name_of(classes: Sequence[LabelClass], index: int) -> str:
    for c in classes:
        if c.index == index:
            return c.name
    raise AtrousError(f"no class with index {index}")


def add_classes(classes: Sequence[LabelClass], new: Sequence[str | LabelClass]) -> ClassEdit:
    """Append classes at the first free indices; names are checked before anything changes.

    ``new`` holds names (one per line of a pasted list) or classes read from a class file
    (their colours are kept, their indices are not). A background-like name becomes the
    background only when the project has none.
    """
    current = _by_index(classes)
    existing = {c.name for c in current}
    names = [(n.name, n.colour) if isinstance(n, LabelClass) else (str(n).strip(), None) for n in new]
    names = [(n, col) for n, col in names if n]
    if not names:
        raise AtrousError("no class names given (one name per line)")
    seen: set[str] = set()
    dup_new = sorted({n for n, _ in names if n in seen or seen.add(n)})
    if dup_new:
        raise AtrousError(f"these names appear twice in the list: {', '.join(dup_new[:10])}")
    dup_old = [n for n, _ in names if n in existing]
    if dup_old:
        raise AtrousError(f"already classes of this project: {', '.join(dup_old[:10])}")
    total = len(current) + len(names)
    if total > MAX_CLASSES:
        raise AtrousError(
            f"{len(names)} new classes and {len(current)} existing ones make {total}; a project holds at most "
            f"{MAX_CLASSES} (indices 0..254, 255 is void)"
        )
    used = {c.index for c in current}
    free = (i for i in range(MAX_CLASSES) if i not in used)
    has_bg = any(c.is_background for c in current)
    out = list(current)
    for name, colour in names:
        i = next(free)
        bg = not has_bg and name.lower() in BACKGROUND_NAMES
        has_bg = has_bg or bg
        out.append(LabelClass(i, name, colour or default_colour(i), bg))
    added = ", ".join(n for n, _ in names[:5]) + ("…" if len(names) > 5 else "")
    return ClassEdit(tuple(validate_classes(out)), description=f"add {added}")


def delete_class(classes: Sequence[LabelClass], index: int, into: int) -> ClassEdit:
    """Remove class ``index``; its pixels become ``into`` (another class's index, or VOID).

    Classes after it move up one index so the indices stay dense. Merging is deleting
    into another class.
    """
    current = _by_index(classes)
    name = _name_of(current, index)
    if into == index:
        raise AtrousError(f"cannot merge {name} into itself")
    if into != VOID:
        _name_of(current, into)
    lut = identity_lut()
    new: list[LabelClass] = []
    for c in current:
        if c.index == index:
            continue
        shifted = c.index - 1 if c.index > index else c.index
        lut[c.index] = shifted
        new.append(replace(c, index=shifted))
    lut[index] = VOID if into == VOID else lut[into]
    if into == VOID:
        text = f"delete {name} (its pixels become void)"
    elif any(c.index == into and c.is_background for c in current):
        bg = _name_of(current, into)
        text = f"delete {name} (its pixels become {bg if bg.lower() in BACKGROUND_NAMES else bg + ', the background'})"
    else:
        text = f"merge {name} into {_name_of(current, into)}"
    return ClassEdit(tuple(new), lut, text)


def move_class(classes: Sequence[LabelClass], index: int, step: int) -> ClassEdit:
    """Swap class ``index`` with its neighbour before (``step=-1``) or after (``step=1``) it."""
    current = _by_index(classes)
    pos = [c.index for c in current].index(index) if index in {c.index for c in current} else -1
    if pos < 0:
        raise AtrousError(f"no class with index {index}")
    other = pos + (1 if step > 0 else -1)
    if not 0 <= other < len(current):
        raise AtrousError(f"{current[pos].name} is already {'last' if step > 0 else 'first'}")
    a, b = current[pos], current[other]
    lut = identity_lut()
    lut[a.index], lut[b.index] = b.index, a.index
    new = [replace(a, index=b.index) if c is a else replace(b, index=a.index) if c is b else c for c in current]
    return ClassEdit(tuple(_by_index(new)), lut, f"move {a.name} {'down' if step > 0 else 'up'}")


# --------------------------------------------------------------------------- counting


def _class_changes(old: Sequence[LabelClass], edit: ClassEdit) -> np.ndarray:
    """Bool per old value: does a pixel of that value end up as another class (or void)?"""
    old_names = {c.index: c.name for c in old}
    new_names = {c.index: c.name for c in edit.classes}
    values = np.arange(256)
    return np.array(
        [old_names.get(int(v), f"#{v}") != new_names.get(int(edit.lut[v]), f"#{edit.lut[v]}") for v in values]
    )


def impact(project, edit: ClassEdit, *, on_progress: Callable[[int, int], None] | None = None) -> EditImpact:
    """Count what ``edit`` would change in the stored masks and pre-label copies (reads every mask)."""
    out = EditImpact()
    if not edit.remaps:
        return out
    moved = edit.lut != identity_lut()
    changes = _class_changes(project.classes(), edit)
    records = project.images()
    for k, rec in enumerate(records):
        if on_progress is not None:
            on_progress(k, len(records))
        if rec.has_mask:
            counts = np.bincount(project.read_mask(rec.id).ravel(), minlength=256)
            n = int(counts[changes].sum())
            out.pixels += n
            out.images += n > 0
            out.masks_rewritten += bool(counts[moved].any())
        pp = prelabel_path(project.root, rec.id)
        if pp.is_file():
            out.prelabels_rewritten += bool(np.bincount(read_mask_png(pp).ravel(), minlength=256)[moved].any())
    return out


def models_still_match(old: Sequence[LabelClass], edit: ClassEdit) -> bool:
    """True when every remaining class keeps its index (models trained before still fit)."""
    before = {c.index: c.name for c in old}
    return all(before.get(c.index) == c.name for c in edit.classes)


# --------------------------------------------------------------------------- applying


def _palette(classes: Sequence[LabelClass]) -> np.ndarray:
    pal = make_palette()
    for c in classes:
        pal[c.index] = c.colour
    return pal


def _write_classes(cur, classes: Sequence[LabelClass]) -> None:
    cur.execute("DELETE FROM classes")
    cur.executemany(
        "INSERT INTO classes VALUES (?,?,?,?,?,?)",
        [(c.index, c.name, *c.colour, int(c.is_background)) for c in classes],
    )


def apply_class_edit(project, edit: ClassEdit, *, on_progress: Callable[[int, int], None] | None = None) -> EditResult:
    """Apply ``edit`` to ``project``: its class list and every stored mask and pre-label copy.

    All or nothing (see the module docstring). Unreadable masks stop the edit before
    anything changed. Image statuses stay as they are; each rewritten mask gets a line
    in the edit log (source ``classes``). Holds the project lock exclusively: a pre-label job
    or import still writing old indices makes it fail with an error naming that job.
    """
    with project_lock(project.root, exclusive=True, what="a class change"):
        return _apply_class_edit(project, edit, on_progress)


def _apply_class_edit(project, edit: ClassEdit, on_progress: Callable[[int, int], None] | None) -> EditResult:
    from .mask_commit import finish_mask_commits  # imports this module

    classes = validate_classes(list(edit.classes))
    finish_interrupted_edit(project, clean_leftovers=False)
    finish_mask_commits(project)  # a committed mask still waiting to be placed gets the new indices too
    result = EditResult()
    root = Path(project.root)
    undo = UndoRecorder(root, project.classes(), classes, edit.lut, edit.description)
    staging = root / f"{STAGING_PREFIX}{os.getpid()}-{time.time_ns()}"
    pal = _palette(classes)
    records = project.images() if edit.remaps else []
    seen_modified: dict[int, float] = {}
    try:
        for k, rec in enumerate(records):
            if rec.has_mask:
                old = project.read_mask(rec.id)
                new = edit.lut[old]
                rewrite = not np.array_equal(new, old)
                undo.note("masks", rec.id, new, project.mask_path(rec.id) if rewrite else None)
                if rewrite:
                    write_mask_png(staging / "masks" / f"{rec.id}.png", new, pal)
                    result.changed_ids.append(rec.id)
                    seen_modified[rec.id] = rec.modified
            pp = prelabel_path(root, rec.id)
            if pp.is_file():
                old = read_mask_png(pp)
                new = edit.lut[old]
                rewrite = not np.array_equal(new, old)
                undo.note("prelabels", rec.id, new, pp if rewrite else None)
                if rewrite:
                    write_mask_png(staging / "prelabels" / f"{rec.id}.png", new, pal)
                    result.prelabels_rewritten += 1
            if on_progress is not None:
                on_progress(k + 1, len(records))
        undo.finish()
        result.masks_rewritten = len(result.changed_ids)
        with project._tx() as cur:  # the commit point
            for image_id, modified in seen_modified.items():
                row = cur.execute("SELECT modified FROM images WHERE id=?", (image_id,)).fetchone()
                if row is None or float(row[0]) != modified:
                    raise AtrousWriteError(
                        "a mask changed while the class edit was being prepared (another program is writing to "
                        "the project); nothing was changed, try again"
                    )
            _write_classes(cur, classes)
            now = time.time()
            cur.executemany(
                "INSERT INTO edits (image_id, time, status, source) SELECT id, ?, status, ? FROM images WHERE id=?",
                [(now, f"classes: {edit.description}"[:200], i) for i in result.changed_ids],
            )
            cur.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (UNDO_KEY, undo.name))  # replaces the last
            if edit.remaps:
                cur.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (PENDING_KEY, staging.name))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        undo.discard()
        raise
    if edit.remaps:
        _roll_forward(project, staging)
    remove_stale_records(project)
    return result


def _move(src: Path, dest: Path) -> None:
    """Move one staged file into place (a rename: atomic; tests inject failures here)."""
    os.replace(src, dest)


def _roll_forward(project, staging: Path) -> None:
    """Move every staged file into place, then clear the pending mark (idempotent)."""
    root = Path(project.root)
    for sub, target in (("masks", mask_path), ("prelabels", prelabel_path)):
        folder = staging / sub
        if not folder.is_dir():
            continue
        for f in sorted(folder.iterdir()):
            if f.suffix != ".png" or not f.stem.isdigit():
                continue  # a temporary file of a write cut short: never staged completely
            dest = target(root, int(f.stem))
            try:
                dest.parent.mkdir(parents=True, exist_ok=True)
                _move(f, dest)
            except FileNotFoundError:
                continue  # another process opening the project finished this one
            except OSError as e:
                raise AtrousWriteError(
                    f"Cannot move {f} to {dest}: {e.strerror or e}. The class change is recorded; the remaining "
                    "masks are moved into place when the project is opened again"
                ) from e
    with project._tx() as cur:
        cur.execute("DELETE FROM meta WHERE key=?", (PENDING_KEY,))
    shutil.rmtree(staging, ignore_errors=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, but not ours to signal
    return True


def finish_interrupted_edit(project, *, clean_leftovers: bool = True) -> bool:
    """Finish a class edit a crash cut short, and remove staging folders that never committed.

    Called when a project is opened. A staging folder of a process still running (another
    window preparing an edit) is left alone. Returns True when a committed edit was finished.
    """
    root = Path(project.root)
    rows = project._query("SELECT value FROM meta WHERE key=?", (PENDING_KEY,))
    pending = rows[0][0] if rows else None
    finished = False
    if pending is not None:
        _roll_forward(project, root / pending)
        finished = True
    if not clean_leftovers:
        return finished
    remove_stale_records(project, keep_own=True)
    try:
        leftovers = [p for p in root.iterdir() if p.name.startswith(STAGING_PREFIX) and p.is_dir()]
    except OSError:
        leftovers = []
    for p in leftovers:  # staged by an edit that never reached its commit
        pid = p.name[len(STAGING_PREFIX) :].split("-")[0]
        if not (pid.isdigit() and _alive(int(pid))):
            shutil.rmtree(p, ignore_errors=True)
    return finished


# --------------------------------------------------------------------------- open documents


def remap_document(doc, lut: np.ndarray, labels: np.ndarray | None = None) -> None:
    """Carry an open :class:`~annotation.editing.MaskDocument` through ``lut``: mask, baseline and history.

    The editor first saves the document, the project edit rewrites the stored mask, and
    this brings the open copy to the same values without an undo step of its own: every
    earlier step is remapped too, so undoing a stroke made before the edit gives back
    the classes it had, under their new indices. The document stays clean (what it
    holds is what is stored). A stroke in progress must be finished first.

    Undoing a class change passes the inverse LUT and, for a mask the undo restored from
    its record, ``labels``: the restored mask, exact where the LUT alone would leave a
    merged class merged.
    """
    if doc.history.in_transaction:
        raise AtrousError("finish the stroke in progress before changing classes")
    lut = np.asarray(lut, dtype=np.uint8)
    doc._labels[...] = lut[doc._labels] if labels is None else labels
    base = lut[doc._baseline]
    base.flags.writeable = False
    doc._baseline = base
    doc._changed = int(np.count_nonzero(doc._labels != doc._baseline))
    h = doc.history
    for stack in (h._undo, h._redo):
        recs = list(stack)
        stack.clear()
        for rec in recs:
            stack.append(replace(rec, old=_remap_values(rec.old, lut), new=_remap_values(rec.new, lut)))
    doc.revision += 1


def _remap_values(values: np.ndarray | int, lut: np.ndarray) -> np.ndarray | int:
    if isinstance(values, np.ndarray):
        return lut[values]
    return int(lut[int(values)])
