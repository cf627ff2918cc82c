"""Does the least-confident-first queue put the images that need the most fixing on top?

On CamVid (``../shared/data/camvid_small``, void 11): a model is fine-tuned from
scratch on the first ``n`` pool images (the label loop's stratified order) for
``--minutes``; the rest of the pool is pre-labelled, and each image's share of
wrong labelled pixels (what a person would fix) is compared with the score the
queue sorts by. The baseline, measured in the same run, is the oracle that
sorts by that true share.

Scores: ``mean confidence`` (the app's queue: mean max-softmax of the
pre-label, as ``prelabel`` stores it), and two others from the full softmax for
comparison, mean normalised ``entropy`` and mean ``1 - margin`` (top-1 minus top-2).
Printed per score: Spearman rank correlation with the true share, and the mean
share of the ``--k`` images on top of the queue as a fraction of the oracle's.

    .venv/bin/python bench/queue_ranking.py [--train 16 32] [--minutes 2] [--k 8]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np

from _common import CAMVID, VOID
from label_loop import sequence, stratified


def ranks(v: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(v, kind="stable"), kind="stable").astype(np.float64)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=int, nargs="+", default=[16, 32], help="pool images trained on, one model each")
    ap.add_argument("--minutes", type=float, default=2.0)
    ap.add_argument("--k", type=int, default=8, help="images taken from the top of the queue (a label-loop round)")
    args = ap.parse_args()

    from torch.nn import functional as F

    from annotation.formats.maskdir import read_mask_folder
    from annotation.imageio import load_image
    from annotation.project import Project
    from model.data import scaled_size
    from model.finetune import finetune
    from model.predictor import Predictor
    from model.weights import load_checkpoint

    tmp = Path(tempfile.mkdtemp(prefix="atrous-queue-bench-"))
    try:
        res = read_mask_folder(
            CAMVID / "train" / "labels", CAMVID / "train" / "images", CAMVID / "CLASSES.txt", void=VOID
        )
        truth = {item.image_path.name: item.mask for item in res.items}
        project = Project.create(tmp / "proj", res.classes)
        project.add_images(CAMVID / "train" / "images")
        pool = stratified(sorted(project.images(), key=lambda r: r.path), key=sequence)
        done = 0
        print(
            f"CamVid pool {len(pool)}; a {args.minutes:g}-minute model per row; top {args.k} of the rest vs the oracle's"
        )
        for n in sorted(args.train):
            for r in pool[done:n]:
                project.save_mask(r.id, truth[Path(r.path).name], status="edited", source="bench")
            done = n
            result = finetune(
                project, minutes=args.minutes, val_fraction=0.0, device="cpu", activate=True, name=f"{n} images"
            )
            loaded = load_checkpoint(result.checkpoint_path)
            predictor = Predictor(loaded, device="cpu", batch_size=1)
            wrong, scores = [], {"mean confidence": [], "entropy": [], "1 - margin": []}
            for r in pool[n:]:
                img = load_image(project.image_path(r))
                gt = truth[Path(r.path).name]
                pred = predictor.predict(img)
                labelled = gt != 255
                wrong.append(float(((pred.labels != gt) & labelled).sum() / max(1, int(labelled.sum()))))
                scores["mean confidence"].append(1.0 - pred.mean_confidence)  # high = on top of the queue
                h, w = img.shape[:2]
                # the predictor's own input (resize, normalisation) and network; logits at feature resolution
                logits = predictor._forward(
                    predictor._to_input([img], scaled_size(h, w, loaded.meta.input_size))
                ).float()
                p = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)[0].softmax(0)
                top2 = p.topk(2, dim=0).values
                scores["entropy"].append(float((-(p * p.clamp_min(1e-12).log()).sum(0) / np.log(p.shape[0])).mean()))
                scores["1 - margin"].append(float(1.0 - (top2[0] - top2[1]).mean()))
            err = np.array(wrong)
            oracle = float(np.sort(err)[::-1][: args.k].mean())
            print(
                f"trained on {n} ({result.iterations} steps); {len(err)} images left, {100 * err.mean():.1f} % of pixels wrong, "
                f"oracle's top {args.k}: {100 * oracle:.1f} %"
            )
            for name, vals in scores.items():
                v = np.array(vals)
                top = np.argsort(-v, kind="stable")[: args.k]
                print(
                    f"  {name:16s} spearman {spearman(v, err):+.3f}   top {args.k}: {100 * err[top].mean():5.1f} % wrong "
                    f"= {err[top].mean() / oracle:.2f}x the oracle's",
                    flush=True,
                )
        project.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
