"""Headless model commands: ``prelabel`` and ``models`` (see README).

torch is imported only when a command runs, so ``atrous --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from annotation.errors import AtrousError, AtrousReadError
from annotation.imageio import is_image_file


def register(sub: argparse._SubParsersAction) -> None:  # noqa: SLF001
    """Add the model subcommands to the top-level parser."""
    p = sub.add_parser(
        "prelabel",
        help="pre-label a folder of images with a DeepLabV3 model",
        description=(
            "Predict a label map for every image under IMAGES_DIR (recursively) and write one palette PNG "
            "per image into --out, keeping sub-folders and file stems. Unreadable images are listed and skipped."
        ),
    )
    p.add_argument("images", metavar="IMAGES_DIR", type=Path)
    p.add_argument("--out", required=True, type=Path, metavar="MASKS_DIR", help="folder for the label PNGs")
    add_model_arguments(p)
    p.set_defaults(func=cmd_prelabel)

    m = sub.add_parser("models", help="list the named models and whether their weights are cached")
    m.set_defaults(func=cmd_models)


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """The options every command that runs the network shares."""
    p.add_argument(
        "--model",
        default="deeplabv3_mobilenet_v3_large",
        help="registry name (see `models`), an Atrous checkpoint, or a torchvision DeepLabV3 state-dict file "
        "(default: %(default)s)",
    )
    p.add_argument("--classes", type=Path, help="class names, one per line, for a plain state-dict file")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N, mps")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--batch-size", type=int, default=None, help="images per batch (default: 1 on CPU, 8 on GPU)")


def read_class_names(path: Path) -> list[str]:
    """One class name per line; blank trailing lines ignored."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise AtrousReadError(f"{path}: cannot read the class list ({e})") from e
    names = [ln.strip() for ln in lines]
    while names and not names[-1]:
        names.pop()
    if not names or any(not n for n in names):
        raise AtrousReadError(f"{path}: the class list must have one non-empty name per line")
    return names


def make_predictor(args: argparse.Namespace):  # -> Predictor (torch imported lazily)
    """Load ``--model`` and build a Predictor with the device/precision options."""
    from .predictor import Predictor
    from .weights import load_model

    names = read_class_names(args.classes) if args.classes else None
    loaded = load_model(args.model, class_names=names)
    predictor = Predictor(loaded, device=args.device, precision=args.precision, batch_size=args.batch_size or 1)
    if args.batch_size is None and predictor.device.type != "cpu":
        predictor.batch_size = 8
    return predictor


def _scan(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise AtrousReadError(f"{folder}: not a folder")
    return sorted(p for p in folder.rglob("*") if p.is_file() and is_image_file(p))


def cmd_prelabel(args: argparse.Namespace) -> int:
    """Pre-label every image in a folder; returns 0, or 1 when some images were skipped."""
    from annotation.masks import make_palette, write_mask_png

    from .progress import ProgressBar, format_seconds

    paths = _scan(args.images)
    if not paths:
        raise AtrousReadError(f"{args.images}: no images found (looked for .jpg .jpeg .png .bmp .tif .tiff .webp)")
    predictor = make_predictor(args)
    meta = predictor.meta
    palette = make_palette(meta.colours)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "labels.txt").write_text("\n".join(meta.class_names) + "\n", encoding="utf-8")
    print(f"pre-labelling {len(paths)} images with {meta.name or args.model} on {predictor.description}", file=sys.stderr)
    bar = ProgressBar(len(paths))
    failed: list[str] = []
    written = 0
    start = time.perf_counter()
    for path, result in predictor.predict_files(paths):
        rel = path.relative_to(args.images)
        if isinstance(result, AtrousError):
            failed.append(str(result))
        else:
            try:
                write_mask_png(args.out / rel.with_suffix(".png"), result.labels, palette)
                written += 1
            except AtrousError as e:
                failed.append(str(e))
        bar.update(1, rel.name)
    elapsed = time.perf_counter() - start
    print(
        f"pre-labelled {written} of {len(paths)} images in {format_seconds(elapsed)} "
        f"({written / max(elapsed, 1e-9):.2f} img/s, {predictor.description}) -> {args.out}"
    )
    if failed:
        print(f"skipped {len(failed)} image(s):")
        for line in failed:
            print(f"  {line}")
        return 1
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    """List registry models and where their weights are (or would be) cached."""
    import os

    from .weights import REGISTRY, torchvision_cache_dir

    cache = torchvision_cache_dir()
    for entry in REGISTRY.values():
        fname = os.path.basename(entry.torchvision_weights().url)
        state = "cached" if (cache / fname).exists() else "not cached (needs one download)"
        print(f"{entry.name:32s} {state:34s} {entry.description}")
    print(f"cache folder: {cache}")
    return 0
