"""CPU training speed-ups: exact where they claim to be, undoable, and process-wide only while held."""

from __future__ import annotations

import copy
import platform

import pytest
import torch
from torch import nn

from model import cputrain
from model.cputrain import depthwise_in_fp32, keep_freed_memory, phased_dilated_depthwise, plain_convs
from model.deeplabv3 import build_deeplabv3
from model.finetune import seg_loss


def _depthwise(net: nn.Module) -> list[nn.Conv2d]:
    return [m for m in net.modules() if isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels]


def test_slow_depthwise_convs_run_in_fp32_and_undo_restores_them() -> None:
    torch.manual_seed(0)
    net = build_deeplabv3(backbone="mobilenet_v3_large", num_classes=3, aux_loss=True)
    keys = list(net.state_dict())
    assert depthwise_in_fp32(net) is net
    dws = _depthwise(net)
    changed = [m for m in dws if type(m) is not nn.Conv2d]
    kept = [m for m in dws if type(m) is nn.Conv2d]
    # The fast bf16 case (3x3, stride 1, undilated) stays; strided, 5x5 and dilated ones change.
    assert changed and kept
    assert all(m.kernel_size == (3, 3) and m.stride == (1, 1) and m.dilation == (1, 1) for m in kept)
    assert any(m.dilation != (1, 1) for m in changed) and any(m.kernel_size == (5, 5) for m in changed)
    assert list(net.state_dict()) == keys
    x = torch.randn(1, changed[0].in_channels, 16, 16, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert changed[0](x).dtype == torch.float32
    plain_convs(net)
    assert all(type(m) is nn.Conv2d for m in _depthwise(net))


def test_a_copy_of_a_changed_network_gets_plain_convs_back() -> None:
    net = build_deeplabv3(backbone="mobilenet_v3_large", num_classes=3, aux_loss=False)
    depthwise_in_fp32(net)
    twin = copy.deepcopy(net)  # what the saved copy is made from
    assert any(type(m) is not nn.Conv2d for m in _depthwise(twin))
    assert plain_convs(twin) is twin
    assert all(type(m) is nn.Conv2d for m in _depthwise(twin))
    assert any(type(m) is not nn.Conv2d for m in _depthwise(net))  # the original is left alone


def test_fp32_depthwise_training_step_matches_the_plain_one() -> None:
    torch.manual_seed(0)
    net = build_deeplabv3(backbone="mobilenet_v3_large", num_classes=3, aux_loss=True).train()
    x = torch.randn(2, 3, 64, 64)
    y = torch.randint(0, 3, (2, 64, 64))
    torch.manual_seed(1)  # the same dropout mask both times
    ref = seg_loss(net(x, upsample=False)["out"], y, None)
    depthwise_in_fp32(net)
    torch.manual_seed(1)
    got = seg_loss(net(x, upsample=False)["out"], y, None)
    plain_convs(net)
    assert torch.allclose(ref, got, atol=1e-5)


@pytest.mark.parametrize(
    ("channels", "k", "d", "size"), [(8, 5, 2, (20, 20)), (8, 5, 2, (23, 30)), (6, 3, 3, (10, 7)), (5, 5, 4, (3, 9))]
)
def test_a_dilated_depthwise_conv_by_phases_is_exact(channels, k, d, size) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(channels, channels, k, padding=d * (k - 1) // 2, dilation=d, groups=channels, bias=True)
    ref = copy.deepcopy(conv)
    phased_dilated_depthwise(conv)
    assert type(conv) is not nn.Conv2d
    x = torch.randn(2, channels, *size).contiguous(memory_format=torch.channels_last).requires_grad_()
    xr = x.detach().clone().requires_grad_()
    a, b = conv(x), ref(xr)
    assert a.shape == b.shape and a.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(a, b, atol=1e-5)
    g = torch.randn_like(a)
    (a * g).sum().backward()
    (b * g).sum().backward()
    assert torch.allclose(x.grad, xr.grad, atol=1e-5)
    assert torch.allclose(conv.weight.grad, ref.weight.grad, atol=1e-4)
    assert torch.allclose(conv.bias.grad, ref.bias.grad, atol=1e-4)


def test_only_dilated_depthwise_convs_are_phased_and_undo_restores_them() -> None:
    net = build_deeplabv3(backbone="mobilenet_v3_large", num_classes=3, output_stride=16, aux_loss=True)
    keys = list(net.state_dict())
    phased_dilated_depthwise(net)
    depthwise_in_fp32(net)  # the bf16 path: the phased ones are left as they are
    phased = [m for m in net.modules() if type(m) is cputrain._PhasedDepthwiseConv2d]
    assert len(phased) == 3 and all(m.dilation == (2, 2) and m.kernel_size == (5, 5) for m in phased)
    assert not any(type(m) is cputrain._PhasedDepthwiseConv2d and m.dilation == (1, 1) for m in net.modules())
    assert list(net.state_dict()) == keys
    plain_convs(net)
    assert all(type(m) is nn.Conv2d for m in _depthwise(net))


def test_phased_training_step_matches_the_plain_one() -> None:
    torch.manual_seed(0)
    net = build_deeplabv3(backbone="mobilenet_v3_large", num_classes=3, aux_loss=True).train()
    x = torch.randn(2, 3, 96, 96)
    y = torch.randint(0, 3, (2, 96, 96))
    torch.manual_seed(1)
    ref = seg_loss(net(x, upsample=False)["out"], y, None)
    ref.backward()
    ref_grads = [None if p.grad is None else p.grad.clone() for p in net.parameters()]  # the aux head gets none
    net.zero_grad()
    phased_dilated_depthwise(net)
    torch.manual_seed(1)
    got = seg_loss(net(x, upsample=False)["out"], y, None)
    got.backward()
    plain_convs(net)
    assert torch.allclose(ref, got, atol=1e-5)
    pairs = list(zip(ref_grads, net.parameters()))
    assert all((a is None) == (p.grad is None) for a, p in pairs) and sum(a is not None for a, _ in pairs) > 100
    assert all(torch.allclose(a, p.grad, atol=1e-4, rtol=1e-3) for a, p in pairs if a is not None)


def test_seg_loss_upsamples_small_logits_like_the_network_would() -> None:
    torch.manual_seed(0)
    low = torch.randn(2, 4, 5, 6, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 4, (2, 40, 48))
    y[0, :10] = 255
    up = nn.functional.interpolate(low.float(), size=(40, 48), mode="bilinear", align_corners=False)
    assert seg_loss(low, y, None).dtype == torch.float32
    assert torch.allclose(seg_loss(low, y, None), nn.functional.cross_entropy(up, y, ignore_index=255), atol=1e-6)
    w = torch.rand(2, 40, 48) + 0.5
    assert torch.allclose(seg_loss(low, y, w), seg_loss(up, y, w), atol=1e-6)


class _FakeLibc:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append(("mallopt", param, value))
        return 1

    def malloc_trim(self, pad: int) -> int:
        self.calls.append(("trim", pad))
        return 1


def test_keep_freed_memory_is_held_until_the_last_holder_leaves(monkeypatch) -> None:
    fake = _FakeLibc()
    monkeypatch.setattr(cputrain, "_glibc", lambda: fake)
    with keep_freed_memory() as held:
        assert held
        assert ("mallopt", cputrain._M_MMAP_THRESHOLD, cputrain._TRAIN_MMAP_THRESHOLD) in fake.calls
        n = len(fake.calls)
        with keep_freed_memory():
            pass
        assert len(fake.calls) == n  # the inner holder neither set nor restored anything
    assert fake.calls[-3:] == [
        ("mallopt", cputrain._M_MMAP_THRESHOLD, cputrain._DEFAULT_MMAP_THRESHOLD),
        ("mallopt", cputrain._M_TRIM_THRESHOLD, cputrain._DEFAULT_TRIM_THRESHOLD),
        ("trim", 0),
    ]


def test_keep_freed_memory_restores_after_an_error_and_is_a_no_op_without_glibc(monkeypatch) -> None:
    fake = _FakeLibc()
    monkeypatch.setattr(cputrain, "_glibc", lambda: fake)
    with pytest.raises(ValueError), keep_freed_memory():
        raise ValueError("boom")
    assert fake.calls[-1] == ("trim", 0) and cputrain._holders == 0
    monkeypatch.setattr(cputrain, "_glibc", lambda: None)
    with keep_freed_memory() as held:
        assert held is False


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason=f"needs glibc (mallopt, malloc_trim); this is {platform.system()} with {platform.libc_ver()[0] or 'another C library'}",
)
def test_real_glibc_calls_succeed_here() -> None:
    libc = cputrain._glibc()
    assert libc is not None  # on glibc the library must load
    with keep_freed_memory() as held:
        assert held
        big = torch.ones(64 << 18)  # 64 MiB: heap-allocated while held
        assert float(big.sum()) == float(64 << 18)


def test_glibc_defaults_lends_the_defaults_and_gives_the_training_settings_back(monkeypatch) -> None:
    fake = _FakeLibc()
    monkeypatch.setattr(cputrain, "_glibc", lambda: fake)
    with keep_freed_memory():
        with cputrain.glibc_defaults():
            assert ("mallopt", cputrain._M_MMAP_THRESHOLD, cputrain._DEFAULT_MMAP_THRESHOLD) in fake.calls
            fake.calls.clear()
        assert ("mallopt", cputrain._M_MMAP_THRESHOLD, cputrain._TRAIN_MMAP_THRESHOLD) in fake.calls
    fake.calls.clear()
    with cputrain.glibc_defaults():  # outside any holder: nothing to give back afterwards
        pass
    assert ("mallopt", cputrain._M_MMAP_THRESHOLD, cputrain._TRAIN_MMAP_THRESHOLD) not in fake.calls
