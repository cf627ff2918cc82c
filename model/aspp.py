"""Atrous Spatial Pyramid Pooling, as DeepLabV3 (Chen et al., 2017) defines it.

Five parallel branches look at the same feature map with different fields of
view: a 1x1 conv, three 3x3 atrous convs and an image-level branch (global
average pool -> 1x1 conv -> BN -> ReLU -> bilinear upsample). Their outputs are
concatenated and projected back to 256 channels. Module and parameter names
follow torchvision's so its state dicts load unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

#: Rates from the paper: (6, 12, 18) at output stride 16, doubled at output stride 8.
PAPER_RATES: dict[int, tuple[int, int, int]] = {16: (6, 12, 18), 8: (12, 24, 36)}


def default_atrous_rates(output_stride: int) -> tuple[int, int, int]:
    """The paper's atrous rates for ``output_stride`` (8 or 16)."""
    try:
        return PAPER_RATES[output_stride]
    except KeyError:
        raise ValueError(f"output_stride must be 8 or 16, got {output_stride}") from None


class AtrousConv2d(nn.Conv2d):
    """A 3x3 conv with ``padding == dilation`` that skips the taps which can only read padding.

    Along an axis no longer than the rate, every off-centre tap of every output
    position falls in the zero padding, so the conv there is exactly a conv
    with the centre column (or row) of the kernel and no padding. At output
    stride 16 a 320-pixel training crop gives 20x20 features, where rates 24
    and 36 reduce to 1x1 convs: 9x fewer multiply-adds, same result, and the
    gradients of the skipped taps were zero anyway. Parameters and state-dict
    keys are those of ``nn.Conv2d``.

    When training on the CPU with a rate shorter than the map but not by much
    (rate 12 on those 20x20 features, where 64 % of the dense conv's
    multiply-adds read padding), the weight gradient is computed tap by tap,
    each tap one matrix product over only the positions where it reads real
    features (:class:`_TapWeightGrad`); oneDNN's dense weight gradient for a
    dilated conv is slow.
    """

    #: Weight gradients tap by tap when at most this share of the dense conv's work reads real features.
    TAPS_BELOW = 0.6

    def __init__(self, in_channels: int, out_channels: int, rate: int) -> None:
        super().__init__(in_channels, out_channels, 3, padding=rate, dilation=rate, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        rate = self.dilation[0]
        if rate < h and rate < w:
            if (
                x.device.type == "cpu"
                and self.bias is None
                and torch.is_grad_enabled()
                and _real_share(h, w, rate) <= self.TAPS_BELOW
            ):
                return _TapWeightGrad.apply(x, self.weight, rate)
            return super().forward(x)
        rows = slice(1, 2) if rate >= h else slice(0, 3)
        cols = slice(1, 2) if rate >= w else slice(0, 3)
        padding = (0 if rate >= h else rate, 0 if rate >= w else rate)
        return F.conv2d(x, self.weight[:, :, rows, cols], self.bias, 1, padding, self.dilation)


def _real_share(h: int, w: int, rate: int) -> float:
    """The share of a 3x3 conv's multiply-adds (dilation and padding ``rate``) that read the map, not padding."""
    rows = h + 2 * max(0, h - rate)
    cols = w + 2 * max(0, w - rate)
    return rows * cols / (9 * h * w)


class _TapWeightGrad(torch.autograd.Function):
    """A dense 3x3 atrous conv (no bias) whose weight gradient skips the positions a tap reads as padding.

    Forward and input gradient are oneDNN's dense ones, which are fast. The
    weight gradient of tap (i, j) is ``grad_out[region]^T @ x[region shifted by
    the tap]``, one matrix product over just the output positions whose tap
    lands inside the map. fp32 on 2 CPU cores, 960 -> 256 channels at rate 12
    on 4 x 20 x 20 features: forward and backward about 200 ms dense, 97 ms so.
    Under autocast it computes in the autocast dtype, as the dense conv would.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, rate: int) -> torch.Tensor:
        dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
        xc, wc = x.to(dtype), weight.to(dtype)
        ctx.save_for_backward(xc, wc)
        ctx.rate, ctx.x_dtype, ctx.w_dtype = rate, x.dtype, weight.dtype
        with torch.autocast(x.device.type, enabled=False):
            return F.conv2d(xc, wc, None, 1, rate, rate)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        rate = ctx.rate
        grad = grad.to(x.dtype)
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(
                grad, x, weight, None, (1, 1), (rate, rate), (rate, rate), False, (0, 0), 1, (True, False, False)
            )[0].to(ctx.x_dtype)
        if ctx.needs_input_grad[1]:
            n, c, h, w = x.shape
            o = grad.shape[1]
            xl, gl = x.permute(0, 2, 3, 1), grad.permute(0, 2, 3, 1)  # (N, H, W, C): views of channels-last memory
            grad_w = torch.zeros((o, c, 3, 3), dtype=x.dtype, device=x.device)
            for i in range(3):
                dy = (i - 1) * rate
                y0, y1 = max(0, -dy), min(h, h - dy)  # output rows whose tap row lies inside the map
                for j in range(3):
                    dx = (j - 1) * rate
                    x0, x1 = max(0, -dx), min(w, w - dx)
                    if y0 >= y1 or x0 >= x1:
                        continue
                    g_part = gl[:, y0:y1, x0:x1].reshape(-1, o)
                    x_part = xl[:, y0 + dy : y1 + dy, x0 + dx : x1 + dx].reshape(-1, c)
                    grad_w[:, :, i, j] = g_part.t() @ x_part
            grad_w = grad_w.to(ctx.w_dtype)
        return grad_x, grad_w, None


class ASPPConv(nn.Sequential):
    """A 3x3 atrous conv branch: conv (dilation = rate) -> BN -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, rate: int) -> None:
        super().__init__(
            AtrousConv2d(in_channels, out_channels, rate),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
        )


class ASPPPooling(nn.Sequential):
    """The image-level branch: global context, broadcast back to every position."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        for layer in self:
            x = layer(x)
        # A 1x1 map upsampled bilinearly is a constant broadcast; interpolate keeps
        # the exact torchvision semantics (and its export behaviour).
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """Atrous Spatial Pyramid Pooling with ``len(atrous_rates) + 2`` branches."""

    def __init__(
        self,
        in_channels: int,
        atrous_rates: Sequence[int],
        out_channels: int = 256,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        rates = tuple(int(r) for r in atrous_rates)
        if not rates or any(r < 1 for r in rates):
            raise ValueError(f"atrous rates must be positive integers, got {tuple(atrous_rates)}")
        branches: list[nn.Module] = [
            nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU())
        ]
        branches += [ASPPConv(in_channels, out_channels, r) for r in rates]
        branches.append(ASPPPooling(in_channels, out_channels))
        self.atrous_rates = rates
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(
            nn.Conv2d(len(branches) * out_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
            nn.Dropout(dropout),  # active only in training mode
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([branch(x) for branch in self.convs], dim=1))
