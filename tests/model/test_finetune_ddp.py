"""The fine-tune entry point under torchrun: 2 CPU processes, gloo, DistributedDataParallel."""

from __future__ import annotations

import os
import subprocess
import sys

from annotation.project import Project
from model.weights import load_checkpoint

from .ddp_common import make_tiny_project

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_torchrun_two_processes_gloo(tmp_path) -> None:
    path, _ = make_tiny_project(tmp_path, n=6)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "model.finetune",
        str(path),
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--crop",
        "32",
        "--input-size",
        "40",
        "--precision",
        "fp32",
        "--device",
        "cpu",
        "--base",
        "scratch",
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    # torchrun exits 0 only when every rank exited 0
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("saved ") and last.endswith(".pt")
    assert proc.stdout.count("saved ") == 1  # only rank 0 saves and reports
    with Project.open(path) as p:
        versions = p.model_versions()
        assert len(versions) == 1 and p.active_model_version.id == versions[0].id
        assert versions[0].metrics["world_size"] == 2
        assert len(versions[0].metrics["history"]) == 1
    assert load_checkpoint(last[len("saved ") :]).meta.class_names == ["k0", "k1", "k2"]
