"""`main.py prelabel`: masks for good images, one clear line per bad one, the batch goes on."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import main
from model.weights import save_checkpoint
from tests.badfiles import make_awkward_folder

from .helpers import tiny_model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    loaded = tiny_model(num_classes=3)
    save_checkpoint(path, loaded.network, loaded.meta)
    return path


def test_prelabel_folder_with_awkward_files(tmp_path, checkpoint, capsys) -> None:
    images = tmp_path / "images"
    expected = make_awkward_folder(images)
    (images / "sub").mkdir()
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(images / "sub" / "good.png")  # same stem, other folder
    out = tmp_path / "masks"
    code = main.main(["prelabel", str(images), "--out", str(out), "--model", str(checkpoint), "--device", "cpu"])
    stdout = capsys.readouterr().out
    assert code == 1  # some images were skipped
    stems = [n.rsplit(".", 1)[0] for n in expected]
    for name, outcome in expected.items():
        stem = name.rsplit(".", 1)[0]
        # good.png and good.jpg share a stem: each mask is named after its whole file name, none overwrites another
        mask = out / (name + ".png" if stems.count(stem) > 1 else stem + ".png")
        if outcome == "ok":
            img = Image.open(mask)
            assert img.mode == "P", name
            arr = np.asarray(img)
            assert arr.max() < 3
        else:
            # one line per bad file, naming it and the problem
            lines = [ln for ln in stdout.splitlines() if name in ln]
            assert len(lines) == 1 and outcome in lines[0], (name, stdout)
    # a same-named image in another folder keeps its plain name there
    assert (out / "sub" / "good.png").exists() and not (out / "good.png").exists()
    # the EXIF-rotated photo gets a mask in the upright frame
    assert np.asarray(Image.open(out / "rotated.png")).shape == (50, 30)
    assert (out / "labels.txt").read_text().split() == ["c0", "c1", "c2"]
    assert "pre-labelled 8 of 13 images" in stdout


def test_prelabel_plain_state_dict_with_class_file(tmp_path, capsys) -> None:
    import torch
    from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large

    net = deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=2, aux_loss=False)
    torch.save(net.state_dict(), tmp_path / "sd.pth")
    # labelme's labels.txt: "__ignore__" first, so "background" is index 0 (it used to be off by one here)
    (tmp_path / "classes.txt").write_bytes("\ufeff__ignore__\nbackground\ncell\n".encode())
    images = tmp_path / "imgs"
    images.mkdir()
    Image.fromarray(np.full((40, 40), 90, np.uint8)).save(images / "slice.png")
    code = main.main(
        [
            "prelabel",
            str(images),
            "--out",
            str(tmp_path / "o"),
            "--model",
            str(tmp_path / "sd.pth"),
            "--classes",
            str(tmp_path / "classes.txt"),
            "--precision",
            "fp32",
        ]
    )
    assert code == 0
    assert np.asarray(Image.open(tmp_path / "o" / "slice.png")).shape == (40, 40)
    assert (tmp_path / "o" / "labels.txt").read_text() == "background\ncell\n"


def test_prelabel_offline_registry_model_is_one_line(tmp_path, monkeypatch, capsys) -> None:
    import urllib.error

    import torch

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    monkeypatch.setattr(
        torch.hub, "download_url_to_file", lambda *a, **k: (_ for _ in ()).throw(urllib.error.URLError("offline"))
    )
    images = tmp_path / "imgs"
    images.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(images / "a.png")
    code = main.main(["prelabel", str(images), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2
    error_lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(error_lines) == 1 and "connect to the internet once" in error_lines[0]
    assert "Traceback" not in err


def test_prelabel_on_missing_folder(tmp_path, capsys) -> None:
    code = main.main(["prelabel", str(tmp_path / "none"), "--out", str(tmp_path / "o")])
    assert code == 2 and "not a folder" in capsys.readouterr().err


def test_help_lists_commands(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main.main(["--help"])
    assert info.value.code == 0
    assert "prelabel" in capsys.readouterr().out


def test_prelabel_folder_never_writes_over_images_or_files_it_did_not_write(tmp_path, checkpoint, capsys) -> None:
    """--out equal to the image folder replaced the images with masks; a full --out was overwritten silently."""
    images = tmp_path / "imgs"
    images.mkdir()
    for ext in ("png", "jpg", "bmp"):
        Image.fromarray(np.full((20, 30, 3), 90, np.uint8)).save(images / f"a.{ext}")
    before = {p.name: p.read_bytes() for p in images.iterdir()}
    base = ["prelabel", str(images), "--model", str(checkpoint), "--device", "cpu"]
    assert main.main([*base, "--out", str(images)]) == 2
    assert "holds the images" in capsys.readouterr().err
    assert main.main([*base, "--out", str(tmp_path)]) == 2  # a folder above the images
    assert {p.name: p.read_bytes() for p in images.iterdir()} == before
    out = tmp_path / "out"
    assert main.main([*base, "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.bmp.png", "a.jpg.png", "a.png.png", "labels.txt"]
    capsys.readouterr()
    assert main.main([*base, "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main.main([*base, "--out", str(out), "--overwrite"]) == 0
    # an --out inside the image folder is left out of the next run's images
    inside = images / "masks"
    assert main.main([*base, "--out", str(inside)]) == 0
    assert main.main([*base, "--out", str(inside), "--overwrite"]) == 0
    assert "pre-labelled 3 of 3" in capsys.readouterr().out.splitlines()[-1]


@pytest.mark.parametrize("size", ["0", "-1"])
def test_prelabel_batch_size_below_one_is_refused(tmp_path, checkpoint, capsys, size) -> None:
    """#17: --batch-size 0 or -1 silently became 1."""
    images = tmp_path / "imgs"
    images.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(images / "a.png")
    code = main.main(
        ["prelabel", str(images), "--out", str(tmp_path / "o"), "--model", str(checkpoint), "--batch-size", size]
    )
    assert code == 2 and f"batch size must be at least 1, got {size}" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
