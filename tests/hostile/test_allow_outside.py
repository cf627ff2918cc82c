"""``import --allow-outside`` and labelme's ``--images``: the ways past the images-folder check (#17 item 9)."""

from __future__ import annotations

from pathlib import Path

import pytest

from annotation.project import Project

from .conftest import Atrous
from .makers import coco_doc, dataset, labelme_dir, write_json

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _image_paths(proj: Path) -> set[Path]:
    with Project.open(proj) as p:
        return {p.image_path(r).resolve() for r in p.images()}


def test_coco_allow_outside(tmp_path: Path, atrous: Atrous) -> None:
    images, secret = dataset(tmp_path / "data")
    src = write_json(tmp_path / "c.json", coco_doc(images=[{"id": 1, "file_name": "../secret/secret.png"}]))
    atrous("import", tmp_path / "p", "--format", "coco", src, "--images", images).refused(src, "--allow-outside")
    assert not (tmp_path / "p").exists()
    assert atrous("import", tmp_path / "p", "--format", "coco", src, "--images", images, "--allow-outside").rc == 0
    assert _image_paths(tmp_path / "p") == {secret.resolve()}


def test_labelme_images_folder_and_allow_outside(tmp_path: Path, atrous: Atrous) -> None:
    # The common layout: JSONs in ann/, images in images/, imagePath "../images/x.png".
    images, _ = dataset(tmp_path / "data")
    src = labelme_dir(tmp_path / "data" / "ann", imagePath="../images/a.png")
    (src / "pic.png").unlink()
    atrous("import", tmp_path / "p", "--format", "labelme", src).refused(src / "pic.json", "--allow-outside")
    assert atrous("import", tmp_path / "p", "--format", "labelme", src, "--images", tmp_path / "data").rc == 0
    assert _image_paths(tmp_path / "p") == {(images / "a.png").resolve()}
    assert atrous("import", tmp_path / "q", "--format", "labelme", src, "--allow-outside").rc == 0
    assert _image_paths(tmp_path / "q") == {(images / "a.png").resolve()}
