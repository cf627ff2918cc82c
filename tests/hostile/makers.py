"""Generators of the hostile files: small images, COCO and labelme documents, an outside 'secret'."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..badfiles import photo

W, H = 60, 40  # the size of every test image


def labelled_project(tmp_path: Path, atrous, n: int) -> Path:
    """``tmp_path/proj``: ``n`` 60x40 images (files 0..n-1.png, outside the project) with masks of
    classes 0/1, imported from a mask folder through the CLI."""
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    for i in range(n):
        Image.fromarray(photo(H, W, seed=i)).save(images / f"{i}.png")
        Image.fromarray(np.full((H, W), i % 2, np.uint8), mode="L").save(labels / f"{i}.png")
    (tmp_path / "classes.txt").write_text("background\nthing\n")
    proj = tmp_path / "proj"
    run = atrous("import", proj, "--format", "masks", labels, "--images", images, "--classes", tmp_path / "classes.txt")
    assert run.rc == 0, run.err
    return proj


def dataset(root: Path) -> tuple[Path, Path]:
    """``root/images/{a,b}.png`` (60x40) and a ``root/secret/secret.png`` beside it; returns (images, secret)."""
    images = root / "images"
    images.mkdir(parents=True)
    for seed, name in enumerate("ab"):
        Image.fromarray(photo(H, W, seed=seed)).save(images / f"{name}.png")
    secret = root / "secret" / "secret.png"
    secret.parent.mkdir()
    Image.fromarray(photo(H, W, seed=7)).save(secret)
    return images, secret


def coco_doc(**override: Any) -> dict[str, Any]:
    """A valid COCO document for :func:`dataset`'s images, with fields replaced by ``override``."""
    doc: dict[str, Any] = {
        "images": [{"id": 1, "file_name": "a.png", "width": W, "height": H}, {"id": 2, "file_name": "b.png"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": [[5, 5, 30, 5, 30, 30]]}],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
    }
    doc.update(override)
    return doc


def polygon_ann(*polygons: list[float], ann_id: int = 1) -> list[dict[str, Any]]:
    """One annotation of image 1, category 1, with these polygons."""
    return [{"id": ann_id, "image_id": 1, "category_id": 1, "segmentation": list(polygons)}]


def write_json(path: Path, doc: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def labelme_dir(
    folder: Path, shapes: list[dict[str, Any]] | None = None, *, name: str = "pic", seed: int = 3, **override: Any
) -> Path:
    """``folder/NAME.png`` (60x40) and ``folder/NAME.json`` labelling it; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.png").write_bytes(png_bytes(photo(H, W, seed=seed)))
    doc: dict[str, Any] = {
        "version": "5.2.1",
        "flags": {},
        "shapes": shapes if shapes is not None else [shape("polygon", [[1, 1], [20, 1], [20, 20]])],
        "imagePath": f"{name}.png",
        "imageData": None,
        "imageHeight": H,
        "imageWidth": W,
    }
    doc.update(override)
    write_json(folder / f"{name}.json", doc)
    return folder


def shape(kind: str, points: list[list[float]], label: str = "cat", **extra: Any) -> dict[str, Any]:
    return {"label": label, "points": points, "group_id": None, "shape_type": kind, "flags": {}, **extra}


def embedded(arr: np.ndarray) -> str:
    return base64.b64encode(png_bytes(arr)).decode()
