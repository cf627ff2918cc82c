"""CPU conv fusion: the fused network computes what the plain one does, and falls back cleanly."""

from __future__ import annotations

import copy
import logging

import numpy as np
import pytest
import torch
from torch import nn

from model import cpufuse
from model.cpufuse import FusedBottleneck, FusedConv2d, GlobalMeanPool, fused_for_cpu, fusion_available, probe_fused
from model.deeplabv3 import build_deeplabv3
from model.predictor import Predictor, fold_batchnorm, onednn_bf16_usable

from .helpers import randomize_bn, tiny_model

needs_onednn = pytest.mark.skipif(
    not fusion_available(),
    reason="needs oneDNN's fused convolution ops (torch.ops.mkldnn._convolution_pointwise), absent here",
)


def _inference_copy(net: nn.Module, dtype: torch.dtype = torch.float32) -> nn.Module:
    net = fold_batchnorm(copy.deepcopy(net).eval())
    net.aux_classifier = None
    return net.to(dtype=dtype, memory_format=torch.channels_last)


def _logits(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return net.classifier(net.backbone(x)["out"]).float()


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(1)
    net = build_deeplabv3(backbone="resnet50", num_classes=4, output_stride=8, aux_loss=True).eval()
    randomize_bn(net)
    return net


@needs_onednn
@pytest.mark.parametrize("arch", ["mobilenet_v3_large", "resnet50"])
def test_fused_network_equals_the_plain_one_in_fp32(arch, resnet) -> None:
    # MobileNetV3 has squeeze-excitation blocks, whose children are not in execution
    # order: a fusion that trusted registration order outside a Sequential would differ.
    net = resnet if arch == "resnet50" else tiny_model(num_classes=3).network
    plain = _inference_copy(net)
    fused = fused_for_cpu(plain, torch.float32)
    assert fused is not None
    kinds = {type(m) for m in fused.modules()}
    assert FusedConv2d in kinds and GlobalMeanPool in kinds
    assert not any(type(m) is nn.Conv2d for m in fused.modules()), "every conv runs through oneDNN's fused op"
    if arch == "resnet50":
        assert sum(isinstance(m, FusedBottleneck) for m in fused.modules()) == 16
    x = torch.randn(2, 3, 72, 88).contiguous(memory_format=torch.channels_last)
    ref, out = _logits(plain, x), _logits(fused, x)
    assert torch.allclose(ref, out, atol=1e-4 * ref.abs().max().item(), rtol=1e-4)
    # the plain network is left as it was
    assert not any(isinstance(m, FusedConv2d) for m in plain.modules())


@needs_onednn
def test_fused_bf16_stays_close_to_plain_bf16_where_the_cpu_runs_it(resnet) -> None:
    plain = _inference_copy(resnet, torch.bfloat16)
    fused = fused_for_cpu(plain, torch.bfloat16)
    # oneDNN's bf16 convolutions need AVX512 (BW/VL/DQ) or AVX-NE-CONVERT; on an AVX2-only
    # CPU the probe must refuse, so the predictor keeps the plain network instead of crashing.
    assert (fused is not None) == onednn_bf16_usable()
    x = torch.randn(1, 3, 64, 80).contiguous(memory_format=torch.channels_last).to(torch.bfloat16)
    ref = _logits(plain, x)
    assert torch.isfinite(ref).all()
    if fused is not None:
        out = _logits(fused, x)
        assert ((ref - out).norm() / ref.norm()).item() < 0.02


@needs_onednn
def test_in_place_residual_gives_the_plain_blocks_result(resnet) -> None:
    fused = fused_for_cpu(_inference_copy(resnet), torch.float32)
    assert fused is not None
    block = fused.backbone.layer1[1]  # no projection: the shortcut is the block's input
    assert isinstance(block, FusedBottleneck) and block.downsample is None
    x = torch.randn(1, 256, 16, 16).contiguous(memory_format=torch.channels_last)
    before = x.clone()
    with torch.inference_mode():
        out = block(x)
    # The sum accumulates into the block input by design (the stage owns that tensor).
    assert out.data_ptr() == x.data_ptr()
    plain_block = _inference_copy(resnet).backbone.layer1[1]
    with torch.inference_mode():
        expected = plain_block(before)
    assert torch.allclose(out, expected, atol=1e-4 * expected.abs().max().item())


@needs_onednn
def test_packed_weights_are_kept_for_a_bounded_number_of_shapes() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 6, 3, padding=2, dilation=2)
    fused = FusedConv2d(conv, "relu")
    for size in [(10, 12), (14, 9), (20, 20), (10, 12)]:
        x = torch.randn(1, 8, *size).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            out, ref = fused(x), torch.relu(conv(x))
        assert torch.allclose(out, ref, atol=1e-5)
    assert len(fused._packed) == cpufuse.PACKED_SHAPES


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [True, False])
def test_global_mean_pool_is_the_mean(dtype, channels_last) -> None:
    torch.manual_seed(0)
    x = torch.rand(2, 16, 13, 29).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    out = GlobalMeanPool()(x)
    ref = x.float().mean((2, 3), keepdim=True)
    assert out.shape == (2, 16, 1, 1)
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    assert torch.allclose(out.float(), ref, atol=tol)


@needs_onednn
def test_predictor_falls_back_when_oneDNN_is_missing(monkeypatch) -> None:
    loaded = tiny_model(num_classes=3)
    image = torch.randint(0, 256, (48, 64, 3), dtype=torch.uint8).numpy()
    fast = Predictor(loaded, device="cpu", precision="fp32")
    assert fast.fused
    monkeypatch.setattr(cpufuse, "fusion_available", lambda: False)
    plain = Predictor(loaded, device="cpu", precision="fp32")
    assert not plain.fused and not any(isinstance(m, FusedConv2d) for m in plain.network.modules())
    assert (fast.predict(image).labels == plain.predict(image).labels).mean() > 0.999


def test_a_failing_probe_means_the_plain_network(monkeypatch) -> None:
    class Broken(nn.Module):
        def forward(self, x):
            raise RuntimeError("oneDNN: unsupported on this CPU (simulated)")

    def break_it(module):
        module.classifier = Broken()
        return module

    monkeypatch.setattr(cpufuse, "fuse_for_cpu_modules", break_it)
    net = _inference_copy(tiny_model(num_classes=3).network)
    assert fused_for_cpu(net, torch.float32) is None
    assert fused_for_cpu(net, torch.float16) is None  # a dtype the CPU path never fuses
    assert not Predictor(tiny_model(num_classes=3), device="cpu", precision="fp32").fused


@needs_onednn
def test_the_fused_copy_shares_the_plain_networks_weights() -> None:
    plain = _inference_copy(tiny_model(num_classes=3).network)
    fused = fused_for_cpu(plain, torch.float32)
    assert fused is not None
    plain_ptrs = {p.data_ptr() for p in plain.parameters()}
    fused_convs = [m for m in fused.modules() if isinstance(m, FusedConv2d)]
    assert fused_convs and all(m.weight.data_ptr() in plain_ptrs for m in fused_convs)


@needs_onednn
def test_a_fused_op_with_wrong_numbers_is_refused(monkeypatch, caplog) -> None:
    real = FusedConv2d.forward

    def shifted(self, x):  # runs without error, but one pixel off: a silently wrong kernel
        return real(self, x).roll(1, dims=-1)

    loaded = tiny_model(num_classes=3)
    image = torch.randint(0, 256, (48, 64, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)).numpy()
    plain = Predictor(loaded, device="cpu", precision="fp32", fuse=False)
    monkeypatch.setattr(FusedConv2d, "forward", shifted)
    net = _inference_copy(loaded.network)
    with caplog.at_level(logging.WARNING, logger="atrous.cpufuse"):
        assert fused_for_cpu(net, torch.float32) is None
    assert "differ from the plain network's" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="atrous.cpufuse"):
        p = Predictor(loaded, device="cpu", precision="fp32")
    assert not p.fused and not any(isinstance(m, FusedConv2d) for m in p.network.modules())
    assert "CPU conv fusion refused" in caplog.text
    a, b = p.predict(image), plain.predict(image)
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.confidence, b.confidence)


@needs_onednn
def test_the_probe_accepts_the_real_fused_ops_and_names_a_failing_one() -> None:
    plain = _inference_copy(tiny_model(num_classes=3).network)
    fused = cpufuse.fuse_for_cpu_modules(cpufuse._shares_tensors_copy(plain))
    assert probe_fused(plain, fused, torch.float32) is None

    class Broken(nn.Module):
        def forward(self, x):
            raise RuntimeError("could not create a primitive (simulated)")

    fused.classifier = Broken()
    reason = probe_fused(plain, fused, torch.float32)
    assert reason is not None and "a fused op failed" in reason and "simulated" in reason
