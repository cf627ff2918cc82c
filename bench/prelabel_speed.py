"""Pre-label speed: our Predictor against the loop a user writes from torchvision's docs.

Both run in this process, on the same CamVid images, with the same weights (a
checkpoint trained briefly on CamVid, see _common.py) and the same input size
(shorter side 520, torchvision's preset). The naive loop is, per image:
PIL open -> weights.transforms() -> model(x)["out"].argmax(1), fp32. Ours runs
over the whole folder with Predictor.predict_files (decoding overlapped), in the
precision it picks on this machine; agreement is measured against our own fp32
output at the original size.

    .venv/bin/python bench/prelabel_speed.py [--images N] [--backbones mobilenet_v3_large,resnet50]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from _common import camvid_pairs, trained_checkpoint


def naive_setup(state_dict, backbone: str, num_classes: int):
    """torchvision's own model and preset transforms, as its docs show them."""
    from torchvision.models import segmentation as tvseg

    builder = {
        "mobilenet_v3_large": (tvseg.deeplabv3_mobilenet_v3_large, tvseg.DeepLabV3_MobileNet_V3_Large_Weights),
        "resnet50": (tvseg.deeplabv3_resnet50, tvseg.DeepLabV3_ResNet50_Weights),
    }[backbone]
    model = builder[0](weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False)
    model.load_state_dict(state_dict)
    return model.eval(), builder[1].COCO_WITH_VOC_LABELS_V1.transforms()


def naive_loop(model, preprocess, paths) -> float:
    import torch
    from PIL import Image

    start = time.perf_counter()
    with torch.no_grad():
        for p in paths:
            img = Image.open(p).convert("RGB")
            batch = preprocess(img).unsqueeze(0)
            model(batch)["out"].argmax(1)
    return time.perf_counter() - start


def ours(predictor, paths) -> tuple[float, list[np.ndarray]]:
    start = time.perf_counter()
    labels = [r.labels for _, r in predictor.predict_files(paths)]
    return time.perf_counter() - start, labels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=24, help="how many CamVid images (val first, then train)")
    ap.add_argument("--backbones", default="mobilenet_v3_large,resnet50")
    ap.add_argument("--train-minutes", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3, help="alternating timing rounds (median ratio)")
    args = ap.parse_args()

    import torch

    from model.predictor import Predictor
    from model.weights import load_checkpoint

    paths = [a for a, _ in camvid_pairs("val") + camvid_pairs("train")][: args.images]
    lines = []
    print(f"{len(paths)} CamVid images (480x360), torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'backbone':20s} {'naive s/img':>12s} {'ours s/img':>11s} {'speedup':>8s} {'agreement':>10s}  precision")
    for backbone in args.backbones.split(","):
        ckpt = trained_checkpoint(backbone, minutes=args.train_minutes)
        loaded = load_checkpoint(ckpt)
        model, preprocess = naive_setup(loaded.network.state_dict(), backbone, loaded.meta.arch.num_classes)
        fast = Predictor(loaded, device="cpu", precision="auto", batch_size=1)
        ref = Predictor(loaded, device="cpu", precision="fp32", batch_size=1)
        naive_loop(model, preprocess, paths[:1])  # warm-up, not timed
        ours(fast, paths[:1])
        # The two loops alternate, round by round, so a neighbour's load hits both alike;
        # the ratio is the median of the per-round ratios.
        ratios, t_naive, t_ours = [], 0.0, 0.0
        for _ in range(args.rounds):
            a = naive_loop(model, preprocess, paths)
            b, fast_labels = ours(fast, paths)
            ratios.append(a / b)
            t_naive, t_ours = t_naive + a, t_ours + b
        _, ref_labels = ours(ref, paths)
        agree = float(np.mean([(x == y).mean() for x, y in zip(fast_labels, ref_labels)])) * 100
        ratio = float(np.median(ratios))
        n = len(paths) * args.rounds
        print(f"{backbone:20s} {t_naive / n:12.3f} {t_ours / n:11.3f} {ratio:7.2f}x {agree:9.2f}%  {fast.description}")
        lines.append(
            f"prelabel speedup vs naive torchvision loop: {ratio:.2f}x, label agreement {agree:.2f}% ({backbone})"
        )
    for line in lines:
        print(line)


if __name__ == "__main__":
    main()
