"""The labelling loop, measured: how fast do the pre-labels get good enough to need little fixing?

A person is simulated with ground truth on CamVid (``../shared/data/camvid_small``,
void 11). The pool is the train images of two of its three video sequences; the
frames of the third (``--held-out-sequence``, default the dusk sequence 0001TP) are
scored as scenes the model never saw, and the 18 val images (frames of 0016E5, a
sequence in the pool) as new frames of known scenes. Each figure is the mean over
``--seeds`` runs (default 3) with their own training seeds.

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

Reported per round and seed: corrected images so far, pixels changed per corrected
image (as a % of its labelled pixels), how many of the round's images came from each
video sequence, held-out mIoU of the new model on the unseen sequence and on the val
frames, wall time of the round; then the means over the seeds, and whether the mean
pixels-to-fix falls every round.

    .venv/bin/python bench/label_loop.py [--minutes 2] [--k 8] [--seeds 3] [--held-out-sequence 0001TP]
        [--correction-weight 1] [--order uncertain|stratified|sorted|shuffled|novel]
        [--normalisation dataset|image] [--round0 draw|pixel-classifier]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import CAMVID, VOID, cpu_name


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
    ap.add_argument(
        "--seeds", type=int, default=3, help="run the loop with seeds 0..N-1 (training, shuffle); default 3"
    )
    ap.add_argument(
        "--held-out-sequence",
        choices=["0001TP", "0006R0", "0016E5"],
        default="0001TP",
        help="CamVid sequence kept out of the pool and scored as unseen scenes (default the dusk one, 0001TP)",
    )
    ap.add_argument(
        "--round0",
        choices=["draw", "pixel-classifier"],
        default="draw",
        help="round 0 (no model yet): draw every pixel (default), or pre-label each image with the pixel "
        "classifier trained on a few strokes on it and the round's corrected images",
    )
    args = ap.parse_args()

    import torch

    print(
        f"CamVid, {args.k} corrected per round ({args.order} order), {args.minutes:g} min fine-tune per round, "
        f"correction weight {args.correction_weight:g}, normalisation {args.normalisation or 'default'}, "
        f"held-out sequence {args.held_out_sequence}, seeds 0..{args.seeds - 1}; CPU {cpu_name()}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads",
        flush=True,
    )
    runs = [run_loop(args, seed) for seed in range(args.seeds)]
    n = min(len(r[0]) for r in runs)
    mean_fixed = [float(np.mean([r[0][i] for r in runs])) for i in range(n)]
    mean_unseen = [float(np.mean([r[1][i] for r in runs])) for i in range(n)]
    mean_seen = [float(np.mean([r[2][i] for r in runs])) for i in range(n)]
    print(f"mean over {args.seeds} seed(s): px fixed/img " + " -> ".join(f"{v:.1f}%" for v in mean_fixed))
    print(f"  held-out mIoU, unseen sequence {args.held_out_sequence}: " + " -> ".join(f"{v:.3f}" for v in mean_unseen))
    print("  held-out mIoU, val frames of a pool sequence: " + " -> ".join(f"{v:.3f}" for v in mean_seen))
    sizes = runs[0][3][:n]  # the same pool and k in every seed
    drawn = sum(f * k for f, k in zip(mean_fixed, sizes)) / 100.0
    print(
        f"pixels drawn in all: {drawn:.1f} images' worth for {sum(sizes)} images "
        f"({sum(sizes) / max(drawn, 1e-9):.1f}x less than labelling every pixel)"
    )
    rises = [i for i in range(1, n) if mean_fixed[i] >= mean_fixed[i - 1]]
    per_seed = sum(all(r[0][i] < r[0][i - 1] for i in range(1, len(r[0]))) for r in runs)
    print(
        (
            "falls every round (mean): yes"
            if not rises
            else f"falls every round (mean): no (round {', '.join(map(str, rises))})"
        )
        + f"; in {per_seed} of {args.seeds} seed(s) on its own"
    )
    print(
        f"label loop: pixels to fix fell from {mean_fixed[0]:.1f}% to {mean_fixed[-1]:.1f}% after {(n - 1) * args.k} "
        f"images (mean of {args.seeds} seeds); held-out mIoU {mean_unseen[-1]:.3f} on unseen sequence "
        f"{args.held_out_sequence}, {mean_seen[-1]:.3f} on val frames of a pool sequence"
    )


def run_loop(args: argparse.Namespace, seed: int) -> tuple[list[float], list[float], list[float], list[int]]:
    """One simulated labelling loop; per round: % of pixels fixed, mIoU on the unseen sequence and on val."""
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
        in_train = [r for r in recs if "/train/" in str(project.image_path(r).resolve())]
        pool = sorted((r for r in in_train if sequence(r) != args.held_out_sequence), key=lambda r: r.path)
        unseen = [r for r in in_train if sequence(r) == args.held_out_sequence]
        seen = [r for r in recs if r not in in_train]  # CamVid's val frames, from a sequence in the pool
        sequences = sorted({sequence(r) for r in pool})
        if args.order in ("stratified", "uncertain", "novel"):
            pool = stratified(pool, key=sequence)
        elif args.order == "shuffled":
            # Sorted names walk through CamVid's video sequences one after another, so
            # a round that enters an unseen sequence can look like a step back; a shuffle
            # mixes them, but rounds still differ in their mix (measured: not monotone either).
            pool = [pool[i] for i in np.random.default_rng(seed).permutation(len(pool))]
        gt = {r.id: truth[project.image_path(r).resolve()] for r in recs}
        n_rounds = args.rounds or -(-len(pool) // args.k)
        mix_head = "/".join(sequences)
        print(
            f"seed {seed}: pool {len(pool)} images ({mix_head}), held out {len(unseen)} frames of "
            f"{args.held_out_sequence} (unseen) and {len(seen)} val frames\n"
            f"{'round':>5s} {'corrected':>9s} {'px fixed/img':>12s} {mix_head:>{len(mix_head)}s} "
            f"{'unseen mIoU':>11s} {'val mIoU':>8s} {'steps':>6s} {'time':>7s}",
            flush=True,
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
        sizes: list[int] = []  # images corrected in each round (the last may have fewer than k)
        miou_unseen: list[float] = []
        miou_seen: list[float] = []
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
            sizes.append(len(batch))
            result = finetune(
                project,
                minutes=args.minutes,
                val_fraction=0.0,
                batch_size=args.batch_size,
                crop=args.crop,
                correction_weight=args.correction_weight,
                normalisation=args.normalisation,
                seed=seed,
                device="cpu",
                name=f"round {rnd}",
            )
            loaded = load_checkpoint(result.checkpoint_path)
            predictor = Predictor(loaded, device="cpu", batch_size=1)
            prelabel_project(project, predictor, version_id=result.version_id)
            scores = []
            for group in (unseen, seen):
                cm = ConfusionMatrix(loaded.meta.arch.num_classes)
                for r in group:
                    cm.update(gt[r.id], project.read_mask(r.id))
                scores.append(cm.compute().miou)
            miou_unseen.append(scores[0])
            miou_seen.append(scores[1])
            n_done = min(len(pool), (rnd + 1) * args.k)
            mix = "/".join(str(sum(sequence(r) == q for r in batch)) for q in sequences)
            print(
                f"{rnd:5d} {n_done:9d} {fixed_pct[-1]:11.1f}% {mix:>{len(mix_head)}s} {scores[0]:11.3f} "
                f"{scores[1]:8.3f} {result.iterations:6d} {time.perf_counter() - t0:6.0f}s",
                flush=True,
            )
        project.close()
        return fixed_pct, miou_unseen, miou_seen, sizes
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
