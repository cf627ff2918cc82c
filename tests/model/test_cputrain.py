"""CPU training speed-ups: exact where they claim to be, undoable, and process-wide only while held."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from model import cputrain
from model.cputrain import keep_freed_memory
from model.finetune import seg_loss


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
