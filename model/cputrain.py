"""Training on the CPU: measured fixes for where eager PyTorch loses time.

Profiled on a 2-core CPU (``torch.profiler``, DeepLabV3-MobileNetV3, batch 8,
crop 320, bf16 autocast), one training step took 0.85 s; with these fixes and
fp32 upsampling in the loss (:func:`model.finetune.seg_loss`) and the ASPP taps
that only read padding skipped (:class:`model.aspp.AtrousConv2d`), 0.49 s.

* :func:`keep_freed_memory`: glibc hands every allocation above its mmap
  threshold (dynamic, at most 32 MiB) to ``mmap`` and returns it on ``free``,
  so the next step's tensors of the same size fault their pages in again, and
  the zero-fills and copies of full-resolution logits run at page-fault speed.
  While training, large blocks stay in the heap and are reused
  (0.60 -> 0.49 s per step); afterwards the defaults come back and the heap is
  trimmed.
* :func:`depthwise_in_fp32`: oneDNN's bf16 backward for depthwise convs is
  slow except for 3x3, stride 1, undilated; the others run faster in fp32
  (MobileNetV3's dilated 5x5 on 960 channels: 58 -> 38 ms, strided 5x5 on 72
  channels: 31 -> 6 ms per backward). Those convs opt out of autocast.

  (This was once dropped because the GUI's training thread then died with
  ``none_dealloc``. The cause was PySide6 6.12.0, which loses references to
  None on every queued signal; the faster steps only sent the progress signal
  often enough to get there sooner. See ``tests/gui/test_qt_refcounts.py``.)
* :func:`phased_dilated_depthwise`: in fp32 as well (CPUs without native
  bf16 train in fp32), oneDNN's weight gradient for a dilated depthwise conv is
  slow; the same conv on the input's phases, undilated, is exact and faster.

With these, the fused optimizer (:func:`model.finetune.make_optimizer`) and the
ASPP weight gradient by taps (:class:`model.aspp.AtrousConv2d`), an fp32 step
at batch 4 on an AVX2-only 2-core CPU went from 1.23-1.28 s to 1.11 s.
"""

from __future__ import annotations

import ctypes
import platform
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn import functional as F

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: While training: blocks up to 1 GiB come from the heap, and up to 2 GiB of free heap is kept.
_TRAIN_MMAP_THRESHOLD = 1 << 30
_TRAIN_TRIM_THRESHOLD = (1 << 31) - 1
#: Afterwards: where glibc's dynamic threshold settles once large blocks have been freed.
_DEFAULT_MMAP_THRESHOLD = 32 << 20
_DEFAULT_TRIM_THRESHOLD = 64 << 20

_lock = threading.Lock()
_holders = 0


def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.malloc_trim.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


@contextmanager
def keep_freed_memory() -> Iterator[bool]:
    """Keep freed large blocks in the heap while the block runs (glibc only; yields whether it did).

    Process-wide and reference-counted: the defaults come back, and the heap is
    trimmed, when the last holder leaves.
    """
    global _holders
    libc = _glibc()
    if libc is None:
        yield False
        return
    with _lock:
        if _holders == 0:
            libc.mallopt(_M_MMAP_THRESHOLD, _TRAIN_MMAP_THRESHOLD)
            libc.mallopt(_M_TRIM_THRESHOLD, _TRAIN_TRIM_THRESHOLD)
        _holders += 1
    try:
        yield True
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0:
                libc.mallopt(_M_MMAP_THRESHOLD, _DEFAULT_MMAP_THRESHOLD)
                libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
                libc.malloc_trim(0)


@contextmanager
def glibc_defaults() -> Iterator[None]:
    """Inside :func:`keep_freed_memory`, run a block under glibc's default thresholds.

    For benchmarks: a baseline trained in the same process (interleaved with
    ours) must not get our allocator settings for free.
    """
    libc = _glibc()
    if libc is None:
        yield
        return
    with _lock:
        libc.mallopt(_M_MMAP_THRESHOLD, _DEFAULT_MMAP_THRESHOLD)
        libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
        libc.malloc_trim(0)
    try:
        yield
    finally:
        with _lock:
            if _holders > 0:
                libc.mallopt(_M_MMAP_THRESHOLD, _TRAIN_MMAP_THRESHOLD)
                libc.mallopt(_M_TRIM_THRESHOLD, _TRAIN_TRIM_THRESHOLD)


class _Fp32Conv2d(nn.Conv2d):
    """A Conv2d that runs in fp32 under autocast (same parameters and state-dict keys)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.float())


def _slow_in_bf16(m: nn.Module) -> bool:
    if type(m) is not nn.Conv2d or m.groups == 1 or m.groups != m.in_channels:
        return False
    fast = m.kernel_size == (3, 3) and m.stride == (1, 1) and m.dilation == (1, 1)
    return not fast


def depthwise_in_fp32(net: nn.Module) -> nn.Module:
    """Make the depthwise convs that are slow in bf16 run in fp32 (undo with :func:`plain_convs`); returns ``net``."""
    for m in net.modules():
        if _slow_in_bf16(m):
            m.__class__ = _Fp32Conv2d
    return net


class _PhasedDepthwiseConv2d(nn.Conv2d):
    """A dilated depthwise conv computed as an undilated one on the phases of its input (fp32).

    With dilation d, output pixel (y, x) only reads input pixels congruent to
    (y, x) modulo d, so the map splits into d x d phase images (moved into the
    batch) on which the same kernel runs undilated with padding (k - 1) / 2;
    the results interleave back. Zero padding is the same in both views, so the
    result is exact. oneDNN's weight gradient for the dilated form is slow.
    Used only while gradients are recorded; otherwise the plain conv runs.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            x = x.float()
            if not torch.is_grad_enabled():
                return super().forward(x)
            d = self.dilation[0]
            n, c, h, w = x.shape
            hp, wp = -(-h // d) * d, -(-w // d) * d
            if (hp, wp) != (h, w):
                x = F.pad(x, (0, wp - w, 0, hp - h))  # zeros past the edge: what the padding reads anyway
            phases = (
                x.reshape(n, c, hp // d, d, wp // d, d)
                .permute(0, 3, 5, 1, 2, 4)
                .reshape(n * d * d, c, hp // d, wp // d)
            )
            phases = phases.contiguous(memory_format=torch.channels_last)
            k = self.kernel_size[0]
            y = F.conv2d(phases, self.weight, self.bias, 1, (k - 1) // 2, 1, self.groups)
            o = y.shape[1]
            y = y.reshape(n, d, d, o, hp // d, wp // d).permute(0, 3, 4, 1, 5, 2).reshape(n, o, hp, wp)
            return y[:, :, :h, :w].contiguous(memory_format=torch.channels_last)


def _phaseable(m: nn.Module) -> bool:
    if type(m) is not nn.Conv2d or m.groups == 1 or m.groups != m.in_channels:
        return False
    (kh, kw), (dh, dw) = m.kernel_size, m.dilation
    return (
        kh == kw
        and kh % 2 == 1
        and dh == dw > 1
        and m.stride == (1, 1)
        and m.padding_mode == "zeros"
        and m.padding == (dh * (kh - 1) // 2,) * 2
    )


def phased_dilated_depthwise(net: nn.Module) -> nn.Module:
    """Run dilated depthwise convs as undilated ones on input phases while training (undo with :func:`plain_convs`).

    MobileNetV3 at output stride 16 dilates its last three 5x5 depthwise convs;
    fp32 on 2 CPU cores at batch 4 (20x20 maps), forward and backward of the one
    on 960 channels took 72 ms dilated and 53 ms by phases, on 672 channels
    53 and 27 ms. Returns ``net``.
    """
    for m in net.modules():
        if _phaseable(m):
            m.__class__ = _PhasedDepthwiseConv2d
    return net


def plain_convs(net: nn.Module) -> nn.Module:
    """Undo :func:`depthwise_in_fp32` and :func:`phased_dilated_depthwise` on ``net`` or a deep copy of it; returns it."""
    for m in net.modules():
        if type(m) in (_Fp32Conv2d, _PhasedDepthwiseConv2d):
            m.__class__ = nn.Conv2d
    return net
