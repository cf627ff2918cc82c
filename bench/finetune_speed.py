"""Fine-tuning on scenes it has not seen: our ``finetune`` against the plain loop a user would write.

Leave-one-sequence-out on ``../shared/data/camvid_small``: its 56 train images come
from three video sequences (0001TP at dusk: 10, 0006R0: 15, 0016E5: 31). Each split
trains on two of them and scores on every frame of the third at full resolution
(480x360, void 11 ignored). Both runs train from scratch for the same wall-clock
budget, in the same process, interleaved in slices (``--slice`` seconds each, each on
its own clock) so a change in background load hits both alike.

* plain: the loop a user writes in an afternoon: torchvision's
  ``deeplabv3_mobilenet_v3_large`` (no aux head), bf16 autocast where the CPU has
  native bf16 (else fp32), channels-last, AdamW lr 1e-3 at a constant rate, batch 8,
  random 256x256 crops at native scale plus horizontal flips, ImageNet mean/std, all
  training images decoded once into RAM, BatchNorm as torchvision leaves it.
* ours: ``model.finetune.finetune`` with its defaults on an Atrous project holding
  the same images as ``reviewed`` (``base="scratch"``: no pretrained weights here).

Throughput is training pixels per second: crop pixels x images per step x steps over
the run's own training time (validation and set-up not counted). Figures are the mean
over the splits and seeds, with the spread (standard deviation over seeds of the
per-seed mean over splits). A full run (2 splits x 3 seeds x 2 x 8 min) takes about
100 minutes on 2 cores.

    .venv/bin/python bench/finetune_speed.py [--minutes 8] [--seeds 3] [--holdout 0001TP 0006R0]
    .venv/bin/python bench/finetune_speed.py --trial-steps 300 --seeds 1 --set jitter=0.4   # a recipe trial
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from _common import CAMVID, VOID, camvid_classes, camvid_pairs, cpu_name

SEQUENCES = ("0001TP", "0006R0", "0016E5")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def sequence_of(path: Path) -> str:
    return path.name.split("_", 1)[0]


def split_pairs(held_out: str) -> tuple[list[tuple[Path, Path]], list[tuple[Path, Path]]]:
    """(train pairs, held-out pairs): the held-out sequence's frames are scored, the rest trained on."""
    pairs = camvid_pairs("train")
    return [p for p in pairs if sequence_of(p[0]) != held_out], [p for p in pairs if sequence_of(p[0]) == held_out]


@dataclass
class Score:
    miou: float
    pixel_accuracy: float
    steps: int
    mpx_s: float


class PlainLoop:
    """The plain modern loop, one step at a time, on its own clock."""

    def __init__(self, pairs: list[tuple[Path, Path]], num_classes: int, budget_s: float, seed: int, dtype) -> None:
        import torch
        from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large

        from annotation.imageio import load_image
        from annotation.masks import read_mask_png

        torch.manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.crop, self.batch_size, self.budget, self.dtype = 256, 8, budget_s, dtype
        self.images = [torch.from_numpy(load_image(a).copy()).permute(2, 0, 1).contiguous() for a, _ in pairs]
        self.labels = []
        for _, b in pairs:
            lab = read_mask_png(b).astype(np.int64)
            lab[lab == VOID] = 255
            self.labels.append(torch.from_numpy(lab))
        self.mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        self.model = deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes)
        self.model = self.model.to(memory_format=torch.channels_last).train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-3)
        self.elapsed, self.steps = 0.0, 0

    def _batch(self):
        import torch

        xs, ys = [], []
        for i in self.rng.choice(len(self.images), self.batch_size, replace=len(self.images) < self.batch_size):
            img, lab = self.images[i], self.labels[i]
            h, w = lab.shape
            y0, x0 = self.rng.integers(0, h - self.crop + 1), self.rng.integers(0, w - self.crop + 1)
            x, y = img[:, y0 : y0 + self.crop, x0 : x0 + self.crop], lab[y0 : y0 + self.crop, x0 : x0 + self.crop]
            if self.rng.random() < 0.5:
                x, y = x.flip(-1), y.flip(-1)
            xs.append(x)
            ys.append(y)
        x = (torch.stack(xs).float() / 255 - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last), torch.stack(ys)

    def step(self) -> None:
        import torch
        from torch.nn import functional as F

        x, y = self._batch()
        with torch.autocast("cpu", dtype=self.dtype, enabled=self.dtype != torch.float32):
            out = self.model(x)["out"]
        loss = F.cross_entropy(out.float(), y, ignore_index=255)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.steps += 1

    def warmup(self) -> None:
        """One untimed step's worth of kernel set-up (the bf16 primitives), undone."""
        import torch
        from torch.nn import functional as F

        x, y = self._batch()
        with torch.autocast("cpu", dtype=self.dtype, enabled=self.dtype != torch.float32):
            out = self.model(x)["out"]
        F.cross_entropy(out.float(), y, ignore_index=255).backward()
        self.opt.zero_grad(set_to_none=True)

    def run_for(self, seconds: float) -> None:
        """Train until ``seconds`` more have passed on this loop's clock (or its budget is spent)."""
        end = min(self.budget, self.elapsed + seconds)
        while self.elapsed < end:
            t = time.perf_counter()
            self.step()
            self.elapsed += time.perf_counter() - t

    def score(self, pairs: list[tuple[Path, Path]], num_classes: int) -> Score:
        import torch

        from model.metrics import ConfusionMatrix

        cm = ConfusionMatrix(num_classes)
        self.model.eval()
        with torch.no_grad():
            for a, b in pairs:
                from annotation.imageio import load_image
                from annotation.masks import read_mask_png

                x = torch.from_numpy(load_image(a)).permute(2, 0, 1)[None].float() / 255
                pred = self.model((x - self.mean) / self.std)["out"].argmax(1)[0]
                lab = read_mask_png(b).copy()
                lab[lab == VOID] = 255
                cm.update(lab, pred)
        m = cm.compute()
        mpx = self.steps * self.batch_size * self.crop**2 / max(self.elapsed, 1e-9) / 1e6
        return Score(m.miou, m.pixel_accuracy, self.steps, mpx)


def make_project(root: Path, pairs: list[tuple[Path, Path]]) -> None:
    """An Atrous project holding ``pairs`` as reviewed masks (imported the way a user imports a mask folder)."""
    from annotation.formats import apply_import
    from annotation.formats.maskdir import read_mask_folder

    src = root.parent / f"{root.name}-src"
    for sub in ("images", "labels"):
        (src / sub).mkdir(parents=True)
    for a, b in pairs:
        (src / "images" / a.name).symlink_to(a)
        (src / "labels" / b.name).symlink_to(b)
    result = read_mask_folder(src / "labels", src / "images", CAMVID / "CLASSES.txt", void=VOID)
    apply_import(root, result, status="reviewed", source="bench")


def score_checkpoint(path: Path, pairs: list[tuple[Path, Path]]) -> tuple[float, float]:
    """Held-out mIoU and pixel accuracy of a saved checkpoint, through the Predictor pre-labels use."""
    from annotation.imageio import load_image
    from annotation.masks import read_mask_png
    from model.metrics import ConfusionMatrix
    from model.predictor import Predictor
    from model.weights import load_checkpoint

    loaded = load_checkpoint(path)
    pred = Predictor(loaded, device="cpu", precision="auto", batch_size=1)
    cm = ConfusionMatrix(loaded.meta.arch.num_classes)
    for a, b in pairs:
        lab = read_mask_png(b).copy()
        lab[lab == VOID] = 255
        cm.update(lab, pred.predict(load_image(a)).labels)
    m = cm.compute(loaded.meta.class_names)
    return m.miou, m.pixel_accuracy


def one_split(
    held_out: str, seed: int, minutes: float, slice_s: float, dtype, tmp: Path, overrides: dict
) -> tuple[Score, Score]:
    """Train ours and the plain loop, interleaved, on the other sequences; score both on ``held_out``."""
    from model.cputrain import glibc_defaults
    from model.finetune import finetune

    train_pairs, test_pairs = split_pairs(held_out)
    names = camvid_classes()
    root = tmp / f"proj-{held_out}-{seed}"
    make_project(root, train_pairs)
    budget = minutes * 60
    plain = PlainLoop(train_pairs, len(names), budget, seed, dtype)
    with glibc_defaults():  # our allocator settings belong to "ours", not to the plain loop
        plain.warmup()
    paused = 0.0
    slice_start: list[float] = []

    def clock() -> float:
        return time.perf_counter() - paused

    def on_progress(d: dict) -> None:
        nonlocal paused
        if d["phase"] != "train":
            return
        if not slice_start:
            slice_start.append(clock())
        if clock() - slice_start[0] >= slice_s and plain.elapsed < plain.budget:
            t = time.perf_counter()
            with glibc_defaults():
                plain.run_for(slice_s)
            paused += time.perf_counter() - t
            slice_start[0] = clock()

    result = finetune(
        root,
        minutes=minutes,
        base="scratch",
        seed=seed,
        device="cpu",
        on_progress=on_progress,
        clock=clock,
        **overrides,
    )
    with glibc_defaults():
        plain.run_for(plain.budget)  # whatever is left of its budget
    cfg = result.config
    m1, acc1 = score_checkpoint(result.checkpoint_path, test_pairs)
    px1 = result.it_per_s * cfg["batch_size"] * cfg["crop"] ** 2 / 1e6
    return Score(m1, acc1, result.iterations, px1), plain.score(test_pairs, len(names))


def trial(held_out: str, seed: int, steps: int, tmp: Path, overrides: dict) -> Score:
    """Ours alone for a fixed number of steps on every image of the other sequences (recipe trials)."""
    from model.finetune import finetune

    train_pairs, test_pairs = split_pairs(held_out)
    root = tmp / f"trial-{held_out}-{seed}"
    make_project(root, train_pairs)
    batch = int(overrides.get("batch_size", 4))
    epochs = max(1, round(steps * batch / len(train_pairs)))
    settings = {"val_fraction": 0.0, **overrides}
    result = finetune(root, epochs=epochs, base="scratch", seed=seed, device="cpu", **settings)
    cfg = result.config
    m, acc = score_checkpoint(result.checkpoint_path, test_pairs)
    return Score(m, acc, result.iterations, result.it_per_s * cfg["batch_size"] * cfg["crop"] ** 2 / 1e6)


def _parse_override(text: str) -> tuple[str, object]:
    key, _, value = text.partition("=")
    for cast in (int, float):
        try:
            return key, cast(value)
        except ValueError:
            pass
    if value.startswith("(") or value.startswith("["):
        return key, tuple(float(v) for v in value.strip("()[]").split(","))
    return key, value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=8.0, help="training budget of each run (default 8)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    ap.add_argument("--holdout", nargs="+", default=["0001TP", "0006R0"], choices=SEQUENCES)
    ap.add_argument("--slice", type=float, default=60.0, help="seconds each run trains before the other takes over")
    ap.add_argument(
        "--set", action="append", default=[], metavar="FIELD=VALUE", help="a FinetuneConfig override for ours (trials)"
    )
    ap.add_argument(
        "--trial-steps",
        type=int,
        default=None,
        metavar="N",
        help="recipe trials: ours alone, N steps on all images of the other sequences, no plain loop",
    )
    args = ap.parse_args()

    import torch

    from model.predictor import pick_dtype

    overrides = dict(_parse_override(s) for s in args.set)
    dtype = pick_dtype(torch.device("cpu"))
    print(
        f"CPU: {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"{'bf16' if dtype == torch.bfloat16 else 'fp32'}; {args.minutes:g} min per run, held out "
        f"{', '.join(args.holdout)}, seeds 0..{args.seeds - 1}" + (f", ours with {overrides}" if overrides else ""),
        flush=True,
    )
    if args.trial_steps:
        tmp = Path(tempfile.mkdtemp(prefix="atrous-ft-trial-"))
        try:
            scores = []
            for seed in range(args.seeds):
                for held in args.holdout:
                    sc = trial(held, seed, args.trial_steps, tmp, overrides)
                    scores.append(sc.miou)
                    print(
                        f"trial {held} seed {seed}: held-out mIoU {sc.miou:.3f}, acc {sc.pixel_accuracy:.3f}, "
                        f"{sc.steps} steps",
                        flush=True,
                    )
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        print(f"trial mean held-out mIoU {statistics.fmean(scores):.3f} ({overrides or 'defaults'})")
        return
    print(
        f"{'held out':9s} {'seed':>4s} | {'ours mIoU':>9s} {'acc':>5s} {'steps':>6s} {'Mpx/s':>6s} | "
        f"{'plain mIoU':>10s} {'acc':>5s} {'steps':>6s} {'Mpx/s':>6s}",
        flush=True,
    )
    runs: dict[tuple[str, int], tuple[Score, Score]] = {}
    tmp = Path(tempfile.mkdtemp(prefix="atrous-ft-bench-"))
    try:
        for seed in range(args.seeds):
            for held in args.holdout:
                ours, plain = one_split(held, seed, args.minutes, args.slice, dtype, tmp, overrides)
                runs[(held, seed)] = (ours, plain)
                print(
                    f"{held:9s} {seed:4d} | {ours.miou:9.3f} {ours.pixel_accuracy:5.3f} {ours.steps:6d} {ours.mpx_s:6.3f} | "
                    f"{plain.miou:10.3f} {plain.pixel_accuracy:5.3f} {plain.steps:6d} {plain.mpx_s:6.3f}",
                    flush=True,
                )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def per_seed(which: int, attr: str) -> list[float]:
        return [statistics.fmean(getattr(runs[(h, s)][which], attr) for h in args.holdout) for s in range(args.seeds)]

    def mean_sd(values: list[float]) -> tuple[float, float]:
        return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)

    for held in args.holdout:
        o = statistics.fmean(runs[(held, s)][0].miou for s in range(args.seeds))
        p = statistics.fmean(runs[(held, s)][1].miou for s in range(args.seeds))
        print(f"held out {held}: ours {o:.3f}, plain {p:.3f} mIoU ({o / max(p, 1e-9):.2f}x)")
    m1, sd1 = mean_sd(per_seed(0, "miou"))
    m0, sd0 = mean_sd(per_seed(1, "miou"))
    p1, _ = mean_sd(per_seed(0, "mpx_s"))
    p0, _ = mean_sd(per_seed(1, "mpx_s"))
    print(f"spread over seeds (sd): ours {sd1:.3f}, plain {sd0:.3f} mIoU")
    print(
        f"finetune: ours {m1:.3f} held-out mIoU at {p1:.2f} Mpx/s, plain loop {m0:.3f} at {p0:.2f} Mpx/s "
        f"({m1 / max(m0, 1e-9):.2f}x mIoU, {p1 / max(p0, 1e-9):.2f}x throughput), {args.seeds} seeds"
    )


if __name__ == "__main__":
    main()
