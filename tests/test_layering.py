"""The module map's arrows at import time: annotation -> no torch, no Qt; model -> no Qt; gui -> no torch.

`lint-imports` (pyproject.toml) checks the static imports. This file checks what
importing each module really loads, which import-linter cannot: gui may use the
network only from inside functions, so importing any gui module, even through
model/, must load no torch (the app's first window waits for nothing heavy).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Each package is imported, with all its modules, in a fresh interpreter in which
# the forbidden top-level packages cannot be imported at all.
SCRIPT = r"""
import importlib, pkgutil, sys
forbidden = set(sys.argv[2].split(","))

class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in forbidden:
            raise ImportError(f"forbidden import of {name}")
        return None

sys.meta_path.insert(0, Block())
pkg = importlib.import_module(sys.argv[1])
names = [m.name for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")]
for name in names:
    importlib.import_module(name)
print(len(names) + 1)
"""


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("annotation", "torch,torchvision,PySide6,shiboken6,PyQt5,PyQt6"),
        ("model", "PySide6,shiboken6,PyQt5,PyQt6,gui"),
        ("gui", "torch,torchvision"),
    ],
)
def test_package_never_imports_forbidden_layers(package: str, forbidden: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, package, forbidden], cwd=REPO, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert int(proc.stdout.strip()) >= 2  # the package and at least one module were imported


def test_blocker_really_blocks() -> None:
    """The check above must be able to fail: importing model with torch forbidden fails."""
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, "model", "torch"], cwd=REPO, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode != 0
    assert "forbidden import of torch" in proc.stderr
