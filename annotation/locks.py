"""An advisory lock on a whole project, so class-list changes never meet a mask writer.

Per-image claims (the status re-checked inside each write transaction) keep two
writers off the same mask. What they cannot catch is a change of the class list:
a pre-label job that read the old list keeps writing old indices after a delete
or merge remapped every mask, and two imports into the same new folder each set
their own list. So:

* mask writers (the pre-label job, an import that keeps the class list) take the
  lock **shared**: any number of them at once;
* class-list changes, project creation and imports (which may merge classes)
  take it **exclusive**.

The lock is ``flock`` on the project folder itself, so nothing is added to a
folder that must stay empty until it becomes a project; the kernel releases it
when the process ends, killed or not. A writer that cannot take it within a
short timeout gets an :class:`AtrousWriteError` naming what holds it, read from
a small holder note (``.atrous-lock-<pid>-<n>``) each holder leaves in an
existing project. Nested use in one thread is free (an exclusive holder may take
it shared again); other threads of the same process contend like other
processes. Windows has no ``flock``: there the lock does nothing, and neither
does it on file systems that refuse locks (some network mounts).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from .atomic import atomic_write_bytes
from .errors import AtrousError, AtrousWriteError
from .layout import is_project

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; the lock degrades to nothing
    fcntl = None  # type: ignore[assignment]

#: Seconds a writer waits for the lock before it gives up with an error naming the holder.
DEFAULT_TIMEOUT = 5.0
#: Holder notes in the project folder start with this.
HOLDER_PREFIX = ".atrous-lock-"
_POLL = 0.05
_held = threading.local()
_serial = itertools.count(1)


@contextlib.contextmanager
def project_lock(
    root: str | os.PathLike[str], *, exclusive: bool, what: str, timeout: float | None = None
) -> Iterator[None]:
    """Hold the project lock at ``root`` for the ``with`` body.

    ``what`` names the holder for others' errors ("a pre-label job"). An exclusive lock on a
    folder that does not exist yet creates it (removed again on exit when still empty); a
    shared one on a missing folder takes nothing and leaves the error to the caller's open.
    """
    if fcntl is None:
        yield
        return
    held: dict[str, bool] = _held.__dict__.setdefault("locks", {})
    key = os.path.realpath(root)
    if key in held:
        if exclusive and not held[key]:
            raise AtrousWriteError(f"{root}: {what} needs the project to itself while this job is writing to it")
        yield
        return
    path = Path(root)
    if not exclusive and not path.is_dir():
        yield
        return
    fd, made = _acquire(path, exclusive, what, DEFAULT_TIMEOUT if timeout is None else timeout)
    note = _leave_note(path, what)
    held[key] = exclusive
    try:
        yield
    finally:
        del held[key]
        if note is not None:
            note.unlink(missing_ok=True)
        if made:
            with contextlib.suppress(OSError):
                path.rmdir()  # made here for a create that failed: only when still empty
        os.close(fd)


def _acquire(root: Path, exclusive: bool, what: str, timeout: float) -> tuple[int, bool]:
    """Open and lock the folder; (descriptor, whether the folder was made here)."""
    assert fcntl is not None
    deadline = time.monotonic() + timeout
    op = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    while True:
        made = False
        if not root.exists():
            try:
                root.mkdir(parents=True)
                made = True
            except FileExistsError:
                pass
            except OSError as e:
                raise AtrousWriteError(f"Cannot create project folder {root}: {e.strerror or e}") from e
        try:
            fd = os.open(root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except FileNotFoundError:
            if time.monotonic() >= deadline:
                raise AtrousWriteError(f"{root}: the folder keeps disappearing; {what} did not start") from None
            continue  # removed meanwhile (a create that failed): make it again
        except NotADirectoryError as e:
            raise AtrousWriteError(f"{root}: exists and is not a folder") from e
        except OSError as e:
            raise AtrousWriteError(f"Cannot open project folder {root}: {e.strerror or e}") from e
        while True:
            try:
                fcntl.flock(fd, op | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise AtrousWriteError(_busy(root, what, timeout)) from None
                time.sleep(_POLL)
            except OSError:
                return fd, made  # a file system without locks (ENOLCK): go on unlocked, as on Windows
        # A create that failed may have removed (and another made again) the folder while we waited.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(root))
        except OSError:
            same = False
        if same:
            return fd, made
        os.close(fd)


def _leave_note(root: Path, what: str) -> Path | None:
    """Say who holds the lock, in an existing project only (a new folder must stay empty)."""
    if not is_project(root):
        return None
    holders(root)  # removes the notes killed holders left behind
    note = root / f"{HOLDER_PREFIX}{os.getpid()}-{next(_serial)}"
    try:
        atomic_write_bytes(note, what.encode("utf-8"))
    except AtrousError:
        return None  # a read-only project: the lock still holds, the note is a courtesy
    return note


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, not ours to signal
    return True


def holders(root: str | os.PathLike[str]) -> list[tuple[int, str]]:
    """(pid, what) of each live holder note in ``root``; notes of dead processes are removed."""
    out = []
    try:
        notes = [p for p in Path(root).iterdir() if p.name.startswith(HOLDER_PREFIX)]
    except OSError:
        return []
    for p in sorted(notes):
        pid = p.name[len(HOLDER_PREFIX) :].split("-")[0]
        if not pid.isdigit():
            continue
        if not _alive(int(pid)):
            with contextlib.suppress(OSError):  # a read-only project keeps it: harmless
                p.unlink(missing_ok=True)  # left by a killed process; its lock went with it
            continue
        try:
            out.append((int(pid), p.read_text(encoding="utf-8", errors="replace").strip()[:200]))
        except OSError:
            continue
    return out


def _busy(root: Path, what: str, timeout: float) -> str:
    found = holders(root)
    who = "; ".join(f"{w or 'another program'} (pid {pid})" for pid, w in found) or "another program"
    verb = "are" if len(found) > 1 else "is"
    return f"{root}: {who} {verb} writing to this project; {what} waited {timeout:g} s. Try again when it has finished"
