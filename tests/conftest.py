"""Shared test set-up: offscreen Qt, the repo on sys.path, data paths, thread leak check."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

#: Third-party datasets beside the project root (see each SOURCE.md).
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """The ``../shared/data`` folder; tests that use it fail loudly when it is missing."""
    assert SHARED_DATA.is_dir(), f"{SHARED_DATA} is missing: the shared datasets must sit beside the project"
    return SHARED_DATA


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
