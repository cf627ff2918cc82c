"""Shared test set-up: offscreen Qt, the repo on sys.path, the shared datasets, thread leak check."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

#: Third-party datasets beside the project root (see each SOURCE.md).
SHARED_DATA = REPO.parent / "shared" / "data"

#: Looks up one dataset folder by name, e.g. ``shared_data("camvid_small")``.
SharedData = Callable[[str], Path]


def in_ci() -> bool:
    """Whether the tests run under CI (``CI`` set, as CI services and .ci/run do)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def shared_dataset(name: str) -> Path:
    """``../shared/data/<name>``, or skip the test naming the missing folder.

    A plain clone has no ``../shared`` beside it and its tests should still pass;
    under CI a missing dataset fails instead, so CI keeps running every test.
    """
    path = SHARED_DATA / name
    if path.is_dir():
        return path
    message = f"dataset folder {path} is missing (the shared datasets sit beside the project)"
    if in_ci():
        pytest.fail(f"{message}; CI runs every dataset test", pytrace=False)
    pytest.skip(message)


@pytest.fixture
def shared_data() -> SharedData:
    """:func:`shared_dataset` for a test: ``shared_data("labelme_examples") / "primitives"``."""
    return shared_dataset


@pytest.fixture(autouse=True)
def no_leaked_threads():
    """Fail a test that leaves a (non-daemon) thread of its own running."""
    before = set(threading.enumerate())
    yield
    leaked = [t for t in threading.enumerate() if t not in before and t.is_alive() and not t.daemon]
    for t in leaked:
        t.join(timeout=5)
    still = [t.name for t in leaked if t.is_alive()]
    assert not still, f"test left threads running: {still}"
