"""labelme JSON files (versions 4 and 5) rasterised the way labelme's VOC converter does.

labelme's ``labelme2voc.py`` turns each file into a class map with
``shapes_to_label``: shapes are painted **in file order**, later over earlier,
with these rasterisations (PIL ``ImageDraw`` on the upright image size):

* polygon: ``polygon(points, outline=1, fill=1)`` (needs 3+ points)
* rectangle: ``rectangle(two corners, outline=1, fill=1)``
* circle: ``ellipse`` around the centre with radius = distance to the 2nd point
* line / linestrip: ``line(points, width=10)``
* point: filled circle of radius 5
* mask: the base64 PNG in ``shape["mask"]`` placed with its top-left at the first
  point (truncated to int), as ``mask[y1:y2+1, x1:x2+1] = shape_mask``

Class ids come from a labels file (labelme's ``labels.txt``: ``__ignore__``
first = void 255, ``_background_`` = 0, then 1, 2, ...). Without one, classes
are made in order of first appearance with ``_background_`` at 0.
Unlabelled pixels are background (0).
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, UnidentifiedImageError

from ..classes import IGNORE_NAME, make_class, read_class_file, read_json
from ..errors import AtrousReadError
from ..masks import VOID
from . import ImportedItem, ImportResult

LINE_WIDTH = 10
POINT_SIZE = 5


def _points(shape: dict[str, Any], path: Path, k: int) -> list[tuple[float, float]]:
    pts = shape.get("points")
    if not isinstance(pts, list):
        raise AtrousReadError(f"{path}: shape {k} has no 'points' list")
    out = []
    for p in pts:
        if (
            not isinstance(p, (list, tuple))
            or len(p) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in p)
        ):
            raise AtrousReadError(f"{path}: shape {k} has a point that is not [x, y] numbers: {p!r}")
        out.append((float(p[0]), float(p[1])))
    return out


def shape_to_mask(height: int, width: int, shape: dict[str, Any], path: Path, k: int) -> np.ndarray:
    """Rasterise one labelme shape to a bool mask of the image size (labelme's rules)."""
    stype = shape.get("shape_type") or "polygon"
    xy = _points(shape, path, k)
    img = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(img)

    def need(n: int, exact: bool = True) -> None:
        if (len(xy) != n) if exact else (len(xy) < n):
            raise AtrousReadError(
                f"{path}: shape {k} ({stype}) needs {'' if exact else 'at least '}{n} points, has {len(xy)}"
            )

    if stype == "circle":
        need(2)
        (cx, cy), (px, py) = xy
        d = math.hypot(cx - px, cy - py)
        draw.ellipse([cx - d, cy - d, cx + d, cy + d], outline=1, fill=1)
    elif stype == "rectangle":
        need(2)
        (x1, y1), (x2, y2) = xy
        # Newer Pillow refuses x1 > x0; labelme's corners can come in any order.
        draw.rectangle([min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)], outline=1, fill=1)
    elif stype == "line":
        need(2)
        draw.line(xy=xy, fill=1, width=LINE_WIDTH)
    elif stype == "linestrip":
        need(2, exact=False)
        draw.line(xy=xy, fill=1, width=LINE_WIDTH)
    elif stype == "point":
        need(1)
        cx, cy = xy[0]
        draw.ellipse([cx - POINT_SIZE, cy - POINT_SIZE, cx + POINT_SIZE, cy + POINT_SIZE], outline=1, fill=1)
    elif stype == "mask":
        need(2)
        return _mask_shape(height, width, shape, xy, path, k)
    elif stype == "polygon":
        if len(xy) < 3:
            raise AtrousReadError(f"{path}: shape {k} (polygon) has fewer than 3 points")
        draw.polygon(xy=xy, outline=1, fill=1)
    else:
        raise AtrousReadError(f"{path}: shape {k} has unknown shape_type {stype!r}")
    return np.asarray(img, dtype=bool)


def _mask_shape(
    height: int, width: int, shape: dict[str, Any], xy: list[tuple[float, float]], path: Path, k: int
) -> np.ndarray:
    data = shape.get("mask")
    if not isinstance(data, str):
        raise AtrousReadError(f"{path}: shape {k} (mask) has no base64 'mask' data")
    try:
        with Image.open(io.BytesIO(base64.b64decode(data, validate=False))) as im:
            small = np.asarray(im.convert("L")) > 0
    except (binascii.Error, UnidentifiedImageError, OSError, ValueError) as e:
        raise AtrousReadError(f"{path}: shape {k} (mask): undecodable mask image ({e})") from e
    (x1, y1), (x2, y2) = [(int(x), int(y)) for x, y in xy]
    if (y2 - y1 + 1, x2 - x1 + 1) != small.shape:
        raise AtrousReadError(
            f"{path}: shape {k} (mask): mask image is {small.shape[1]}x{small.shape[0]} but its box is {x2 - x1 + 1}x{y2 - y1 + 1}"
        )
    out = np.zeros((height, width), dtype=bool)
    # Clip the box to the image (labelme would fail on a box past the edge).
    ys0, xs0 = max(y1, 0), max(x1, 0)
    ys1, xs1 = min(y2 + 1, height), min(x2 + 1, width)
    if ys1 > ys0 and xs1 > xs0:
        out[ys0:ys1, xs0:xs1] = small[ys0 - y1 : ys1 - y1, xs0 - x1 : xs1 - x1]
    return out


def _find_labels_file(src: Path) -> Path | None:
    for folder in (src, src.parent):
        for name in ("labels.txt", "class_names.txt"):
            if (folder / name).is_file():
                return folder / name
    return None


def read_labelme(src: str | os.PathLike[str], classes_file: str | os.PathLike[str] | None = None) -> ImportResult:
    """Read labelme JSON files under ``src`` (a folder, searched recursively, or one file).

    JSON files without a ``shapes`` key are not labelme files and are skipped
    with a warning; anything malformed in a labelme file aborts with its name.
    """
    src = Path(src)
    if src.is_file():
        files = [src]
        folder = src.parent
    elif src.is_dir():
        files = sorted(
            p for p in src.rglob("*.json") if not any(part.startswith(".") for part in p.relative_to(src).parts)
        )
        folder = src
    else:
        raise AtrousReadError(f"{src}: no such file or folder")
    warnings: list[str] = []
    if classes_file is None:
        classes_file = _find_labels_file(folder)
        if classes_file is not None:
            warnings.append(f"using class list {classes_file}")
    fixed = classes_file is not None
    if fixed:
        classes, void_names = read_class_file(classes_file)
        void_names |= {IGNORE_NAME}
    else:
        classes, void_names = [make_class(0, "_background_")], {IGNORE_NAME}
    value_of = {c.name: c.index for c in classes}
    bg = next((c.index for c in classes if c.is_background), None)

    items: list[ImportedItem] = []
    for path in files:
        data = read_json(path)
        if not isinstance(data, dict) or "shapes" not in data:
            warnings.append(f"{path}: not a labelme file (no 'shapes'); skipped")
            continue
        shapes = data["shapes"]
        if not isinstance(shapes, list):
            raise AtrousReadError(f"{path}: 'shapes' must be a list")
        h, w = data.get("imageHeight"), data.get("imageWidth")
        if not isinstance(h, int) or not isinstance(w, int) or isinstance(h, bool) or h <= 0 or w <= 0:
            raise AtrousReadError(f"{path}: 'imageHeight' / 'imageWidth' must be positive integers")
        image_path_s = data.get("imagePath")
        if not isinstance(image_path_s, str) or not image_path_s:
            raise AtrousReadError(f"{path}: 'imagePath' must be a non-empty string")
        image_path = path.parent / image_path_s.replace("\\", "/")
        embedded = None
        if not image_path.is_file():
            image_data = data.get("imageData")
            if not isinstance(image_data, str):
                raise AtrousReadError(f"{path}: image {image_path} not found and the file has no imageData")
            try:
                embedded = base64.b64decode(image_data, validate=False)
            except (binascii.Error, ValueError) as e:
                raise AtrousReadError(f"{path}: imageData is not valid base64 ({e})") from e
        label_map = np.full((h, w), 0 if bg is None else bg, dtype=np.uint8)
        for k, shape in enumerate(shapes):
            if not isinstance(shape, dict):
                raise AtrousReadError(f"{path}: shape {k} is not an object")
            label = shape.get("label")
            if not isinstance(label, str):
                raise AtrousReadError(f"{path}: shape {k} has no string 'label'")
            if label in void_names:
                value = VOID
            elif label in value_of:
                value = value_of[label]
            elif fixed:
                raise AtrousReadError(f"{path}: shape {k} has label {label!r}, which is not in {classes_file}")
            else:
                value = len(classes)
                if value >= VOID:
                    raise AtrousReadError(f"{path}: more than 255 labels")
                classes.append(make_class(value, label))
                value_of[label] = value
            label_map[shape_to_mask(h, w, shape, path, k)] = value
        items.append(ImportedItem(image_path=image_path, mask=label_map, source=path, embedded_image=embedded))
    if not items:
        raise AtrousReadError(f"{src}: no labelme JSON files found")
    return ImportResult(items=items, classes=classes, warnings=warnings)
