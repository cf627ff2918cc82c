"""CPU training speed-ups: exact where they claim to be, undoable, and process-wide only while held."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from model import cputrain
from model.cputrain import depthwise_in_fp32, keep_freed_memory, plain_convs
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


def test_real_glibc_calls_succeed_here() -> None:
    libc = cputrain._glibc()
    assert libc is not None  # CI and this machine are Linux with glibc
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
