"""An annotation project: a folder with an SQLite index and one mask PNG per image.

The folder layout is named in :mod:`annotation.layout`; the schema and records in
:mod:`annotation.records`; model versions and statistics in :mod:`annotation.project_index`.

Rules the code keeps:

* Images are referenced, never modified or copied (only images that exist
  nowhere else, e.g. embedded in a labelme JSON, are written under
  ``PROJECT/images/``). Paths are stored relative to the project folder when
  the image lies inside it or the caller gave a relative path; absolute otherwise.
* Masks are always in the upright (EXIF-applied) frame of their image.
* A mask is written atomically (temp file, fsync, ``os.replace``) under a name of its
  own inside the write transaction that records it, and moved over ``masks/<id>.png``
  only after that transaction commits (:mod:`annotation.mask_commit`): a failed commit
  leaves the old mask with the old row, a crash after the commit is finished on the
  next open. The database never points at a missing or torn mask.
* One SQLite connection per :class:`Project`, shared between threads under a
  lock (``check_same_thread=False``), so a GUI worker may use the same object.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from .classes import LabelClass, default_colour, validate_classes
from .errors import AtrousError, AtrousReadError, AtrousWriteError, ImageReadError
from .imageio import file_sha256, load_image, read_image_info, scan_images
from .layout import DB_NAME, MASK_DIR
from .layout import mask_path as _mask_path
from .mask_commit import discard as _discard_masks
from .mask_commit import finish_mask_commits, new_token, pending_path, staging_dir
from .mask_commit import place as _place_masks
from .masks import VOID, make_palette, read_mask_png, write_mask_png
from .project_classes import ProjectClassesMixin
from .project_index import ProjectIndexMixin
from .records import (
    _SCHEMA,
    SCHEMA_VERSION,
    STATUSES,
    AddResult,
    EditRecord,
    ImageRecord,
    ModelVersion,
    ProjectStats,
)
from .records import check_database as _check_database
from .records import check_status as _check_status
from .records import half_made as _half_made
from .records import remove_db_files as _remove_db

log = logging.getLogger(__name__)

#: Names other modules import from here (the project is where people look for them).
__all__ = [
    "DB_NAME",
    "MASK_DIR",
    "STATUSES",
    "AddResult",
    "EditRecord",
    "ImageRecord",
    "LabelClass",
    "ModelVersion",
    "Project",
    "ProjectStats",
    "default_colour",
    "file_sha256",
    "scan_images",
    "validate_classes",
]


def _disk_trouble(e: BaseException) -> bool:
    """Whether a failed open came from the disk (full, or an I/O error), not from the file itself."""
    text = str(e.__cause__ or e).lower()
    return "disk i/o error" in text or "database or disk is full" in text


def _writable(path: Path) -> bool:
    """True when this process may write ``path`` (a read-only mount says no even to root)."""
    return os.access(path, os.W_OK)


class Project(ProjectClassesMixin, ProjectIndexMixin):
    """An open annotation project. Use :meth:`create` or :meth:`open`; close it (or use ``with``)."""

    def __init__(self, root: Path, conn: sqlite3.Connection, read_only: bool = False) -> None:
        self.root = root
        self._conn = conn
        self._lock = threading.RLock()
        #: Opened read-only (the database or its folder is not writable): every write is refused.
        self.read_only = read_only
        self.why_read_only = f"its folder or {DB_NAME} is not writable"

    # ---------------------------------------------------------------- lifecycle

    @classmethod
    def create(cls, path: str | os.PathLike[str], classes: Sequence[LabelClass] | None = None) -> Project:
        """Create a new project folder (it may exist but must not hold a project).

        A database left half-made by a create that failed or was killed (no schema yet) is
        replaced, so the retry works; anything that failed here removes what it made.
        """
        root = Path(path)
        db = root / DB_NAME
        if db.exists():
            if not _half_made(db):
                raise AtrousWriteError(f"{root}: a project already exists here")
            _remove_db(db)
        if root.exists() and not root.is_dir():
            raise AtrousWriteError(f"{root}: exists and is not a folder")
        classes = validate_classes(list(classes or []))
        try:
            (root / MASK_DIR).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise AtrousWriteError(f"Cannot create project folder {root}: {e.strerror or e}") from e
        conn = cls._connect(root / DB_NAME)
        proj = cls(root, conn)
        try:
            conn.executescript(_SCHEMA)  # DDL outside _tx: executescript commits on its own
            proj._migrate()  # columns added since the schema text was written
            with proj._tx() as cur:
                cur.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                cur.execute("INSERT INTO meta VALUES ('created', ?)", (str(time.time()),))
                cur.executemany(
                    "INSERT INTO classes VALUES (?,?,?,?,?,?)",
                    [(c.index, c.name, *c.colour, int(c.is_background)) for c in classes],
                )
        except BaseException as e:
            proj.close()
            _remove_db(db)
            if isinstance(e, sqlite3.Error):
                raise AtrousWriteError(f"Cannot create project database {db}: {e}") from e
            raise
        return proj

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, recover: bool = True) -> Project:
        """Open an existing project folder (read-only when it or its database is not writable).

        ``recover=False`` leaves an interrupted class edit, and masks committed but not yet moved
        into place, as they are (``check`` lists them).
        """
        root = Path(path)
        db = root / DB_NAME
        if not db.is_file():
            raise AtrousReadError(f"{root}: not an Atrous project (no {DB_NAME})")
        read_only = not (_writable(db) and _writable(root))
        why_read_only = f"its folder or {DB_NAME} is not writable"
        try:
            conn = cls._connect(db, read_only=read_only, folder_read_only=not _writable(root))
        except AtrousReadError as e:
            if read_only or not _disk_trouble(e):
                raise
            # A full disk cannot take the -shm file WAL needs, but the project can still be read.
            conn = cls._connect(db, read_only=True, folder_read_only=True)
            read_only, why_read_only = True, f"the disk is full or failing ({e.__cause__})"
        proj = cls(root, conn, read_only)
        proj.why_read_only = why_read_only
        try:
            _check_database(conn, db)  # damaged pages, an unknown schema version
        except BaseException:
            proj.close()
            raise
        if read_only:
            return proj
        proj._migrate()
        if not recover:
            return proj
        from .class_edits import finish_interrupted_edit  # imports this module

        try:
            finish_mask_commits(proj)  # masks a crash left between their commit and their move
        except AtrousWriteError as e:  # busy, or a file that cannot be moved: the next open tries again
            log.warning("%s: saved masks not put in place yet: %s", root, e)
        finish_interrupted_edit(proj)  # a class edit a crash cut short
        return proj

    def _migrate(self) -> None:
        """Add columns that newer code expects to databases made before them (nullable, so no data changes)."""
        with self._lock:
            cols = {r[1] for r in self._conn.execute("PRAGMA table_info(images)").fetchall()}
            for name, kind in (("mean_confidence", "REAL"), ("mask_token", "TEXT")):
                if name in cols:
                    continue
                try:
                    self._conn.execute(f"ALTER TABLE images ADD COLUMN {name} {kind}")
                except sqlite3.Error as e:
                    # A read-only project still opens; the column just is not there to write.
                    if "readonly" not in str(e).lower():
                        raise AtrousReadError(f"{self.root / DB_NAME}: cannot upgrade the database ({e})") from e

    @staticmethod
    def _connect(db: Path, *, read_only: bool = False, folder_read_only: bool = False) -> sqlite3.Connection:
        try:
            if read_only:
                # A read-only folder cannot hold the -shm file WAL mode needs: immutable=1 reads the
                # database file alone, which is complete unless a -wal file holds commits.
                wal = Path(f"{db}-wal")
                immutable = folder_read_only and not (wal.exists() and wal.stat().st_size)
                uri = f"{db.absolute().as_uri()}?mode=ro" + ("&immutable=1" if immutable else "")
                conn = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None, timeout=30)
                conn.execute("PRAGMA foreign_keys=ON")
                return conn
            conn = sqlite3.connect(db, check_same_thread=False, isolation_level=None, timeout=30)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as e:
            raise AtrousReadError(f"{db}: cannot open database ({e})") from e
        return conn

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            try:
                self._conn.close()
            except sqlite3.Error:
                pass

    def __enter__(self) -> Project:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Cursor]:
        """One write transaction (BEGIN IMMEDIATE ... COMMIT, rolled back on any error).

        Another program holding the database for writing longer than the connection's busy
        timeout is one clear :class:`AtrousWriteError`; nothing has been written then.
        """
        if self.read_only:
            raise AtrousWriteError(f"{self.root}: the project is read-only ({self.why_read_only})")
        with self._lock:
            cur = self._conn.cursor()
            try:
                cur.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as e:
                raise AtrousWriteError(
                    f"{self.root / DB_NAME}: the project is busy ({e}): another program is writing to it; "
                    "try again when it has finished"
                ) from e
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            try:
                cur.execute("COMMIT")
            except BaseException:
                # A COMMIT that failed (busy, disk full) may leave the transaction open: end it,
                # or every later BEGIN of this connection fails.
                try:
                    cur.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # SQLite already rolled it back
                raise

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    # ---------------------------------------------------------------- images

    def _stored_path(self, path: Path, given_relative: bool) -> str:
        absolute = Path(os.path.abspath(path))
        root = Path(os.path.abspath(self.root))
        try:
            return absolute.relative_to(root).as_posix()
        except ValueError:
            pass
        if given_relative:
            return Path(os.path.relpath(absolute, root)).as_posix()
        return str(absolute)

    def image_path(self, record: ImageRecord | int) -> Path:
        """Where the image file of ``record`` (or an image id) lies on disk."""
        if isinstance(record, int):
            record = self.image(record)
        p = Path(record.path)
        return p if p.is_absolute() else self.root / p

    def add_images(
        self,
        source: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
        *,
        on_file: Callable[[int, int, Path], None] | None = None,
    ) -> AddResult:
        """Reference images (a folder, scanned recursively, or a list of files) in place.

        Images whose content is already in the project (same SHA-256) are skipped,
        so adding a folder again only adds the new files. Unreadable files are
        skipped and listed in the result. ``on_file(i, n, path)`` is called before the
        i-th of the n files is read; what it raises (a cancel) ends the call with nothing
        added, since every row is inserted in one transaction at the end.
        """
        if isinstance(source, (str, os.PathLike)):
            src = Path(source)
            if src.is_dir():
                paths = scan_images(src)
            elif src.is_file():
                paths = [src]
            else:
                raise AtrousReadError(f"{src}: no such file or folder")
        else:
            paths = [Path(p) for p in source]
        result = AddResult()
        rows = []
        for i, p in enumerate(paths):
            if on_file is not None:
                on_file(i, len(paths), p)
            try:
                rows.append((p, self._probe(p)))
            except ImageReadError as e:
                result.skipped_unreadable.append((p, str(e)))
        self._insert_images(rows, result)
        return result

    @staticmethod
    def _probe(path: Path) -> tuple[int, int, int, str]:
        info = read_image_info(path)
        return info.width, info.height, info.orientation, file_sha256(path)

    def _insert_images(
        self,
        rows: Sequence[tuple[Path, tuple[int, int, int, str]]],
        result: AddResult | None = None,
        cur: sqlite3.Cursor | None = None,
    ) -> list[int]:
        """Insert probed images; returns ids in order (existing id for a duplicate)."""
        ids: list[int] = []

        def work(c: sqlite3.Cursor) -> None:
            now = time.time()
            for p, (w, h, orient, sha) in rows:
                stored = self._stored_path(p, not p.is_absolute())
                hit = c.execute("SELECT id FROM images WHERE sha256=? OR path=? LIMIT 1", (sha, stored)).fetchone()
                if hit is not None:
                    if result is not None:
                        result.skipped_duplicates.append(p)
                    ids.append(int(hit[0]))
                    continue
                c.execute(
                    "INSERT INTO images (path, width, height, sha256, orientation, status, created, modified) VALUES (?,?,?,?,?,'new',?,?)",
                    (stored, w, h, sha, orient, now, now),
                )
                ids.append(int(c.lastrowid))
                if result is not None:
                    result.added.append(ids[-1])

        if cur is not None:
            work(cur)
        else:
            with self._tx() as c:
                work(c)
        return ids

    _IMG_COLS = (
        "id, path, width, height, sha256, orientation, status, has_mask, prelabel_model_version, "
        "changed_pixels, edit_seconds, created, modified, mean_confidence"
    )

    @staticmethod
    def _record(row: tuple) -> ImageRecord:
        return ImageRecord(
            id=int(row[0]),
            path=row[1],
            width=int(row[2]),
            height=int(row[3]),
            sha256=row[4],
            orientation=int(row[5]),
            status=row[6],
            has_mask=bool(row[7]),
            prelabel_model_version=None if row[8] is None else int(row[8]),
            changed_pixels=int(row[9]),
            edit_seconds=float(row[10]),
            created=float(row[11]),
            modified=float(row[12]),
            mean_confidence=None if len(row) < 14 or row[13] is None else float(row[13]),
        )

    def images(self, status: str | Iterable[str] | None = None) -> list[ImageRecord]:
        """All images (by id), or those whose status is ``status`` (one or several)."""
        if status is None:
            rows = self._query(f"SELECT {self._IMG_COLS} FROM images ORDER BY id")
        else:
            wanted = [status] if isinstance(status, str) else list(status)
            for s in wanted:
                _check_status(s)
            marks = ",".join("?" * len(wanted))
            rows = self._query(f"SELECT {self._IMG_COLS} FROM images WHERE status IN ({marks}) ORDER BY id", wanted)
        return [self._record(r) for r in rows]

    def image(self, image_id: int) -> ImageRecord:
        """One image by id."""
        rows = self._query(f"SELECT {self._IMG_COLS} FROM images WHERE id=?", (int(image_id),))
        if not rows:
            raise AtrousError(f"no image with id {image_id} in {self.root}")
        return self._record(rows[0])

    def find_image(self, sha256: str) -> ImageRecord | None:
        """The image with this content hash, if the project has it."""
        rows = self._query(f"SELECT {self._IMG_COLS} FROM images WHERE sha256=? LIMIT 1", (sha256,))
        return self._record(rows[0]) if rows else None

    def load_image(self, image_id: int) -> np.ndarray:
        """The image pixels, upright, as (H, W, 3) uint8."""
        return load_image(self.image_path(image_id))

    # ---------------------------------------------------------------- masks

    def mask_path(self, image_id: int) -> Path:
        """Where the mask of ``image_id`` is (or would be) stored."""
        return _mask_path(self.root, image_id)

    def read_mask(self, image_id: int) -> np.ndarray | None:
        """The mask of an image (uint8 class indices, upright), or None when it has none."""
        rec = self.image(image_id)
        if not rec.has_mask:
            return None
        mask = read_mask_png(self.mask_path(rec.id))
        if mask.shape != (rec.height, rec.width):
            raise AtrousReadError(
                f"{self.mask_path(rec.id)}: mask is {mask.shape[1]}x{mask.shape[0]}, image is {rec.width}x{rec.height}"
            )
        return mask

    def _check_mask(self, rec: ImageRecord, mask: np.ndarray) -> np.ndarray:
        mask = np.asarray(mask)
        if mask.ndim != 2 or mask.shape != (rec.height, rec.width):
            raise AtrousError(
                f"mask for {rec.path} has shape {mask.shape}, the image is {rec.height}x{rec.width} (rows x columns)"
            )
        if mask.dtype != np.uint8:
            if mask.size and (mask.min() < 0 or mask.max() > VOID):
                raise AtrousError(f"mask for {rec.path} has values outside 0..255")
            mask = mask.astype(np.uint8)
        return mask

    def save_mask(
        self,
        image_id: int,
        mask: np.ndarray,
        *,
        status: str = "edited",
        model_version: int | None = None,
        changed_pixels: int | None = None,
        edit_seconds: float | None = None,
        source: str | None = None,
        only_if_status: Collection[str] | None = None,
        mean_confidence: float | None = None,
    ) -> bool:
        """Store ``mask`` for an image: its PNG and its row change together or not at all.

        The PNG is written beside ``masks/<id>.png`` under a new name inside the write
        transaction that records it, and moved into place once that transaction commits
        (:mod:`annotation.mask_commit`). A failed commit leaves the old mask and row; a move
        that fails after the commit raises :class:`AtrousWriteError`, and the saved mask is
        put in place when the project is next opened.

        ``status='prelabeled'`` with ``model_version`` records which network made
        the mask and resets the change counters; later saves add
        ``changed_pixels`` and ``edit_seconds`` to the image's totals.
        ``mean_confidence`` (0..1) is the pre-label's mean confidence.

        ``only_if_status``: write only when the image's status, read inside the
        transaction (which holds the database's write lock, so no other writer can
        change it meanwhile), is one of these. Returns False, writing nothing, when
        it is not: this is how a pre-label never replaces a mask a person saved
        after the pre-label job read its to-do list.
        """
        _check_status(status)
        rec = self.image(image_id)
        mask = self._check_mask(rec, mask)
        if mean_confidence is not None and not 0.0 <= float(mean_confidence) <= 1.0:
            raise AtrousError(f"mean confidence must be in [0, 1], got {mean_confidence}")
        palette = self.palette()
        token = new_token()
        pending = pending_path(self.root, rec.id, token)
        try:
            with self._tx() as cur:
                if only_if_status is not None:
                    row = cur.execute("SELECT status FROM images WHERE id=?", (rec.id,)).fetchone()
                    if row is None or row[0] not in only_if_status:
                        return False
                write_mask_png(pending, mask, palette)
                self._record_mask(cur, rec.id, status, model_version, changed_pixels, edit_seconds, source, token)
                if mean_confidence is not None:
                    cur.execute("UPDATE images SET mean_confidence=? WHERE id=?", (float(mean_confidence), rec.id))
        except BaseException as e:
            _discard_masks(self, [(rec.id, pending)], token)
            if isinstance(e, sqlite3.Error):
                raise AtrousWriteError(f"{self.root / DB_NAME}: cannot record the mask of {rec.path} ({e})") from e
            raise
        _place_masks(self, [(rec.id, pending)], token)
        return True

    def _record_mask(
        self,
        cur: sqlite3.Cursor,
        image_id: int,
        status: str,
        model_version: int | None,
        changed_pixels: int | None,
        edit_seconds: float | None,
        source: str | None,
        token: str,
    ) -> None:
        now = time.time()
        if status == "prelabeled" and model_version is not None:
            cur.execute(
                "UPDATE images SET has_mask=1, status=?, prelabel_model_version=?, changed_pixels=0, edit_seconds=0, "
                "modified=?, mask_token=? WHERE id=?",
                (status, model_version, now, token, image_id),
            )
        else:
            cur.execute(
                "UPDATE images SET has_mask=1, status=?, changed_pixels=changed_pixels+?, "
                "edit_seconds=edit_seconds+?, modified=?, mask_token=? WHERE id=?",
                (status, int(changed_pixels or 0), float(edit_seconds or 0.0), now, token, image_id),
            )
        cur.execute(
            "INSERT INTO edits (image_id, time, status, model_version, changed_pixels, edit_seconds, source) VALUES (?,?,?,?,?,?,?)",
            (image_id, now, status, model_version, changed_pixels, edit_seconds, source),
        )

    def set_mean_confidence(self, image_id: int, value: float | None) -> None:
        """Store the mean confidence (0..1) of an image's pre-label, for an active-learning queue."""
        rec = self.image(image_id)
        if value is not None and not 0.0 <= float(value) <= 1.0:
            raise AtrousError(f"mean confidence must be in [0, 1], got {value}")
        with self._tx() as cur:
            cur.execute(
                "UPDATE images SET mean_confidence=? WHERE id=?", (None if value is None else float(value), rec.id)
            )

    def set_status(self, image_id: int, status: str) -> None:
        """Change an image's status (e.g. mark it reviewed)."""
        _check_status(status)
        rec = self.image(image_id)
        with self._tx() as cur:
            cur.execute("UPDATE images SET status=?, modified=? WHERE id=?", (status, time.time(), rec.id))
            cur.execute(
                "INSERT INTO edits (image_id, time, status, source) VALUES (?,?,?,?)",
                (rec.id, time.time(), status, "status"),
            )

    def forget_mask(self, image_id: int, modified: float) -> bool:
        """Drop an unreadable mask: status back to new, file removed. False (nothing done) when the
        image's row changed since ``modified`` (another writer saved a mask meanwhile)."""
        with self._tx() as cur:
            done = cur.execute(
                "UPDATE images SET has_mask=0, status='new', changed_pixels=0, edit_seconds=0, modified=?, "
                "mask_token=NULL WHERE id=? AND modified=?",
                (time.time(), int(image_id), modified),
            ).rowcount
            if done:
                cur.execute(
                    "INSERT INTO edits (image_id, time, status, source) VALUES (?,?,'new','repair')",
                    (image_id, time.time()),
                )
                self.mask_path(image_id).unlink(missing_ok=True)  # the row commits only once the file is gone
        return bool(done)

    def forget_image(self, image_id: int) -> None:
        """Drop an image's row and edit log, then its mask and kept pre-label files (the image file stays)."""
        self.forget_images([image_id])

    def forget_images(self, image_ids: Iterable[int]) -> None:
        """:meth:`forget_image` for several images in one transaction (all or none go)."""
        from .layout import confidence_path, prelabel_path

        ids = [(int(i),) for i in image_ids]
        with self._tx() as cur:
            cur.executemany("DELETE FROM edits WHERE image_id=?", ids)
            cur.executemany("DELETE FROM images WHERE id=?", ids)
        root = self.root
        for (image_id,) in ids:
            for path in (self.mask_path(image_id), prelabel_path(root, image_id), confidence_path(root, image_id)):
                with contextlib.suppress(OSError):
                    path.unlink(missing_ok=True)  # files without a row are never read

    def last_edits(self, n: int = 10) -> list[EditRecord]:
        """The ``n`` most recent entries of the edit log, newest first."""
        rows = self._query(
            "SELECT id, image_id, time, status, model_version, changed_pixels, edit_seconds, source FROM edits ORDER BY id DESC LIMIT ?",
            (n,),
        )
        return [EditRecord(int(r[0]), int(r[1]), float(r[2]), r[3], r[4], r[5], r[6], r[7]) for r in rows]

    # ---------------------------------------------------------------- bulk import

    def import_batch(
        self,
        items: Sequence[tuple[Path, tuple[int, int, int, str], np.ndarray | None]],
        *,
        status: str = "reviewed",
        classes: Sequence[LabelClass] | None = None,
        source: str = "import",
    ) -> list[int]:
        """Add images (probed) with optional masks in one all-or-nothing step.

        Masks are first written into a staging folder (``masks/.staging-<token>``) while the
        database changes, each row naming the token, are held in an open transaction; any
        error removes the staged files and rolls back. Only once the transaction has
        committed are the staged masks moved into place (:mod:`annotation.mask_commit`; a
        crash meanwhile is finished on the next open). Returns the image ids (in ``items`` order).
        """
        _check_status(status)
        token = new_token()
        staging = staging_dir(self.root, token)
        staged: list[tuple[int, Path]] = []
        try:
            with self._tx() as cur:
                if classes is not None:
                    classes = validate_classes(list(classes))
                    cur.execute("DELETE FROM classes")
                    cur.executemany(
                        "INSERT INTO classes VALUES (?,?,?,?,?,?)",
                        [(c.index, c.name, *c.colour, int(c.is_background)) for c in classes],
                    )
                    pal = make_palette()
                    for c in classes:
                        pal[c.index] = c.colour
                else:
                    pal = self.palette()
                ids = self._insert_images([(p, probe) for p, probe, _ in items], cur=cur)
                for image_id, (_, _, mask) in zip(ids, items):
                    if mask is None:
                        continue
                    tmp = staging / f"{image_id}.png"
                    staged.append((image_id, tmp))
                    write_mask_png(tmp, mask, pal)
                    self._record_mask(cur, image_id, status, None, None, None, source, token)
        except BaseException as e:
            try:
                _discard_masks(self, staged, token)
            finally:
                self._remove_staging(staging)
            if isinstance(e, sqlite3.Error):
                raise AtrousWriteError(f"{self.root / DB_NAME}: cannot record the import ({e})") from e
            raise
        try:
            _place_masks(self, staged, token)
        finally:
            self._remove_staging(staging)
        return ids

    @staticmethod
    def _remove_staging(staging: Path) -> None:
        """Remove an import's staging folder once it is empty (a file that could not be moved stays)."""
        try:
            staging.rmdir()
        except OSError:
            pass
