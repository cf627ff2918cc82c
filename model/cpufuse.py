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
from collections import OrderedDict

import torch
from torch import nn
from torchvision.models.resnet import Bottleneck

from .aspp import AtrousConv2d

#: Packed weights are specific to an input shape; keep this many shapes per conv.
PACKED_SHAPES = 2

_ACTIVATIONS: dict[type[nn.Module], str] = {nn.ReLU: "relu", nn.Hardswish: "hardswish"}


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
    return type(conv) in (nn.Conv2d, AtrousConv2d) and conv.padding_mode == "zeros" and not isinstance(conv.padding, str)


def fuse_for_cpu_modules(module: nn.Module) -> nn.Module:
    """Swap the modules of ``module`` in place (see the module docstring); return it."""
    for name, child in list(module.named_children()):
        if isinstance(child, Bottleneck):
            module._modules[name] = FusedBottleneck(child)  # noqa: SLF001
        elif _is_global_pool(child):
            module._modules[name] = GlobalMeanPool()  # noqa: SLF001
        else:
            fuse_for_cpu_modules(child)
    if isinstance(module, nn.Sequential):
        # Registration order is execution order only in a Sequential.
        names = list(module._modules)  # noqa: SLF001
        for i, name in enumerate(names):
            conv = module._modules[name]  # noqa: SLF001
            if not isinstance(conv, nn.Conv2d):
                continue
            j = i + 1
            while j < len(names) and isinstance(module._modules[names[j]], nn.Identity):  # noqa: SLF001
                j += 1
            act = module._modules[names[j]] if j < len(names) else None  # noqa: SLF001
            kind = _ACTIVATIONS.get(type(act)) if act is not None else None
            if kind is not None and _fusable(conv):
                module._modules[name] = FusedConv2d(conv, kind)  # noqa: SLF001
                module._modules[names[j]] = nn.Identity()  # noqa: SLF001
    for name, child in list(module.named_children()):
        if _fusable(child):
            module._modules[name] = FusedConv2d(child)  # noqa: SLF001
    return module


def fused_for_cpu(network: nn.Module, dtype: torch.dtype, probe: tuple[int, int] = (64, 64)) -> nn.Module | None:
    """A fused copy of ``network`` (eval mode, BatchNorm folded), or None where fusing does not work here.

    A probe forward on a small input checks that oneDNN accepts every fused op
    on this CPU and dtype; any failure means None, and the caller keeps the
    plain network.
    """
    if dtype not in (torch.float32, torch.bfloat16) or not fusion_available():
        return None
    x = torch.zeros((1, 3, *probe), dtype=dtype).contiguous(memory_format=torch.channels_last)
    try:
        fused = fuse_for_cpu_modules(copy.deepcopy(network))
        with torch.inference_mode():
            fused.classifier(fused.backbone(x)["out"])
    except (RuntimeError, ValueError, NotImplementedError):
        return None
    return fused
