"""Make the rough starter masks shipped with the sample images (resources/samples/masks).

No pretrained network is available offline, so the sample project's
"pre-labels" come from a few hand-written colour and shape rules per image.
They are deliberately rough: good enough that a new user sees an overlay to
correct on first start, and honestly nothing more. They are NOT model output.

Run from the repository root::

    .venv/bin/python scripts/make_sample_masks.py

It rewrites ``resources/samples/masks/<image stem>.png`` (indexed PNGs of class
indices) and ``resources/samples/classes.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from annotation.masks import write_mask_png  # noqa: E402

SAMPLES = REPO / "resources" / "samples"

#: The sample project's classes: (index, name, colour, is_background).
CLASSES = [
    (0, "background", (0, 0, 0), True),
    (1, "person", (190, 70, 230), False),
    (2, "cat", (60, 180, 75), False),
    (3, "cup", (255, 200, 40), False),
    (4, "sky", (70, 130, 230), False),
]
BG, PERSON, ANIMAL, CUP, SKY = range(5)


def _channels(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    f = rgb.astype(np.int32)
    return f[..., 0], f[..., 1], f[..., 2]


def _ellipse(shape: tuple[int, int], cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0


def astronaut(rgb: np.ndarray) -> np.ndarray:
    """Person: the orange suit (strongly orange pixels left of the model shuttle) plus a head ellipse."""
    r, g, b = _channels(rgb)
    h, w = r.shape
    xx = np.arange(w)[None, :]
    suit = (r > 130) & (r - b > 80) & (g < r - 20) & (xx > 25) & (xx < 330)
    head = _ellipse((h, w), 228, 110, 62, 80)
    out = np.full((h, w), BG, np.uint8)
    out[suit | head] = PERSON
    return out


def chelsea(rgb: np.ndarray) -> np.ndarray:
    """Animal: the warm-toned fur (red clearly above blue), minus the pale top-right corner."""
    r, g, b = _channels(rgb)
    out = np.full(r.shape, BG, np.uint8)
    out[(r - b > 35) & (r < 250)] = ANIMAL
    return out


def coffee(rgb: np.ndarray) -> np.ndarray:
    """Cup: the red saucer/cup and the white porcelain, inside an ellipse around the saucer."""
    r, g, b = _channels(rgb)
    h, w = r.shape
    red = (r > 90) & (r > 1.8 * g) & (r > 1.6 * b)
    white = (np.minimum(np.minimum(r, g), b) > 170) & (
        np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b) < 45
    )
    near = _ellipse((h, w), 300, 200, 230, 200)
    out = np.full((h, w), BG, np.uint8)
    out[(red | white) & near] = CUP
    return out


def rocket(rgb: np.ndarray) -> np.ndarray:
    """Sky: blue-dominant pixels above the horizon line."""
    r, g, b = _channels(rgb)
    h, w = r.shape
    yy = np.arange(h)[:, None]
    out = np.full((h, w), BG, np.uint8)
    out[(b > r + 25) & (b > 60) & (yy < 345)] = SKY
    return out


RULES = {"astronaut": astronaut, "chelsea": chelsea, "coffee": coffee, "rocket": rocket}


def main() -> int:
    palette = np.zeros((256, 3), np.uint8)
    palette[255] = (224, 224, 192)
    for idx, _name, colour, _bg in CLASSES:
        palette[idx] = colour
    (SAMPLES / "masks").mkdir(parents=True, exist_ok=True)
    for path in sorted((SAMPLES / "images").iterdir()):
        rule = RULES.get(path.stem)
        if rule is None:
            continue
        rgb = np.asarray(Image.open(path).convert("RGB"))
        mask = rule(rgb)
        # A 7x7 majority filter removes the speckle the colour rules leave.
        mask = np.asarray(Image.fromarray(mask, "L").filter(ImageFilter.ModeFilter(7)))
        write_mask_png(SAMPLES / "masks" / f"{path.stem}.png", np.ascontiguousarray(mask), palette)
        shares = np.bincount(mask.ravel(), minlength=5)[:5] / mask.size
        print(f"{path.name}: " + ", ".join(f"{CLASSES[i][1]} {s:.0%}" for i, s in enumerate(shares) if s))
    (SAMPLES / "classes.json").write_text(
        json.dumps(
            [{"index": i, "name": n, "colour": list(c), "is_background": bg} for i, n, c, bg in CLASSES], indent=2
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
