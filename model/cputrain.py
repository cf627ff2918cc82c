"""Training on the CPU: where eager PyTorch loses time to the allocator.

Profiled on a 2-core CPU (``torch.profiler``, DeepLabV3-MobileNetV3, batch 8,
crop 320, bf16 autocast), one training step took 0.85 s; with this fix and
fp32 upsampling in the loss (:func:`model.finetune.seg_loss`) and the ASPP taps
that only read padding skipped (:class:`model.aspp.AtrousConv2d`), about 0.53 s
(a 1-minute CamVid fine-tune: 1.24 -> 1.87 it/s).

* :func:`keep_freed_memory`: glibc hands every allocation above its mmap
  threshold (dynamic, at most 32 MiB) to ``mmap`` and returns it on ``free``,
  so the next step's tensors of the same size fault their pages in again, and
  the zero-fills and copies of full-resolution logits run at page-fault speed.
  While training, large blocks stay in the heap and are reused
  (about 0.1 s per step); afterwards the defaults come back and the heap is
  trimmed.

Running the depthwise convs that oneDNN's bf16 backward handles slowly in fp32
(58 -> 38 ms for the dilated 5x5 on 960 channels) was tried and dropped: with
those modules' classes swapped, the GUI's training thread crashed the
interpreter (a refcount error in a C extension), not understood yet.
"""

from __future__ import annotations

import ctypes
import platform
import threading
from collections.abc import Iterator
from contextlib import contextmanager


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
