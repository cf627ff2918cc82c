"""Atomic file writes: a temporary file beside the target, fsync, ``os.replace``.

A crash at any moment leaves either the old file or the new one, never a torn
one. Errors (full disk, read-only folder) become :class:`AtrousWriteError`
naming the target, and the temporary file is removed.

The files get the permissions any other tool's output gets: ``0666`` less the
process umask (``0644`` under the usual umask 022), so an exported dataset or a
checkpoint can be read by the training job of another user on a shared server.
"""

from __future__ import annotations

import contextlib
import os
import secrets
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


def _create_temp(folder: Path, name: str) -> tuple[int, Path]:
    """Create a new, empty temporary file in ``folder``; return its descriptor and path.

    ``tempfile.mkstemp`` always creates mode 0600, which the final ``os.replace``
    would carry over to the target. Instead the file is created the way every
    other tool creates its output, ``open(O_CREAT, 0o666)``, and the kernel
    applies the umask (and a folder's default ACL, which a computed mode would
    miss). Reading the umask is avoided on purpose: ``os.umask`` can only be read
    by setting it, which races with files other threads create meanwhile, and
    ``/proc/self/status`` exists only on Linux. ``O_EXCL`` with an unguessable
    name keeps mkstemp's guarantees: a fresh file of ours, never a planted
    symlink or someone else's file.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = folder / f".{name}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue  # a name collision (or a leftover): draw another name
    raise FileExistsError(f"no free temporary name beside {folder / name}")


@contextlib.contextmanager
def atomic_open(target: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Open a temporary binary file beside ``target``; on success it replaces ``target``."""
    target = Path(target)
    folder = target.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = _create_temp(folder, target.name)
    except OSError as e:
        raise AtrousWriteError(f"Cannot write {target}: {e.strerror or e}") from e
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
