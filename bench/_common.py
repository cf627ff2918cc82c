"""Helpers shared by the benchmarks: the CamVid subset and a briefly trained checkpoint.

Agreement between precisions only means something for a model with real
preferences (random weights give near-ties everywhere), so the benchmarks train
a model on ``../shared/data/camvid_small`` for a few minutes once and cache it
in ``bench/.cache/``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

CAMVID = REPO.parent / "shared" / "data" / "camvid_small"
CACHE = REPO / "bench" / ".cache"
VOID = 11  # CamVid's "Unlabelled"


def camvid_pairs(split: str) -> list[tuple[Path, Path]]:
    """(image, label) paths of one split, sorted by name."""
    images = sorted((CAMVID / split / "images").glob("*.png"))
    if not images:
        raise SystemExit(f"no CamVid images under {CAMVID / split}; the shared data must sit beside the project")
    return [(p, CAMVID / split / "labels" / p.name) for p in images]


def camvid_classes() -> list[str]:
    return [ln.strip() for ln in (CAMVID / "CLASSES.txt").read_text().splitlines() if ln.strip()][:VOID]


def trained_checkpoint(backbone: str, minutes: float = 3.0, crop: int = 320) -> Path:
    """A checkpoint of ``backbone`` trained briefly on the CamVid train split (cached)."""
    import torch
    from torch.nn import functional as F

    from annotation.imageio import load_image
    from annotation.masks import read_mask_png
    from model.deeplabv3 import build_deeplabv3
    from model.weights import ModelMeta, default_colours, save_checkpoint

    path = CACHE / f"camvid_{backbone}_{minutes:g}min.pt"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    names = camvid_classes()
    stride = 8 if backbone.startswith("resnet") else 16
    torch.manual_seed(0)
    net = build_deeplabv3(backbone=backbone, num_classes=len(names), output_stride=stride, atrous_rates=(12, 24, 36))
    net = net.to(memory_format=torch.channels_last).train()
    pairs = camvid_pairs("train")
    images = [load_image(a) for a, _ in pairs]
    labels = [read_mask_png(b).astype(np.int64) for _, b in pairs]
    for lab in labels:
        lab[lab == VOID] = 255
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
    rng = np.random.default_rng(0)
    start, steps = time.perf_counter(), 0
    print(f"training a {backbone} checkpoint on CamVid for {minutes:g} min (cached in {path})", file=sys.stderr)
    while time.perf_counter() - start < minutes * 60:
        idx = rng.choice(len(images), 4, replace=False)
        xs, ys = [], []
        for i in idx:
            h, w = labels[i].shape
            y0, x0 = rng.integers(0, h - crop + 1), rng.integers(0, w - crop + 1)
            xs.append(images[i][y0 : y0 + crop, x0 : x0 + crop])
            ys.append(labels[i][y0 : y0 + crop, x0 : x0 + crop])
        x = torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).float() / 255
        x = ((x - mean) / std).contiguous(memory_format=torch.channels_last)
        y = torch.from_numpy(np.stack(ys))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(x)["out"]
        loss = F.cross_entropy(out.float(), y, ignore_index=255)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps += 1
    print(f"  {steps} steps, last loss {loss.item():.3f}", file=sys.stderr)
    meta = ModelMeta(
        arch=net.spec,
        class_names=names,
        colours=default_colours(len(names)),
        input_size=520,
        name=f"camvid-{backbone}",
        source="bench/_common.py quick training",
        history=[{"steps": steps, "minutes": minutes, "last_loss": float(loss.item())}],
    )
    save_checkpoint(path, net.eval(), meta)
    return path


def cpu_name() -> str:
    """The CPU's model name (every figure is reported with it)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()
