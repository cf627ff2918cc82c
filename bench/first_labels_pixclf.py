"""The scribble-trained pixel classifier, measured: accuracy from one labelled slice, and its speed.

ISBI 2012 membranes (``../shared/data/isbi2012_membrane``, 8 labelled 512x512 EM slices):
the pixel classifier (:mod:`model.pixel_classifier`: multiscale filter features,
class-balanced sample, random forest) is trained on one fully labelled slice (0) and
scored (pixel accuracy) on the other seven. Next to it, in the same run, a plain
scikit-learn ``RandomForestClassifier()`` (its defaults: 100 trees, full depth) on
``skimage.feature.multiscale_basic_features`` with its defaults, trained on a uniform
random sample of the same slice's pixels (100k, which keeps the slice's class shares).
The time is the median wall time of one 512x512 prediction (features, forest,
labels and confidence) over the seven slices.

:func:`stroke_prelabel` is the simulated person of ``bench/label_loop.py --round0
pixel-classifier``: a few strokes per class region (the skeleton of each region of
the ground truth), the classifier trained on them plus the images corrected so far.

    .venv/bin/python bench/first_labels_pixclf.py
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

ISBI = REPO.parent / "shared" / "data" / "isbi2012_membrane"
SLICES = (0, 4, 8, 12, 16, 20, 24, 28)


def isbi_pairs(root: Path = ISBI) -> list[tuple[np.ndarray, np.ndarray]]:
    """(grey image, labels with 0 = membrane, 1 = cell interior) of the eight slices."""
    from PIL import Image

    if not (root / "image").is_dir():
        raise SystemExit(f"no ISBI slices under {root}; the shared data must sit beside the project")
    out = []
    for n in SLICES:
        img = np.array(Image.open(root / "image" / f"{n}.png").convert("L"))
        lab = (np.array(Image.open(root / "label" / f"{n}.png").convert("L")) > 127).astype(np.uint8)
        out.append((img, lab))
    return out


def plain_forest_accuracy(pairs: list[tuple[np.ndarray, np.ndarray]], train: int, samples: int, seed: int) -> float:
    """Mean pixel accuracy of RandomForestClassifier() on multiscale_basic_features() defaults."""
    from skimage.feature import multiscale_basic_features
    from sklearn.ensemble import RandomForestClassifier

    from model.pixel_classifier import n_jobs

    img, lab = pairs[train]
    feats = multiscale_basic_features(img)
    x, y = feats.reshape(-1, feats.shape[-1]), lab.ravel()
    pick = np.random.default_rng(seed).choice(len(y), min(samples, len(y)), replace=False)
    rf = RandomForestClassifier(random_state=seed, n_jobs=n_jobs()).fit(x[pick], y[pick])
    accs = []
    for i, (img, lab) in enumerate(pairs):
        if i == train:
            continue
        f = multiscale_basic_features(img)
        accs.append(float((rf.predict(f.reshape(-1, f.shape[-1])).reshape(lab.shape) == lab).mean()))
    return float(np.mean(accs))


def score_pixel_classifier(train: int = 0, plain_samples: int = 100_000, seed: int = 0) -> dict:
    """Train on ISBI slice ``train``, score on the others; the plain forest alongside; time per 512² image.

    Returns ``accuracy``, ``plain_accuracy``, ``seconds_per_image`` (median wall time),
    ``cpu_seconds_per_image`` (median CPU time, all threads: a busy machine inflates the wall
    time, not this), ``per_slice`` (accuracies), ``train_seconds`` and ``samples``.
    """
    from model.pixel_classifier import ForestParams, PixelClassifier

    pairs = isbi_pairs()
    t0 = time.perf_counter()
    clf = PixelClassifier.train(
        [pairs[train]], ["membrane", "cell"], [(0, 0, 0), (255, 255, 255)], params=ForestParams(seed=seed)
    )
    train_seconds = time.perf_counter() - t0
    accs, times, cpu = [], [], []
    for i, (img, lab) in enumerate(pairs):
        if i == train:
            continue
        t, c = time.perf_counter(), time.process_time()
        labels, _conf = clf.predict(img)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        accs.append(float((labels == lab).mean()))
    return {
        "accuracy": float(np.mean(accs)),
        "plain_accuracy": plain_forest_accuracy(pairs, train, plain_samples, seed),
        "seconds_per_image": statistics.median(times),
        "cpu_seconds_per_image": statistics.median(cpu),
        "per_slice": accs,
        "train_seconds": train_seconds,
        "samples": clf.info["samples"],
    }


def skeleton_strokes(truth: np.ndarray, min_area: int = 64, void: int = 255) -> np.ndarray:
    """A few strokes per class region: the skeleton of every region of at least ``min_area`` pixels; rest void."""
    from scipy import ndimage as ndi
    from skimage.morphology import skeletonize

    out = np.full(truth.shape, void, np.uint8)
    for c in np.unique(truth):
        if c == void:
            continue
        region = truth == c
        comps, n = ndi.label(region)
        if n == 0:
            continue
        sizes = ndi.sum_labels(region, comps, index=np.arange(1, n + 1))
        keep = np.isin(comps, np.flatnonzero(sizes >= min_area) + 1)
        out[skeletonize(keep)] = c
    return out


def stroke_prelabel(
    image: np.ndarray,
    truth: np.ndarray,
    corrected: list[tuple[np.ndarray, np.ndarray]],
    class_names: list[str],
    colours: list[tuple[int, int, int]],
) -> tuple[np.ndarray, np.ndarray]:
    """(pre-label, stroke pixels): strokes drawn on ``image`` from ``truth``, the pixel classifier trained on
    them plus the ``corrected`` (image, mask) pairs, its prediction with the strokes kept."""
    from model.pixel_classifier import PixelClassifier, PixelClassifierError

    strokes = skeleton_strokes(truth)
    drawn = strokes != 255
    try:
        clf = PixelClassifier.train([(image, strokes, False), *corrected], class_names, colours)
        labels = clf.predict(image)[0]
    except PixelClassifierError:  # one class in sight and nothing corrected yet: the strokes are all there is
        labels = np.where(drawn, strokes, strokes[drawn][0] if drawn.any() else 0).astype(np.uint8)
    return np.where(drawn, strokes, labels).astype(np.uint8), drawn


def main() -> None:
    r = score_pixel_classifier()
    print(
        f"trained in {r['train_seconds']:.1f} s on {r['samples']} pixels of slice 0; per slice: "
        + " ".join(f"{a:.3f}" for a in r["per_slice"])
        + f"; {r['cpu_seconds_per_image']:.2f} CPU-s per image"
    )
    print(
        f"pixel classifier: isbi accuracy {r['accuracy']:.3f} from 1 slice (plain RF {r['plain_accuracy']:.3f}), "
        f"{r['seconds_per_image']:.2f} s per 512² image"
    )


if __name__ == "__main__":
    main()
