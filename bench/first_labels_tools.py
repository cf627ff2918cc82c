"""Simulated annotators for ``bench/first_labels.py``: actions to a pixel-accuracy target, with and without smart tools.

A person is simulated with the ground truth ``gt`` (class indices; values
``>= n_classes`` are void and not scored). The mask starts unlabelled (void),
as a new image in a project without a background class does; pixel accuracy is
the share of scored pixels whose label equals ``gt``. One *action* is one click,
one stroke or one polygon vertex (keys such as picking a class or Enter are free).

Both strategies share one greedy loop (:func:`run`):

1. One fill click paints the whole (still uniform) mask with one class; the two
   most frequent classes are tried and the run that reaches the highest target
   in fewer actions is kept.
2. Candidate actions are built per ground-truth region (a connected component
   of one class, 8-connected, ``MIN_REGION`` pixels or more). The loop applies
   the candidate with the most net pixels gained per action (pixels it makes
   right minus ``BROKEN_WEIGHT`` times the right pixels it makes wrong, since
   those must be fixed again), re-evaluated lazily on the current mask, until
   the targets are reached or nothing gains.
3. Brush fixes: the remaining wrong pixels, in connected pieces per true class,
   largest first.

An action of several strokes or vertices that crosses a target is counted pro
rata (the person stops once the mask is good enough).

``simulate_manual``: fill, polygon and brush only.

* polygon: the region's outer contour simplified with ``cv2.approxPolyDP``
  (``POLYGON_EPSILON`` px), filled; one action per vertex;
* brush: the region in ``BRUSH_TILE``-px pieces, each costing
  :func:`brush_strokes`: a thin piece (mean width up to ``2 * MAX_BRUSH_RADIUS``)
  one stroke per ``STROKE_LENGTH`` px of skeleton; a wide one is outlined along
  its true edges (one careful stroke per ``OUTLINE_STROKE_LENGTH`` px) and
  filled with one click. Only the part still wrong is painted (and paid for).
  An idealised brush that never spills, so the manual baseline is a strong one:
  on CamVid it beats the polygons everywhere, on ISBI it traces the membranes.

``simulate_smart``: the same, plus per region (the tools' own code, :mod:`annotation.smart`)

* magic wand: one click at the region's innermost pixel, at its pixel of
  median colour and (regions of 500 px or more) at ``WAND_EXTRA_SEEDS`` random
  pixels, each with the best of ``WAND_TOLERANCES`` (dragging sideways while
  the button is down is part of the same click): 1 action each;
* superpixel brush: the superpixels (coarse, medium or fine, the best ratio)
  whose majority class is the region's and whose pixels of that class mostly
  lie in the region; one stroke per ``SUPERPIXELS_PER_STROKE`` superpixels;
* GrabCut: a box around the region (2 px margin), no corrective strokes, for
  regions whose box covers ``GRABCUT_MAX_SHARE`` of the image or less: 1 action.

Seeds, tolerances and granularities are chosen knowing the ground truth, as the
polygon's contour is: both annotators are ideal users of their tools.
:func:`response_times` measures the tools' response on one image (p95, ms).

    .venv/bin/python bench/first_labels_tools.py [--images 4] [--no-timing]
"""

from __future__ import annotations

import heapq
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from annotation.paint import Box  # noqa: E402
from annotation.smart import as_rgb8, grabcut, superpixels, wand_region  # noqa: E402

POLYGON_EPSILON = 1.5
STROKE_LENGTH = 100.0
OUTLINE_STROKE_LENGTH = 50.0
BRUSH_TILE = 128
MAX_BRUSH_RADIUS = 10.0
#: A pixel an action makes wrong costs this many right ones (it must be fixed again later).
BROKEN_WEIGHT = 2
MIN_REGION = 30
SUPERPIXELS_PER_STROKE = 8
WAND_TOLERANCES = (4, 8, 12, 16, 24, 32, 40, 48, 64)
WAND_EXTRA_SEEDS = 4
GRABCUT_MAX_SHARE = 0.6
VOID = 255


@dataclass
class Action:
    """A candidate action: paint ``region`` of ``box`` with ``value``; ``cost`` actions; ``tool`` for the tally."""

    value: int
    box: Box
    region: np.ndarray
    cost: int
    tool: str
    edge: np.ndarray | None = None  # brush pieces: the region's true edges inside the piece


def _edge(region: np.ndarray) -> np.ndarray:
    """Pixels of ``region`` with a 4-neighbour outside it (the image border does not count)."""
    padded = np.pad(region, 1, mode="edge")
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return region & ~inner


def brush_strokes(region: np.ndarray, edge: np.ndarray | None = None) -> int:
    """Brush strokes a careful person needs to paint exactly ``region``.

    A region whose mean width (area / skeleton length) is at most
    ``2 * MAX_BRUSH_RADIUS`` px is painted along its skeleton with a brush as
    wide as it: one stroke per ``STROKE_LENGTH`` px. A wider one is outlined
    with a thin brush along ``edge`` (its pixels next to another class; by
    default its own boundary), one careful stroke per ``OUTLINE_STROKE_LENGTH``
    px, and filled inside with one click.
    """
    from skimage.morphology import skeletonize

    area = int(region.sum())
    if area == 0:
        return 0
    length = max(int(skeletonize(region).sum()), 1)
    if area / length <= 2 * MAX_BRUSH_RADIUS:
        return max(1, math.ceil(length / STROKE_LENGTH))
    boundary = int((_edge(region) if edge is None else edge & region).sum())
    return math.ceil(boundary / OUTLINE_STROKE_LENGTH) + 1


def brush_pieces(value: int, box: Box, region: np.ndarray, tool: str) -> list[Action]:
    """Brush actions painting ``region``, one per ``BRUSH_TILE``-px tile it touches.

    A person stops brushing a large region (a membrane network) once the mask is
    good enough, and skips the parts another tool already got: pieces let the
    greedy loop do the same. Only the region's true edges need careful outlining,
    not the tile borders.
    """
    edge = _edge(region)
    out = []
    for y in range(0, box.height, BRUSH_TILE):
        for x in range(0, box.width, BRUSH_TILE):
            part = region[y : y + BRUSH_TILE, x : x + BRUSH_TILE]
            if part.any():
                part_edge = edge[y : y + BRUSH_TILE, x : x + BRUSH_TILE]
                sub = Box(box.y0 + y, box.x0 + x, box.y0 + y + part.shape[0], box.x0 + x + part.shape[1])
                out.append(Action(value, sub, part, brush_strokes(part, part_edge), tool, part_edge))
    return out


def _components(gt: np.ndarray, n_classes: int, min_area: int) -> list[tuple[int, Box, np.ndarray]]:
    """(class, box, region) of each 8-connected ground-truth region of at least ``min_area`` pixels, largest first."""
    import cv2

    out = []
    for c in range(n_classes):
        mask = (gt == c).astype(np.uint8)
        if not mask.any():
            continue
        n, lab, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        for i in range(1, n):
            x, y, w, h, area = (int(v) for v in stats[i])
            if area >= min_area:
                box = Box(y, x, y + h, x + w)
                out.append((c, box, lab[box.slices] == i))
    out.sort(key=lambda t: -int(t[2].sum()))
    return out


def _polygon(c: int, box: Box, region: np.ndarray) -> Action | None:
    import cv2

    contours, _ = cv2.findContours(region.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return None
    contour = max(contours, key=cv2.contourArea)
    approx = cv2.approxPolyDP(contour, POLYGON_EPSILON, True)
    if len(approx) < 3:
        return None
    filled = np.zeros(region.shape, np.uint8)
    cv2.fillPoly(filled, [approx], 1)
    return Action(c, box, filled.astype(bool), len(approx), "polygon")


def _score(act: Action, gt: np.ndarray) -> int:
    """Pixels of the right class minus scored pixels of another class in the action's region (ignores the mask)."""
    g = gt[act.box.slices][act.region]
    return int((g == act.value).sum()) - BROKEN_WEIGHT * int(((g != act.value) & (g != VOID)).sum())


def _wand(rgb: np.ndarray, gt: np.ndarray, c: int, box: Box, region: np.ndarray, rng) -> list[Action]:
    """Wand clicks for one region: per seed pixel, the tolerance with the best score; one action each."""
    import cv2

    dist = cv2.distanceTransform(np.pad(region.astype(np.uint8), 1), cv2.DIST_L2, 3)[1:-1, 1:-1]
    rr, qq = np.nonzero(region)
    colours = rgb[box.slices][region].astype(np.int32)
    median = np.median(colours, axis=0)
    picks = [int(dist[rr, qq].argmax())]  # the innermost pixel
    picks.append(int(np.abs(colours - median).sum(axis=1).argmin()))
    if rr.size >= 500:
        picks.extend(rng.choice(rr.size, WAND_EXTRA_SEEDS, replace=False).tolist())
    out = []
    for k in picks:
        x, y = box.x0 + int(qq[k]), box.y0 + int(rr[k])
        best: Action | None = None
        best_score = 0
        for t in WAND_TOLERANCES:
            got = wand_region(rgb, x, y, t)
            if got is None:
                continue
            act = Action(c, got[0], got[1], 1, "wand")
            s = _score(act, gt)
            if s > best_score:
                best, best_score = act, s
        if best is not None:
            out.append(best)
    return out


def _superpixel_actions(maps, gt: np.ndarray, comps, n_classes: int) -> dict[int, Action]:
    """The best superpixel-brush action per component index, over the given superpixel maps."""
    best: dict[int, tuple[float, Action]] = {}
    comp_id = np.full(gt.shape, -1, np.int32)
    for j, (_c, box, region) in enumerate(comps):
        comp_id[box.slices][region] = j
    for sp in maps:
        full = sp.labels[np.ix_(sp.rows, sp.cols)]
        n = sp.count
        scored = gt < n_classes
        counts = np.zeros((n, n_classes), np.int64)
        np.add.at(counts, (full[scored], gt[scored].astype(np.int64)), 1)
        major = counts.argmax(axis=1)
        # the component holding most of each superpixel's majority-class pixels
        in_comp = (comp_id >= 0) & scored
        key = full[in_comp].astype(np.int64) * (len(comps) + 1) + comp_id[in_comp]
        pairs, hits = np.unique(key, return_counts=True)
        sp_of, comp_of = pairs // (len(comps) + 1), pairs % (len(comps) + 1)
        owner = np.full(n, -1, np.int64)
        owned = np.zeros(n, np.int64)
        for s, j, h in zip(sp_of.tolist(), comp_of.tolist(), hits.tolist()):
            if comps[j][0] == major[s] and h > owned[s]:
                owner[s], owned[s] = j, h
        for j in np.unique(owner[owner >= 0]).tolist():
            ids = np.flatnonzero((owner == j) & (owned * 2 >= counts[np.arange(n), major]))
            got = sp.region_of(ids) if ids.size else None
            if got is None:
                continue
            act = Action(
                comps[j][0], got[0], got[1], max(1, math.ceil(ids.size / SUPERPIXELS_PER_STROKE)), "superpixel"
            )
            ratio = _score(act, gt) / act.cost
            if ratio > 0 and (j not in best or ratio > best[j][0]):
                best[j] = (ratio, act)
    return {j: a for j, (_, a) in best.items()}


def _candidates(image: np.ndarray, gt: np.ndarray, n_classes: int, smart: bool) -> list[Action]:
    comps = _components(gt, n_classes, MIN_REGION)
    acts: list[Action] = []
    for c, box, region in comps:
        poly = _polygon(c, box, region)
        if poly is not None:
            acts.append(poly)
        acts.extend(brush_pieces(c, box, region, "brush"))
    if not smart:
        return acts
    rgb = as_rgb8(image)
    rng = np.random.default_rng(0)
    h, w = gt.shape
    for c, box, region in comps:
        acts.extend(_wand(rgb, gt, c, box, region, rng))
        if box.area <= GRABCUT_MAX_SHARE * h * w and box.height >= 4 and box.width >= 4:
            grown = Box(max(0, box.y0 - 2), max(0, box.x0 - 2), min(h, box.y1 + 2), min(w, box.x1 + 2))
            got = grabcut(rgb, grown)
            if got is not None:
                acts.append(Action(c, got[0], got[1], 1, "grabcut"))
    maps = [superpixels(rgb, g) for g in ("coarse", "medium", "fine")]
    acts.extend(_superpixel_actions(maps, gt, comps, n_classes).values())
    return acts


def _gain(act: Action, labels: np.ndarray, gt: np.ndarray) -> int:
    cur = labels[act.box.slices][act.region]
    g = gt[act.box.slices][act.region]
    fixed = (g == act.value) & (cur != act.value)
    broken = (cur == g) & (g != act.value) & (g != VOID)
    return int(fixed.sum()) - BROKEN_WEIGHT * int(broken.sum())


def _apply(act: Action, labels: np.ndarray) -> None:
    labels[act.box.slices][act.region] = act.value


def _greedy(
    cands: list[Action],
    gt: np.ndarray,
    first: int,
    targets: tuple[float, ...],
    start: tuple[np.ndarray, str, int] | None = None,
) -> tuple[dict[float, int], dict[str, int]]:
    """Fill with ``first`` (or begin from ``start``: a label map, the tool that made it and what it
    cost), then the greedy loop over ``cands``, then brush fixes (see the module docstring)."""
    import cv2

    scored = gt != VOID
    total = max(int(scored.sum()), 1)
    labels = np.full(gt.shape, first, np.uint8) if start is None else start[0].astype(np.uint8, copy=True)
    tally: dict[str, int] = {}
    reached: dict[float, int] = {}
    actions = 0

    acc = 0.0

    def note(tool: str, cost: int) -> None:
        # An action of several strokes or vertices crossing a target is credited pro rata:
        # the person stops once the mask is good enough.
        nonlocal actions, acc
        before = acc
        acc = int((labels == gt)[scored].sum()) / total
        for t in targets:
            if t not in reached and acc >= t:
                share = (t - before) / (acc - before) if acc > before else 1.0
                reached[t] = actions + max(1, math.ceil(cost * share - 1e-9))
        actions += cost
        tally[tool] = tally.get(tool, 0) + cost

    def done() -> bool:
        return all(t in reached for t in targets)

    def cost(a: Action) -> int:
        # A brush piece is painted only where the mask is still wrong: fewer strokes once others did part of it.
        if a.tool != "brush":
            return a.cost
        return brush_strokes(a.region & (labels[a.box.slices] != a.value), a.edge)

    def ratio(a: Action) -> float:
        c = cost(a)
        return _gain(a, labels, gt) / c if c else 0.0

    if start is None:
        note("fill", 1)
    else:
        note(start[1], start[2])
    # Lazy greedy on net gain per action (gains only shrink as the mask improves, nearly always).
    heap = [(-ratio(a), i) for i, a in enumerate(cands)]
    heapq.heapify(heap)
    while heap and not done():
        neg, i = heapq.heappop(heap)
        if -neg <= 0:
            break
        now = ratio(cands[i])
        if heap and now < -heap[0][0]:
            heapq.heappush(heap, (-now, i))
            continue
        if now <= 0:
            break
        c = cost(cands[i])
        _apply(cands[i], labels)
        note(cands[i].tool, c)
    # Brush fixes: the wrong pixels, per true class, largest connected piece first.
    if not done():
        pieces = []
        for c in np.unique(gt[scored & (labels != gt)]).tolist():
            wrong = ((gt == c) & (labels != gt)).astype(np.uint8)
            n, lab, stats, _ = cv2.connectedComponentsWithStats(wrong, connectivity=8)
            for k in range(1, n):
                x, y, w, h, area = (int(v) for v in stats[k])
                box = Box(y, x, y + h, x + w)
                pieces.append((area, c, box, lab[box.slices] == k))
        pieces.sort(key=lambda p: -p[0])
        for _area, c, box, region in pieces:
            for act in brush_pieces(c, box, region, "brush fix"):
                if done():
                    break
                _apply(act, labels)
                note(act.tool, act.cost)
    for t in targets:
        reached.setdefault(t, actions)
    return reached, tally


def run(
    image: np.ndarray,
    gt: np.ndarray,
    n_classes: int,
    targets: tuple[float, ...],
    *,
    smart: bool,
    start: tuple[np.ndarray, str, int] | None = None,
) -> tuple[dict[float, int], dict[str, int]]:
    """Actions needed to reach each target (pixel accuracy, 0..1), and the actions per tool up to the last one.

    The first fill tries the two most frequent classes and keeps the run that
    reaches the highest target in fewer actions (a person picks the class that
    leaves less to draw). A target is always reached: the brush fixes end at 100 %.
    With ``start`` (labels, tool, actions it cost) the person corrects that label map instead.
    """
    gt = np.where(np.asarray(gt) < n_classes, gt, VOID).astype(np.uint8)
    values, counts = np.unique(gt[gt != VOID], return_counts=True)
    if values.size == 0:
        return {t: 0 for t in targets}, {}
    cands = _candidates(image, gt, n_classes, smart)
    if start is not None:  # a pre-label to correct (e.g. the pixel classifier's): no first fill
        return _greedy(cands, gt, 0, targets, start)
    best: tuple[dict[float, int], dict[str, int]] | None = None
    for first in values[np.argsort(-counts)][:2].tolist():
        got = _greedy(cands, gt, int(first), targets)
        if best is None or got[0][max(targets)] < best[0][max(targets)]:
            best = got
    assert best is not None
    return best


def simulate_manual(image: np.ndarray, gt: np.ndarray, n_classes: int, target: float) -> int:
    """Actions (clicks, strokes, vertices) to reach ``target`` pixel accuracy with brush, fill and polygon."""
    return run(image, gt, n_classes, (target,), smart=False)[0][target]


def simulate_smart(image: np.ndarray, gt: np.ndarray, n_classes: int, target: float) -> int:
    """Actions to reach ``target`` pixel accuracy when the wand, superpixel brush and GrabCut are added."""
    return run(image, gt, n_classes, (target,), smart=True)[0][target]


def response_times(image: np.ndarray, repeats: int = 20, seed: int = 0) -> dict[str, float]:
    """p95 response in ms of a wand click, a superpixel stroke segment and a GrabCut box on ``image``.

    The superpixel map is computed once first (in the app a worker does that when
    the image opens); the stroke is the per-mouse-move work: superpixels under
    the brush, their pixels, the paint through a document.
    """
    from annotation.editing import MaskDocument, capsule_region

    rgb = as_rgb8(image)
    h, w = rgb.shape[:2]
    rng = np.random.default_rng(seed)
    doc = MaskDocument(np.zeros((h, w), np.uint8))
    t0 = time.perf_counter()
    sp = superpixels(rgb, "medium")
    slic_s = time.perf_counter() - t0
    times: dict[str, list[float]] = {"wand": [], "superpixel stroke": [], "grabcut": []}
    for i in range(repeats):
        x, y = float(rng.uniform(0, w - 1)), float(rng.uniform(0, h - 1))
        t = time.perf_counter()
        got = wand_region(rgb, x, y, 24)
        if got is not None:
            doc.paint(*got, 1 + i % 3)
        times["wand"].append(time.perf_counter() - t)
        t = time.perf_counter()
        hit = capsule_region(x, y, x + 40, y + 15, 10, (h, w))
        if hit is not None:
            got = sp.region_of(sp.ids_in(*hit))
            if got is not None:
                doc.paint(*got, 1 + i % 3)
        times["superpixel stroke"].append(time.perf_counter() - t)
        bw, bh = int(rng.uniform(0.15, 0.5) * w), int(rng.uniform(0.15, 0.5) * h)
        bx, by = int(rng.uniform(0, w - bw)), int(rng.uniform(0, h - bh))
        t = time.perf_counter()
        grabcut(rgb, Box(by, bx, by + bh, bx + bw))
        times["grabcut"].append(time.perf_counter() - t)
    out = {k: 1000 * float(np.percentile(v, 95)) for k, v in times.items()}
    out["superpixels (worker, once per image)"] = 1000 * slic_s
    return out


def _load_pairs(dataset: str, n: int) -> list[tuple[str, np.ndarray, np.ndarray, int]]:
    from PIL import Image

    data = REPO.parent / "shared" / "data"
    out = []
    if dataset == "camvid":
        for p in sorted((data / "camvid_small" / "val" / "images").glob("*.png"))[:n]:
            gt = np.asarray(Image.open(data / "camvid_small" / "val" / "labels" / p.name))
            out.append((p.name, np.asarray(Image.open(p).convert("RGB")), gt, 11))
    else:
        for p in sorted((data / "isbi2012_membrane" / "image").glob("*.png"), key=lambda q: int(q.stem))[:n]:
            gt = (np.asarray(Image.open(data / "isbi2012_membrane" / "label" / p.name)) > 127).astype(np.uint8)
            out.append((p.name, np.asarray(Image.open(p)), gt, 2))
    return out


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=4, help="images per dataset")
    ap.add_argument("--no-timing", action="store_true")
    args = ap.parse_args()
    targets = (0.90, 0.95)
    for dataset in ("camvid", "isbi"):
        sums = {(s, t): 0 for s in (False, True) for t in targets}
        pairs = _load_pairs(dataset, args.images)
        for name, image, gt, n in pairs:
            for smart in (False, True):
                t0 = time.perf_counter()
                reached, tally = run(image, gt, n, targets, smart=smart)
                for t in targets:
                    sums[(smart, t)] += reached[t]
                kind = "smart " if smart else "manual"
                print(f"{dataset} {name} {kind}: {reached} {tally} ({time.perf_counter() - t0:.1f} s)", flush=True)
        k = max(len(pairs), 1)
        for t in targets:
            a, b = sums[(False, t)] / k, sums[(True, t)] / k
            print(f"{dataset} to {t:.0%}: {a:.1f} actions/image manual, {b:.1f} smart ({a / max(b, 1e-9):.1f}x fewer)")
    if not args.no_timing:
        import cv2
        from PIL import Image

        p = sorted((REPO.parent / "shared" / "data" / "camvid_small" / "val" / "images").glob("*.png"))[0]
        big = cv2.resize(np.asarray(Image.open(p).convert("RGB")), (1732, 1155), interpolation=cv2.INTER_CUBIC)
        res = response_times(big)
        print("response p95 on 1732x1155 (2.0 MP): " + ", ".join(f"{k} {v:.0f} ms" for k, v in res.items()))


if __name__ == "__main__":
    main()
