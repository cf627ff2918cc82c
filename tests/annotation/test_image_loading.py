"""load_image: every awkward file is either decoded upright to uint8 RGB or refused in one line."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from annotation.errors import ImageReadError
from annotation.imageio import load_image, read_image_info
from tests.badfiles import exif_rotated_jpeg, make_awkward_folder


@pytest.fixture(scope="module")
def awkward(tmp_path_factory):
    folder = tmp_path_factory.mktemp("awkward")
    return folder, make_awkward_folder(folder)


def test_every_awkward_file_is_decoded_or_refused_clearly(awkward) -> None:
    folder, expected = awkward
    for name, outcome in expected.items():
        if outcome == "ok":
            arr = load_image(folder / name)
            assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3, name
        else:
            with pytest.raises(ImageReadError) as info:
                load_image(folder / name)
            message = str(info.value)
            assert name in message and outcome in message and "\n" not in message, message


def test_sixteen_bit_is_stretched_not_clipped(awkward) -> None:
    folder, _ = awkward
    arr = load_image(folder / "sixteen.png")
    assert arr[..., 0].max() == 255 and arr[..., 0].min() == 0
    assert np.array_equal(arr[..., 0], arr[..., 1])


def test_exif_orientation_is_applied(tmp_path) -> None:
    upright = exif_rotated_jpeg(tmp_path / "r.jpg", h=30, w=50, orientation=6)
    arr = load_image(tmp_path / "r.jpg")
    assert arr.shape == (50, 30, 3) == upright.shape
    assert np.array_equal(arr, upright)
    info = read_image_info(tmp_path / "r.jpg")
    assert (info.width, info.height, info.orientation) == (30, 50, 6)


def test_missing_file(tmp_path) -> None:
    with pytest.raises(ImageReadError, match="not found"):
        load_image(tmp_path / "nope.png")


def test_grey_and_palette_become_rgb(tmp_path) -> None:
    grey = np.arange(100, dtype=np.uint8).reshape(10, 10)
    Image.fromarray(grey).save(tmp_path / "g.png")
    arr = load_image(tmp_path / "g.png")
    assert np.array_equal(arr[..., 2], grey)
