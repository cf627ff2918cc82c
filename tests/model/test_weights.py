"""Registry loading through torchvision's cache, our checkpoints, plain state dicts, refusals."""

from __future__ import annotations

import os
import urllib.error
from pathlib import Path

import pytest
import torch
from torchvision.models import segmentation as tvseg

from model.weights import (
    REGISTRY,
    WeightsError,
    WeightsUnavailableError,
    infer_arch,
    load_checkpoint,
    load_model,
    save_checkpoint,
    torchvision_cache_dir,
)

from .helpers import tiny_model


@pytest.fixture
def offline_torch_home(tmp_path, monkeypatch) -> Path:
    """An empty torchvision cache, and a network that refuses every download."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def refuse(url, dst, *args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    return tmp_path / "torch"


def test_registry_offline_gives_one_clear_sentence(offline_torch_home: Path) -> None:
    with pytest.raises(WeightsUnavailableError) as info:
        load_model("deeplabv3_mobilenet_v3_large")
    msg = str(info.value)
    assert "\n" not in msg
    assert str(offline_torch_home) in msg and "deeplabv3_mobilenet_v3_large-fc3c493d.pth" in msg
    assert "connect to the internet once" in msg and "--model PATH" in msg
    assert "Traceback" not in msg


def test_registry_loads_from_torchvision_cache(offline_torch_home: Path) -> None:
    """A file already in torchvision's cache is used without any network."""
    entry = REGISTRY["deeplabv3_mobilenet_v3_large"]
    url = entry.torchvision_weights().url
    cache = torchvision_cache_dir()
    assert cache == offline_torch_home / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    tv = tvseg.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=21, aux_loss=True)
    torch.save(tv.state_dict(), cache / os.path.basename(url))
    loaded = load_model("deeplabv3_mobilenet_v3_large")
    assert loaded.meta.class_names[0] == "__background__" and loaded.meta.class_names[15] == "person"
    assert len(loaded.meta.colours) == 21 and loaded.meta.colours[1] == (128, 0, 0)  # VOC aeroplane colour
    assert loaded.meta.input_size == 520
    assert loaded.meta.mean == pytest.approx((0.485, 0.456, 0.406))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded.network(x)["out"], tv.eval()(x)["out"], atol=1e-5)


def test_damaged_cache_file_is_reported(offline_torch_home: Path) -> None:
    cache = torchvision_cache_dir()
    cache.mkdir(parents=True)
    url = REGISTRY["deeplabv3_resnet50"].torchvision_weights().url
    (cache / os.path.basename(url)).write_bytes(b"not a checkpoint at all")
    with pytest.raises(WeightsUnavailableError, match="damaged"):
        load_model("deeplabv3_resnet50")


def test_checkpoint_round_trip_keeps_weights_and_metadata(tmp_path: Path) -> None:
    loaded = tiny_model(num_classes=4, aux=True)
    loaded.meta.history.append({"epoch": 1, "val_miou": 0.25, "per_class_iou": [0.1, 0.2, 0.3, 0.4]})
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, loaded.network, loaded.meta)
    back = load_checkpoint(path)
    assert back.meta.arch == loaded.meta.arch
    assert back.meta.class_names == loaded.meta.class_names and back.meta.colours == loaded.meta.colours
    assert back.meta.input_size == 64 and back.meta.history == loaded.meta.history
    x = torch.randn(1, 3, 48, 48)
    with torch.no_grad():
        assert torch.equal(back.network(x)["out"], loaded.network(x)["out"])
    # Written atomically: no temporary file left beside it.
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


class Sneaky:
    """Unpickling this would run code from this module: weights_only must refuse it."""

    def __reduce__(self):
        return (os.getcwd, ())


def test_checkpoint_needing_pickled_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"format": "atrous-checkpoint", "payload": Sneaky()}, path)
    with pytest.raises(WeightsError, match="refused to load"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "empty"), (b"garbage" * 10, "not a readable PyTorch checkpoint"), (None, "not found")],
)
def test_bad_files_are_reported(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "m.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(WeightsError, match=message):
        load_checkpoint(path)


def test_truncated_checkpoint_is_reported(tmp_path: Path) -> None:
    loaded = tiny_model()
    path = tmp_path / "m.pt"
    save_checkpoint(path, loaded.network, loaded.meta)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError):
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("builder", "aux", "expected_backbone", "classes"),
    [
        (tvseg.deeplabv3_mobilenet_v3_large, True, "mobilenet_v3_large", 5),
        (tvseg.deeplabv3_resnet50, False, "resnet50", 3),
        (tvseg.deeplabv3_resnet101, True, "resnet101", 2),
    ],
)
def test_plain_torchvision_state_dict_is_inferred(tmp_path, builder, aux, expected_backbone, classes) -> None:
    tv = builder(weights=None, weights_backbone=None, num_classes=classes, aux_loss=aux)
    path = tmp_path / "user_model.pth"
    torch.save(tv.state_dict(), path)
    loaded = load_model(path)
    assert loaded.meta.arch.backbone == expected_backbone
    assert loaded.meta.arch.num_classes == classes and loaded.meta.arch.aux_loss == aux
    assert loaded.meta.class_names == [f"class_{i}" for i in range(classes)]
    named = load_model(path, class_names=[f"n{i}" for i in range(classes)])
    assert named.meta.class_names[0] == "n0"
    with pytest.raises(WeightsError, match=f"predicts {classes} classes"):
        load_model(path, class_names=["a"] * (classes + 1))


def test_state_dict_of_something_else_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(WeightsError, match="not a DeepLabV3 state dict"):
        load_model(path)
    with pytest.raises(ValueError):
        infer_arch({"fc.weight": torch.zeros(1)})


def test_unknown_model_name(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="neither a model name"):
        load_model(str(tmp_path / "nope.pt"))


def test_checkpoint_whose_weights_do_not_fit(tmp_path: Path) -> None:
    loaded = tiny_model(num_classes=3)
    path = tmp_path / "m.pt"
    save_checkpoint(path, loaded.network, loaded.meta)
    payload = torch.load(path, weights_only=True)
    payload["state_dict"]["classifier.4.weight"] = torch.zeros(7, 256, 1, 1)
    torch.save(payload, path)
    with pytest.raises(WeightsError, match="do not fit"):
        load_checkpoint(path)
