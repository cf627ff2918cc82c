"""labelme files built to hurt: declared sizes that are not the image's, imagePath out of the
folder, shapes far past the image, bombs inside the file (#17 items 7, 8, 9)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from annotation.errors import AtrousReadError
from annotation.formats.labelme import read_labelme
from annotation.project import Project

from ..badfiles import photo, png_bomb
from .conftest import Atrous, run_capped, snapshot
from .makers import H, W, dataset, embedded, labelme_dir, shape


def test_declared_100000_squared_is_refused_before_allocating(tmp_path: Path) -> None:
    # Before: a 9.3 GiB label map was allocated from imageHeight/imageWidth before the image was looked at.
    src = labelme_dir(tmp_path / "lm", imageHeight=100_000, imageWidth=100_000)
    run = run_capped("import", tmp_path / "proj", "--format", "labelme", src)
    run.refused(src / "pic.json", "imageWidth x imageHeight is 100000x100000 but the image pic.png is 60x40")
    assert not (tmp_path / "proj").exists()


def _bomb_mask_shape(tmp_path: Path) -> dict:
    png_bomb(tmp_path / "bomb.png", 20000, 20000)
    import base64

    data = base64.b64encode((tmp_path / "bomb.png").read_bytes()).decode()
    return shape("mask", [[0, 0], [19999, 19999]], mask=data)


REFUSED = [
    ("declared_61", lambda t: ([], {"imageWidth": 61}), "imageWidth x imageHeight is 61x40"),
    ("shape_outside", lambda t: ([shape("polygon", [[100, 100], [200, 100], [200, 200]])], {}), "wholly outside"),
    ("point_outside", lambda t: ([shape("point", [[1e12, 5]])], {}), "shape 0 (point) lies wholly outside"),
    ("coords_1e16", lambda t: ([shape("polygon", [[-1e16, 0], [1e16, 0], [0, 1e16]])], {}), "beyond"),
    ("mask_bomb", lambda t: ([_bomb_mask_shape(t)], {}), "image too large"),
    ("dotdot", lambda t: (None, {"imagePath": "../secret/secret.png"}), "outside the images folder"),
]


@pytest.mark.parametrize("case,make,words", REFUSED, ids=[c[0] for c in REFUSED])
def test_refused_before_anything_is_written(tmp_path: Path, atrous: Atrous, case: str, make, words: str) -> None:
    dataset(tmp_path)  # tmp_path/secret/secret.png beside the labelme folder
    shapes, fields = make(tmp_path)
    src = labelme_dir(tmp_path / "lm", shapes, **fields)
    atrous("import", tmp_path / "proj", "--format", "labelme", src).refused(src / "pic.json", words)
    assert not (tmp_path / "proj").exists()


def test_absolute_and_symlinked_image_paths_are_refused(tmp_path: Path, atrous: Atrous) -> None:
    _, secret = dataset(tmp_path / "data")
    proj = tmp_path / "proj"
    assert atrous("import", proj, "--format", "labelme", labelme_dir(tmp_path / "ok")).rc == 0
    before = snapshot(proj)
    src = labelme_dir(tmp_path / "abs", imagePath=str(secret))
    atrous("import", proj, "--format", "labelme", src).refused(src / "pic.json", str(secret))
    src = labelme_dir(tmp_path / "link", imagePath="link.png")
    (src / "link.png").symlink_to(secret)
    atrous("import", proj, "--format", "labelme", src).refused(src / "pic.json", "'link.png'", str(secret))
    assert snapshot(proj) == before
    # A caller that trusts the file, or names the folder the images are in, gets it.
    assert read_labelme(src, allow_outside=True).items[0].image_path.resolve() == secret.resolve()
    assert read_labelme(src, images_dir=tmp_path).items[0].image_path.resolve() == secret.resolve()
    with pytest.raises(AtrousReadError, match="outside the images folder"):
        read_labelme(src, images_dir=src)


def test_outside_image_path_with_embedded_data_uses_the_copy_in_the_file(tmp_path: Path, atrous: Atrous) -> None:
    # labelme files made elsewhere often carry an absolute imagePath *and* imageData: the import
    # must not read the path (it may be anyone's file), but the copy in the file is fine.
    _, secret = dataset(tmp_path / "data")
    copy = photo(H, W, seed=11)
    src = labelme_dir(tmp_path / "lm", imagePath=str(secret), imageData=embedded(copy))
    (src / "pic.png").unlink()
    assert atrous("import", tmp_path / "proj", "--format", "labelme", src).rc == 0
    with Project.open(tmp_path / "proj") as p:
        (rec,) = p.images()
        stored = p.image_path(rec)
        assert np.array_equal(p.load_image(rec.id), copy)
    assert stored.resolve().is_relative_to((tmp_path / "proj").resolve())
    assert hashlib.sha256(stored.read_bytes()).digest() != hashlib.sha256(secret.read_bytes()).digest()


def test_shapes_far_past_the_image_are_clipped_under_a_memory_cap(tmp_path: Path) -> None:
    # Before: a circle of radius 1e7 made PIL walk its whole outline (no answer in 20 s) and
    # shapes at ±1e12 painted nothing at all.
    s = 1e12
    src = tmp_path / "lm"
    cases = {
        "poly": shape("polygon", [[-s, -s], [s, -s], [s, s]]),
        "rect": shape("rectangle", [[-s, -s], [s, s]]),
        "line": shape("line", [[-s, -s], [s, s]]),
        "circle": shape("circle", [[30, 20], [30 + 1e7, 20]]),
    }
    for k, (name, sh) in enumerate(cases.items()):
        labelme_dir(src, [sh], name=name, seed=20 + k)
    run = run_capped("import", tmp_path / "proj", "--format", "labelme", src, timeout=60)
    assert run.rc == 0, run.err
    yy, xx = np.mgrid[:H, :W]
    with Project.open(tmp_path / "proj") as p:
        masks = {Path(r.path).stem: p.read_mask(r.id) == 1 for r in p.images()}
    assert masks["rect"].all() and masks["circle"].all()
    assert masks["poly"][yy < xx].all() and not masks["poly"][yy > xx + 1].any()
    on_diagonal = masks["line"][yy == xx]
    assert on_diagonal.all() and not masks["line"][abs(yy - xx) > 10].any()


def test_polygon_with_a_huge_point_count_is_refused(tmp_path: Path) -> None:
    # PIL sorts each row's crossing edges, in time growing with their square: 200 000 random points
    # over 100 rows took 38 s. 80 000 here (~27 000 crossings per row).
    rng = np.random.default_rng(0)
    pts = np.stack([rng.uniform(0, W, 80_000), rng.uniform(0, H, 80_000)], axis=1).tolist()
    src = labelme_dir(tmp_path / "lm", [shape("polygon", pts)])
    run = run_capped("import", tmp_path / "proj", "--format", "labelme", src, timeout=60)
    run.refused(src / "pic.json", "shape 0 (polygon)", "too tangled to fill")
    assert not (tmp_path / "proj").exists()
