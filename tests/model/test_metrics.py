"""Confusion-matrix metrics: hand-checked IoU, void ignored, absent classes, torch inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from model.metrics import ConfusionMatrix, format_metrics


def test_iou_by_hand_and_void_ignored() -> None:
    target = np.array([[0, 0, 1, 1], [2, 2, 255, 255]], np.uint8)
    pred = np.array([[0, 1, 1, 1], [2, 0, 2, 0]], np.uint8)
    cm = ConfusionMatrix(3)
    cm.update(target, pred)
    m = cm.compute(["a", "b", "c"])
    # class 0: TP 1, FP 1 (pixel 5), FN 1 -> 1/3; class 1: TP 2, FP 1 -> 2/3; class 2: TP 1, FN 1 -> 1/2
    assert m.per_class_iou == pytest.approx([1 / 3, 2 / 3, 1 / 2])
    assert m.miou == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert m.pixel_accuracy == pytest.approx(4 / 6)  # the two void pixels do not count
    assert m.n_pixels == 6


def test_absent_class_has_no_iou_and_is_left_out_of_the_mean() -> None:
    cm = ConfusionMatrix(4)
    cm.update(torch.tensor([[0, 1]]), torch.tensor([[0, 1]]))
    m = cm.compute()
    assert m.per_class_iou[2] is None and m.per_class_iou[3] is None
    assert m.miou == 1.0
    d = m.to_dict()
    assert set(d) >= {"miou", "pixel_accuracy", "per_class_iou"}
    json.dumps(d)  # JSON-ready (None -> null)
    assert "mIoU" in format_metrics(m)


def test_accumulates_and_merges_and_checks_shapes() -> None:
    a, b = ConfusionMatrix(2), ConfusionMatrix(2)
    a.update(np.zeros((2, 2)), np.zeros((2, 2)))
    b.update(np.ones((2, 2)), np.zeros((2, 2)))
    a.merge(b)
    assert a.mat.tolist() == [[4, 0], [4, 0]]
    assert a.compute().pixel_accuracy == 0.5
    with pytest.raises(ValueError):
        a.update(np.zeros(3), np.zeros(4))
    empty = ConfusionMatrix(2).compute()
    assert empty.miou == 0.0 and empty.pixel_accuracy == 0.0
