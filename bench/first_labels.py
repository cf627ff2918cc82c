"""First labels before any model exists: annotator actions with and without the smart tools.

A person is simulated with the ground truth of ``../shared/data/camvid_small/val``
(11 classes) and ``../shared/data/isbi2012_membrane`` (membrane / cell): for each
image, the actions (clicks, strokes, polygon vertices) needed to reach 90 % and
95 % pixel accuracy,

(a) with fill, polygon and brush only;
(b) with the smart tools added: the better of two ways a person would work,
    * the magic wand, the superpixel brush and GrabCut, then brush fixes;
    * "Learn from my strokes": the images are labelled in order; on each, the person
      draws ``STROKES_PER_CLASS`` short strokes in each class present of the first image
      (1 action each) and presses Learn (1 action): the pixel classifier trains on those
      strokes and its prediction (strokes kept) becomes the mask. Every later image is
      pre-labelled (1 action) by the classifier trained on the images finished before
      (their ground truth: they were corrected). The person corrects the result with the
      smart tools and the brush.
The simulated strategies (polygons from simplified contours, wand seeds, superpixel
strokes, GrabCut boxes, brush fixes) are those of ``bench/first_labels_tools.py``,
described in its docstring: both annotators are ideal users of their tools.

Then the pixel classifier alone (``bench/first_labels_pixclf.py``): trained on one
fully labelled ISBI slice, scored on the others, next to a plain scikit-learn random
forest on ``skimage.feature.multiscale_basic_features`` defaults in the same run, and
its prediction time per 512x512 image; and the p95 response of the wand, a superpixel
stroke and GrabCut on a 2-megapixel image.

    .venv/bin/python bench/first_labels.py [--images 8] [--no-timing]

Last lines:
``first labels: <a> actions/image with brush+polygon, <b> with smart tools (<r>x fewer) to 90 % on camvid; <a2>, <b2> on isbi``
``pixel classifier: isbi accuracy <acc> from 1 slice (plain RF <acc0>), <t> s per 512² image``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from _common import cpu_name  # noqa: E402
from first_labels_pixclf import score_pixel_classifier  # noqa: E402
from first_labels_tools import REPO, VOID, _load_pairs, response_times, run  # noqa: E402

TARGETS = (0.90, 0.95)
#: Strokes a person draws per class present before pressing Learn.
STROKES_PER_CLASS = 3
#: A stroke: the class's skeleton within this radius (px) of a point on it (about twice as long).
STROKE_RADIUS = 30
#: Classes with fewer pixels than this in an image get no stroke (too small to aim at).
MIN_CLASS_PIXELS = 200


def short_strokes(gt: np.ndarray, n_classes: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """(stroke labels, void elsewhere; the number of strokes): ``STROKES_PER_CLASS`` pieces of each
    class's skeleton, each the skeleton pixels within ``STROKE_RADIUS`` of a random skeleton pixel."""
    from skimage.morphology import skeletonize

    out = np.full(gt.shape, VOID, np.uint8)
    yy, xx = np.mgrid[0 : gt.shape[0], 0 : gt.shape[1]]
    strokes = 0
    for c in range(n_classes):
        region = gt == c
        if int(region.sum()) < MIN_CLASS_PIXELS:
            continue
        skel = skeletonize(region)
        ys, xs = np.nonzero(skel)
        if ys.size == 0:
            continue
        for k in rng.choice(ys.size, size=min(STROKES_PER_CLASS, ys.size), replace=False):
            near = (yy - ys[k]) ** 2 + (xx - xs[k]) ** 2 <= STROKE_RADIUS**2
            out[skel & near] = c
            strokes += 1
    return out, strokes


def learn_start(
    image: np.ndarray, gt: np.ndarray, n_classes: int, done: list[tuple[np.ndarray, np.ndarray]], seed: int
) -> tuple[np.ndarray, str, int] | None:
    """The mask to correct (labels, tool, actions), or None when nothing can train: on the first image,
    strokes then Learn; on later ones, the classifier the finished images trained pre-labels it (one
    click: "Pre-label all new images" does every image at once, so this overcounts)."""
    from model.pixel_classifier import PixelClassifier, PixelClassifierError

    if done:
        strokes, n = np.full(gt.shape, VOID, np.uint8), 0
    else:
        strokes, n = short_strokes(gt, n_classes, np.random.default_rng(seed))
    names = [f"class {i}" for i in range(n_classes)]
    colours = [(i, i, i) for i in range(n_classes)]
    scored = [(im, np.where(m < n_classes, m, VOID).astype(np.uint8)) for im, m in done]
    pairs = [(image, strokes, False)] if n else []
    try:
        clf = PixelClassifier.train([*pairs, *scored], names, colours)
    except PixelClassifierError:
        return None
    labels = clf.predict(image)[0]
    drawn = strokes != VOID
    return np.where(drawn, strokes, labels).astype(np.uint8), "learn" if n else "pre-label", n + 1


def first_labels(dataset: str, images: int) -> dict[str, float]:
    """Mean actions per image to each target: manual, smart tools, learn+smart, and the best smart way."""
    pairs = _load_pairs(dataset, images)
    sums: dict[tuple[str, float], float] = {}
    done: list[tuple[np.ndarray, np.ndarray]] = []
    for i, (name, image, gt, n) in enumerate(pairs):
        t0 = time.perf_counter()
        manual = run(image, gt, n, TARGETS, smart=False)[0]
        smart = run(image, gt, n, TARGETS, smart=True)[0]
        start = learn_start(image, gt, n, done, seed=i)
        learn = run(image, gt, n, TARGETS, smart=True, start=start)[0] if start is not None else smart
        for t in TARGETS:
            for way, got in (("manual", manual[t]), ("tools", smart[t]), ("learn", learn[t])):
                sums[(way, t)] = sums.get((way, t), 0) + got
            sums[("best", t)] = sums.get(("best", t), 0) + min(smart[t], learn[t])
        print(
            f"{dataset} {name}: manual {manual}, smart tools {smart}, strokes+learn+tools {learn} "
            f"({time.perf_counter() - t0:.1f} s)",
            flush=True,
        )
        done.append((image, gt))
    k = max(len(pairs), 1)
    return {f"{way} {t:.0%}": v / k for (way, t), v in sums.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=8, help="images per dataset (labelled in this order)")
    ap.add_argument("--no-timing", action="store_true", help="skip the response times")
    args = ap.parse_args()
    print(f"CPU: {cpu_name()}")
    got = {ds: first_labels(ds, args.images) for ds in ("camvid", "isbi")}
    for ds, r in got.items():
        for t in TARGETS:
            a, b = r[f"manual {t:.0%}"], r[f"best {t:.0%}"]
            print(
                f"{ds} to {t:.0%}: {a:.1f} actions/image manual; smart tools {r[f'tools {t:.0%}']:.1f}, "
                f"strokes+learn+tools {r[f'learn {t:.0%}']:.1f}, the better of the two {b:.1f} ({a / max(b, 1e-9):.1f}x fewer)"
            )
    if not args.no_timing:
        import cv2
        from PIL import Image

        p = sorted((REPO.parent / "shared" / "data" / "camvid_small" / "val" / "images").glob("*.png"))[0]
        big = cv2.resize(np.asarray(Image.open(p).convert("RGB")), (1732, 1155), interpolation=cv2.INTER_CUBIC)
        res = response_times(big)
        print("response p95 on 1732x1155 (2.0 MP): " + ", ".join(f"{k} {v:.0f} ms" for k, v in res.items()))
    pc = score_pixel_classifier()
    c, i = got["camvid"], got["isbi"]
    a, b, a2, b2 = c["manual 90%"], c["best 90%"], i["manual 90%"], i["best 90%"]
    print(
        f"first labels: {a:.1f} actions/image with brush+polygon, {b:.1f} with smart tools ({a / max(b, 1e-9):.1f}x fewer) "
        f"to 90 % on camvid; {a2:.1f}, {b2:.1f} ({a2 / max(b2, 1e-9):.1f}x) on isbi"
    )
    print(
        f"pixel classifier: isbi accuracy {pc['accuracy']:.3f} from 1 slice (plain RF {pc['plain_accuracy']:.3f}), "
        f"{pc['seconds_per_image']:.2f} s per 512² image"
    )


if __name__ == "__main__":
    main()
