"""Fine-tune speed and accuracy: our finetune() against a plain torchvision training loop.

Both train DeepLabV3-MobileNetV3-Large from scratch (no pretrained weights are
reachable here) on the 56 CamVid train images for the same wall-clock budget,
with the same crop and batch size, and are scored on the 18 held-out CamVid val
images at full resolution (void 11 ignored).

* plain: torchvision ``references/segmentation`` recipe: PIL transforms
  (RandomResize 0.5-2x, flip, RandomCrop padded with 255, Normalize), fp32, NCHW,
  SGD lr 0.02 momentum 0.9 wd 1e-4 (aux head 10x lr), CE + 0.5 aux CE, poly LR
  (power 0.9, over its clock since the budget is time), no data-loader workers
  (2 cores: a worker would only steal the trainer's core).
* ours: ``model.finetune.finetune`` on an Atrous project with the same images
  imported as ``reviewed`` (``val_fraction=0``: all 56 train).

The two runs are interleaved in slices (``--slice`` seconds each, each on its
own clock) so a change in background load hits both alike; iterations per
second are each run's steps over its own training time.

    .venv/bin/python bench/finetune_speed.py [--minutes 8] [--crop 320] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import CAMVID, VOID, camvid_classes, camvid_pairs


class PlainTrainer:
    """torchvision's reference training loop, one step at a time, on its own clock."""

    def __init__(
        self, num_classes: int, crop: int, batch_size: int, budget_s: float, base_size: int = 360, seed: int = 0
    ):
        import torch
        from PIL import Image
        from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large

        torch.manual_seed(seed)
        self.rng = random.Random(seed)
        self.crop, self.batch_size, self.budget = crop, batch_size, budget_s
        self.base_size = base_size
        self.pairs = []
        for img, lab in camvid_pairs("train"):
            mask = np.array(Image.open(lab))
            mask[mask == VOID] = 255
            self.pairs.append((Image.open(img).convert("RGB"), Image.fromarray(mask)))
        self.model = deeplabv3_mobilenet_v3_large(
            weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=True
        )
        self.model.train()
        params = [
            {"params": [p for p in self.model.backbone.parameters() if p.requires_grad]},
            {"params": [p for p in self.model.classifier.parameters() if p.requires_grad]},
            {"params": [p for p in self.model.aux_classifier.parameters() if p.requires_grad], "lr": 0.02 * 10},
        ]
        self.base_lrs = [0.02, 0.02, 0.2]
        self.opt = torch.optim.SGD(params, lr=0.02, momentum=0.9, weight_decay=1e-4)
        self.elapsed = 0.0
        self.steps = 0
        self.order: list[int] = []

    def _transform(self, image, target):
        import torch
        from torchvision.transforms import functional as TF
        from torchvision.transforms.functional import InterpolationMode

        size = self.rng.randint(int(0.5 * self.base_size), int(2.0 * self.base_size))
        image = TF.resize(image, size, antialias=True)
        target = TF.resize(target, size, interpolation=InterpolationMode.NEAREST)
        if self.rng.random() < 0.5:
            image, target = TF.hflip(image), TF.hflip(target)
        w, h = image.size
        if min(w, h) < self.crop:
            ow, oh = max(0, self.crop - w), max(0, self.crop - h)
            image = TF.pad(image, (0, 0, ow, oh), fill=0)
            target = TF.pad(target, (0, 0, ow, oh), fill=255)
        w, h = image.size
        y0, x0 = self.rng.randint(0, h - self.crop), self.rng.randint(0, w - self.crop)
        image = TF.crop(image, y0, x0, self.crop, self.crop)
        target = TF.crop(target, y0, x0, self.crop, self.crop)
        x = TF.convert_image_dtype(TF.pil_to_tensor(image), torch.float)
        x = TF.normalize(x, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
        return x, torch.as_tensor(np.array(target), dtype=torch.int64)

    def _batch(self):
        import torch

        xs, ys = [], []
        for _ in range(self.batch_size):
            if not self.order:
                self.order = list(range(len(self.pairs)))
                self.rng.shuffle(self.order)
            x, y = self._transform(*self.pairs[self.order.pop()])
            xs.append(x)
            ys.append(y)
        return torch.stack(xs), torch.stack(ys)

    def step(self) -> None:
        from torch.nn import functional as F

        frac = min(1.0, self.elapsed / self.budget)
        for g, lr in zip(self.opt.param_groups, self.base_lrs):
            g["lr"] = lr * (1 - frac) ** 0.9
        x, y = self._batch()
        out = self.model(x)
        loss = F.cross_entropy(out["out"], y, ignore_index=255) + 0.5 * F.cross_entropy(out["aux"], y, ignore_index=255)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        self.steps += 1

    def warmup(self) -> None:
        from torch.nn import functional as F

        x, y = self._batch()
        out = self.model(x)
        F.cross_entropy(out["out"], y, ignore_index=255).backward()
        self.opt.zero_grad()

    def run_for(self, seconds: float) -> None:
        """Train until ``seconds`` more have passed on this trainer's clock (or its budget is spent)."""
        end = min(self.budget, self.elapsed + seconds)
        while self.elapsed < end:
            t = time.perf_counter()
            self.step()
            self.elapsed += time.perf_counter() - t

    def evaluate(self, num_classes: int) -> float:
        import torch
        from PIL import Image
        from torchvision.transforms import functional as TF

        from model.metrics import ConfusionMatrix

        cm = ConfusionMatrix(num_classes)
        self.model.eval()
        with torch.no_grad():
            for img, lab in camvid_pairs("val"):
                x = TF.normalize(
                    TF.convert_image_dtype(TF.pil_to_tensor(Image.open(img).convert("RGB")), torch.float),
                    mean=[0.485, 0.456, 0.406],
                    std=[0.229, 0.224, 0.225],
                )
                pred = self.model(x[None])["out"].argmax(1)[0]
                mask = np.array(Image.open(lab))
                mask[mask == VOID] = 255
                cm.update(mask, pred)
        return cm.compute().miou


def make_project(root: Path):
    from annotation.formats import apply_import
    from annotation.formats.maskdir import read_mask_folder

    result = read_mask_folder(
        CAMVID / "train" / "labels", CAMVID / "train" / "images", CAMVID / "CLASSES.txt", void=VOID
    )
    apply_import(root, result, status="reviewed", source="bench")


def evaluate_checkpoint(path: Path) -> tuple[float, list]:
    from annotation.imageio import load_image
    from annotation.masks import read_mask_png
    from model.metrics import ConfusionMatrix
    from model.predictor import Predictor
    from model.weights import load_checkpoint

    loaded = load_checkpoint(path)
    pred = Predictor(loaded, device="cpu", precision="auto", batch_size=1)
    cm = ConfusionMatrix(loaded.meta.arch.num_classes)
    for img, lab in camvid_pairs("val"):
        mask = read_mask_png(lab).copy()
        mask[mask == VOID] = 255
        cm.update(mask, pred.predict(load_image(img)).labels)
    m = cm.compute(loaded.meta.class_names)
    return m.miou, m.per_class_iou


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=8.0, help="training budget of each run (default 8)")
    ap.add_argument("--crop", type=int, default=320)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--slice", type=float, default=60.0, help="seconds each run trains before the other takes over")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--optimizer", default="adamw")
    ap.add_argument("--lr", type=float, default=None)
    args = ap.parse_args()

    import torch

    from model.cputrain import glibc_defaults
    from model.finetune import finetune

    names = camvid_classes()
    budget = args.minutes * 60
    tmp = Path(tempfile.mkdtemp(prefix="atrous-ft-bench-"))
    try:
        make_project(tmp / "proj")
        plain = PlainTrainer(len(names), args.crop, args.batch_size, budget)
        plain.warmup()
        print(
            f"CamVid: 56 train / 18 val images, torch {torch.__version__}, {torch.get_num_threads()} threads, "
            f"{args.minutes:g} min each, crop {args.crop}, batch {args.batch_size}, interleaved in {args.slice:g} s slices"
        )
        paused = 0.0
        state = {"slice_start": None}

        def clock() -> float:
            return time.perf_counter() - paused

        def on_progress(d: dict) -> None:
            nonlocal paused
            if d["phase"] != "train":
                return
            if state["slice_start"] is None:
                state["slice_start"] = clock()
            if clock() - state["slice_start"] >= args.slice and plain.elapsed < plain.budget:
                t = time.perf_counter()
                with glibc_defaults():  # our allocator settings are part of "ours", not of the plain loop
                    plain.run_for(args.slice)
                paused += time.perf_counter() - t
                state["slice_start"] = clock()

        result = finetune(
            tmp / "proj",
            minutes=args.minutes,
            val_fraction=0.0,
            batch_size=args.batch_size,
            crop=args.crop,
            precision=args.precision,
            optimizer=args.optimizer,
            lr=args.lr,
            base="scratch",
            device="cpu",
            on_progress=on_progress,
            clock=clock,
        )
        with glibc_defaults():
            plain.run_for(plain.budget)  # whatever is left of its budget
        m1, per_class = evaluate_checkpoint(result.checkpoint_path)
        m0 = plain.evaluate(len(names))
        i1, i0 = result.it_per_s, plain.steps / max(plain.elapsed, 1e-9)
        print(f"{'run':18s} {'steps':>6s} {'it/s':>7s} {'val mIoU':>9s}")
        print(f"{'plain torchvision':18s} {plain.steps:6d} {i0:7.3f} {m0:9.3f}")
        print(
            f"{'ours':18s} {result.iterations:6d} {i1:7.3f} {m1:9.3f}   "
            f"({result.config['precision']} precision setting, {result.config['optimizer']})"
        )
        print(
            "ours per class: " + ", ".join(f"{n} {'-' if v is None else f'{v:.2f}'}" for n, v in zip(names, per_class))
        )
        print(f"speed ratio {i1 / max(i0, 1e-9):.2f}x, mIoU difference {m1 - m0:+.3f}")
        print(f"finetune: ours {m1:.3f} mIoU at {i1:.2f} it/s, plain torchvision {m0:.3f} mIoU at {i0:.2f} it/s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
