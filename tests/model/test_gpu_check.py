"""bench/gpu_check.py runs on the CPU in its reduced form, so the GPU script cannot rot between GPU runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "gpu_check.py"


def test_gpu_check_on_the_cpu_passes_and_prints_every_row() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu"], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert "| check | result | figure | note |" in lines
    body = [ln for ln in lines if ln.startswith("| ")][1:]  # after the header; the |---| line has no space
    rows = {ln.split("|")[1].strip(): [c.strip() for c in ln.split("|")[2:5]] for ln in body}
    expected = {
        "fused optimizer (AdamW)", "fine-tune AMP bf16", "fine-tune AMP fp16", "pre-label fp32 vs naive torchvision fp32",
        "pre-label bf16 vs fp32", "pre-label fp16 vs fp32", "out of memory: batch halves", "out of memory: tiles",
    }  # fmt: skip
    assert expected <= set(rows), sorted(rows)
    assert all(result in ("pass", "skip", "n/a") for result, _, _ in rows.values())
    assert rows["pre-label fp32 vs naive torchvision fp32"][0] == "pass"
    assert rows["pre-label fp16 vs fp32"] == ["skip", "", "fp16 is CUDA-only; the CPU runs fp32 or bf16"]
    assert rows["out of memory: tiles"][2] == "n/a on cpu"
    assert "agree" in rows["pre-label fp32 vs naive torchvision fp32"][1]
    trained = [r for name, r in rows.items() if name.startswith("fine-tune") and r[0] == "pass"]
    assert trained and all("steps" in r[1] for r in trained)


def test_synthetic_scenes_colour_follows_class() -> None:
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(SCRIPT.parent))
    img, mask = gpu_check.scene(60, 80, np.random.default_rng(0))
    assert img.shape == (60, 80, 3) and img.dtype == np.uint8 and mask.shape == (60, 80)
    present = np.unique(mask)
    assert len(present) >= 2 and present.max() < gpu_check.CLASSES
    # the mean colour of two classes differs well beyond the noise: the task is learnable
    means = [img[mask == c].mean(0) for c in present[:2]]
    assert np.abs(means[0] - means[1]).max() > 20
    table = gpu_check.table([gpu_check.Row("a|b", "pass", "1", "x")])
    assert table.splitlines()[2] == "| a\\|b | pass | 1 | x |"
