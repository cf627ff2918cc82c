"""Training data: stable seeded split, paired transforms that keep image and mask aligned."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from annotation.project import Project
from model.data import Augment, Sample, augment_pair, make_batch, make_sample, split_train_val

from .ddp_common import make_tiny_project, one_thread  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_split_is_seeded_disjoint_and_stable_as_the_project_grows(tmp_path) -> None:
    path, _ = make_tiny_project(tmp_path, n=12)
    with Project.open(path) as p:
        recs = p.images()
    train, val = split_train_val(recs, 0.25, seed=0)
    assert val and train
    assert {r.id for r in train}.isdisjoint({r.id for r in val})
    assert len(train) + len(val) == len(recs)
    again = split_train_val(list(reversed(recs)), 0.25, seed=0)
    assert [r.id for r in again[1]] == [r.id for r in val]
    # adding images never moves an old image from val to train
    _, val_sub = split_train_val(recs[:9], 0.25, seed=0)
    val_ids = {r.id for r in val}
    assert {r.id for r in val_sub} == {r.id for r in recs[:9] if r.id in val_ids}
    assert split_train_val(recs, 0.0)[1] == []
    assert len(split_train_val(recs[:2], 0.01)[1]) == 1  # at least one val image


def _coloured_sample(h: int = 30, w: int = 44) -> Sample:
    mask = np.zeros((h, w), np.uint8)
    mask[:, w // 2 :] = 1
    mask[: h // 4] = 2
    mask[-2:] = 255
    image = np.zeros((h, w, 3), np.uint8)
    image[..., 0] = np.where(mask == 255, 0, mask) * 100  # red channel encodes the class
    prelabel = np.zeros_like(mask)  # the model predicted class 0 everywhere
    return make_sample(image, mask, input_size=None, prelabel=prelabel, num_classes=3)


def test_paired_transform_keeps_alignment_and_pads_with_void() -> None:
    s = _coloured_sample()
    assert s.corrected is not None
    assert bool(s.corrected[0, -1]) and not bool(s.corrected[-1, 0])  # void pixels never count as corrected
    aug = Augment(crop=64, scale_range=(0.9, 1.3), hflip=0.5, jitter=0.0)  # crop larger than the image: padding
    gen = torch.Generator().manual_seed(1)
    for _ in range(6):
        x, y, c = augment_pair(s, aug, gen)
        assert x.shape == (3, 64, 64) and y.shape == (64, 64) and c is not None and c.shape == (64, 64)
        assert set(torch.unique(y).tolist()) <= {0, 1, 2, 255}  # NEAREST: no new label values
        assert (y == 255).any()  # padding is void
        inside = y != 255
        # where the mask says class k, the red channel says k (away from resampled edges)
        cls_from_colour = torch.round(x[0] * 255 / 100)
        agree = (cls_from_colour[inside] == y[inside]).float().mean()
        assert agree > 0.9
        assert not c[~inside].any()


def test_make_batch_normalises_and_maps_unknown_labels_to_void() -> None:
    mask = np.array([[0, 1], [7, 1]], np.uint8)  # 7 is not a class of a 2-class project
    s = make_sample(np.full((2, 2, 3), 128, np.uint8), mask, input_size=None, num_classes=2)
    assert s.mask.tolist() == [[0, 1], [255, 1]]
    x, y, c = make_batch(
        [s], [0, 0], Augment(crop=2, scale_range=(1, 1), hflip=0, jitter=0), torch.Generator(), (0.5,) * 3, (0.25,) * 3
    )
    assert x.shape == (2, 3, 2, 2) and y.dtype == torch.int64 and c is None
    assert torch.allclose(x, torch.full_like(x, (128 / 255 - 0.5) / 0.25), atol=1e-5)


def test_make_sample_rescales_to_the_training_size() -> None:
    s = make_sample(np.zeros((60, 90, 3), np.uint8), np.ones((60, 90), np.uint8), input_size=30, num_classes=2)
    assert tuple(s.image.shape) == (3, 30, 45) and tuple(s.mask.shape) == (30, 45)
    assert s.mask.unique().tolist() == [1]
