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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, UnidentifiedImageError

from ..classes import IGNORE_NAME, make_class, read_class_file, read_json
from ..errors import AtrousReadError, ImageReadError
from ..imageio import open_guarded, read_image_info, read_image_info_bytes
from ..masks import VOID
from . import ImportedItem, ImportResult, check_stop
from .guards import (
    beyond_window,
    check_coordinates,
    check_fill_cost,
    clip_polygon,
    clip_segments,
    is_inside,
    resolve_inside,
    wholly_outside,
)

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

    what = f"{path}: shape {k} ({stype})"
    pts = np.array(xy, dtype=np.float64).reshape(-1, 2)
    check_coordinates(pts, what)

    def inside(reach: float = 0.0) -> None:
        if wholly_outside(pts, width, height, reach):
            raise AtrousReadError(f"{what} lies wholly outside the {width}x{height} image")

    if stype == "circle":
        need(2)
        (cx, cy), (px, py) = xy
        d = math.hypot(cx - px, cy - py)
        inside(d)
        if beyond_window(pts[:1], width, height, d):  # PIL walks the whole ellipse: fill it here, row by row
            r2 = d * d - (np.arange(height) - cy) ** 2
            half = np.where(r2 >= 0, np.sqrt(np.maximum(r2, 0.0)), -1.0)
            return np.abs(np.arange(width)[None, :] - cx) <= half[:, None]
        draw.ellipse([cx - d, cy - d, cx + d, cy + d], outline=1, fill=1)
    elif stype == "rectangle":
        need(2)
        inside()
        # Clamped just past the edges: the pixels inside do not change. Newer Pillow refuses
        # x1 > x0; labelme's corners can come in any order.
        (x1, y1), (x2, y2) = np.clip(pts, -1.0, [width, height]).tolist()
        draw.rectangle([min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)], outline=1, fill=1)
    elif stype in ("line", "linestrip"):
        need(2, exact=stype == "line")
        inside(LINE_WIDTH)
        for seg in clip_segments(pts, width, height):
            draw.line(xy=list(map(tuple, seg.tolist())), fill=1, width=LINE_WIDTH)
    elif stype == "point":
        need(1)
        inside(POINT_SIZE)
        cx, cy = xy[0]
        draw.ellipse([cx - POINT_SIZE, cy - POINT_SIZE, cx + POINT_SIZE, cy + POINT_SIZE], outline=1, fill=1)
    elif stype == "mask":
        need(2)
        return _mask_shape(height, width, shape, xy, path, k)
    elif stype == "polygon":
        if len(xy) < 3:
            raise AtrousReadError(f"{path}: shape {k} (polygon) has fewer than 3 points")
        inside()
        clipped = clip_polygon(pts, width, height)
        check_fill_cost([clipped], height, what, rows=True)
        if len(clipped) >= 3:
            draw.polygon(xy=list(map(tuple, clipped.tolist())), outline=1, fill=1)
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
        with open_guarded(io.BytesIO(base64.b64decode(data, validate=False)), f"{path}: shape {k} (mask)") as im:
            small = np.asarray(im.convert("L")) > 0
    except (binascii.Error, UnidentifiedImageError, OSError, ValueError) as e:
        raise AtrousReadError(f"{path}: shape {k} (mask): undecodable mask image ({e})") from e
    (x1, y1), (x2, y2) = [(int(x), int(y)) for x, y in xy]
    if x2 < 0 or y2 < 0 or x1 >= width or y1 >= height:
        raise AtrousReadError(f"{path}: shape {k} (mask) lies wholly outside the {width}x{height} image")
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


def _locate_image(data: dict[str, Any], path: Path, root: Path, allow_outside: bool) -> tuple[Path, bytes | None]:
    """The image of a labelme file: ``imagePath`` (relative to the file) when it is there, else the
    ``imageData`` copy in the file (also when ``imagePath`` leads outside ``root``: it is not read there)."""
    name = data.get("imagePath")
    if not isinstance(name, str) or not name:
        raise AtrousReadError(f"{path}: 'imagePath' must be a non-empty string")
    name = name.replace("\\", "/")
    image_path = path.parent / name
    outside = not allow_outside and not is_inside(image_path, root)
    if outside and not isinstance(data.get("imageData"), str):
        resolve_inside(path.parent, name, str(path), root=root, allow_outside=False)  # says why, naming both
    if not outside and image_path.is_file():
        return image_path, None
    image_data = data.get("imageData")
    if not isinstance(image_data, str):
        raise AtrousReadError(f"{path}: image {image_path} not found and the file has no imageData")
    try:
        embedded = base64.b64decode(image_data, validate=False)
    except (binascii.Error, ValueError) as e:
        raise AtrousReadError(f"{path}: imageData is not valid base64 ({e})") from e
    return (path.parent / Path(name).name if outside else image_path), embedded


def _check_declared_size(w: int, h: int, image_path: Path, embedded: bytes | None, path: Path) -> None:
    """Refuse ``imageWidth`` x ``imageHeight`` unless it is the image's size (upright, or as stored
    for an EXIF-rotated image), read from the image's header."""
    try:
        if embedded is None:
            info = read_image_info(image_path)
        else:
            info = read_image_info_bytes(embedded, f"{path}: imageData")
    except ImageReadError as e:
        raise AtrousReadError(f"{path}: image {e}") from e
    stored = (info.height, info.width) if info.orientation >= 5 else (info.width, info.height)
    if (w, h) not in {(info.width, info.height), stored}:
        raise AtrousReadError(
            f"{path}: imageWidth x imageHeight is {w}x{h} but the image "
            f"{'in imageData' if embedded is not None else image_path.name} is {info.width}x{info.height}"
        )


def read_labelme(
    src: str | os.PathLike[str],
    classes_file: str | os.PathLike[str] | None = None,
    *,
    images_dir: str | os.PathLike[str] | None = None,
    allow_outside: bool = False,
    on_progress: Callable[[int, int, str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> ImportResult:
    """Read labelme JSON files under ``src`` (a folder, searched recursively, or one file).

    JSON files without a ``shapes`` key are not labelme files and are skipped
    with a warning; anything malformed in a labelme file aborts with its name.
    An ``imagePath`` must resolve inside ``images_dir`` (default: the labelme folder)
    unless ``allow_outside``; when it does not, the file's embedded ``imageData`` is
    used instead, and without one the file is refused. ``on_progress(done, total, name)``
    follows the JSON files; ``should_stop()`` is asked before each one and raises
    :class:`~annotation.formats.Cancelled` (nothing has been written).
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
    root = Path(images_dir) if images_dir is not None else folder
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
    for done, path in enumerate(files, start=1):
        check_stop(should_stop, "import")
        data = read_json(path)
        if not isinstance(data, dict) or "shapes" not in data:
            warnings.append(f"{path}: not a labelme file (no 'shapes'); skipped")
            if on_progress is not None:
                on_progress(done, len(files), path.name)
            continue
        shapes = data["shapes"]
        if not isinstance(shapes, list):
            raise AtrousReadError(f"{path}: 'shapes' must be a list")
        h, w = data.get("imageHeight"), data.get("imageWidth")
        if not isinstance(h, int) or not isinstance(w, int) or isinstance(h, bool) or h <= 0 or w <= 0:
            raise AtrousReadError(f"{path}: 'imageHeight' / 'imageWidth' must be positive integers")
        image_path, embedded = _locate_image(data, path, root, allow_outside)
        _check_declared_size(w, h, image_path, embedded, path)  # before a (h, w) array is made
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
        if on_progress is not None:
            on_progress(done, len(files), path.name)
    if not items:
        raise AtrousReadError(f"{src}: no labelme JSON files found")
    return ImportResult(items=items, classes=classes, warnings=warnings)
