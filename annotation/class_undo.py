"""Undoing the last class change of a project (delete, merge, reorder, add, background).

Before :func:`annotation.class_edits.apply_class_edit` commits, it fills an *undo
record*: a hidden folder ``.class-undo-<pid>-<time>`` in the project holding

* ``manifest.json``: the class lists before and after, the edit's LUT and
  description, and a digest of every stored mask and kept pre-label as the edit
  left them (written last: a record without it is incomplete);
* ``masks/<id>.png`` and ``prelabels/<id>.png``: the files the edit rewrote, as
  they were (copied byte for byte).

The edit's own transaction names the record in the project's ``meta`` table, so a
record is valid exactly when the class change it belongs to committed; the next
class change replaces it, undoing consumes it, and folders no transaction names
are removed. :func:`undo_class_edit` restores through the same staged,
all-or-nothing step a class edit uses (stage, one transaction, move into place,
finished on the next open after a crash).

It refuses, changing nothing, when the class list was changed since (renamed,
recoloured) or when any stored mask or kept pre-label differs from what the class
change left (painted, pre-labelled, imported since): restoring the old files would
lose that work, and keeping it would put new indices under the old class list.
Undoing those edits first (so the masks are as the change left them) makes the
class change undoable again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .atomic import atomic_write_bytes
from .classes import LabelClass
from .errors import AtrousError, AtrousReadError, AtrousWriteError
from .layout import mask_path, prelabel_path
from .locks import project_lock
from .masks import read_mask_png

#: The meta key naming the undo record of the last class change.
UNDO_KEY = "class_undo"
#: Undo records are folders inside the project with this prefix.
UNDO_PREFIX = ".class-undo-"
MANIFEST = "manifest.json"


def digest(labels: np.ndarray) -> str:
    """A digest of a label map's content (shape and values), to tell whether a mask changed."""
    h = hashlib.sha1(repr(labels.shape).encode())
    h.update(np.ascontiguousarray(labels, dtype=np.uint8).tobytes())
    return h.hexdigest()


def _classes_json(classes: Sequence[LabelClass]) -> list[list]:
    return [[c.index, c.name, list(c.colour), bool(c.is_background)] for c in classes]


def _classes_from(rows: list[list]) -> list[LabelClass]:
    return [LabelClass(int(i), str(n), (int(col[0]), int(col[1]), int(col[2])), bool(bg)) for i, n, col, bg in rows]


class UndoRecorder:
    """Fills a new undo record while a class edit is prepared (see the module docstring)."""

    def __init__(self, root: Path, old: Sequence[LabelClass], new: Sequence[LabelClass], lut, description: str):
        self.folder = Path(root) / f"{UNDO_PREFIX}{os.getpid()}-{time.time_ns()}"
        self.manifest = {
            "description": description,
            "old_classes": _classes_json(old),
            "new_classes": _classes_json(new),
            "lut": [int(v) for v in lut],
            "remaps": not np.array_equal(lut, np.arange(256)),
            "masks": {},  # image id -> digest of the mask the edit leaves
            "prelabels": {},
            "kept_masks": [],  # ids whose old mask file is in masks/
            "kept_prelabels": [],
        }

    @property
    def name(self) -> str:
        return self.folder.name

    def note(self, kind: str, image_id: int, after: np.ndarray, old_file: Path | None) -> None:
        """Record what the edit leaves for one mask or pre-label (``kind``: masks | prelabels).

        ``old_file`` is the file the edit rewrites (its bytes are kept), None when it stays.
        """
        self.manifest[kind][str(image_id)] = digest(after)
        if old_file is not None:
            try:
                data = old_file.read_bytes()
            except OSError as e:
                raise AtrousReadError(f"Cannot read {old_file}: {e.strerror or e}") from e
            atomic_write_bytes(self.folder / kind / f"{image_id}.png", data)
            self.manifest[f"kept_{kind}"].append(image_id)

    def finish(self) -> None:
        """Write the manifest: the record is complete (it becomes valid when the edit commits)."""
        atomic_write_bytes(self.folder / MANIFEST, json.dumps(self.manifest).encode())

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


@dataclass
class UndoRecord:
    """The undo record of the last class change, as read back."""

    folder: Path
    description: str
    old_classes: list[LabelClass]
    new_classes: list[LabelClass]
    lut: np.ndarray
    remaps: bool
    masks: dict[int, str]
    prelabels: dict[int, str]
    kept_masks: list[int]
    kept_prelabels: list[int]

    def inverse_lut(self) -> np.ndarray:
        """Carries the new indices back: each class to its old index (a merge target keeps the pixels)."""
        old_index = {c.name: c.index for c in self.old_classes}
        inv = np.arange(256, dtype=np.uint8)
        for c in self.new_classes:
            if c.name in old_index:
                inv[c.index] = old_index[c.name]
        return inv


@dataclass
class UndoResult:
    """What :func:`undo_class_edit` did."""

    description: str
    classes: list[LabelClass]  # the restored class list
    lut: np.ndarray  # new index -> restored index, for open documents
    changed_ids: list[int] = field(default_factory=list)  # masks restored from the record
    prelabels_restored: int = 0


def last_record(project) -> UndoRecord | None:
    """The undo record of the project's last class change, or None when there is nothing to undo."""
    rows = project._query("SELECT value FROM meta WHERE key=?", (UNDO_KEY,))
    if not rows:
        return None
    folder = Path(project.root) / rows[0][0]
    try:
        m = json.loads((folder / MANIFEST).read_text())
        return UndoRecord(
            folder,
            str(m["description"]),
            _classes_from(m["old_classes"]),
            _classes_from(m["new_classes"]),
            np.array(m["lut"], dtype=np.uint8),
            bool(m["remaps"]),
            {int(k): v for k, v in m["masks"].items()},
            {int(k): v for k, v in m["prelabels"].items()},
            [int(i) for i in m["kept_masks"]],
            [int(i) for i in m["kept_prelabels"]],
        )
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise AtrousReadError(f"The undo record of the last class change ({folder}) cannot be read: {e}") from e


def remove_stale_records(project, *, keep_own: bool = False) -> None:
    """Remove undo folders no transaction names: replaced, consumed, or never committed.

    A folder of another running process may be an edit being prepared and is left alone;
    so are this process's unless ``keep_own`` is False (called after our own edit finished).
    """
    from .class_edits import _alive

    root = Path(project.root)
    rows = project._query("SELECT value FROM meta WHERE key=?", (UNDO_KEY,))
    named = rows[0][0] if rows else None
    try:
        folders = [p for p in root.iterdir() if p.name.startswith(UNDO_PREFIX) and p.is_dir()]
    except OSError:
        return
    for p in folders:
        if p.name == named:
            continue
        pid = p.name[len(UNDO_PREFIX) :].split("-")[0]
        own = pid == str(os.getpid())
        if not pid.isdigit() or (own and not keep_own) or not _alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)


def _edited_since(project, rec: UndoRecord, on_progress: Callable[[int, int], None] | None) -> list[str]:
    """Names of images whose mask or kept pre-label is no longer what the class change left."""
    from .class_edits import ClassEdit, _class_changes

    root = Path(project.root)
    records = project.images()
    names: list[str] = []
    gone = set(rec.masks) | set(rec.prelabels)
    # without a remap nothing was digested; it is enough that no pixel uses a class the undo takes away
    changes = None if rec.remaps else _class_changes(rec.new_classes, ClassEdit(tuple(rec.old_classes)))
    for k, r in enumerate(records):
        gone.discard(r.id)
        for kind, path in (("masks", mask_path(root, r.id)), ("prelabels", prelabel_path(root, r.id))):
            stored = path.is_file()
            if changes is not None:
                if stored and bool(np.bincount(read_mask_png(path).ravel(), minlength=256)[changes].any()):
                    names.append(Path(r.path).name)
                    break
                continue
            want = (rec.masks if kind == "masks" else rec.prelabels).get(r.id)
            now = digest(read_mask_png(path)) if stored else None
            if now != want:
                names.append(Path(r.path).name)
                break
        if on_progress is not None:
            on_progress(k + 1, len(records))
    if gone and rec.remaps:
        names.append(f"{len(gone)} image(s) removed from the project")
    return names


def undo_class_edit(project, *, on_progress: Callable[[int, int], None] | None = None) -> UndoResult:
    """Undo the project's last class change: the class list, and every mask and pre-label it rewrote.

    All or nothing, through the staged commit of a class edit. Refused with an
    :class:`AtrousError` (nothing changed) when there is nothing to undo, the class list
    was changed since, or a mask or kept pre-label was changed since. Holds the project
    lock exclusively, as a class edit does.
    """
    with project_lock(project.root, exclusive=True, what="undoing a class change"):
        return _undo_class_edit(project, on_progress)


def _undo_class_edit(project, on_progress: Callable[[int, int], None] | None) -> UndoResult:
    from .class_edits import (
        PENDING_KEY,
        STAGING_PREFIX,
        _roll_forward,
        _write_classes,
        finish_interrupted_edit,
    )

    finish_interrupted_edit(project, clean_leftovers=False)
    rec = last_record(project)
    if rec is None:
        raise AtrousError("there is no class change to undo")
    if project.classes() != rec.new_classes:
        raise AtrousError(
            f"the classes were renamed or recoloured after “{rec.description}”; that class change can no longer "
            "be undone (undo is for the last change to the class list)"
        )
    edited = _edited_since(project, rec, on_progress)
    if edited:
        listed = ", ".join(edited[:8]) + (f" and {len(edited) - 8} more" if len(edited) > 8 else "")
        raise AtrousError(
            f"“{rec.description}” cannot be undone: {len(edited)} image(s) were changed after it ({listed}). "
            "Restoring their old masks would lose that work. Undo those changes first (so the masks are as the "
            "class change left them), or keep the class change. Nothing was changed."
        )
    result = UndoResult(rec.description, rec.old_classes, rec.inverse_lut(), list(rec.kept_masks))
    result.prelabels_restored = len(rec.kept_prelabels)
    root = Path(project.root)
    staging = root / f"{STAGING_PREFIX}{os.getpid()}-{time.time_ns()}"
    seen_modified = {r.id: r.modified for r in project.images() if r.id in set(rec.kept_masks)}
    try:
        for kind, ids in (("masks", rec.kept_masks), ("prelabels", rec.kept_prelabels)):
            for image_id in ids:
                src = rec.folder / kind / f"{image_id}.png"
                try:
                    data = src.read_bytes()
                except OSError as e:
                    raise AtrousReadError(f"The undo record lost {src}: {e.strerror or e}; nothing was changed") from e
                atomic_write_bytes(staging / kind / f"{image_id}.png", data)
        with project._tx() as cur:  # the commit point, as for any class edit
            row = cur.execute("SELECT value FROM meta WHERE key=?", (UNDO_KEY,)).fetchone()
            if row is None or row[0] != rec.folder.name:
                raise AtrousWriteError("another program changed the classes meanwhile; nothing was changed")
            for image_id, modified in seen_modified.items():
                r = cur.execute("SELECT modified FROM images WHERE id=?", (image_id,)).fetchone()
                if r is None or float(r[0]) != modified:
                    raise AtrousWriteError("a mask changed while the undo was being prepared; nothing was changed")
            _write_classes(cur, rec.old_classes)
            now = time.time()
            cur.executemany(
                "INSERT INTO edits (image_id, time, status, source) SELECT id, ?, status, ? FROM images WHERE id=?",
                [(now, f"classes: undo {rec.description}"[:200], i) for i in rec.kept_masks],
            )
            cur.execute("DELETE FROM meta WHERE key=?", (UNDO_KEY,))
            if rec.remaps:
                cur.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (PENDING_KEY, staging.name))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if rec.remaps:
        _roll_forward(project, staging)
    shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(rec.folder, ignore_errors=True)
    return result
