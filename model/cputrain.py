"""Training on the CPU: two measured fixes for where eager PyTorch loses time.

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
"""

from __future__ import annotations

import ctypes
import platform
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

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


def plain_convs(net: nn.Module) -> nn.Module:
    """Undo :func:`depthwise_in_fp32` on ``net`` or on a deep copy of it (the saved network); returns it."""
    for m in net.modules():
        if type(m) is _Fp32Conv2d:
            m.__class__ = nn.Conv2d
    return net
