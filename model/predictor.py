"""Fast pre-labelling: image arrays in, label maps and confidence maps out.

The fast path: ``torch.inference_mode``, BatchNorm folded into the convolutions,
on the CPU convolutions fused with their activations (:mod:`model.cpufuse`),
channels-last memory, batches of same-size images, reduced precision where the
hardware has it (bf16 on CPUs with native bf16, fp16/bf16 on CUDA), resizing to
the model's input size and bilinear upsampling of the logits back to the
original size in row bands (so a 24-megapixel image never needs its full-size
logits in memory). Images whose working size is above ``max_input_pixels`` are
predicted in overlapping, blended tiles. Decoding of the next files overlaps
inference (:meth:`Predictor.predict_files`).

A CUDA out-of-memory error retries with half the batch, then with tiles of
shrinking size, and only then raises :class:`PredictionError`.

The fused CPU path checks itself: :func:`model.cpufuse.fused_for_cpu` compares
it with the plain network before it is used, and a fused op that fails during
a batch switches the predictor to the plain network for good (the failed
forward is recomputed, so no image loses its prediction).
"""

from __future__ import annotations

import copy
import functools
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from annotation.errors import AtrousError, ImageReadError
from annotation.imageio import load_image

from .cpufuse import fused_for_cpu
from .data import image_mean_std, scaled_size
from .weights import NORM_IMAGE, LoadedModel

#: Smallest tile tried before giving up on an out-of-memory error.
MIN_TILE = 256

# A child of the app's "atrous" logger, so fallbacks reach its log file.
log = logging.getLogger("atrous.predictor")


def _is_memory_error(e: BaseException) -> bool:
    # The CPU allocator reports a failed allocation as a plain RuntimeError.
    text = str(e).lower()
    return "out of memory" in text or "can't allocate memory" in text


class PredictionError(AtrousError):
    """Prediction failed for a reason the user can act on (e.g. out of GPU memory)."""


@dataclass
class Prediction:
    """One image's result at its original size.

    ``labels``: uint8 class indices (H, W). ``confidence``: uint8 (H, W), the
    maximum softmax probability scaled to 0..255 (255 = certain).
    """

    labels: np.ndarray
    confidence: np.ndarray

    @property
    def mean_confidence(self) -> float:
        """Mean max-softmax probability in [0, 1] (low = the model is unsure)."""
        return float(self.confidence.mean()) / 255.0


# --------------------------------------------------------------------------- device & precision


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then MPS, then the CPU; other names are checked and used."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise PredictionError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PredictionError("--device cuda was asked for, but PyTorch sees no CUDA GPU here; use --device cpu")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise PredictionError("--device mps was asked for, but MPS is not available here; use --device cpu")
    return device


#: /proc/cpuinfo flags of the x86 extensions that run bf16 arithmetic in hardware.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def native_bf16_in_flags(flags: str) -> bool:
    """True when a ``/proc/cpuinfo`` flags list names AVX512_BF16 or AMX-BF16.

    AVX512BW alone (Skylake, Cascade Lake) is not enough: oneDNN then emulates
    bf16 with integer shifts, slower than fp32.
    """
    return not NATIVE_BF16_FLAGS.isdisjoint(flags.split())


def _cpuinfo_flags(path: Path = Path("/proc/cpuinfo")) -> str | None:
    """The first ``flags`` line of ``/proc/cpuinfo`` (x86 Linux), or None where there is none."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "flags":
            return value
    return None


def onednn_bf16_usable() -> bool:
    """True when this PyTorch's oneDNN runs bf16 convolutions on this CPU at all (natively or emulated)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _torch_reports_native_bf16() -> bool:
    # Off Linux there is no /proc/cpuinfo; PyTorch's own cpuinfo probes are private
    # and have been renamed between releases, so a missing one counts as "no".
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        probe = getattr(torch.cpu, name, None)
        try:
            if probe is not None and probe():
                return True
        except (RuntimeError, TypeError):
            continue
    return False


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True when bf16 is faster than fp32 on this CPU: native AVX512_BF16 or AMX, and oneDNN can use it.

    Without them bf16 is emulated and slower than fp32, so the predictor (and
    fine-tuning) then stay in fp32. Computed once per process.
    """
    if not onednn_bf16_usable():
        return False
    flags = _cpuinfo_flags()
    if flags is not None:
        return native_bf16_in_flags(flags)
    return _torch_reports_native_bf16()


def pick_dtype(device: torch.device, precision: str = "auto") -> torch.dtype:
    """The compute dtype for ``precision`` (auto, fp32, bf16, fp16) on ``device``."""
    table = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if precision != "auto":
        if precision not in table:
            raise PredictionError(f"unknown precision {precision!r}; use auto, fp32, bf16 or fp16")
        if device.type == "cpu" and precision == "fp16":
            raise PredictionError("fp16 is not supported on the CPU; use bf16 or fp32")
        return table[precision]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.bfloat16 if cpu_has_native_bf16() else torch.float32


# --------------------------------------------------------------------------- model preparation


def _fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    fused = copy.deepcopy(conv)
    w = conv.weight.detach()
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    fused.weight = nn.Parameter(w * scale.reshape(-1, 1, 1, 1))
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias.detach())
    return fused


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm that directly follows a conv into that conv (in place).

    "Directly follows" means adjacent children in registration order, which is
    how torchvision's ResNet (conv1/bn1...), MobileNet (Conv2dNormActivation)
    and our ASPP head are written; the tests compare outputs before and after.
    """
    for parent in module.modules():
        names = list(parent._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = parent._modules[a], parent._modules[b]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
                parent._modules[a] = _fold_bn(conv, bn)
                parent._modules[b] = nn.Identity()
    return module


# --------------------------------------------------------------------------- geometry helpers


def working_size(h: int, w: int, input_size: int | None) -> tuple[int, int]:
    """Size the network sees (:func:`model.data.scaled_size`, the rule training uses too)."""
    return scaled_size(h, w, input_size)


def _bilinear_taps(n_out: int, n_in: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # The same sampling as F.interpolate(mode="bilinear", align_corners=False).
    scale = n_in / n_out
    src = ((torch.arange(n_out, device=device, dtype=torch.float32) + 0.5) * scale - 0.5).clamp(min=0)
    i0 = src.floor().long().clamp(max=n_in - 1)
    i1 = (i0 + 1).clamp(max=n_in - 1)
    return i0, i1, (src - i0).clamp(0, 1)


def _argmax_softmax_max(band: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel argmax over the class axis and the max softmax probability.

    A loop over classes of whole-plane elementwise ops: reductions along the
    leading (strided) axis are several times slower in PyTorch on the CPU.
    max softmax = 1 / sum(exp(l - max)), so the full softmax is never built.
    """
    top = band[0].clone()
    idx = torch.zeros(band.shape[1:], dtype=torch.uint8, device=band.device)
    for c in range(1, band.shape[0]):
        better = band[c] > top  # strict: ties keep the lower index, like argmax
        top = torch.maximum(top, band[c])
        idx = torch.where(better, torch.tensor(c, dtype=torch.uint8, device=band.device), idx)
    total = torch.zeros_like(top)
    for c in range(band.shape[0]):
        total += torch.exp(band[c] - top)
    return idx, total.reciprocal_()


def upsample_argmax(
    logits: torch.Tensor, height: int, width: int, band_bytes: int = 64 << 20
) -> tuple[np.ndarray, np.ndarray]:
    """Bilinearly resize (C, h, w) logits to (height, width) band by band; return labels and confidence.

    Memory stays at ``band_bytes`` of float32 whatever the output size.
    """
    c, h, w = logits.shape
    logits = logits.float()
    dev = logits.device
    labels = np.empty((height, width), dtype=np.uint8)
    conf = np.empty((height, width), dtype=np.uint8)
    same = (h, w) == (height, width)
    if not same:
        y0, y1, wy = _bilinear_taps(height, h, dev)
        x0, x1, wx = _bilinear_taps(width, w, dev)
    rows = max(1, band_bytes // max(1, 4 * c * width * 3))
    for a in range(0, height, rows):
        b = min(height, a + rows)
        if same:
            band = logits[:, a:b]
        else:
            t = torch.lerp(logits.index_select(1, y0[a:b]), logits.index_select(1, y1[a:b]), wy[a:b].view(1, -1, 1))
            # Gathering along the last axis is slow; gather columns as rows of the transpose.
            t = t.transpose(1, 2).contiguous()
            band = (
                torch.lerp(t.index_select(1, x0), t.index_select(1, x1), wx.view(1, -1, 1)).transpose(1, 2).contiguous()
            )
        idx, p = _argmax_softmax_max(band)
        labels[a:b] = idx.cpu().numpy()
        conf[a:b] = (p * 255.0 + 0.5).clamp_(0, 255).to(torch.uint8).cpu().numpy()
    return labels, conf


def _tile_starts(n: int, tile: int, overlap: int) -> list[int]:
    if n <= tile:
        return [0]
    step = max(1, tile - overlap)
    starts = list(range(0, n - tile, step)) + [n - tile]
    return sorted(set(starts))


def _blend_window(h: int, w: int, overlap: int, device: torch.device) -> torch.Tensor:
    # Linear ramps at the tile edges so overlapping predictions cross-fade.
    def ramp(n: int) -> torch.Tensor:
        r = torch.ones(n, device=device)
        k = min(overlap, n // 2)
        if k > 0:
            edge = (torch.arange(k, device=device, dtype=torch.float32) + 1) / (k + 1)
            r[:k] = edge
            r[n - k :] = edge.flip(0)
        return r

    return ramp(h)[:, None] * ramp(w)[None, :]


def as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Accept HxW, HxWx1, HxWx3 or HxWx4 uint8 arrays; return HxWx3 (alpha dropped)."""
    if image.dtype != np.uint8:
        raise ValueError(f"images must be uint8, got {image.dtype}")
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] in (1, 3, 4):
        if image.shape[2] == 1:
            return np.repeat(image, 3, axis=2)
        return image[:, :, :3]
    raise ValueError(f"expected an HxW or HxWx{{1,3,4}} image, got shape {image.shape}")


# --------------------------------------------------------------------------- the predictor


class Predictor:
    """Runs a :class:`LoadedModel` on images and returns :class:`Prediction` objects.

    Args:
        model: network + metadata (preprocessing, classes).
        device: ``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda[:N]`` or ``mps``.
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16``.
        batch_size: how many same-size images go through the network at once.
        max_input_pixels: above this many working-resolution pixels an image is
            predicted in ``tile_size`` tiles overlapping by ``tile_overlap``.
        fuse: on the CPU, run convolutions fused with their activations
            (:mod:`model.cpufuse`) where this PyTorch supports it.
    """

    def __init__(
        self,
        model: LoadedModel,
        *,
        device: str = "auto",
        precision: str = "auto",
        batch_size: int = 4,
        max_input_pixels: int = 1600 * 1600,
        tile_size: int = 1024,
        tile_overlap: int = 128,
        min_tile: int = MIN_TILE,
        fuse: bool = True,
    ) -> None:
        self.meta = model.meta
        self.device = pick_device(device)
        self.dtype = pick_dtype(self.device, precision)
        self.batch_size = max(1, int(batch_size))
        self.max_input_pixels = int(max_input_pixels)
        self.tile_size = int(tile_size)
        self.tile_overlap = int(tile_overlap)
        self.min_tile = int(min_tile)
        #: How many out-of-memory fallbacks (a halved batch, a smaller tile) this predictor has taken.
        self.oom_retries = 0
        net = copy.deepcopy(model.network).eval()
        net.aux_classifier = None  # never needed for inference
        fold_batchnorm(net)
        net = net.to(self.device, memory_format=torch.channels_last)
        if self.dtype != torch.float32:
            net = net.to(self.dtype)
        #: True when the CPU fast path (oneDNN conv + activation fusion) is in use.
        self.fused = False
        #: Why this predictor left the fused path mid-run (None while it has not).
        self.fusion_error: str | None = None
        # The plain network stays: a fused op that fails mid-run falls back to it
        # (the fused copy shares its weight tensors, so keeping it is cheap).
        self._plain = net
        if fuse and self.device.type == "cpu":
            fused = fused_for_cpu(net, self.dtype)
            if fused is not None:
                net, self.fused = fused, True
        self.network = net
        mean = torch.tensor(self.meta.mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(self.meta.std, device=self.device).view(1, 3, 1, 1)
        # (x / 255 - mean) / std as one multiply-subtract
        self._scale = 1.0 / (255.0 * std)
        self._shift = mean / std
        #: Each image normalised by its own per-channel mean and std (ModelMeta.normalisation).
        self._per_image = self.meta.normalisation == NORM_IMAGE

    # -- reporting

    @property
    def description(self) -> str:
        """What is actually used, e.g. ``"CPU, bf16"`` or ``"CUDA, fp16"``."""
        names = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
        return f"{self.device.type.upper()}, {names[self.dtype]}"

    # -- core

    def _to_input(self, images: list[np.ndarray], size: tuple[int, int]) -> torch.Tensor:
        arr = np.stack([as_rgb_uint8(im) for im in images])
        # NHWC uint8 viewed as NCHW channels-last: no copy, and torch has a fast
        # uint8 antialiased bilinear resize for exactly this layout on the CPU.
        x = torch.from_numpy(arr).to(self.device).permute(0, 3, 1, 2)
        if tuple(x.shape[-2:]) != size:
            if self.device.type != "cpu":
                x = x.float()
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        if self._per_image:
            # Over the whole working image, before any tiling, as training takes it.
            mean, std = image_mean_std(x)
            scale, shift = 1.0 / (255.0 * std), mean / std
        else:
            scale, shift = self._scale, self._shift
        x = (x.float() * scale - shift).contiguous(memory_format=torch.channels_last)
        return x.to(self.dtype)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits at feature resolution (input / output stride).

        The network's own forward would upsample them to the input size; we
        skip that and upsample once, straight to the original image size, in
        :func:`upsample_argmax` — cheaper, and one interpolation instead of two.
        """
        with torch.inference_mode():
            if self.fused:
                try:
                    return self.network.classifier(self.network.backbone(x)["out"])
                except RuntimeError as e:
                    if isinstance(e, torch.OutOfMemoryError) or _is_memory_error(e):
                        raise  # not the fused op's fault: the out-of-memory fallbacks handle it
                    self._leave_fused_path(e)
            # The input is intact: fused blocks accumulate in place only into their own
            # intermediate maps, never into the network's input.
            return self.network.classifier(self.network.backbone(x)["out"])

    def _leave_fused_path(self, error: RuntimeError) -> None:
        """Switch to the plain network for good after a fused op failed; warn once."""
        self.fused = False
        self.network = self._plain
        self.fusion_error = f"{type(error).__name__}: {error}"
        log.warning("a fused CPU op failed (%s); this predictor uses the plain network from now on", self.fusion_error)

    def _forward_tiled(self, x: torch.Tensor, tile: int) -> torch.Tensor:
        n, _, h, w = x.shape
        overlap = min(self.tile_overlap, tile // 4)
        acc = torch.zeros((n, self.meta.arch.num_classes, h, w), device=self.device, dtype=torch.float32)
        weight = torch.zeros((1, 1, h, w), device=self.device, dtype=torch.float32)
        th, tw = min(tile, h), min(tile, w)
        win = _blend_window(th, tw, overlap, self.device)
        for y in _tile_starts(h, th, overlap):
            for x0 in _tile_starts(w, tw, overlap):
                out = self._forward(x[:, :, y : y + th, x0 : x0 + tw]).float()
                out = F.interpolate(out, size=(th, tw), mode="bilinear", align_corners=False)
                acc[:, :, y : y + th, x0 : x0 + tw] += out * win
                weight[:, :, y : y + th, x0 : x0 + tw] += win
        return acc / weight

    def _out_of_memory(self, what: str) -> PredictionError:
        where = f"{self.device.type.upper()} memory" if self.device.type != "cpu" else "memory"
        hint = (
            "close other programs that use the GPU or use --device cpu"
            if self.device.type != "cpu"
            else "close other programs"
        )
        return PredictionError(f"out of {where} {what}; {hint}")

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        """Forward a batch with the out-of-memory fallbacks: halve the batch, then tile smaller.

        Each retry starts after the ``except`` block has ended: until then the
        exception's traceback keeps the failed attempt's activations alive, and
        the retry would run out of memory again for no reason.
        """
        h, w = x.shape[-2:]
        tile = self.tile_size if h * w > self.max_input_pixels else None
        while True:
            try:
                if tile is None:
                    return self._forward(x)
                return self._forward_tiled(x, tile)
            except torch.OutOfMemoryError as e:
                last = e.with_traceback(None)  # kept for the message, without the frames
            self.oom_retries += 1
            self._release_memory()
            if x.shape[0] > 1:
                half = x.shape[0] // 2
                return torch.cat([self._run(x[:half]), self._run(x[half:])])
            next_tile = (tile or max(h, w)) // 2
            if next_tile < self.min_tile:
                raise self._out_of_memory(f"even for one {self.min_tile}-pixel tile") from last
            tile = next_tile

    def _release_memory(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _predict_chunk(
        self, images: list[np.ndarray], size: tuple[int, int], work: tuple[int, int]
    ) -> list[Prediction]:
        """Images of one size through input preparation, the network and upsampling.

        The network's own out-of-memory fallbacks are in :meth:`_run`; running
        out while preparing the input (full-size float copies on the device) or
        upsampling splits the chunk in two.
        """
        h, w = size
        try:
            logits = self._run(self._to_input(images, work))
            return [Prediction(*upsample_argmax(logits[j], h, w)) for j in range(len(images))]
        except torch.OutOfMemoryError as e:
            last = e.with_traceback(None)  # kept for the message, without the frames
        self.oom_retries += 1
        self._release_memory()
        if len(images) == 1:
            raise self._out_of_memory(f"preparing one {w}x{h} image") from last
        half = len(images) // 2
        return self._predict_chunk(images[:half], size, work) + self._predict_chunk(images[half:], size, work)

    def predict_batch(self, images: list[np.ndarray]) -> list[Prediction]:
        """Predict several images; same-size images share batches. Order is kept."""
        results: list[Prediction | None] = [None] * len(images)
        groups: dict[tuple[int, int, int, int], list[int]] = {}
        for i, im in enumerate(images):
            h, w = im.shape[:2]
            if h == 0 or w == 0:
                raise ValueError(f"image {i} is empty ({h}x{w})")
            groups.setdefault((h, w, *working_size(h, w, self.meta.input_size)), []).append(i)
        for (h, w, wh, ww), idx in groups.items():
            for s in range(0, len(idx), self.batch_size):
                chunk = idx[s : s + self.batch_size]
                for i, pred in zip(chunk, self._predict_chunk([images[i] for i in chunk], (h, w), (wh, ww))):
                    results[i] = pred
        return results

    def predict(self, image: np.ndarray) -> Prediction:
        """Predict one uint8 image (HxW, HxWx3 or HxWx4) at its original size."""
        return self.predict_batch([image])[0]

    def predict_files(
        self,
        paths: Iterable[str | os.PathLike[str]],
        *,
        loader: Callable[[Path], np.ndarray] = load_image,
        prefetch: int = 4,
    ) -> Iterator[tuple[Path, Prediction | AtrousError]]:
        """Yield ``(path, prediction)`` in order, or ``(path, error)`` for an unreadable file.

        Decoding runs in a background thread ahead of inference (PIL and torch
        both release the GIL), and consecutive same-size images are batched.
        """
        paths = [Path(p) for p in paths]

        def decode(p: Path) -> np.ndarray | AtrousError:
            try:
                return loader(p)
            except AtrousError as e:
                return e
            except Exception as e:  # a decoder bug must not end the batch
                return ImageReadError(f"{p}: cannot decode ({e})")

        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="atrous-decode")
        try:
            pending: list[Future] = [pool.submit(decode, p) for p in paths[:prefetch]]
            nxt = len(pending)
            batch: list[tuple[Path, np.ndarray]] = []
            key = None
            i = 0
            while i < len(paths):
                item = pending.pop(0).result()
                if nxt < len(paths):
                    pending.append(pool.submit(decode, paths[nxt]))
                    nxt += 1
                path = paths[i]
                i += 1
                if isinstance(item, AtrousError):
                    yield from self._flush(batch)
                    batch, key = [], None
                    yield path, item
                    continue
                k = item.shape[:2]
                if batch and (k != key or len(batch) >= self.batch_size):
                    yield from self._flush(batch)
                    batch = []
                key = k
                batch.append((path, item))
            yield from self._flush(batch)
        finally:
            # A caller that stops early (a cancelled job closes this generator) does not wait
            # for the images queued ahead to be decoded.
            pool.shutdown(wait=True, cancel_futures=True)

    def _flush(self, batch: list[tuple[Path, np.ndarray]]) -> Iterator[tuple[Path, Prediction | AtrousError]]:
        if not batch:
            return
        try:
            preds = self.predict_batch([im for _, im in batch])
        except PredictionError as e:
            for p, _ in batch:
                yield p, PredictionError(f"{p}: {e}")
            return
        for (p, _), pred in zip(batch, preds):
            yield p, pred
