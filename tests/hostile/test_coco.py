"""COCO files built to hurt: huge or non-finite coordinates, paths out of the images folder,
out-of-range indices, JSON the parser chokes on (#17 items 7, 9, 11)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from annotation.formats.coco import read_coco
from annotation.project import Project

from .conftest import Atrous, run_capped, snapshot
from .makers import H, W, coco_doc, dataset, polygon_ann, write_json

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _triangle(s: float) -> list[float]:
    """A triangle whose part inside the image is the half above the diagonal y = x."""
    return [-s, -s, s, -s, s, s]


# (case, document fields, words the error line must hold)
REFUSED = [
    ("bg_index_300", {"info": {"atrous_background": {"index": 300, "name": "bg"}}}, "atrous_background.index"),
    ("bg_index_neg", {"info": {"atrous_background": {"index": -1, "name": "bg"}}}, "atrous_background.index"),
    ("cat_300", {"categories": [{"id": i, "name": f"c{i}"} for i in range(1, 301)]}, "300 categories"),
    ("poly_nan", {"annotations": polygon_ann([5, 5, math.nan, 5, 30, 30])}, "non-finite"),
    ("poly_inf", {"annotations": polygon_ann([5, 5, math.inf, 5, 30, 30])}, "non-finite"),
    ("poly_1e16", {"annotations": polygon_ann(_triangle(1e16))}, "beyond"),
    ("poly_int_10e400", {"annotations": polygon_ann([5, 5, 10**400, 5, 30, 30])}, "too large to read"),
    (
        "poly_outside",
        {"annotations": polygon_ann([5, 5, 30, 5, 30, 30], [100, 100, 200, 100, 200, 200], ann_id=7)},
        "annotation id 7 (image a.png): polygon 1 lies wholly outside the 60x40 image",
    ),
    ("file_name_dotdot", {"images": [{"id": 1, "file_name": "../secret/secret.png"}]}, "outside the images folder"),
]


@pytest.mark.parametrize("case,fields,words", REFUSED, ids=[c[0] for c in REFUSED])
def test_refused_before_anything_is_written(
    tmp_path: Path, atrous: Atrous, case: str, fields: dict, words: str
) -> None:
    images, _ = dataset(tmp_path / "data")
    src = write_json(tmp_path / "data" / f"{case}.json", coco_doc(**fields))
    proj = tmp_path / "proj"
    line = atrous("import", proj, "--format", "coco", src, "--images", images).refused(src, words)
    assert "Traceback" not in line
    assert not proj.exists()


@pytest.mark.parametrize(
    "case,text,words",
    [
        ("deep_nesting", "[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ("huge_int", '{"images": [{"id": ' + "9" * 5001 + ', "file_name": "a.png"}]}', "5001 digits"),
    ],
)
def test_json_the_parser_chokes_on(tmp_path: Path, atrous: Atrous, case: str, text: str, words: str) -> None:
    images, _ = dataset(tmp_path / "data")
    src = tmp_path / f"{case}.json"
    src.write_text(text)
    atrous("import", tmp_path / "proj", "--format", "coco", src, "--images", images).refused(src, words)
    assert not (tmp_path / "proj").exists()


def test_absolute_and_symlinked_file_names_stay_in_the_images_folder(tmp_path: Path, atrous: Atrous) -> None:
    images, secret = dataset(tmp_path / "data")
    (images / "link.png").symlink_to(secret)
    # An existing project stays as it was.
    ok = write_json(tmp_path / "ok.json", coco_doc())
    proj = tmp_path / "proj"
    assert atrous("import", proj, "--format", "coco", ok, "--images", images).rc == 0
    before = snapshot(proj)
    for name in (str(secret), "link.png"):
        src = write_json(tmp_path / "bad.json", coco_doc(images=[{"id": 1, "file_name": name}], annotations=[]))
        line = atrous("import", proj, "--format", "coco", src, "--images", images).refused(src, repr(name))
        assert str(secret) in line  # where it leads, so the person sees why
    assert snapshot(proj) == before
    # The library still reads it when the caller says the file is trusted.
    (item,) = read_coco(src, images, allow_outside=True).items
    assert item.image_path.resolve() == secret.resolve()


def _assert_upper_half(proj: Path) -> None:
    with Project.open(proj) as p:
        rec = next(r for r in p.images() if Path(r.path).name == "a.png")
        mask = p.read_mask(rec.id)
    yy, xx = np.mgrid[:H, :W]
    assert (mask[yy < xx] == 1).all() and not (mask[yy > xx] == 1).any()


def test_polygon_of_1e12_is_clipped_not_lost(tmp_path: Path, atrous: Atrous) -> None:
    # Before: pycocotools' int coordinates overflowed and the annotation silently painted nothing.
    images, _ = dataset(tmp_path / "data")
    src = write_json(tmp_path / "p.json", coco_doc(annotations=polygon_ann(_triangle(1e12))))
    for rule in ("coco", "labelme"):
        proj = tmp_path / rule
        assert atrous("import", proj, "--format", "coco", src, "--images", images, "--polygon-fill", rule).rc == 0
        _assert_upper_half(proj)


def test_polygon_of_1e7_is_clipped_under_a_memory_cap(tmp_path: Path) -> None:
    # Before: a segfault under a 4 GB cap, 23 GB and the kernel's OOM killer without one.
    images, _ = dataset(tmp_path / "data")
    src = write_json(tmp_path / "p.json", coco_doc(annotations=polygon_ann(_triangle(1e7))))
    run = run_capped("import", tmp_path / "proj", "--format", "coco", src, "--images", images)
    assert run.rc == 0, run.err
    _assert_upper_half(tmp_path / "proj")


def test_the_rasteriser_itself_clips_huge_polygons_under_a_memory_cap() -> None:
    # G01: the importer clipped, but polygons_to_mask passed 1e8 straight to pycocotools (a segfault).
    script = (
        "from annotation.geometry import polygons_to_mask as f\n"
        "big = f([[-1e8, -1e8, 1e8, -1e8, 1e8, 1e8]], 40, 60)\n"
        "small = f([[-5, -5, 70, -5, 70, 70]], 40, 60)\n"
        "print(int(big.sum()), bool((big == small).all()))\n"
    )
    run = run_capped(script=script)
    assert run.rc == 0, run.err
    count, same = run.out.split()
    assert same == "True" and 1500 < int(count) < 1700  # the part of the 60x40 image above y = x (1620)


@pytest.mark.parametrize("rule,words", [("coco", "outline too long"), ("labelme", "too tangled to fill")])
def test_polygon_with_a_huge_point_count_is_refused_under_a_memory_cap(tmp_path: Path, rule: str, words: str) -> None:
    # Random points over 1000 rows. pycocotools would walk 200 000 points' ~67 M px of outline in
    # fifth-pixel steps (past the 3 GiB cap: a segfault); PIL would sort ~27 000 crossing edges
    # (of 80 000) on each row, in time growing with their square.
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.zeros((1000, 8, 3), np.uint8)).save(images / "tall.png")
    rng = np.random.default_rng(0)
    n = 200_000 if rule == "coco" else 80_000
    pts = np.stack([rng.uniform(0, 8, n), rng.uniform(0, 1000, n)], axis=1).ravel().tolist()
    src = write_json(
        tmp_path / "many.json", coco_doc(images=[{"id": 1, "file_name": "tall.png"}], annotations=polygon_ann(pts))
    )
    run = run_capped("import", tmp_path / "proj", "--format", "coco", src, "--images", images, "--polygon-fill", rule)
    run.refused(src, "annotation id 1", words)
    assert not (tmp_path / "proj").exists()


def test_dotdot_through_a_symlinked_images_folder(tmp_path: Path, atrous: Atrous) -> None:
    # The folder named on the command line may itself be a link; inside it is judged after resolving both.
    images, _ = dataset(tmp_path / "data")
    os.symlink(images, tmp_path / "imgs")
    ok = write_json(tmp_path / "ok.json", coco_doc())
    assert atrous("import", tmp_path / "proj", "--format", "coco", ok, "--images", tmp_path / "imgs").rc == 0
    bad = write_json(tmp_path / "bad.json", coco_doc(images=[{"id": 1, "file_name": "../secret/secret.png"}]))
    atrous("import", tmp_path / "p2", "--format", "coco", bad, "--images", tmp_path / "imgs").refused(bad)
    assert not (tmp_path / "p2").exists()
