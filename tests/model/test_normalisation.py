"""Per-image normalisation: the same numbers in training and in the Predictor, stored with the weights."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from annotation.errors import AtrousError
from model.data import MIN_IMAGE_STD, Augment, image_mean_std, make_batch, make_sample, normalise_full
from model.finetune import finetune
from model.predictor import Predictor
from model.weights import (
    NORM_DATASET,
    NORM_IMAGE,
    LoadedModel,
    ModelMeta,
    WeightsError,
    load_checkpoint,
    save_checkpoint,
)

from .ddp_common import FAST, make_tiny_project, one_thread  # noqa: F401  (fixture)
from .helpers import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


def _scene(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    """A uint8 image whose values stay below 128, so doubling it is exact."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.int64)
    img[: h // 2] = (90, 100, 120)  # "sky"
    img[h // 2 :, : w // 2] = (40, 60, 30)
    img[h // 2 :, w // 2 :] = (70, 70, 75)
    return np.clip(img + rng.integers(-7, 8, img.shape), 0, 127).astype(np.uint8)


def _per_image(loaded: LoadedModel) -> LoadedModel:
    return LoadedModel(loaded.network, dataclasses.replace(loaded.meta, normalisation=NORM_IMAGE))


def test_image_mean_std_is_per_channel_with_a_floor() -> None:
    img = torch.from_numpy(_scene()).permute(2, 0, 1)
    mean, std = image_mean_std(img)
    assert mean.shape == (3, 1, 1) and std.shape == (3, 1, 1)
    ref = img.double() / 255
    assert torch.allclose(mean.double().flatten(), ref.mean((1, 2)), atol=1e-6)
    assert torch.allclose(std.double().flatten(), ref.std((1, 2)), atol=1e-6)
    # a flat image is not divided by ~0 (its normalised values stay 0, not noise)
    flat = torch.full((2, 3, 8, 8), 77, dtype=torch.uint8)
    m, s = image_mean_std(flat)
    assert m.shape == (2, 3, 1, 1) and torch.all(s == MIN_IMAGE_STD)


def test_a_darker_copy_gives_the_same_training_batch() -> None:
    """The point of per-image normalisation: brightness and contrast no longer change the input."""
    mask = np.zeros((48, 64), np.uint8)
    bright = make_sample(_scene() * 2, mask, input_size=None, num_classes=2)
    dark = make_sample(_scene(), mask, input_size=None, num_classes=2)
    aug = Augment(crop=40, scale_range=(1, 1), hflip=0, jitter=0)
    args = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    xb, _, _ = make_batch([bright], [0], aug, torch.Generator().manual_seed(3), *args, per_image=True)
    xd, _, _ = make_batch([dark], [0], aug, torch.Generator().manual_seed(3), *args, per_image=True)
    assert torch.allclose(xb, xd, atol=1e-4)
    # with the dataset's mean/std they differ a lot: the assertion above can fail
    yb, _, _ = make_batch([bright], [0], aug, torch.Generator().manual_seed(3), *args)
    yd, _, _ = make_batch([dark], [0], aug, torch.Generator().manual_seed(3), *args)
    assert (yb - yd).abs().mean() > 0.5
    # the whole image (not the crop) sets the statistics: zero mean, unit std over it
    full = normalise_full(bright, *args, per_image=True)
    assert full.mean((0, 2, 3)).abs().max() < 1e-4
    assert torch.allclose(full.std((0, 2, 3)), torch.ones(3), atol=1e-3)


def test_predictor_normalises_exactly_as_training_does() -> None:
    loaded = _per_image(tiny_model(num_classes=3, input_size=None))
    image = _scene(40, 56, seed=4)
    sample = make_sample(image, np.zeros((40, 56), np.uint8), input_size=None, num_classes=3)
    p = Predictor(loaded, device="cpu", precision="fp32")
    x = p._to_input([image], (40, 56))
    ref = normalise_full(sample, loaded.meta.mean, loaded.meta.std, per_image=True)
    assert torch.allclose(x, ref, atol=1e-5)


def test_a_per_image_models_input_does_not_depend_on_exposure() -> None:
    image = _scene(40, 56, seed=5)
    brighter = image * 2
    per_image = Predictor(_per_image(tiny_model(num_classes=3, input_size=None)), device="cpu", precision="fp32")
    assert torch.allclose(per_image._to_input([image], (40, 56)), per_image._to_input([brighter], (40, 56)), atol=1e-5)
    # batched with another image, each is normalised by its own statistics
    both = per_image._to_input([image, brighter], (40, 56))
    assert torch.allclose(both[0], both[1], atol=1e-5)
    dataset = Predictor(tiny_model(num_classes=3, input_size=None), device="cpu", precision="fp32")
    diff = dataset._to_input([brighter], (40, 56)) - dataset._to_input([image], (40, 56))
    assert diff.abs().mean() > 0.5


def test_checkpoints_keep_the_normalisation(tmp_path) -> None:
    loaded = _per_image(tiny_model(num_classes=3))
    path = tmp_path / "m.pt"
    save_checkpoint(path, loaded.network, loaded.meta)
    assert load_checkpoint(path).meta.normalisation == NORM_IMAGE
    # checkpoints written before the field existed normalise with their mean/std
    d = loaded.meta.to_dict()
    del d["normalisation"]
    assert ModelMeta.from_dict(d).normalisation == NORM_DATASET
    # an unknown value in a file is a damaged checkpoint, reported as such
    obj = torch.load(path, weights_only=True)
    obj["meta"]["normalisation"] = "sideways"
    torch.save(obj, path)
    with pytest.raises(WeightsError, match="m.pt"):
        load_checkpoint(path)


def test_finetune_picks_per_image_for_a_random_init_and_keeps_a_bases(tmp_path) -> None:
    path, _ = make_tiny_project(tmp_path, n=4)
    scratch = finetune(path, epochs=1, val_fraction=0.0, **FAST)
    assert load_checkpoint(scratch.checkpoint_path).meta.normalisation == NORM_IMAGE
    # continuing from a model that normalises with its dataset statistics keeps doing so
    base = tmp_path / "base.pt"
    old = tiny_model(num_classes=3)
    old.meta.class_names = ["k0", "k1", "k2"]
    save_checkpoint(base, old.network, old.meta)
    cont = finetune(path, epochs=1, val_fraction=0.0, **{**FAST, "base": str(base)})
    assert load_checkpoint(cont.checkpoint_path).meta.normalisation == NORM_DATASET
    # and a random init can be told to use the dataset's
    told = finetune(path, epochs=1, val_fraction=0.0, **{**FAST, "normalisation": "dataset"})
    assert load_checkpoint(told.checkpoint_path).meta.normalisation == NORM_DATASET
    with pytest.raises(AtrousError, match="unknown normalisation"):
        finetune(path, epochs=1, **{**FAST, "normalisation": "per-channel"})
