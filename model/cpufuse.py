"""CPU inference fusion: oneDNN convolutions with their activation (and residual add) fused.

On the CPU, eager PyTorch runs each convolution as its own oneDNN call: it
reorders the weights into oneDNN's blocked layout on every call, then a ReLU
and (in a ResNet block) an add each make another full pass over the feature
map. oneDNN can do all three in one call with weights reordered once; this is
what ``torch.compile`` emits for frozen CPU graphs (``mkldnn._convolution_pointwise``),
but compiling costs seconds per process and needs a C++ compiler. This module
swaps the modules of an inference copy of the network instead, at no start-up
cost:

- a ``Conv2d`` followed, inside an ``nn.Sequential``, by ``ReLU`` or
  ``Hardswish`` (after BatchNorm folding left ``Identity`` between them)
  becomes one fused conv; every other ``Conv2d`` still gets prepacked weights;
- a torchvision ResNet ``Bottleneck`` becomes conv -> conv -> conv+add+ReLU,
  the add accumulating in place into the shortcut;
- a global ``AdaptiveAvgPool2d(1)`` on a channels-last map becomes a
  matrix-vector product (PyTorch's reduction over the two strided spatial axes
  is ~10x slower on bf16 channels-last tensors).

Only for inference (``torch.inference_mode``) on the CPU, fp32 or bf16, after
:func:`model.predictor.fold_batchnorm`. :func:`fused_for_cpu` returns None
when this PyTorch build or CPU lacks the oneDNN ops.
"""

from __future__ import annotations

import copy
import logging
from collections import OrderedDict

import torch
from torch import nn
from torchvision.models.resnet import Bottleneck

from .aspp import AtrousConv2d

#: Packed weights are specific to an input shape; keep this many shapes per conv.
PACKED_SHAPES = 2

_ACTIVATIONS: dict[type[nn.Module], str] = {nn.ReLU: "relu", nn.Hardswish: "hardswish"}

# A child of the app's "atrous" logger, so refusals reach its log file.
log = logging.getLogger("atrous.cpufuse")


def fusion_available() -> bool:
    """True when this PyTorch has oneDNN and its fused-convolution ops."""
    mk = getattr(torch.ops, "mkldnn", None)
    try:
        return bool(
            torch.backends.mkldnn.is_available()
            and mk is not None
            and hasattr(mk, "_convolution_pointwise")
            and hasattr(mk, "_convolution_pointwise_")
            and hasattr(mk, "_reorder_convolution_weight")
        )
    except (AttributeError, RuntimeError):
        return False


class FusedConv2d(nn.Module):
    """A ``Conv2d`` (+ optional activation) as one oneDNN call with prepacked weights.

    The weights are reordered for oneDNN the first time an input shape is seen
    (the best layout depends on it) and kept for the last :data:`PACKED_SHAPES`
    shapes.
    """

    def __init__(self, conv: nn.Conv2d, activation: str = "none") -> None:
        super().__init__()
        if not _fusable(conv):
            raise ValueError("only a plain Conv2d with explicit zero padding can be fused")
        self.padding = list(conv.padding)
        self.stride = list(conv.stride)
        self.dilation = list(conv.dilation)
        self.groups = conv.groups
        self.activation = activation
        # Shared with ``conv``, not copied: fusion works on an inference copy (see fused_for_cpu).
        self.register_buffer("weight", conv.weight.detach(), persistent=False)
        self.register_buffer("bias", None if conv.bias is None else conv.bias.detach(), persistent=False)
        self._packed: OrderedDict[tuple[int, ...], torch.Tensor] = OrderedDict()

    def _packed_weight(self, x: torch.Tensor) -> torch.Tensor:
        key = tuple(x.shape)
        w = self._packed.get(key)
        if w is None:
            w = torch.ops.mkldnn._reorder_convolution_weight(
                self.weight.to(x.dtype), self.padding, self.stride, self.dilation, self.groups, list(x.shape)
            )
            self._packed[key] = w
            while len(self._packed) > PACKED_SHAPES:
                self._packed.popitem(last=False)
        else:
            self._packed.move_to_end(key)
        return w

    def _bias(self, x: torch.Tensor) -> torch.Tensor | None:
        return None if self.bias is None else self.bias.to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._convolution_pointwise(
            x, self._packed_weight(x), self._bias(x), self.padding, self.stride, self.dilation, self.groups,
            self.activation, [None], "",
        )  # fmt: skip

    def add_relu_(self, x: torch.Tensor, accumulate: torch.Tensor) -> torch.Tensor:
        """``relu(conv(x) + accumulate)``, written into ``accumulate`` (which is returned)."""
        torch.ops.mkldnn._convolution_pointwise_.binary(
            accumulate, x, self._packed_weight(x), self._bias(x), self.padding, self.stride, self.dilation,
            self.groups, "add", 1.0, "relu", [None], "",
        )  # fmt: skip
        return accumulate


class FusedBottleneck(nn.Module):
    """torchvision's ResNet ``Bottleneck`` (BatchNorm already folded) with fused convs.

    The residual sum accumulates in place into the shortcut: the projection's
    fresh output, or the block's input, which nothing downstream of a ResNet
    stage reads again.
    """

    def __init__(self, block: Bottleneck) -> None:
        super().__init__()
        for name in ("bn1", "bn2", "bn3"):
            if not isinstance(getattr(block, name), nn.Identity):
                raise ValueError("fold BatchNorm into the convolutions before fusing")
        self.conv1 = FusedConv2d(block.conv1, "relu")
        self.conv2 = FusedConv2d(block.conv2, "relu")
        self.conv3 = FusedConv2d(block.conv3)
        self.downsample: nn.Module | None = None
        if block.downsample is not None:
            self.downsample = fuse_for_cpu_modules(block.downsample)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        if not shortcut.is_contiguous(memory_format=torch.channels_last) and not shortcut.is_contiguous():
            shortcut = shortcut.contiguous()
        return self.conv3.add_relu_(self.conv2(self.conv1(x)), shortcut)


class GlobalMeanPool(nn.Module):
    """``AdaptiveAvgPool2d(1)`` as a matrix product on channels-last maps."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        if not x.is_contiguous(memory_format=torch.channels_last) or x.dtype not in (torch.float32, torch.bfloat16):
            return x.mean((2, 3), keepdim=True)
        flat = x.permute(0, 2, 3, 1).reshape(n, h * w, c)  # a view: no copy
        ones = torch.ones((n, 1, h * w), dtype=x.dtype, device=x.device)
        return (torch.bmm(ones, flat) * (1.0 / (h * w))).view(n, c, 1, 1)


def _is_global_pool(m: nn.Module) -> bool:
    if not isinstance(m, nn.AdaptiveAvgPool2d):
        return False
    size = m.output_size
    return size in (1, (1, 1), [1, 1])


def _fusable(conv: nn.Module) -> bool:
    # AtrousConv2d only skips taps that read padding; the fused op computes them as zeros.
    return (
        type(conv) in (nn.Conv2d, AtrousConv2d) and conv.padding_mode == "zeros" and not isinstance(conv.padding, str)
    )


def fuse_for_cpu_modules(module: nn.Module) -> nn.Module:
    """Swap the modules of ``module`` in place (see the module docstring); return it."""
    for name, child in list(module.named_children()):
        if isinstance(child, Bottleneck):
            module._modules[name] = FusedBottleneck(child)
        elif _is_global_pool(child):
            module._modules[name] = GlobalMeanPool()
        else:
            fuse_for_cpu_modules(child)
    if isinstance(module, nn.Sequential):
        # Registration order is execution order only in a Sequential.
        names = list(module._modules)
        for i, name in enumerate(names):
            conv = module._modules[name]
            if not isinstance(conv, nn.Conv2d):
                continue
            j = i + 1
            while j < len(names) and isinstance(module._modules[names[j]], nn.Identity):
                j += 1
            act = module._modules[names[j]] if j < len(names) else None
            kind = _ACTIVATIONS.get(type(act)) if act is not None else None
            if kind is not None and _fusable(conv):
                module._modules[name] = FusedConv2d(conv, kind)
                module._modules[names[j]] = nn.Identity()
    for name, child in list(module.named_children()):
        if _fusable(child):
            module._modules[name] = FusedConv2d(child)
    return module


#: Largest allowed difference between fused and plain logits, relative to the largest plain
#: logit. fp32 differs only by summation order (2e-6 measured); bf16 rounds every layer's
#: output to 8 bits of mantissa and accumulates in a different order (0.006 for MobileNetV3,
#: 0.012 for ResNet-50 measured).
PROBE_TOLERANCE: dict[torch.dtype, float] = {torch.float32: 1e-3, torch.bfloat16: 0.05}


def _logits(network: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return network.classifier(network.backbone(x)["out"]).float()


def _shares_tensors_copy(network: nn.Module) -> nn.Module:
    # A structural copy whose parameters and buffers are the original's tensors: the
    # plain network kept for falling back costs no second set of weights.
    memo: dict[int, object] = {id(t): t for t in network.parameters()}
    memo.update({id(t): t for t in network.buffers()})
    return copy.deepcopy(network, memo)


def probe_fused(plain: nn.Module, fused: nn.Module, dtype: torch.dtype, size: tuple[int, int] = (64, 64)) -> str | None:
    """Run both networks on one small fixed input; None when they agree, else why fusion is refused.

    Catches both a fused op that fails on this CPU or dtype and one that runs
    but computes something else (a miscompiled kernel, a wrongly fused module).
    """
    g = torch.Generator().manual_seed(0)
    x = torch.randn((1, 3, *size), generator=g).to(dtype).contiguous(memory_format=torch.channels_last)
    try:
        ref = _logits(plain, x.clone())
    except (RuntimeError, ValueError, NotImplementedError) as e:
        return f"the plain network failed on the probe input ({type(e).__name__}: {e})"
    try:
        out = _logits(fused, x.clone())
    except (RuntimeError, ValueError, NotImplementedError) as e:
        return f"a fused op failed ({type(e).__name__}: {e})"
    if out.shape != ref.shape:
        return f"the fused network's output has shape {tuple(out.shape)}, the plain one's {tuple(ref.shape)}"
    scale = float(ref.abs().max())
    err = float((out - ref).abs().max()) / max(scale, 1e-6)
    tol = PROBE_TOLERANCE.get(dtype, 1e-3)
    if not err <= tol:  # also true for NaN
        return (
            f"the fused network's logits differ from the plain network's by {err:.3g} of their range (allowed {tol:g})"
        )
    return None


def fused_for_cpu(network: nn.Module, dtype: torch.dtype, probe: tuple[int, int] = (64, 64)) -> nn.Module | None:
    """A fused copy of ``network`` (eval mode, BatchNorm folded), or None where fusing does not work here.

    The copy shares ``network``'s weight tensors (keep ``network`` to fall back
    to). A probe forward on a small input (:func:`probe_fused`) checks that
    oneDNN accepts every fused op on this CPU and dtype and that the fused copy
    computes what ``network`` does; on any failure the reason is logged and
    None returned, and the caller keeps the plain network.
    """
    if dtype not in (torch.float32, torch.bfloat16):
        log.info("CPU conv fusion not used: %s is not fused (fp32 and bf16 only)", dtype)
        return None
    if not fusion_available():
        log.info("CPU conv fusion not used: this PyTorch lacks oneDNN's fused convolution ops")
        return None
    try:
        fused = fuse_for_cpu_modules(_shares_tensors_copy(network))
    except (RuntimeError, ValueError, NotImplementedError) as e:
        log.warning("CPU conv fusion refused: the network could not be fused (%s: %s)", type(e).__name__, e)
        return None
    reason = probe_fused(network, fused, dtype, probe)
    if reason is not None:
        log.warning("CPU conv fusion refused, the plain network is used: %s", reason)
        return None
    return fused
