"""COCO instances JSON: import (polygons, compressed and uncompressed RLE) and export.

Import rules
------------
* Required: ``images`` (``id``, ``file_name``), ``annotations`` (``image_id``,
  ``category_id``, ``segmentation``) and ``categories`` (``id``, ``name``).
  Optional fields (``area``, ``bbox``, ``iscrowd``, ``width``/``height``, ``info``...)
  may be missing; a missing required field is an error naming the field.
* Class indices: a category's index is its id when all ids are in 0..254 (so
  labelme's ``0 = _background_`` stays 0), otherwise ids are renumbered 1..N in
  id order. A category named background/_background_ is the background class;
  if there is none and index 0 is free, a ``background`` class is added at 0.
* Painting: pixels start as background (void 255 if index 0 is a real class);
  annotations are painted **in file order, later annotations over earlier
  ones** (the order labelme writes them); ``iscrowd`` regions are painted with
  their category like any other.
* Polygon fill rule (``polygon_fill``): ``"coco"`` rasterises with pycocotools,
  exactly as ``COCO.annToMask`` does; ``"labelme"`` fills with PIL
  ``ImageDraw.polygon(outline=1, fill=1)`` like labelme's own converters, which
  also covers the pixels the outline passes through. ``"auto"`` (default) picks
  ``"labelme"`` for files written by labelme2coco (a category ``_background_``)
  and ``"coco"`` otherwise. On labelme's example the two differ by 600-1100
  boundary pixels per image; the labelme rule reproduces labelme's VOC PNGs.
* Bounds (see :mod:`.guards`): a ``file_name`` resolving outside the images folder
  is refused unless ``allow_outside``; polygons reaching more than one image size
  past the image are clipped first (the pixels inside do not change); a polygon
  wholly outside its image, or one too long to fill, is an error naming it.
* Images without any annotation are imported without a mask (status ``new``),
  except in files written by Atrous, whose images carry ``atrous_labelled``
  (an all-background image is a finished label too).

Export rules
------------
* One annotation per 4-connected component per class (``per_class=True``: one
  per class per image); background and void are not annotated.
* Segmentation is compressed RLE (counts as str) by default. With
  ``polygons=True`` components without holes become pixel-edge polygons
  (exact under pycocotools); components with holes stay RLE and are counted as
  inexact polygons in the summary.
* Category ids are 1..N in class-index order; names are the project's names.
  Each category carries ``atrous_index``, each image with void pixels carries
  ``atrous_void`` (RLE), and ``info.atrous_background`` names the background
  class, so re-importing an Atrous export is exact; other readers ignore them.
* ``iscrowd`` is 0; ``area`` is the pixel count; ``bbox`` is pixel-exact.
* Images are written to ``OUT/images/`` (originals copied when not EXIF-rotated,
  otherwise upright PNG) and ``file_name`` is relative to that folder.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ..classes import BACKGROUND_NAMES, classes_json, read_json
from ..errors import AtrousReadError
from ..geometry import class_components, mask_bbox, mask_to_polygons, mask_to_rle, polygons_to_mask, rle_to_mask
from ..imageio import read_image_info
from ..masks import VOID
from ..project import LabelClass, Project, default_colour
from . import ExportFolder, ImportedItem, ImportResult, check_image_fits, check_stop, export_image_bytes, unique_names
from .guards import check_coordinates, check_fill_cost, clip_polygon, resolve_inside, wholly_outside
from .voc import EXPORT_FRAME, ExportSummary


def _field(obj: Any, key: str, where: str, path: Path, types: type | tuple[type, ...]) -> Any:
    if not isinstance(obj, dict):
        raise AtrousReadError(f"{path}: {where} is not an object")
    if key not in obj:
        raise AtrousReadError(f"{path}: {where} has no '{key}' field")
    value = obj[key]
    if (
        not isinstance(value, types)
        or isinstance(value, bool)
        and bool not in (types if isinstance(types, tuple) else (types,))
    ):
        raise AtrousReadError(f"{path}: {where} field '{key}' has the wrong type ({type(value).__name__})")
    return value


#: Annotations decoded between two progress reports (there may be hundreds of thousands).
_PROGRESS_EVERY = 64


def read_coco(
    json_path: str | os.PathLike[str],
    images_dir: str | os.PathLike[str] | None = None,
    *,
    polygon_fill: str = "auto",
    allow_outside: bool = False,
    on_progress: Callable[[int, int, str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> ImportResult:
    """Read a COCO instances JSON; ``file_name`` is resolved against ``images_dir`` (default: the JSON's folder).

    ``polygon_fill`` is ``"auto"``, ``"coco"`` or ``"labelme"`` (see the module docstring).
    A ``file_name`` that resolves outside that folder (absolute, ``..``, a symlink out) is
    refused unless ``allow_outside``. After the JSON is parsed, ``on_progress(done, total, name)``
    follows the images (header checks), then the annotations (decoding); ``should_stop()`` is
    asked before each and raises :class:`~annotation.formats.Cancelled` (nothing has been written).
    """
    if polygon_fill not in ("auto", "coco", "labelme"):
        raise ValueError(f"polygon_fill must be auto, coco or labelme, not {polygon_fill!r}")
    path = Path(json_path)
    base = Path(images_dir) if images_dir is not None else path.parent
    data = read_json(path)
    if not isinstance(data, dict):
        raise AtrousReadError(f"{path}: the top level must be an object with images, annotations, categories")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise AtrousReadError(
                f"{path}: missing required field '{key}'"
                + (" (a list of {id, name} objects naming the classes)" if key == "categories" else "")
            )
        if not isinstance(data[key], list):
            raise AtrousReadError(f"{path}: field '{key}' must be a list, not {type(data[key]).__name__}")

    # -- categories -> classes
    cats: list[tuple[int, str, int | None]] = []
    for i, c in enumerate(data["categories"]):
        cid = _field(c, "id", f"categories[{i}]", path, int)
        name = _field(c, "name", f"categories[{i}]", path, str)
        hint = c.get("atrous_index")
        cats.append((cid, name, hint if isinstance(hint, int) and not isinstance(hint, bool) else None))
    ids = [c[0] for c in cats]
    if len(set(ids)) != len(ids):
        raise AtrousReadError(f"{path}: duplicate category ids")
    names = [c[1] for c in cats]
    if len(set(names)) != len(names):
        raise AtrousReadError(f"{path}: duplicate category names")
    hints = [c[2] for c in cats]
    if all(h is not None and 0 <= h < VOID for h in hints) and len(set(hints)) == len(hints) and cats:
        index_of = {cid: h for (cid, _, h) in cats}  # an Atrous export: restore the original indices
    elif all(0 <= cid < VOID for cid in ids):
        index_of = {cid: cid for cid in ids}
    else:
        if len(ids) >= VOID:
            raise AtrousReadError(f"{path}: {len(ids)} categories; at most 254 fit (class indices 1..254, 255 is void)")
        index_of = {cid: k + 1 for k, cid in enumerate(sorted(ids))}
    classes = [LabelClass(index_of[cid], name, default_colour(index_of[cid]), False) for cid, name, _ in cats]
    info = data.get("info") if isinstance(data.get("info"), dict) else {}
    bg_hint = info.get("atrous_background") if isinstance(info, dict) else None
    bg_index: int | None = None
    for k, c in enumerate(classes):
        if c.name.lower() in BACKGROUND_NAMES and bg_index is None:
            classes[k] = LabelClass(c.index, c.name, c.colour, True)
            bg_index = c.index
    if (
        bg_index is None
        and isinstance(bg_hint, dict)
        and isinstance(bg_hint.get("index"), int)
        and isinstance(bg_hint.get("name"), str)
    ):
        if not 0 <= bg_hint["index"] < VOID:
            raise AtrousReadError(
                f"{path}: info.atrous_background.index must be a class index 0..254, not {bg_hint['index']}"
            )
        if bg_hint["index"] not in {c.index for c in classes}:
            bg_index = int(bg_hint["index"])
            classes.append(LabelClass(bg_index, bg_hint["name"], default_colour(bg_index), True))
    if (
        bg_index is None
        and 0 not in {c.index for c in classes}
        and not (isinstance(info, dict) and "atrous_background" in info)
    ):
        bg_index = 0
        classes.append(LabelClass(0, "background", default_colour(0), True))
    fill = VOID if bg_index is None else bg_index
    if polygon_fill == "auto":
        polygon_fill = "labelme" if any(name == "_background_" for name in names) else "coco"
    classes.sort(key=lambda c: c.index)

    # -- images
    images: dict[int, dict[str, Any]] = {}
    order: list[int] = []
    seen_files: dict[Path, int] = {}
    n_images, total = len(data["images"]), len(data["images"]) + len(data["annotations"])
    for i, im in enumerate(data["images"]):
        check_stop(should_stop, "import")
        iid = _field(im, "id", f"images[{i}]", path, int)
        fname = _field(im, "file_name", f"images[{i}] (id {iid})", path, str)
        if iid in images:
            raise AtrousReadError(f"{path}: image id {iid} appears twice")
        img_path = resolve_inside(base, fname, f"{path}: image id {iid}", allow_outside=allow_outside)
        if img_path in seen_files:
            raise AtrousReadError(f"{path}: file_name {fname!r} is used by images {seen_files[img_path]} and {iid}")
        seen_files[img_path] = iid
        if not img_path.is_file():
            raise AtrousReadError(f"{path}: image {fname!r} (id {iid}) not found at {img_path}")
        try:
            info_ = read_image_info(img_path)
        except AtrousReadError as e:
            raise AtrousReadError(f"{path}: image id {iid}: {e}") from e
        w, h = info_.width, info_.height
        for key, actual in (("width", w), ("height", h)):
            if key in im and im[key] is not None:
                if not isinstance(im[key], int) or isinstance(im[key], bool):
                    raise AtrousReadError(
                        f"{path}: images[{i}] field '{key}' has the wrong type ({type(im[key]).__name__})"
                    )
                if im[key] != actual:
                    raise AtrousReadError(
                        f"{path}: image {fname!r} is {w}x{h} but the JSON says {im.get('width')}x{im.get('height')}"
                    )
        images[iid] = {"path": img_path, "w": w, "h": h, "mask": None, "void": im.get("atrous_void")}
        if im.get("atrous_labelled") is True:
            images[iid]["mask"] = _start_mask(h, w, fill, images[iid]["void"], path, iid)
        order.append(iid)
        if on_progress is not None:
            on_progress(i + 1, total, img_path.name)

    # -- annotations, painted in file order
    for i, ann in enumerate(data["annotations"]):
        check_stop(should_stop, "import")
        aid = ann.get("id", i) if isinstance(ann, dict) else i
        where = f"annotation id {aid}"
        iid = _field(ann, "image_id", where, path, int)
        cid = _field(ann, "category_id", where, path, int)
        seg = _field(ann, "segmentation", where, path, (list, dict))
        if iid not in images:
            raise AtrousReadError(f"{path}: {where} refers to image id {iid}, which is not in 'images'")
        if cid not in index_of:
            raise AtrousReadError(f"{path}: {where} refers to category id {cid}, which is not in 'categories'")
        im = images[iid]
        region = _decode_segmentation(seg, im["h"], im["w"], path, f"{where} (image {im['path'].name})", polygon_fill)
        if im["mask"] is None:
            im["mask"] = _start_mask(im["h"], im["w"], fill, im["void"], path, iid)
        im["mask"][region] = index_of[cid]
        if on_progress is not None and (i % _PROGRESS_EVERY == 0 or i + 1 == len(data["annotations"])):
            on_progress(n_images + i + 1, total, f"annotation {aid}")

    items = [ImportedItem(image_path=images[i]["path"], mask=images[i]["mask"], source=path) for i in order]
    return ImportResult(items=items, classes=classes)


def _start_mask(h: int, w: int, fill: int, void: Any, path: Path, iid: int) -> np.ndarray:
    mask = np.full((h, w), fill, dtype=np.uint8)
    if isinstance(void, dict):
        mask[_decode_segmentation(void, h, w, path, f"image id {iid} atrous_void")] = VOID
    return mask


def _decode_segmentation(seg: Any, h: int, w: int, path: Path, where: str, polygon_fill: str = "coco") -> np.ndarray:
    if isinstance(seg, dict):
        if "counts" not in seg or "size" not in seg:
            raise AtrousReadError(f"{path}: {where}: RLE needs 'counts' and 'size'")
        size = seg["size"]
        if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) for v in size)):
            raise AtrousReadError(f"{path}: {where}: RLE 'size' must be [height, width]")
        if list(size) != [h, w]:
            raise AtrousReadError(f"{path}: {where}: RLE size {size} disagrees with the image size [{h}, {w}]")
        counts = seg["counts"]
        if isinstance(counts, list):
            if not all(isinstance(v, int) and v >= 0 for v in counts) or sum(counts) != h * w:
                raise AtrousReadError(
                    f"{path}: {where}: uncompressed RLE counts must be non-negative integers summing to {h * w}"
                )
        elif not isinstance(counts, str):
            raise AtrousReadError(f"{path}: {where}: RLE 'counts' must be a string or a list")
        try:
            return rle_to_mask({"size": size, "counts": counts})
        except Exception as e:  # pycocotools reports bad strings in many ways
            raise AtrousReadError(f"{path}: {where}: undecodable RLE ({e})") from e
    polys = []
    for k, poly in enumerate(seg):
        if not isinstance(poly, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in poly):
            raise AtrousReadError(f"{path}: {where}: polygon {k} must be a flat list of numbers")
        if len(poly) < 6 or len(poly) % 2:
            raise AtrousReadError(
                f"{path}: {where}: polygon {k} has fewer than 3 points (or an odd number of coordinates)"
            )
        try:
            xy = np.array(poly, dtype=np.float64).reshape(-1, 2)
        except OverflowError as e:
            raise AtrousReadError(f"{path}: {where}: polygon {k} has a coordinate too large to read") from e
        check_coordinates(xy, f"{path}: {where}: polygon {k}")
        if wholly_outside(xy, w, h):
            raise AtrousReadError(f"{path}: {where}: polygon {k} lies wholly outside the {w}x{h} image")
        polys.append(clip_polygon(xy, w, h))
    if not polys:
        raise AtrousReadError(f"{path}: {where}: empty segmentation")
    polys = [p for p in polys if len(p) >= 3]
    check_fill_cost(polys, h, f"{path}: {where}", rows=polygon_fill == "labelme")
    if polygon_fill == "labelme":
        img = Image.new("L", (w, h), 0)
        draw = ImageDraw.Draw(img)
        for xy in polys:
            draw.polygon(list(map(tuple, xy.tolist())), outline=1, fill=1)
        return np.asarray(img, dtype=bool)
    return polygons_to_mask([xy.ravel().tolist() for xy in polys], h, w)


def export_coco(
    project: Project,
    out: str | os.PathLike[str],
    *,
    statuses: Sequence[str] | None = None,
    polygons: bool = False,
    per_class: bool = False,
    copy_images: bool = True,
    json_name: str = "annotations.json",
    on_progress: Callable[[int, int, str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> ExportSummary:
    """Export the masked images of ``project`` as ``OUT/annotations.json`` (+ ``OUT/images/``).

    ``on_progress`` and ``should_stop`` as for :func:`annotation.formats.voc.export_voc`.
    """
    classes = project.classes()
    background = next((c for c in classes if c.is_background), None)
    cat_classes = [c for c in classes if not c.is_background]
    cat_id = {c.index: k + 1 for k, c in enumerate(cat_classes)}
    records = project.images(statuses) if statuses else project.images()
    with_mask = [r for r in records if r.has_mask]
    names = unique_names([Path(r.path).stem for r in with_mask])
    summary = ExportSummary(out=Path(out), images=len(with_mask), skipped_without_mask=len(records) - len(with_mask))
    doc: dict[str, Any] = {
        "info": {
            "description": f"Exported by Atrous from {project.root.name}",
            "date_created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "atrous_frame": EXPORT_FRAME,
            "atrous_background": None if background is None else {"index": background.index, "name": background.name},
        },
        "licenses": [],
        "images": [],
        "annotations": [],
        "categories": [
            {"id": cat_id[c.index], "name": c.name, "supercategory": "", "atrous_index": c.index} for c in cat_classes
        ],
    }
    ann_id = 1
    skip = {VOID} | ({background.index} if background is not None else set())
    with ExportFolder(out) as folder:
        summary.cleared_interrupted = folder.cleared
        for image_id, (rec, name) in enumerate(zip(with_mask, names), start=1):
            check_stop(should_stop)
            if on_progress is not None:
                on_progress(image_id - 1, len(with_mask), rec.name)
            mask = project.read_mask(rec.id)
            assert mask is not None
            check_image_fits(project, rec, mask)
            file_name = f"{name}.png"
            if copy_images:
                data, ext, copied = export_image_bytes(project, rec.id, lossless=True)
                file_name = f"{name}{ext}"
                folder.write(f"images/{file_name}", data)
                summary.copied_images += copied
                summary.reencoded_images += not copied
            entry: dict[str, Any] = {
                "id": image_id,
                "file_name": file_name,
                "width": rec.width,
                "height": rec.height,
                "atrous_labelled": True,
            }
            if (mask == VOID).any():
                entry["atrous_void"] = mask_to_rle(mask == VOID)
            doc["images"].append(entry)
            if per_class:
                regions = []
                for v in np.unique(mask):
                    if int(v) not in skip:
                        region = mask == v
                        regions.append((int(v), region, int(np.count_nonzero(region)), mask_bbox(region)))
            else:
                regions = [(c.class_index, c.mask, c.area, c.bbox) for c in class_components(mask, skip=sorted(skip))]
            for cls, region, area, (x, y, w, h) in regions:
                if cls not in cat_id:
                    continue  # pixel value without a class: nothing to name it by
                seg: Any
                if polygons:
                    pr = mask_to_polygons(region)
                    if pr.exact:
                        seg = pr.polygons
                    else:
                        seg = mask_to_rle(region)
                        summary.inexact_polygons += 1
                else:
                    seg = mask_to_rle(region)
                doc["annotations"].append(
                    {
                        "id": ann_id,
                        "image_id": image_id,
                        "category_id": cat_id[cls],
                        "segmentation": seg,
                        "area": area,
                        "bbox": [float(x), float(y), float(w), float(h)],
                        "iscrowd": 0,
                    }
                )
                ann_id += 1
        summary.annotations = ann_id - 1
        check_stop(should_stop)
        folder.write(json_name, json.dumps(doc).encode("utf-8"))
        folder.write("classes.json", classes_json(classes))
    return summary


def paint_coco(coco: Any, image_id: int, fill: int, index_of_cat: dict[int, int]) -> np.ndarray:
    """Paint a pycocotools ``COCO`` image's annotations (file order) into a class map; for checks."""
    im = coco.imgs[image_id]
    mask = np.full((im["height"], im["width"]), fill, dtype=np.uint8)
    if "atrous_void" in im:
        mask[rle_to_mask(im["atrous_void"])] = VOID
    for ann in coco.loadAnns(coco.getAnnIds(imgIds=[image_id])):
        mask[coco.annToMask(ann).astype(bool)] = index_of_cat[ann["category_id"]]
    return mask
