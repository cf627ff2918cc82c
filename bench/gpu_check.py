"""Every CUDA path in one run, with one table: run this when a machine with a GPU is at hand.

Checks, on synthetic scenes (coloured shapes whose class decides the colour):

- AMP fine-tuning through :func:`model.finetune.finetune` (bf16 autocast; fp16
  autocast with a GradScaler) with the fused optimizer of
  :func:`model.finetune.make_optimizer`: a few steps, finite losses, a saved
  checkpoint. The last checkpoint trained here is the pre-label model below,
  so agreement between precisions means something (random weights give one
  class everywhere).
- Pre-labels in fp32, bf16 and fp16 with :class:`model.predictor.Predictor`:
  label agreement with fp32 (fp32 with torchvision's own network), and
  throughput against the naive loop a user writes from torchvision's docs
  (``deeplabv3_mobilenet_v3_large`` in fp32, eval, one image at a time, same
  weights, same inputs at their native size).
- The out-of-memory fallbacks for real: the process is capped
  (``torch.cuda.set_per_process_memory_fraction``) between what one image (or
  one tile) and the whole batch (or the whole image) need, so the Predictor
  must halve its batch, or tile, to finish; the result is compared with an
  uncapped run of the same computation.

``--device cpu`` runs the same rows small and fast (bf16 only where the CPU has
it natively; fp16 and the memory cap are CUDA-only), so a test keeps this
script from rotting on machines without a GPU. Exit status 0 when every
applicable check passes, 1 otherwise.

    .venv/bin/python bench/gpu_check.py [--device cuda|cpu]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

PASS, FAIL, SKIP, NA = "pass", "FAIL", "skip", "n/a"
#: Least share of pixels on which two precisions must agree.
AGREE_FP32 = 0.995  # our fp32 against torchvision's fp32: only summation order differs
AGREE_LOW = 0.98  # bf16 / fp16 against fp32
#: An out-of-memory fallback against the same computation uncapped: cuDNN may pick other
#: algorithms (TF32) for other batch sizes, which flips near-ties of random weights.
AGREE_SAME = 0.99
#: fp32 for the memory checks: the most memory per pixel, and no overflow in a random ResNet.
OOM_PRECISION = "fp32"
CLASSES = 6


@dataclasses.dataclass
class Row:
    """One line of the table."""

    check: str
    result: str
    figure: str = ""
    note: str = ""


@dataclasses.dataclass(frozen=True)
class Plan:
    """Sizes for one device: big enough on a GPU to measure, small on a CPU to stay fast."""

    images: int  # pre-labelled images per timing round
    height: int
    width: int
    batch: int  # the Predictor's batch size
    rounds: int  # alternating timing rounds (median ratio)
    train_images: int
    train_size: int  # fine-tuning input size and crop
    train_batch: int
    epochs: int


CUDA_PLAN = Plan(
    images=32, height=720, width=960, batch=8, rounds=3, train_images=32, train_size=256, train_batch=8, epochs=15
)
CPU_PLAN = Plan(
    images=4, height=96, width=128, batch=2, rounds=1, train_images=6, train_size=64, train_batch=2, epochs=1
)


# --------------------------------------------------------------------------- synthetic data


def scene(h: int, w: int, rng: np.random.Generator, classes: int = CLASSES) -> tuple[np.ndarray, np.ndarray]:
    """An image of rectangles and ellipses whose class sets the colour (plus shading and noise), and its mask."""
    mask = np.zeros((h, w), np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(int(rng.integers(4, 9))):
        c = int(rng.integers(1, classes))
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(0.08, 0.3) * h, rng.uniform(0.08, 0.3) * w
        if rng.random() < 0.5:
            inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        else:
            inside = (np.abs(yy - cy) <= ry) & (np.abs(xx - cx) <= rx)
        mask[inside] = c
    palette = np.array([[40 + 35 * k, 200 - 30 * k, (90 * k) % 256] for k in range(classes)], np.float32)
    shade = 0.8 + 0.4 * (xx / max(1, w - 1))[..., None]
    img = palette[mask] * shade + rng.normal(0, 12, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8), mask


def make_project(root: Path, plan: Plan, seed: int = 0) -> Path:
    """A project of ``plan.train_images`` scenes, every mask saved as reviewed."""
    from PIL import Image

    from annotation.project import LabelClass, Project

    rng = np.random.default_rng(seed)
    folder = root / "images"
    folder.mkdir(parents=True)
    masks: dict[str, np.ndarray] = {}
    h, w = plan.train_size + plan.train_size // 4, plan.train_size + plan.train_size // 2
    for i in range(plan.train_images):
        img, mask = scene(h, w, rng)
        Image.fromarray(img).save(folder / f"s{i:03d}.png")
        masks[f"s{i:03d}.png"] = mask
    path = root / "project"
    classes = [LabelClass(k, f"k{k}", (40 * k, 120, 200 - 30 * k), k == 0) for k in range(CLASSES)]
    with Project.create(path, classes) as p:
        p.add_images(folder)
        for rec in p.images():
            p.save_mask(rec.id, masks[Path(rec.path).name], status="reviewed")
    return path


# --------------------------------------------------------------------------- helpers


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:160]


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _agreement(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return float(np.mean([(x == y).mean() for x, y in zip(a, b)]))


def _majority(labels: list[np.ndarray]) -> float:
    counts = np.bincount(np.concatenate([x.ravel() for x in labels]), minlength=CLASSES)
    return float(counts.max() / counts.sum())


@contextlib.contextmanager
def memory_cap(device: Any, cap_bytes: float) -> Iterator[float]:
    """Cap this process's CUDA memory at ``cap_bytes`` (as a fraction of the device) while the block runs."""
    import torch

    total = torch.cuda.get_device_properties(device).total_memory
    fraction = min(1.0, max(1e-3, cap_bytes / total))
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(fraction, device)
    try:
        yield fraction
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, device)
        torch.cuda.empty_cache()


def _peak(device: Any, fn: Callable[[], Any]) -> tuple[Any, int]:
    """Run ``fn`` and return its result and the peak memory the caching allocator reserved meanwhile."""
    import torch

    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    out = fn()
    torch.cuda.synchronize(device)
    return out, torch.cuda.max_memory_reserved(device)


def _ooms(device: Any) -> int:
    import torch

    return int(torch.cuda.memory_stats(device).get("num_ooms", 0))


# --------------------------------------------------------------------------- fine-tuning


def finetune_rows(device: Any, plan: Plan, work: Path) -> tuple[list[Row], Path | None]:
    """AMP fine-tuning steps with the fused optimizer; returns the rows and the last checkpoint trained."""
    import torch
    from torch import nn

    from model.finetune import finetune, make_optimizer
    from model.predictor import cpu_has_native_bf16

    rows: list[Row] = []
    probe = [nn.Parameter(torch.zeros(8, device=device))]
    fused = bool(make_optimizer(probe, "adamw", lr=1e-3, weight_decay=1e-4, momentum=0.9).defaults.get("fused"))
    rows.append(Row("fused optimizer (AdamW)", PASS if fused else FAIL, "fused" if fused else "plain",
                    f"make_optimizer on {device.type}"))  # fmt: skip
    # (check, precision, note), or (check, None, why it does not apply here): rows in table order
    runs: list[tuple[str, str | None, str]] = []
    if device.type == "cuda":
        bf16 = torch.cuda.is_bf16_supported()
        runs.append(
            ("fine-tune AMP bf16", "bf16" if bf16 else None, "bf16 autocast" if bf16 else "this GPU has no bf16")
        )
        runs.append(("fine-tune AMP fp16", "fp16", "fp16 autocast + GradScaler"))
    else:
        if cpu_has_native_bf16():
            runs.append(("fine-tune AMP bf16", "bf16", "bf16 autocast on the CPU"))
        else:
            runs.append(("fine-tune AMP bf16", None, "no native bf16 on this CPU (needs AVX512_BF16 or AMX)"))
            runs.append(("fine-tune fp32", "fp32", "the CPU path without native bf16"))
        runs.append(("fine-tune AMP fp16", None, "fp16 autocast + GradScaler is CUDA-only"))
    project = make_project(work, plan)
    checkpoint: Path | None = None
    for check, precision, note in runs:
        if precision is None:
            rows.append(Row(check, SKIP, "", note))
            continue
        losses: list[float] = []

        def progress(event: dict[str, Any], losses: list[float] = losses) -> None:
            if event.get("phase") == "train":
                losses.append(float(event["loss"]))

        try:
            t0 = time.perf_counter()
            result = finetune(
                project, base="scratch", epochs=plan.epochs, batch_size=plan.train_batch, crop=plan.train_size,
                input_size=plan.train_size, normalisation="dataset", precision=precision, device=device.type,
                activate=False, evals=1, on_progress=progress,
            )  # fmt: skip
            seconds = time.perf_counter() - t0
        except Exception as e:  # a broken path is a row of the table, not the end of the run
            rows.append(Row(check, FAIL, "", _first_line(e)))
            continue
        finite = bool(losses) and all(math.isfinite(v) for v in losses)
        saved = result.checkpoint_path is not None and Path(result.checkpoint_path).exists()
        ok = finite and saved and result.iterations > 0 and fused
        figure = f"{result.iterations} steps, {result.it_per_s:.1f} it/s"
        if losses:
            figure += f", loss {losses[0]:.2f} -> {losses[-1]:.2f}"
        problems = {"non-finite loss": not finite, "no checkpoint": not saved, "optimizer not fused": not fused}
        why = [w for w, bad in problems.items() if bad]
        rows.append(Row(check, PASS if ok else FAIL, figure, "; ".join([f"{note}, {seconds:.0f} s in all", *why])))
        if saved:
            checkpoint = Path(result.checkpoint_path)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows, checkpoint


# --------------------------------------------------------------------------- pre-labels


def _model_for_prelabels(checkpoint: Path | None) -> tuple[Any, str]:
    import torch

    from model.deeplabv3 import build_deeplabv3
    from model.weights import LoadedModel, ModelMeta, default_colours, load_checkpoint

    if checkpoint is not None:
        loaded = load_checkpoint(checkpoint)
        source = "the model fine-tuned above"
    else:
        torch.manual_seed(0)
        net = build_deeplabv3(backbone="mobilenet_v3_large", num_classes=CLASSES).eval()
        meta = ModelMeta(arch=net.spec, class_names=[f"k{k}" for k in range(CLASSES)], colours=default_colours(CLASSES))
        loaded = LoadedModel(net, meta)
        source = "random weights (no fine-tuned model): agreement means little"
    # Native size for both loops, so they see the same pixels.
    return LoadedModel(loaded.network, dataclasses.replace(loaded.meta, input_size=None)), source


def _naive_model(loaded: Any, device: Any) -> Any:
    from torchvision.models import segmentation as tvseg

    n = loaded.meta.arch.num_classes
    model = tvseg.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=n, aux_loss=False)
    state = {k: v for k, v in loaded.network.state_dict().items() if not k.startswith("aux_classifier.")}
    model.load_state_dict(state)
    return model.eval().to(device)


def _naive_loop(
    model: Any, images: list[np.ndarray], device: Any, mean: Any, std: Any
) -> tuple[float, list[np.ndarray]]:
    """torchvision's loop: one image at a time, fp32, ``model(x)["out"].argmax(1)``, the labels back on the host."""
    import torch

    _sync(device)
    t0 = time.perf_counter()
    out = []
    with torch.no_grad():
        for im in images:
            x = torch.from_numpy(im).to(device).permute(2, 0, 1)[None].float().div_(255)
            x = (x - mean) / std
            out.append(model(x)["out"].argmax(1)[0].to(torch.uint8).cpu().numpy())
    return time.perf_counter() - t0, out


def _ours(predictor: Any, images: list[np.ndarray]) -> tuple[float, list[np.ndarray]]:
    _sync(predictor.device)
    t0 = time.perf_counter()
    labels = [p.labels for p in predictor.predict_batch(images)]
    _sync(predictor.device)
    return time.perf_counter() - t0, labels


def prelabel_rows(device: Any, plan: Plan, checkpoint: Path | None) -> list[Row]:
    """fp32 / bf16 / fp16 pre-labels: agreement with fp32 and throughput against the naive torchvision loop."""
    import torch

    from model.predictor import Predictor, cpu_has_native_bf16

    rows: list[Row] = []
    loaded, source = _model_for_prelabels(checkpoint)
    rng = np.random.default_rng(1)
    images = [scene(plan.height, plan.width, rng)[0] for _ in range(plan.images)]
    mean = torch.tensor(loaded.meta.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(loaded.meta.std, device=device).view(1, 3, 1, 1)
    naive = _naive_model(loaded, device)
    _naive_loop(naive, images[:2], device, mean, std)  # warm-up (cuDNN set-up), not timed

    precisions: list[tuple[str, str | None]] = [("fp32", None)]
    if device.type == "cuda":
        precisions.append(("bf16", None if torch.cuda.is_bf16_supported() else "this GPU has no bf16"))
        precisions.append(("fp16", None))
    else:
        precisions.append(
            ("bf16", None if cpu_has_native_bf16() else "no native bf16 on this CPU (needs AVX512_BF16 or AMX)")
        )
        precisions.append(("fp16", "fp16 is CUDA-only; the CPU runs fp32 or bf16"))
    ref: list[np.ndarray] | None = None
    size = f"{plan.images} x {plan.width}x{plan.height}, batch {plan.batch}"
    for name, absent in precisions:
        check = f"pre-label {name} vs {'naive torchvision fp32' if name == 'fp32' else 'fp32'}"
        if absent is not None:
            rows.append(Row(check, SKIP, "", absent))
            continue
        try:
            predictor = Predictor(loaded, device=device.type, precision=name, batch_size=plan.batch)
            _ours(predictor, images[: plan.batch])  # warm-up (kernel and oneDNN set-up), not timed
            ratios, t_naive, t_ours = [], 0.0, 0.0
            for _ in range(plan.rounds):  # alternating, so a neighbour's load hits both alike
                a, naive_labels = _naive_loop(naive, images, device, mean, std)
                b, labels = _ours(predictor, images)
                ratios.append(a / b)
                t_naive, t_ours = t_naive + a, t_ours + b
        except Exception as e:
            rows.append(Row(check, FAIL, "", _first_line(e)))
            continue
        n = plan.images * plan.rounds
        speed = f"{statistics.median(ratios):.2f}x naive ({n / t_ours:.1f} vs {n / t_naive:.1f} img/s)"
        if name == "fp32":
            ref = labels
            agree, need = _agreement(labels, naive_labels), AGREE_FP32
            extra = f"; majority class {100 * _majority(labels):.0f}% of pixels"
        elif ref is None:
            rows.append(Row(check, FAIL, speed, "no fp32 result to compare with"))
            continue
        else:
            agree, need, extra = _agreement(labels, ref), AGREE_LOW, ""
        rows.append(Row(check, PASS if agree >= need else FAIL, f"agree {100 * agree:.2f}%, {speed}",
                        f"{predictor.description}, {'fused oneDNN, ' if predictor.fused else ''}{size}; {source}{extra}"))  # fmt: skip
        del predictor
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


# --------------------------------------------------------------------------- out of memory


def _oom_model() -> Any:
    """A random ResNet-50 at output stride 8: its activations, not the input copies, set the memory peak."""
    import torch

    from model.deeplabv3 import build_deeplabv3
    from model.weights import LoadedModel, ModelMeta, default_colours

    torch.manual_seed(0)
    net = build_deeplabv3(backbone="resnet50", num_classes=CLASSES, output_stride=8).eval()
    g = torch.Generator().manual_seed(0)
    for m in net.modules():  # varied statistics, so the labels vary over the image
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    meta = ModelMeta(
        arch=net.spec, class_names=[f"k{k}" for k in range(CLASSES)], colours=default_colours(CLASSES), input_size=None
    )
    return LoadedModel(net, meta)


def oom_rows(device: Any) -> list[Row]:
    """Under a memory cap the Predictor must halve its batch, or tile, and still give the uncapped result."""
    from model.predictor import Predictor

    if device.type != "cuda":
        return [
            Row("out of memory: batch halves", NA, "", "n/a on cpu"),
            Row("out of memory: tiles", NA, "", "n/a on cpu"),
        ]
    loaded = _oom_model()
    rng = np.random.default_rng(2)
    rows: list[Row] = []

    # A batch of 8 that does not fit, where one image does.
    check = "out of memory: batch halves"
    try:
        batch = [scene(1024, 1024, rng)[0] for _ in range(8)]
        p = Predictor(loaded, device="cuda", precision=OOM_PRECISION, batch_size=8, max_input_pixels=1 << 40)
        p.predict_batch(batch[:1])  # warm-up
        _, one = _peak(device, lambda: p.predict_batch(batch[:1]))
        ref, whole = _peak(device, lambda: p.predict_batch(batch))
        cap = (one + whole) / 2
        before, retries = _ooms(device), p.oom_retries
        with memory_cap(device, cap) as fraction:
            got = p.predict_batch(batch)
        ooms, retries = _ooms(device) - before, p.oom_retries - retries
        agree = _agreement([g.labels for g in got], [r.labels for r in ref])
        ok = retries > 0 and agree >= AGREE_SAME
        rows.append(Row(check, PASS if ok else FAIL, f"{retries} fallbacks, {ooms} OOMs, agree {100 * agree:.2f}%",
                        f"cap {cap / 2**30:.2f} GiB ({100 * fraction:.2f}%): one image peaks at {one / 2**30:.2f}, "
                        f"8 at {whole / 2**30:.2f} GiB; ResNet-50 fp32, 8 x 1024x1024; "
                        f"majority class {100 * _majority([r.labels for r in ref]):.0f}%"
                        + ("" if retries else "; the cap never made the Predictor fall back")))  # fmt: skip
    except Exception as e:
        rows.append(Row(check, FAIL, "", _first_line(e)))

    # One image whose whole forward does not fit, where tiles do.
    check = "out of memory: tiles"
    try:
        big = scene(4096, 4096, rng)[0]
        p = Predictor(loaded, device="cuda", precision=OOM_PRECISION, batch_size=1, max_input_pixels=1 << 40)
        tiled = Predictor(
            loaded, device="cuda", precision=OOM_PRECISION, batch_size=1, max_input_pixels=0, tile_size=1024
        )
        tiled.predict(big[:1024, :1024])  # warm-up
        _, in_tiles = _peak(device, lambda: tiled.predict(big))
        whole_ref, whole = _peak(device, lambda: p.predict(big))
        cap = (in_tiles + whole) / 2
        tiles: list[int] = []
        forward_tiled = p._forward_tiled

        def spy(x: Any, tile: int) -> Any:  # records the tile sizes the fallbacks go down to
            tiles.append(tile)
            return forward_tiled(x, tile)

        p._forward_tiled = spy
        before, retries = _ooms(device), p.oom_retries
        with memory_cap(device, cap) as fraction:
            got = p.predict(big)
        ooms, retries = _ooms(device) - before, p.oom_retries - retries
        if tiles:
            same = Predictor(
                loaded, device="cuda", precision=OOM_PRECISION, batch_size=1, max_input_pixels=0, tile_size=tiles[-1]
            )
            agree = _agreement([got.labels], [same.predict(big).labels])
        else:
            agree = 0.0
        agree_whole = _agreement([got.labels], [whole_ref.labels])
        ok = retries > 0 and bool(tiles) and agree >= AGREE_SAME
        rows.append(Row(check, PASS if ok else FAIL,
                        f"{retries} fallbacks, {ooms} OOMs, tile {tiles[-1] if tiles else '-'}, agree {100 * agree:.2f}%",
                        f"cap {cap / 2**30:.2f} GiB ({100 * fraction:.2f}%): 1024 tiles peak at {in_tiles / 2**30:.2f}, "
                        f"the whole image at {whole / 2**30:.2f} GiB; agreement with the untiled result "
                        f"{100 * agree_whole:.1f}%; ResNet-50 fp32, 4096x4096; "
                        f"majority class {100 * _majority([whole_ref.labels]):.0f}%"))  # fmt: skip
    except Exception as e:
        rows.append(Row(check, FAIL, "", _first_line(e)))
    return rows


# --------------------------------------------------------------------------- the table


def table(rows: list[Row]) -> str:
    """The rows as a markdown table (check, result, figure, note)."""

    def cell(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", " ")

    lines = ["| check | result | figure | note |", "|---|---|---|---|"]
    lines += [f"| {cell(r.check)} | {cell(r.result)} | {cell(r.figure)} | {cell(r.note)} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run every check for ``--device``, print the table; 0 when every applicable check passed."""
    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: PyTorch sees no CUDA GPU here; use --device cpu")
    device = torch.device(args.device)
    plan = CUDA_PLAN if device.type == "cuda" else CPU_PLAN
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    print(
        f"torch {torch.__version__}, Python {platform.python_version()}, {device.type}: {name}, {torch.get_num_threads()} CPU threads"
    )
    t0 = time.perf_counter()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="atrous-gpu-check-") as tmp:
        try:
            ft_rows, checkpoint = finetune_rows(device, plan, Path(tmp))
        except Exception as e:
            ft_rows, checkpoint = [Row("fine-tune", FAIL, "", _first_line(e))], None
        rows += ft_rows
        try:
            rows += prelabel_rows(device, plan, checkpoint)
        except Exception as e:
            rows.append(Row("pre-label", FAIL, "", _first_line(e)))
    try:
        rows += oom_rows(device)
    except Exception as e:
        rows.append(Row("out of memory", FAIL, "", _first_line(e)))
    print(table(rows))
    failed = [r.check for r in rows if r.result == FAIL]
    print(f"{len(rows) - len(failed)} of {len(rows)} rows without failure in {time.perf_counter() - t0:.0f} s"
          + (f"; failed: {', '.join(failed)}" if failed else ""))  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
