"""Checkpoints whose metadata no network can be built or run with, and ``evaluate`` after an
image changed size (#17 items 4, 8, 11).

Every case runs in one child process (torch is imported once) whose address space is capped:
before the fix, ``input_size`` 100000 asked for 40 GB.
"""

from __future__ import annotations

import json

import pytest

from .conftest import run_capped

#: torch alone reserves ~3.5 GB of address space on import; 8 GiB still stops a 40 GB allocation.
CAP = 8 << 30

# (case, change to the stored metadata (arch keys prefixed "arch."), words in the error line).
# The state dict is empty: the metadata must be refused before any weights are looked at.
BAD_META = [
    ("input_size_huge", {"input_size": 100_000}, "input size 100000 is outside 8..4096"),
    ("input_size_neg", {"input_size": -5}, "input size -5"),
    ("input_size_inf", {"input_size": float("inf")}, "malformed"),
    ("std_zero", {"std": [0.0, 0.0, 0.0]}, "std (0.0, 0.0, 0.0) is not three positive numbers"),
    ("backbone_vgg16", {"arch.backbone": "vgg16"}, "backbone 'vgg16'"),
    ("zero_classes", {"arch.num_classes": 0, "class_names": [], "colours": []}, "0 classes"),
    ("stride_3", {"arch.output_stride": 3}, "output stride 3"),
    ("colour_999", {"colours": [[999, 0, 0], [1, 1, 1], [2, 2, 2]]}, "class colour (999, 0, 0)"),
    ("duplicate_names", {"class_names": ["same", "same", "x"]}, "class name 'same' appears twice"),
    ("version_abc", {"version": "abc"}, "checkpoint version 'abc'"),
]

_SCRIPT = r"""
import contextlib, io, json, sys, time, traceback
t0 = time.time()
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import main
from annotation.formats import apply_import
from annotation.formats.maskdir import read_mask_folder
from model.deeplabv3 import ArchSpec
from model.weights import CHECKPOINT_FORMAT, ModelMeta, default_colours, save_checkpoint
from tests.model.helpers import tiny_model

root = Path(sys.argv[1])
cases = json.loads(sys.argv[2])
images = root / "images"
images.mkdir()
for i in range(2):
    Image.fromarray(np.full((40, 60, 3), 60 * i, np.uint8)).save(images / f"{i}.png")


def run(*args):
    err, out = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            rc = main.main([str(a) for a in args])
    except BaseException:
        return {"rc": None, "err": traceback.format_exc(), "out": out.getvalue()}
    return {"rc": rc, "err": err.getvalue(), "out": out.getvalue()}


base = ModelMeta(ArchSpec("mobilenet_v3_large", 3, 16, (12, 24, 36), False), ["c0", "c1", "c2"],
                 default_colours(3), input_size=64).to_dict()
results = {}
for name, change in cases.items():
    payload = {"format": CHECKPOINT_FORMAT, "version": 1, "meta": json.loads(json.dumps(base)), "state_dict": {}}
    for key, value in change.items():
        if key == "version":
            payload["version"] = value
        elif key.startswith("arch."):
            payload["meta"]["arch"][key[5:]] = value
        else:
            payload["meta"][key] = value
    ck = root / f"{name}.pt"
    torch.save(payload, ck)
    out = root / f"out_{name}"
    results[name] = {**run("prelabel", images, "--out", out, "--model", ck, "--device", "cpu"), "wrote": out.exists(),
                     "file": str(ck)}

# evaluate after an image changed size on disk
(root / "labels").mkdir()
for i in range(2):
    Image.fromarray(np.full((40, 60), i, np.uint8), mode="L").save(root / "labels" / f"{i}.png")
(root / "classes.txt").write_text("c0\nc1\nc2\n")
proj = root / "proj"
apply_import(proj, read_mask_folder(root / "labels", images, root / "classes.txt"))
tiny = tiny_model(3)
save_checkpoint(root / "tiny.pt", tiny.network, tiny.meta)
Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(images / "0.png")
results["evaluate"] = run("evaluate", proj, "--model", root / "tiny.pt", "--device", "cpu")
print(f"{time.time() - t0:.1f} s", file=sys.stderr)
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("ck")
    cases = json.dumps({name: change for name, change, _ in BAD_META})
    run = run_capped(root, cases, script=_SCRIPT, cap=CAP, timeout=300)
    assert run.rc == 0, run.err[-3000:]
    return json.loads(run.out.strip().splitlines()[-1])


@pytest.mark.parametrize("case,change,words", BAD_META, ids=[c[0] for c in BAD_META])
def test_bad_metadata_is_refused_at_load(results: dict, case: str, change: dict, words: str) -> None:
    r = results[case]
    assert r["rc"] == 2, r["err"][-3000:]
    lines = r["err"].strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r["err"]
    assert r["file"] in lines[0] and words in lines[0], lines[0]
    assert not r["wrote"]


def test_evaluate_names_the_image_that_changed_size(results: dict) -> None:
    # Before: ValueError: target has 172800 pixels, prediction 60000 (a traceback).
    r = results["evaluate"]
    assert r["rc"] == 1, r["err"][-3000:]
    assert "Traceback" not in r["err"]
    skipped = [ln for ln in r["out"].splitlines() if ln.startswith("skipped:")]
    assert len(skipped) == 1 and "0.png" in skipped[0] and "30x20" in skipped[0], r["out"]
