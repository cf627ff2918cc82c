"""Atomic file writes: a temporary file beside the target, fsync, ``os.replace``.

A crash at any moment leaves either the old file or the new one, never a torn
one. Errors (full disk, read-only folder) become :class:`AtrousWriteError`
naming the target, and the temporary file is removed.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import AtrousWriteError


def _fsync_dir(folder: Path) -> None:
    # Make the rename itself durable; not every platform lets us open a folder.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(target: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Open a temporary binary file beside ``target``; on success it replaces ``target``."""
    target = Path(target)
    folder = target.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    except OSError as e:
        raise AtrousWriteError(f"Cannot write {target}: {e.strerror or e}") from e
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise AtrousWriteError(f"Cannot write {target}: {e.strerror or e}") from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(folder)


def atomic_write_bytes(target: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``target`` atomically."""
    with atomic_open(target) as fh:
        fh.write(data)


def atomic_write_with(target: str | os.PathLike[str], writer: Callable[[BinaryIO], None]) -> None:
    """Let ``writer`` fill a temporary file, then move it over ``target`` atomically."""
    with atomic_open(target) as fh:
        writer(fh)
