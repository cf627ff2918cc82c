"""ASPP and the DeepLabV3 builder, including torchvision state-dict compatibility."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn
from torchvision.models import segmentation as tvseg

import model
from model import aspp as aspp_module
from model.aspp import ASPP, ASPPConv, ASPPPooling, default_atrous_rates
from model.deeplabv3 import build_deeplabv3

from .helpers import randomize_bn


def test_aspp_has_five_branches_of_256_filters() -> None:
    a = ASPP(64, (6, 12, 18))
    assert len(a.convs) == 5
    assert isinstance(a.convs[0][0], nn.Conv2d) and a.convs[0][0].kernel_size == (1, 1)
    assert [b[0].dilation for b in a.convs[1:4]] == [(6, 6), (12, 12), (18, 18)]
    assert all(isinstance(b, ASPPConv) for b in a.convs[1:4])
    assert isinstance(a.convs[4], ASPPPooling)
    for branch in a.convs:
        convs = [m for m in branch if isinstance(m, nn.Conv2d)]
        assert convs[0].out_channels == 256
        assert any(isinstance(m, nn.BatchNorm2d) for m in branch) and any(isinstance(m, nn.ReLU) for m in branch)
    assert a.project[0].in_channels == 5 * 256 and isinstance(a.project[3], nn.Dropout)
    y = a.eval()(torch.randn(2, 64, 9, 11))
    assert y.shape == (2, 256, 9, 11)


def test_aspp_pooling_branch_is_constant_over_space() -> None:
    p = ASPPPooling(8, 16).eval()
    y = p(torch.randn(1, 8, 5, 7))
    assert y.shape == (1, 16, 5, 7)
    assert torch.allclose(y, y[:, :, :1, :1].expand_as(y))


def test_rates_follow_the_paper_and_custom_rates_are_kept() -> None:
    assert default_atrous_rates(16) == (6, 12, 18)
    assert default_atrous_rates(8) == (12, 24, 36)
    with pytest.raises(ValueError):
        default_atrous_rates(32)
    net = build_deeplabv3(backbone="mobilenet_v3_large", num_classes=4, output_stride=8)
    assert net.classifier[0].atrous_rates == (12, 24, 36)
    net = build_deeplabv3(backbone="mobilenet_v3_large", num_classes=4, atrous_rates=(3, 5, 7, 9))
    assert net.classifier[0].atrous_rates == (3, 5, 7, 9) and len(net.classifier[0].convs) == 6


def test_no_deprecated_upsample() -> None:
    source = inspect.getsource(aspp_module) + inspect.getsource(model.deeplabv3)
    assert "F.upsample" not in source and "interpolate" in source


def test_builder_is_keyword_only_and_validates() -> None:
    with pytest.raises(TypeError):
        build_deeplabv3("resnet50", 3)
    with pytest.raises(ValueError, match="backbone"):
        build_deeplabv3(backbone="vgg16", num_classes=3)
    with pytest.raises(ValueError, match="output_stride"):
        build_deeplabv3(backbone="resnet50", num_classes=3, output_stride=32)


@pytest.mark.parametrize("backbone", ["mobilenet_v3_large", "resnet50"])
@pytest.mark.parametrize("stride", [8, 16])
def test_output_stride_sets_feature_resolution(backbone: str, stride: int) -> None:
    net = build_deeplabv3(backbone=backbone, num_classes=5, output_stride=stride, aux_loss=True).eval()
    with torch.no_grad():
        feats = net.backbone(torch.randn(1, 3, 64, 96))
        out = net(torch.randn(1, 3, 64, 96))
    assert feats["out"].shape[-2:] == (64 // stride, 96 // stride)
    assert out["out"].shape == (1, 5, 64, 96) and out["aux"].shape == (1, 5, 64, 96)


def test_aux_head_is_optional() -> None:
    net = build_deeplabv3(backbone="mobilenet_v3_large", num_classes=2)
    assert net.aux_classifier is None
    assert set(net.eval()(torch.randn(1, 3, 32, 32))) == {"out"}


@pytest.mark.parametrize(
    ("tv_builder", "backbone", "stride", "size"),
    [
        (tvseg.deeplabv3_mobilenet_v3_large, "mobilenet_v3_large", 16, (97, 131)),
        (tvseg.deeplabv3_resnet50, "resnet50", 8, (65, 81)),
    ],
)
def test_torchvision_state_dict_loads_strictly_and_outputs_match(tv_builder, backbone, stride, size) -> None:
    torch.manual_seed(1)
    tv = tv_builder(weights=None, weights_backbone=None, num_classes=21, aux_loss=True).eval()
    randomize_bn(tv)
    ours = build_deeplabv3(
        backbone=backbone, num_classes=21, output_stride=stride, atrous_rates=(12, 24, 36), aux_loss=True
    )
    result = ours.load_state_dict(tv.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    ours.eval()
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        a, b = tv(x), ours(x)
    assert torch.allclose(a["out"], b["out"], atol=1e-4, rtol=0)
    assert torch.allclose(a["aux"], b["aux"], atol=1e-4, rtol=0)


def test_resnet101_state_dict_loads_strictly() -> None:
    tv = tvseg.deeplabv3_resnet101(weights=None, weights_backbone=None, num_classes=21, aux_loss=True)
    ours = build_deeplabv3(
        backbone="resnet101", num_classes=21, output_stride=8, atrous_rates=(12, 24, 36), aux_loss=True
    )
    assert ours.load_state_dict(tv.state_dict(), strict=True).missing_keys == []


def _ours_and_dense(cin: int, cout: int, rate: int) -> tuple[nn.Module, nn.Module]:
    """An AtrousConv2d and a plain dilated conv with the same weights."""
    torch.manual_seed(0)
    ours = aspp_module.AtrousConv2d(cin, cout, rate)
    plain = nn.Conv2d(cin, cout, 3, padding=rate, dilation=rate, bias=False)
    plain.load_state_dict(ours.state_dict())
    return ours, plain


def _backward_both(a: torch.Tensor, b: torch.Tensor) -> None:
    g = torch.randn_like(a.float())
    (a.float() * g).sum().backward()
    (b.float() * g).sum().backward()


@pytest.mark.parametrize(("rate", "size"), [(2, (5, 7)), (6, (5, 9)), (6, (9, 5)), (12, (4, 4)), (3, (3, 3))])
def test_atrous_conv_skipping_padding_taps_is_exact(rate: int, size: tuple[int, int]) -> None:
    # Axes no longer than the rate use only the kernel's centre; values and weight gradients must not change.
    ours, plain = _ours_and_dense(4, 5, rate)
    x = torch.randn(2, 4, *size)
    a, b = ours(x), plain(x)
    assert a.shape == b.shape == (2, 5, *size)
    assert torch.allclose(a, b, atol=1e-5, rtol=0)
    _backward_both(a, b)
    assert torch.allclose(ours.weight.grad, plain.weight.grad, atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    ("rate", "size", "by_taps"), [(12, (20, 20), True), (12, (23, 30), True), (6, (8, 13), True), (2, (20, 20), False)]
)
def test_atrous_conv_weight_gradient_by_taps_is_exact(
    rate: int, size: tuple[int, int], by_taps: bool, monkeypatch
) -> None:
    # Training on the CPU with a rate a little shorter than the map: the weight gradient is one
    # matrix product per tap over the part of the map it reads. Values and both gradients must be
    # the dense conv's.
    ours, plain = _ours_and_dense(6, 5, rate)
    calls = []
    real = aspp_module._TapWeightGrad.apply
    monkeypatch.setattr(aspp_module._TapWeightGrad, "apply", lambda *a: calls.append(1) or real(*a))
    x = torch.randn(2, 6, *size).contiguous(memory_format=torch.channels_last).requires_grad_()
    xp = x.detach().clone().requires_grad_()
    a, b = ours(x), plain(xp)
    assert bool(calls) == by_taps
    assert a.shape == b.shape == (2, 5, *size)
    assert torch.allclose(a, b, atol=1e-5, rtol=0)
    _backward_both(a, b)
    assert torch.allclose(ours.weight.grad, plain.weight.grad, atol=1e-4, rtol=0)
    assert torch.allclose(x.grad, xp.grad, atol=1e-5, rtol=0)
    # without gradients (inference, validation) the dense conv runs
    calls.clear()
    with torch.no_grad():
        assert torch.allclose(ours(x), b, atol=1e-5, rtol=0)
    assert not calls


def test_atrous_conv_weight_gradient_by_taps_under_bf16_autocast() -> None:
    ours, plain = _ours_and_dense(8, 4, 12)
    x = torch.randn(2, 8, 20, 20).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a, b = ours(x), plain(x)
    assert a.dtype == b.dtype == torch.bfloat16
    assert torch.allclose(a.float(), b.float(), atol=0.05)
    _backward_both(a, b)
    assert ours.weight.grad.dtype == torch.float32
    rel = (ours.weight.grad - plain.weight.grad).norm() / plain.weight.grad.norm()
    assert rel < 0.02


def test_upsample_false_gives_feature_resolution_logits() -> None:
    torch.manual_seed(0)
    net = build_deeplabv3(backbone="mobilenet_v3_large", num_classes=3, output_stride=16, aux_loss=True).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        full, low = net(x), net(x, upsample=False)
    assert low["out"].shape == (1, 3, 4, 6) and low["aux"].shape == (1, 3, 8, 12)
    up = nn.functional.interpolate(low["out"], size=(64, 96), mode="bilinear", align_corners=False)
    assert torch.allclose(full["out"], up, atol=1e-5)


@pytest.mark.parametrize("backbone", ["mobilenet_v3_large", "resnet50"])
def test_zero_init_residuals_makes_every_residual_block_the_identity(backbone: str) -> None:
    from torchvision.models.mobilenetv3 import InvertedResidual
    from torchvision.models.resnet import Bottleneck

    from model.deeplabv3 import zero_init_residuals

    torch.manual_seed(0)
    net = build_deeplabv3(backbone=backbone, num_classes=3, output_stride=16).eval()
    blocks = [m for m in net.modules() if (isinstance(m, InvertedResidual) and m.use_res_connect)]
    bottlenecks = [m for m in net.modules() if isinstance(m, Bottleneck)]
    changed = zero_init_residuals(net)
    assert changed == len(blocks) + len(bottlenecks) and changed >= 10
    with torch.no_grad():
        for b in blocks:
            c = b.block[0][0].in_channels
            x = torch.randn(1, c, 6, 6)
            assert torch.allclose(b(x), x)
        for b in bottlenecks:
            if b.downsample is None:  # with a downsample the shortcut is a conv, not x
                x = torch.randn(1, b.conv1.in_channels, 6, 6)
                assert torch.allclose(b(x), torch.relu(x))
    # the heads and non-residual blocks keep their random init
    assert net.classifier[0].convs[0][1].weight.abs().sum() > 0


def test_training_from_scratch_starts_with_identity_residual_blocks() -> None:
    from torchvision.models.mobilenetv3 import InvertedResidual

    from model.finetune import build_training_network

    net, note = build_training_network(None, ["a", "b", "c"], backbone="mobilenet_v3_large", output_stride=16)
    assert note == "random init"
    last_bn = [m.block[-1][1].weight for m in net.modules() if isinstance(m, InvertedResidual) and m.use_res_connect]
    assert last_bn and all(bool((w == 0).all()) for w in last_bn)
