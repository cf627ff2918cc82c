"""A mask and its database row change together: the row is the commit point, the file follows.

A new mask is never written over ``masks/<id>.png`` before its row commits (a failed commit
would leave the new mask beside the old row: a pre-label on disk under a row that says
``reviewed``). Instead, inside the write transaction:

1. the mask is written (temp file, fsync, rename) under a name of its own, a *token*
   ``<pid>-<ns>``: ``masks/<id>.png.pending-<token>`` for one save, or
   ``masks/.staging-<token>/<id>.png`` for an import;
2. the row records ``mask_token = <token>``; the transaction commits;
3. then :func:`place` moves the file over ``masks/<id>.png``, under the database's write
   lock and only while the row still holds that token, so a slower writer never puts its
   older mask over a newer one that committed after it.

A crash or a failed rename between 2 and 3 leaves a file whose token matches its row: it is
committed, and :func:`finish_mask_commits` (run when the project is opened, and by
``check --repair``) moves it into place. A file whose token does not match never committed
(or was replaced by a later save): it is removed once its writer is gone. Finding them lists
the ``masks/`` folder only; no mask is read.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import AtrousWriteError
from .layout import MASK_DIR, mask_path

#: ``masks/<id>.png.pending-<token>``: one saved mask waiting for (or past) its commit.
PENDING_MARK = ".pending-"
#: ``masks/.staging-<token>/``: the masks of one import.
STAGING_PREFIX = ".staging-"
#: A leftover whose writer's pid still runs is removed anyway once it is this old (a reused pid).
SAFE_AGE_S = 3600.0

_PENDING_RE = re.compile(r"^(\d+)\.png" + re.escape(PENDING_MARK) + r"(\d+-\d+)$")
_STAGED_RE = re.compile(r"^(\d+)\.png$")
_TOKEN_RE = re.compile(r"^\d+-\d+$")


def new_token() -> str:
    """A token no other write uses: this process's id and the time in nanoseconds."""
    return f"{os.getpid()}-{time.time_ns()}"


def pending_path(root: str | os.PathLike[str], image_id: int, token: str) -> Path:
    """Where one save writes its mask before the row commits."""
    final = mask_path(root, image_id)
    return final.with_name(f"{final.name}{PENDING_MARK}{token}")


def staging_dir(root: str | os.PathLike[str], token: str) -> Path:
    """The folder one import writes its masks into before the rows commit."""
    return Path(root) / MASK_DIR / f"{STAGING_PREFIX}{token}"


@dataclass(frozen=True)
class Unplaced:
    """A mask file written under a token and not (yet) moved over ``masks/<id>.png``."""

    path: Path
    image_id: int
    token: str
    committed: bool  # the image's row holds this token: the file is the image's mask
    stale: bool  # its writer is gone (or it is older than SAFE_AGE_S): nobody else will finish it


@dataclass(frozen=True)
class Found:
    """What :func:`scan` found: the mask files, and the import staging folders they lie in."""

    files: list[Unplaced]
    folders: dict[Path, bool]  # staging folder -> stale


def _stale(token: str, path: Path, now: float) -> bool:
    from .class_edits import _alive  # the one liveness test of staging folders

    pid = token.split("-")[0]
    if not (pid.isdigit() and _alive(int(pid))):
        return True
    try:
        return now - path.stat().st_mtime > SAFE_AGE_S
    except OSError:
        return False


def row_tokens(project, image_ids: Iterable[int]) -> dict[int, str | None]:
    """The ``mask_token`` of each image that has a row (none for a database without the column)."""
    ids = sorted({int(i) for i in image_ids})
    out: dict[int, str | None] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        try:
            rows = project._query(f"SELECT id, mask_token FROM images WHERE id IN ({marks})", chunk)
        except sqlite3.OperationalError as e:
            if "mask_token" in str(e):
                return {}  # a read-only database of an older version: no token was ever recorded
            raise
        out.update((int(i), t) for i, t in rows)
    return out


def scan(project) -> Found:
    """Every mask file written under a token and still lying beside ``masks/<id>.png``."""
    folder = Path(project.root) / MASK_DIR
    raw: list[tuple[Path, int, str]] = []
    folders: dict[Path, bool] = {}
    now = time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return Found([], {})
    for entry in entries:
        m = _PENDING_RE.match(entry.name)
        if m and entry.is_file(follow_symlinks=False):
            raw.append((Path(entry.path), int(m.group(1)), m.group(2)))
        elif entry.name.startswith(STAGING_PREFIX) and entry.is_dir(follow_symlinks=False):
            token = entry.name[len(STAGING_PREFIX) :]
            folders[Path(entry.path)] = _stale(token, Path(entry.path), now)
            if not _TOKEN_RE.match(token):
                continue
            try:
                inner = list(os.scandir(entry.path))
            except OSError:
                continue
            for f in inner:
                m = _STAGED_RE.match(f.name)
                if m and f.is_file(follow_symlinks=False):
                    raw.append((Path(f.path), int(m.group(1)), token))
    if not raw:
        return Found([], folders)
    tokens = row_tokens(project, (i for _, i, _ in raw))
    files = [
        Unplaced(path, image_id, token, tokens.get(image_id) == token, _stale(token, path, now))
        for path, image_id, token in sorted(raw, key=lambda r: (str(r[0].parent), r[1]))
    ]
    return Found(files, folders)


#: How an error after the commit ends: nothing is lost.
_LATER = "the mask is saved and will be put in place when the project is next opened"


class MaskNotPlaced(AtrousWriteError):
    """The mask and its row are committed, but the file could not be moved into place yet (see ``_LATER``)."""


def _move(src: Path, image_id: int, root: Path) -> None:
    target = mask_path(root, image_id)
    try:
        os.replace(src, target)
    except FileNotFoundError:
        if src.exists():
            raise AtrousWriteError(f"Cannot move {src} to {target}: {target.parent} is gone") from None
        # Another process opening the project moved it (it holds the token too): done.
    except OSError as e:
        raise MaskNotPlaced(f"Cannot move {src} to {target} ({e.strerror or e}): {_LATER}") from e


def place(project, items: Sequence[tuple[int, Path]], token: str) -> None:
    """Move masks whose rows just committed with ``token`` over ``masks/<id>.png``.

    Done under the database's write lock, so it is ordered after every commit before it: a
    file whose row now holds another token (a later save) is dropped instead of placed.
    """
    root = Path(project.root)
    try:
        with project._tx():
            tokens = row_tokens(project, (i for i, _ in items))
            for image_id, src in items:
                if tokens.get(image_id) == token:
                    _move(src, image_id, root)
                else:
                    src.unlink(missing_ok=True)
    except AtrousWriteError as e:
        if _LATER in str(e):
            raise
        raise AtrousWriteError(f"{e}; {_LATER}") from e
    except sqlite3.Error as e:
        raise AtrousWriteError(f"{root}: cannot move a saved mask into place ({e}); {_LATER}") from e


def discard(project, items: Sequence[tuple[int, Path]], token: str) -> None:
    """After a write transaction failed: remove its files, unless its rows committed after all.

    A COMMIT that reported an error has normally changed nothing; should the rows hold the token
    anyway, the files are theirs and are placed. When the rows cannot even be read, the files stay
    for :func:`finish_mask_commits` to decide on the next open.
    """
    try:
        tokens = row_tokens(project, (i for i, _ in items))
    except sqlite3.Error:
        return
    committed = [(i, p) for i, p in items if tokens.get(i) == token]
    for i, p in items:
        if tokens.get(i) != token:
            p.unlink(missing_ok=True)
    if committed:
        place(project, committed, token)


def _settle(project, found: Found) -> int:
    root = Path(project.root)
    placed = 0
    for f in found.files:
        if f.committed:
            _move(f.path, f.image_id, root)
            placed += 1
        elif f.stale:
            f.path.unlink(missing_ok=True)
    for folder, stale in found.folders.items():
        if stale:  # what it held is placed or removed above
            shutil.rmtree(folder, ignore_errors=True)
        else:  # under the write lock no import is between its write and its commit: empty is done
            try:
                folder.rmdir()
            except OSError:
                pass  # holds files of an import that may still commit
    return placed


def finish_mask_commits(project) -> int:
    """Put every committed mask in place and remove stale uncommitted ones; returns how many were placed.

    Called when a project is opened and by ``check --repair``. Listing ``masks/`` is all it costs
    when there is nothing to do; otherwise the work is done under the write lock, so no other
    writer is between its write and its commit meanwhile.
    """
    first = scan(project)
    if not any(f.committed or f.stale for f in first.files) and not any(first.folders.values()):
        return 0  # nothing, or only files of live writers that finish them themselves
    with project._tx():
        return _settle(project, scan(project))
