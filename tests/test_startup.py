"""Start-up without torch: ``--help``, ``info``, ``import``, ``export`` and the app's first window.

Each case runs the real entry point in a fresh interpreter and reports which
heavy modules that interpreter ended up holding; torch costs seconds to import
and only the model commands need it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import main
from annotation.masks import write_mask_png
from annotation.project import LabelClass, Project

REPO = Path(__file__).resolve().parents[1]

# Runs main.py as `python main.py ARGS...` does, then writes what was imported to $REPORT.
CLI = r"""
import json, os, runpy, sys
sys.argv = ["main.py", *sys.argv[1:]]
code = 0
try:
    runpy.run_path("main.py", run_name="__main__")
except SystemExit as e:
    code = e.code
with open(os.environ["REPORT"], "w") as fh:
    json.dump({"code": code, "torch": "torch" in sys.modules, "torchvision": "torchvision" in sys.modules,
               "ray": "ray" in sys.modules}, fh)
"""

# Opens the app through main.main([PROJECT]) and reports at the first Expose of a window.
FIRST_WINDOW = r"""
import json, os, sys
from PySide6.QtCore import QEvent, QObject
from PySide6.QtGui import QWindow
from PySide6.QtWidgets import QApplication

class ReportOnExpose(QObject):
    def eventFilter(self, obj, event):
        if event.type() == QEvent.Type.Expose and isinstance(obj, QWindow) and obj.isExposed():
            names = [w.metaObject().className() for w in QApplication.topLevelWidgets() if w.isVisible()]
            with open(os.environ["REPORT"], "w") as fh:
                json.dump({"torch": "torch" in sys.modules, "torchvision": "torchvision" in sys.modules,
                           "ray": "ray" in sys.modules, "windows": names}, fh)
            os._exit(0)  # the window is up: that is all this check needs
        return False

app = QApplication(sys.argv[:1])
flt = ReportOnExpose()
app.installEventFilter(flt)
import main
sys.exit(main.main([sys.argv[1]]))
"""

CLASSES = [LabelClass(0, "background", (0, 0, 0), True), LabelClass(1, "thing", (200, 40, 40))]


def _images(folder: Path, n: int = 2) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


@pytest.fixture
def tiny_project(tmp_path: Path) -> Path:
    """A two-image project whose masks are saved, so that export has something to write."""
    root = tmp_path / "proj"
    _images(tmp_path / "images")
    with Project.create(root, CLASSES) as project:
        project.add_images(tmp_path / "images")
        for rec in project.images():
            mask = np.zeros((rec.height, rec.width), np.uint8)
            mask[4:12, 4:12] = 1
            project.save_mask(rec.id, mask, status="edited")
    return root


def _run(script: str, args: list[str], tmp_path: Path) -> dict:
    report = tmp_path / "report.json"
    report.unlink(missing_ok=True)
    env = {
        **os.environ,
        "REPORT": str(report),
        "ATROUS_DATA_DIR": str(tmp_path / "data"),
        "QT_QPA_PLATFORM": "offscreen",
    }
    proc = subprocess.run(
        [sys.executable, "-c", script, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=240
    )
    assert report.is_file(), f"no report (exit {proc.returncode}):\n{proc.stderr[-2000:]}"
    return json.loads(report.read_text())


def test_static_command_names_match_the_parser() -> None:
    """main.COMMANDS decides GUI vs command; it must name exactly the parser's subcommands."""
    parser = main.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == set(main.COMMANDS)


def test_lazy_model_names_resolve() -> None:
    """`from model import X` works for every exported name, each from the submodule that defines it."""
    import model

    assert sorted(model.__all__) == sorted(model._LAZY)
    for name, submodule in model._LAZY.items():
        assert getattr(model, name) is getattr(importlib.import_module(f"model.{submodule}"), name)
    with pytest.raises(AttributeError):
        _ = model.no_such_name


def test_cli_commands_import_no_torch(tiny_project: Path, tmp_path: Path) -> None:
    masks = tmp_path / "masks"
    masks.mkdir()
    for i in range(2):
        write_mask_png(masks / f"img{i}.png", np.ones((24, 32), np.uint8))
    cases = {
        "--help": ["--help"],
        "info": ["info", str(tiny_project)],
        "export": ["export", str(tiny_project), "--format", "voc", str(tmp_path / "voc")],
        "import": [
            "import",
            str(tmp_path / "imported"),
            "--format",
            "masks",
            str(masks),
            "--images",
            str(tmp_path / "images"),
        ],
    }
    for name, args in cases.items():
        result = _run(CLI, args, tmp_path)
        assert result["code"] in (0, None), (name, result)
        assert not result["torch"] and not result["torchvision"], f"`atrous {name}` imported torch"
        assert not result["ray"], f"`atrous {name}` imported ray (only `prelabel --ray` may)"
    assert (tmp_path / "voc").is_dir() and (tmp_path / "imported").is_dir()  # the commands really ran


def test_the_check_sees_torch_when_a_command_loads_it(tmp_path: Path) -> None:
    """The report above can fail: `models` lists the registry through model.weights, which needs torch."""
    result = _run(CLI, ["models"], tmp_path)
    assert result["code"] in (0, None)
    assert result["torch"]


def test_first_window_imports_no_torch(tiny_project: Path, tmp_path: Path) -> None:
    result = _run(FIRST_WINDOW, [str(tiny_project)], tmp_path)
    assert "MainWindow" in result["windows"]
    assert not result["torch"] and not result["torchvision"]
    assert not result["ray"]


def test_a_mistyped_command_is_an_error_not_a_window(capsys: pytest.CaptureFixture[str]) -> None:
    """`atrous exprot P ...` used to start the GUI (a Qt abort without a display, a hang offscreen)."""
    assert main.main(["exprot", "proj", "--format", "voc", "out"]) == 2
    assert "did you mean 'export'" in capsys.readouterr().err
    assert main.main(["no/such/folder"]) == 2
    assert "neither a command nor an existing project" in capsys.readouterr().err


def test_output_piped_into_a_reader_that_quits_is_not_a_traceback(tmp_path: Path) -> None:
    """`atrous info P | head -1`: the reader closes the pipe; we stop quietly."""
    with Project.create(tmp_path / "p"):
        pass
    read, write = os.pipe()
    os.close(read)  # the reader has gone before we write
    r = subprocess.run(
        [sys.executable, str(REPO / "main.py"), "info", str(tmp_path / "p")],
        stdout=write,
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
    )
    os.close(write)
    assert r.returncode == 0 and "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr, r.stderr
