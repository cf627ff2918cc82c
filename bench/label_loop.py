"""The labelling loop, measured: how fast do the pre-labels get good enough to need little fixing?

A person is simulated with ground truth on CamVid (``../shared/data/camvid_small``):
the 56 train images are the pool, the 18 val images the held-out set (void 11).

* The pool is corrected in the order the app proposes (``--order uncertain``, the
  default): its active-learning queue, least confident pre-label first. Round 0
  has no model, so it takes the stratified order below. The queue takes the
  hardest images first, so what is left gets easier as the model gets better:
  the fall mixes both, and the held-out mIoU shows the model's part.
  ``--order stratified`` makes every round a representative sample of the pool
  instead (CamVid's three video sequences in proportion to their size, frames
  from across each sequence), which isolates the model's part; ``--order
  sorted`` walks one sequence after another, ``--order shuffled`` takes a
  seeded random order. ``--order novel`` was a candidate for the app's queue:
  least confident *and* unlike what is already corrected (:func:`novel_first`).
  It spread the dusk frames over the rounds, but in 2 runs it fell every round
  once, like the plain queue, and drew as much, so the app kept the plain queue.
* Round 0: no model, so every labelled pixel of the first ``--k`` images must be drawn;
  with ``--round0 pixel-classifier`` each of them is instead pre-labelled by the pixel
  classifier trained on a few strokes drawn on it (the skeleton of every class region,
  :func:`first_labels_pixclf.stroke_prelabel`) plus the round's images corrected before
  it; the stroke pixels count as drawn, with the pixels left to fix.
* Every round: "correct" the next ``--k`` pool images (ground truth saved over the
  pre-label as ``edited``; the pixels that differ are counted), fine-tune the current
  model (the project's active version; a random init in round 0) on all corrected
  images for ``--minutes``, then pre-label the rest of the pool and the held-out set
  with ``prelabel PROJECT``'s code path and score the held-out pre-labels.

Reported per round: corrected images so far, pixels changed per corrected image (as a
% of its labelled pixels), how many of the round's images came from each video
sequence (the dusk sequence 0001TP is the hardest; a round the queue fills with it
costs more), held-out mIoU of the new model, wall time of the round.

    .venv/bin/python bench/label_loop.py [--minutes 2] [--k 8] [--correction-weight 1] [--order uncertain|stratified|sorted|shuffled|novel]
        [--normalisation dataset|image] [--round0 draw|pixel-classifier]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import CAMVID, VOID


def spread(n: int) -> list[int]:
    """0..n-1 in an order whose every prefix is spread evenly over the range (van der Corput)."""
    order: list[int] = []
    left = set(range(n))
    j = 0
    while left:
        # radical inverse of j in base 2: 0, .5, .25, .75, .125, ...
        v, f, k = 0.0, 0.5, j
        while k:
            v, k, f = v + f * (k & 1), k >> 1, f / 2
        target = v * n
        best = min(left, key=lambda i: (abs(i + 0.5 - target), i))
        order.append(best)
        left.remove(best)
        j += 1
    return order


def stratified(items: list, key) -> list:
    """Interleave the groups of ``items`` in proportion to their sizes, each group in :func:`spread` order.

    Every stretch of the result holds each group's share of it (with CamVid's
    sequences of 10, 15 and 31 frames, every 8 images hold about 1.4, 2.1 and
    4.4), and frames taken from across each sequence rather than from one
    stretch of road: every round is a representative sample of the pool.
    """
    groups: dict[str, list] = {}
    for it in items:
        groups.setdefault(key(it), []).append(it)
    for g, members in groups.items():
        groups[g] = [members[i] for i in spread(len(members))]
    taken = {g: 0 for g in groups}
    out = []
    while len(out) < len(items):
        # the group furthest behind its proportional share goes next
        g = min((g for g in groups if taken[g] < len(groups[g])), key=lambda g: ((taken[g] + 0.5) / len(groups[g]), g))
        out.append(groups[g][taken[g]])
        taken[g] += 1
    return out


def sequence(rec) -> str:
    """The CamVid video sequence an image record comes from (its name's prefix, e.g. ``0001TP``)."""
    return Path(rec.path).name.split("_")[0]


def novel_first(rest: list, done: list, doubt: dict, look: dict, k: int) -> list:
    """``rest`` reordered so that its first ``k`` are uncertain and unlike what is corrected.

    Picked greedily, one at a time, by ``doubt * distance``: ``doubt`` is 1 - the mean
    confidence of the image's pre-label, ``distance`` the Euclidean distance between
    its ``look`` (a 16x12 RGB thumbnail) and the nearest one already corrected or
    picked. A near copy of a corrected frame (the next frame of the same video) waits,
    however unsure the model is of it, and a scene nobody has corrected yet comes early.
    The rest follow, least confident first.
    """
    near = {r.id: min((float(np.linalg.norm(look[r.id] - look[d.id])) for d in done), default=1.0) for r in rest}
    cand, picked = list(rest), []
    while cand and len(picked) < k:
        best = max(cand, key=lambda r: (doubt[r.id] * near[r.id], r.path))
        picked.append(best)
        cand.remove(best)
        for r in cand:
            near[r.id] = min(near[r.id], float(np.linalg.norm(look[r.id] - look[best.id])))
    return picked + sorted(cand, key=lambda r: (-doubt[r.id], r.path))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=2.0, help="fine-tune budget per round (default 2)")
    ap.add_argument("--k", type=int, default=8, help="images corrected per round (default 8)")
    ap.add_argument("--rounds", type=int, default=None, help="default: until the pool is used up")
    ap.add_argument("--correction-weight", type=float, default=1.0)
    ap.add_argument("--batch-size", type=int, default=None, help="default: fine-tune's own (4 on the CPU)")
    ap.add_argument("--crop", type=int, default=320)
    ap.add_argument(
        "--normalisation",
        choices=["dataset", "image"],
        default=None,
        help="input normalisation of the model trained in round 0 (default: fine-tune's, per image for a random init)",
    )
    ap.add_argument(
        "--order",
        choices=["stratified", "sorted", "shuffled", "uncertain", "novel"],
        default="uncertain",
        help="order the pool is corrected in: least confident pre-label first (the app's queue, default), "
        "sequences interleaved, by name, a seeded shuffle, or least confident and unlike the corrected ones",
    )
    ap.add_argument("--seed", type=int, default=0, help="seed of the shuffled order")
    ap.add_argument(
        "--round0",
        choices=["draw", "pixel-classifier"],
        default="draw",
        help="round 0 (no model yet): draw every pixel (default), or pre-label each image with the pixel "
        "classifier trained on a few strokes on it and the round's corrected images",
    )
    args = ap.parse_args()

    import torch

    from annotation.formats.maskdir import read_mask_folder
    from annotation.imageio import load_image
    from annotation.project import Project
    from model.finetune import finetune
    from model.jobs import prelabel_project
    from model.metrics import ConfusionMatrix
    from model.predictor import Predictor
    from model.weights import load_checkpoint

    tmp = Path(tempfile.mkdtemp(prefix="atrous-loop-bench-"))
    try:
        truth: dict[Path, np.ndarray] = {}
        classes = None
        for split in ("train", "val"):
            res = read_mask_folder(
                CAMVID / split / "labels", CAMVID / split / "images", CAMVID / "CLASSES.txt", void=VOID
            )
            classes = res.classes
            for item in res.items:
                truth[item.image_path.resolve()] = item.mask
        project = Project.create(tmp / "proj", classes)
        project.add_images(CAMVID / "train" / "images")
        project.add_images(CAMVID / "val" / "images")
        recs = project.images()
        pool = sorted((r for r in recs if "/train/" in str(project.image_path(r).resolve())), key=lambda r: r.path)
        sequences = sorted({sequence(r) for r in pool})
        if args.order in ("stratified", "uncertain", "novel"):
            pool = stratified(pool, key=sequence)
        elif args.order == "shuffled":
            # Sorted names walk through CamVid's three video sequences one after another, so
            # a round that enters an unseen sequence can look like a step back; a shuffle
            # mixes them, but rounds still differ in their mix (measured: not monotone either).
            pool = [pool[i] for i in np.random.default_rng(args.seed).permutation(len(pool))]
        held = [r for r in recs if r not in pool]
        gt = {r.id: truth[project.image_path(r).resolve()] for r in recs}
        n_rounds = args.rounds or -(-len(pool) // args.k)
        print(
            f"CamVid pool {len(pool)} / held-out {len(held)} images, {args.k} corrected per round ({args.order} order), "
            f"{args.minutes:g} min fine-tune per round, correction weight {args.correction_weight:g}, "
            f"normalisation {args.normalisation or 'default'}, "
            f"torch {torch.__version__}, {torch.get_num_threads()} threads"
        )
        mix_head = "/".join(sequences)
        print(
            f"{'round':>5s} {'corrected':>9s} {'px fixed/img':>12s} {mix_head:>{len(mix_head)}s} "
            f"{'held-out mIoU':>13s} {'steps':>6s} {'time':>7s}"
        )
        if args.order == "novel":
            from PIL import Image

            look = {
                r.id: np.asarray(
                    Image.fromarray(load_image(project.image_path(r))).resize((16, 12), Image.BILINEAR), np.float32
                ).ravel()
                / 255.0
                for r in pool
            }
        fixed_pct: list[float] = []
        miou = float("nan")
        for rnd in range(n_rounds):
            t0 = time.perf_counter()
            if args.order == "uncertain" and rnd > 0:
                # The app's queue (gui.main_window, "least confident first") over what is left.
                conf = {r.id: r.mean_confidence for r in project.images()}
                rest = sorted(pool[rnd * args.k :], key=lambda r: (conf[r.id] is None, conf[r.id] or 0.0, r.path))
                pool = pool[: rnd * args.k] + rest
            elif args.order == "novel" and rnd > 0:
                doubt = {r.id: 1.0 - (r.mean_confidence or 0.0) for r in project.images()}
                pool = pool[: rnd * args.k] + novel_first(
                    pool[rnd * args.k :], pool[: rnd * args.k], doubt, look, args.k
                )
            batch = pool[rnd * args.k : (rnd + 1) * args.k]
            if not batch:
                break
            pcts = []
            strokes_of: list[tuple[np.ndarray, np.ndarray]] = []  # round 0 with --round0 pixel-classifier
            for r in batch:
                g = gt[r.id]
                labelled = g != 255
                pre = project.read_mask(r.id)
                drawn = 0
                if rnd == 0 and args.round0 == "pixel-classifier":
                    from first_labels_pixclf import stroke_prelabel

                    image = load_image(project.image_path(r))
                    names = [c.name for c in classes]
                    pre, strokes = stroke_prelabel(image, g, strokes_of, names, [c.colour for c in classes])
                    strokes_of.append((image, g))
                    drawn = int((strokes & labelled).sum())
                    pre = np.where(strokes, g, pre)
                changed = int(labelled.sum()) if pre is None else drawn + int(((pre != g) & labelled).sum())
                pcts.append(100.0 * changed / max(1, int(labelled.sum())))
                project.save_mask(r.id, g, status="edited", changed_pixels=changed, source="bench")
            fixed_pct.append(float(np.mean(pcts)))
            result = finetune(
                project,
                minutes=args.minutes,
                val_fraction=0.0,
                batch_size=args.batch_size,
                crop=args.crop,
                correction_weight=args.correction_weight,
                normalisation=args.normalisation,
                device="cpu",
                name=f"round {rnd}",
            )
            loaded = load_checkpoint(result.checkpoint_path)
            predictor = Predictor(loaded, device="cpu", batch_size=1)
            prelabel_project(project, predictor, version_id=result.version_id)
            cm = ConfusionMatrix(loaded.meta.arch.num_classes)
            for r in held:
                cm.update(gt[r.id], project.read_mask(r.id))
            miou = cm.compute().miou
            n_done = min(len(pool), (rnd + 1) * args.k)
            mix = "/".join(str(sum(sequence(r) == q for r in batch)) for q in sequences)
            print(
                f"{rnd:5d} {n_done:9d} {fixed_pct[-1]:11.1f}% {mix:>{len(mix_head)}s} {miou:13.3f} {result.iterations:6d} "
                f"{time.perf_counter() - t0:6.0f}s",
                flush=True,
            )
        trained_on = (len(fixed_pct) - 1) * args.k
        rises = [i for i in range(1, len(fixed_pct)) if fixed_pct[i] >= fixed_pct[i - 1]]
        drawn = sum(fixed_pct) * args.k / 100.0
        print(
            f"pixels drawn in all: {drawn:.1f} images' worth for {len(fixed_pct) * args.k} images "
            f"({len(fixed_pct) * args.k / max(drawn, 1e-9):.1f}x less than labelling every pixel)"
        )
        print(
            "falls every round: yes"
            if not rises
            else f"falls every round: no (round {', '.join(map(str, rises))} did not fall)"
        )
        print(
            f"label loop: pixels to fix fell from {fixed_pct[0]:.1f}% to {fixed_pct[-1]:.1f}% after {trained_on} images; "
            f"held-out mIoU {miou:.3f}"
        )
        project.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
