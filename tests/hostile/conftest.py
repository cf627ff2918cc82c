"""Running the command line on hostile files: in this process, or in a child with capped memory."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

#: Address-space cap for commands whose failure mode is a huge allocation: a regression
#: fails its test (MemoryError, a refused malloc) instead of taking the machine down.
CAP_BYTES = 3 << 30


@dataclass
class Run:
    """What one command did."""

    rc: int
    out: str
    err: str

    def refused(self, *names: object) -> str:
        """Assert exit 2 with exactly one ``error:`` line on stderr naming each of ``names``; return it."""
        lines = self.err.strip().splitlines()
        assert self.rc == 2, f"exit {self.rc}, stderr:\n{self.err[-3000:]}"
        assert len(lines) == 1 and lines[0].startswith("error: "), self.err[-3000:]
        for name in names:
            assert str(name) in lines[0], f"{name} not named in: {lines[0]}"
        return lines[0]


Atrous = Callable[..., Run]


@pytest.fixture
def atrous(capsys: pytest.CaptureFixture[str]) -> Atrous:
    """Run ``main.main(args)`` in this process (fast: no interpreter start-up)."""
    import main

    def run(*args: object) -> Run:
        capsys.readouterr()
        rc = main.main([str(a) for a in args])
        out, err = capsys.readouterr()
        return Run(rc, out, err)

    return run


def run_capped(*args: object, cap: int = CAP_BYTES, timeout: float = 90, script: str | None = None) -> Run:
    """Run ``main.py ARGS`` (or ``python -c script``) in a child whose address space is capped at ``cap``."""

    def limit() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    cmd = [sys.executable, "-c", script] if script else [sys.executable, str(REPO / "main.py")]
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "PYTHONPATH": str(REPO)}
    p = subprocess.run(
        [*cmd, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=timeout,
        preexec_fn=limit,
    )
    return Run(p.returncode, p.stdout, p.stderr)


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (relative path -> content hash), SQLite's -wal/-shm side files aside."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.name.endswith(("-wal", "-shm")):
            out[str(p.relative_to(folder))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out
