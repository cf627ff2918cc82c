"""kill -9 while painting and saving never leaves a torn mask or a dangling database row."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from annotation.masks import read_mask_png
from annotation.project import LabelClass, Project

HELPER = Path(__file__).with_name("paint_save_loop.py")


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX signals), which this OS lacks")
@pytest.mark.parametrize("run", range(3))
def test_kill_during_paint_save_loop(tmp_path: Path, run: int) -> None:
    img = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(run).integers(0, 255, (480, 640, 3), dtype=np.uint8)).save(img)
    root = tmp_path / "proj"
    classes = [LabelClass(i, f"c{i}", (40 * i, 0, 0), i == 0) for i in range(4)]
    with Project.create(root, classes) as p:
        p.add_images([img])
        start = np.zeros((480, 640), np.uint8)
        p.save_mask(p.images()[0].id, start, status="prelabeled")
    log_file = tmp_path / "saved.txt"
    proc = subprocess.Popen([sys.executable, str(HELPER), str(root), str(log_file)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(random.Random(run).uniform(0.05, 0.6))
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        if proc.stdout:
            proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL

    allowed = {hashlib.sha256(start.tobytes()).hexdigest()} | set(log_file.read_text().split())
    assert len(allowed) > 3  # it really was saving in a loop
    with Project.open(root) as p:
        for rec in p.images():
            if rec.has_mask:  # the database never points at a missing or torn mask
                mask = read_mask_png(p.mask_path(rec.id))
                assert mask.shape == (480, 640)
                assert hashlib.sha256(mask.tobytes()).hexdigest() in allowed
        assert p.images()[0].has_mask
    # no temp files of an interrupted write are mistaken for masks
    assert sorted(f.name for f in (root / "masks").glob("*.png")) == ["1.png"]
