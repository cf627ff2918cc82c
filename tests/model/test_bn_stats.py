"""recompute_bn_stats: BatchNorm statistics re-estimated on whole images, the model left as it was."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from model.data import Sample, normalise_full
from model.finetune import recompute_bn_stats

from .helpers import tiny_model

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _samples(sizes: list[tuple[int, int]], seed: int = 0) -> list[Sample]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for h, w in sizes:
        image = torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)
        out.append(Sample(image=image, mask=torch.zeros((h, w), dtype=torch.uint8)))
    return out


def _spoil(net: nn.Module) -> None:
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.fill_(5.0)
            m.running_var.fill_(100.0)


def test_statistics_are_the_exact_average_over_the_images() -> None:
    net = tiny_model(num_classes=3).network
    _spoil(net)
    samples = _samples([(48, 64)] * 3)  # one batch
    recompute_bn_stats(net, samples, MEAN, STD, torch.device("cpu"), torch.float32, channels_last=False)
    stem_conv, stem_bn = net.backbone["0"][0], net.backbone["0"][1]
    with torch.no_grad():
        feat = stem_conv(torch.cat([normalise_full(s, MEAN, STD) for s in samples]))
    assert torch.allclose(stem_bn.running_mean, feat.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(stem_bn.running_var, feat.var((0, 2, 3), unbiased=True), rtol=1e-4)
    assert all(
        not torch.isclose(m.running_var, torch.tensor(100.0)).all()
        for m in net.modules()
        if isinstance(m, nn.BatchNorm2d)
    )


def test_the_pass_changes_nothing_but_the_statistics() -> None:
    net = tiny_model(num_classes=3, aux=True).network
    net.eval()
    net.backbone.train()  # a mix of modes, to see each is restored
    modes = {name: m.training for name, m in net.named_modules()}
    momenta = {name: m.momentum for name, m in net.named_modules() if isinstance(m, nn.BatchNorm2d)}
    weights = {k: v.clone() for k, v in net.state_dict().items() if "running" not in k and "num_batches" not in k}
    recompute_bn_stats(net, _samples([(40, 40)] * 2), MEAN, STD, torch.device("cpu"), torch.float32)
    assert {name: m.training for name, m in net.named_modules()} == modes
    assert {name: m.momentum for name, m in net.named_modules() if isinstance(m, nn.BatchNorm2d)} == momenta
    state = net.state_dict()
    assert all(torch.equal(state[k], v) for k, v in weights.items())


def test_dropout_is_off_during_the_pass(monkeypatch) -> None:
    net = tiny_model(num_classes=3).network
    seen: list[bool] = []
    real = F.dropout

    def spy(x, p=0.5, training=True, inplace=False):
        seen.append(training)
        return real(x, p, training, inplace)

    monkeypatch.setattr(F, "dropout", spy)
    recompute_bn_stats(net, _samples([(40, 40)] * 2), MEAN, STD, torch.device("cpu"), torch.float32)
    assert seen and not any(seen)


def test_single_images_of_their_own_size_work() -> None:
    # Training-mode BatchNorm after ASPP's global pooling fails on a batch of one; the
    # pass pairs a lone image with its mirror image.
    net = tiny_model(num_classes=3).network
    _spoil(net)
    recompute_bn_stats(net, _samples([(40, 56), (64, 48), (30, 90)]), MEAN, STD, torch.device("cpu"), torch.float32)
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.isfinite(m.running_var).all() and (m.running_var < 100).any() for m in bns)


def test_at_most_max_images_are_used(monkeypatch) -> None:
    net = tiny_model(num_classes=3).network
    used: list[int] = []
    real = normalise_full

    def count(sample, mean, std, **kw):
        used.append(id(sample))
        return real(sample, mean, std, **kw)

    import model.finetune.evaluation as ft

    monkeypatch.setattr(ft, "normalise_full", count)
    samples = _samples([(32, 32)] * 10)
    recompute_bn_stats(net, samples, MEAN, STD, torch.device("cpu"), torch.float32, max_images=4)
    assert len(used) == 4 and len(set(used)) == 4
    assert used[0] == id(samples[0])  # evenly spaced from the first
