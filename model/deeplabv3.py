"""DeepLabV3: a torchvision backbone, an ASPP head and an optional auxiliary head.

The layout mirrors ``torchvision/models/segmentation/deeplabv3.py`` (attribute
names ``backbone``, ``classifier``, ``aux_classifier``; torchvision's backbone
taps) so that torchvision's DeepLabV3 state dicts, including the pretrained
``COCO_WITH_VOC_LABELS_V1`` weights, load with ``strict=True``. What we add is
a choice of output stride (8 or 16) and of atrous rates for every backbone.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.models import (
    MobileNet_V3_Large_Weights,
    ResNet50_Weights,
    ResNet101_Weights,
    mobilenet_v3_large,
    resnet50,
    resnet101,
)

from .aspp import ASPP, default_atrous_rates

#: Backbones the builder knows, with their feature channels (out, aux).
BACKBONES: dict[str, tuple[int, int]] = {
    "mobilenet_v3_large": (960, 40),
    "resnet50": (2048, 1024),
    "resnet101": (2048, 1024),
}


@dataclass(frozen=True)
class ArchSpec:
    """Everything needed to rebuild the network's shape (not its weights)."""

    backbone: str
    num_classes: int
    output_stride: int
    atrous_rates: tuple[int, ...]
    aux_loss: bool


class DeepLabHead(nn.Sequential):
    """ASPP followed by a 3x3 conv and the 1x1 classifier (torchvision's layout)."""

    def __init__(self, in_channels: int, num_classes: int, atrous_rates: Sequence[int]) -> None:
        super().__init__(
            ASPP(in_channels, atrous_rates),
            nn.Conv2d(256, 256, 3, padding=1, bias=False),
            nn.BatchNorm2d(256),
            nn.ReLU(),
            nn.Conv2d(256, num_classes, 1),
        )


class FCNHead(nn.Sequential):
    """The auxiliary head on a shallower feature map; only used for the training loss."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        inter = in_channels // 4
        super().__init__(
            nn.Conv2d(in_channels, inter, 3, padding=1, bias=False),
            nn.BatchNorm2d(inter),
            nn.ReLU(),
            nn.Dropout(0.1),
            nn.Conv2d(inter, num_classes, 1),
        )


class FeatureTaps(nn.ModuleDict):
    """Runs a backbone's children in order and returns the named intermediate outputs.

    Children keep their original names (``layer1`` or ``"7"``), which keeps the
    state-dict keys identical to torchvision's ``IntermediateLayerGetter``.
    """

    def __init__(self, layers: OrderedDict[str, nn.Module], taps: dict[str, str]) -> None:
        last = max(list(layers).index(name) for name in taps)
        super().__init__(OrderedDict(list(layers.items())[: last + 1]))
        self.taps = dict(taps)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for name, layer in self.items():
            x = layer(x)
            if name in self.taps:
                out[self.taps[name]] = x
        return out


class DeepLabV3(nn.Module):
    """DeepLabV3 returning ``{"out": logits}`` (plus ``"aux"`` when built with an aux head).

    Logits are upsampled bilinearly to the input size, as torchvision does.
    """

    def __init__(self, backbone: FeatureTaps, classifier: nn.Module, aux_classifier: nn.Module | None, spec: ArchSpec):
        super().__init__()
        self.backbone = backbone
        self.classifier = classifier
        self.aux_classifier = aux_classifier
        self.spec = spec

    def forward(self, x: torch.Tensor, upsample: bool = True) -> dict[str, torch.Tensor]:
        """Logits for ``x``; with ``upsample=False`` at feature resolution (the trainer upsamples in fp32)."""
        size = x.shape[-2:]
        features = self.backbone(x)
        result = {"out": self.classifier(features["out"])}
        if self.aux_classifier is not None:
            result["aux"] = self.aux_classifier(features["aux"])
        if upsample:
            result = {k: F.interpolate(v, size=size, mode="bilinear", align_corners=False) for k, v in result.items()}
        return result


def _dilate(module: nn.Module, dilation: int) -> None:
    """Turn every strided kxk conv inside ``module`` into a stride-1 conv with ``dilation``.

    Weights keep their shapes, so pretrained weights still load; only the
    sampling grid changes (the "atrous" trick that keeps resolution).
    """
    for conv in module.modules():
        if isinstance(conv, nn.Conv2d) and conv.kernel_size[0] > 1:
            conv.stride = (1, 1)
            conv.dilation = (dilation, dilation)
            conv.padding = ((conv.kernel_size[0] - 1) // 2 * dilation, (conv.kernel_size[1] - 1) // 2 * dilation)


def _mobilenet_taps(
    output_stride: int, weights: MobileNet_V3_Large_Weights | None
) -> tuple[OrderedDict[str, nn.Module], str, str]:
    # dilated=True is torchvision's own output-stride-16 variant (last stage dilated 2).
    features = mobilenet_v3_large(weights=weights, dilated=True).features
    stages = [0] + [i for i, b in enumerate(features) if getattr(b, "_is_cn", False)] + [len(features) - 1]
    out_pos, aux_pos = stages[-1], stages[-4]
    if output_stride == 8:
        # Also dilate the stride-16 stage: its first block loses its stride, the
        # blocks up to the last stage see dilation 2 and the last stage dilation 4.
        c4, c5 = stages[-3], stages[-2]
        for i in range(c4, c5):
            _dilate(features[i], 2)
        for i in range(c5, len(features)):
            _dilate(features[i], 4)
    layers = OrderedDict((str(i), m) for i, m in enumerate(features))
    return layers, str(out_pos), str(aux_pos)


def _resnet_taps(
    name: str, output_stride: int, weights: ResNet50_Weights | ResNet101_Weights | None
) -> OrderedDict[str, nn.Module]:
    dilation = [False, True, True] if output_stride == 8 else [False, False, True]
    builder = resnet50 if name == "resnet50" else resnet101
    net = builder(weights=weights, replace_stride_with_dilation=dilation)
    return OrderedDict((n, m) for n, m in net.named_children() if n not in ("avgpool", "fc"))


def build_deeplabv3(
    *,
    backbone: str,
    num_classes: int,
    output_stride: int = 16,
    atrous_rates: Sequence[int] | None = None,
    aux_loss: bool = False,
    weights_backbone: MobileNet_V3_Large_Weights | ResNet50_Weights | ResNet101_Weights | None = None,
) -> DeepLabV3:
    """Build DeepLabV3 with an ASPP head.

    Args:
        backbone: ``"mobilenet_v3_large"``, ``"resnet50"`` or ``"resnet101"``.
        num_classes: number of output classes (including background if any).
        output_stride: 8 or 16, the ratio of input to feature resolution.
        atrous_rates: ASPP rates; default (6, 12, 18) at stride 16, (12, 24, 36) at 8.
            torchvision's own models use (12, 24, 36) at both strides.
        aux_loss: add the auxiliary FCN head on the stride-8 (MobileNet) or
            layer3 (ResNet) features.
        weights_backbone: optional torchvision ImageNet weights for the backbone.
    """
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
    if output_stride not in (8, 16):
        raise ValueError(f"output_stride must be 8 or 16, got {output_stride}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    rates = tuple(int(r) for r in (atrous_rates if atrous_rates is not None else default_atrous_rates(output_stride)))
    out_ch, aux_ch = BACKBONES[backbone]
    if backbone == "mobilenet_v3_large":
        layers, out_name, aux_name = _mobilenet_taps(output_stride, weights_backbone)
    else:
        layers, out_name, aux_name = _resnet_taps(backbone, output_stride, weights_backbone), "layer4", "layer3"
    taps = {out_name: "out"}
    if aux_loss:
        taps[aux_name] = "aux"
    spec = ArchSpec(backbone, int(num_classes), int(output_stride), rates, bool(aux_loss))
    return DeepLabV3(
        FeatureTaps(layers, taps),
        DeepLabHead(out_ch, num_classes, rates),
        FCNHead(aux_ch, num_classes) if aux_loss else None,
        spec,
    )


def zero_init_residuals(net: nn.Module) -> int:
    """Zero the scale of the last BatchNorm in every residual block, so each block starts as the identity.

    For training from a random init only (Goyal et al., "Accurate, Large Minibatch
    SGD", 2017; torchvision's ``zero_init_residual``): the signal then passes the
    untrained blocks unchanged, and the blocks grow in from there. On CamVid, 224
    steps from scratch on 32 images, it lifted held-out mIoU on each of 4 seeds
    (mean 0.337 to 0.381, worst seed 0.267 to 0.367); ``bench/label_loop.py``
    measures what that does to the loop.
    Returns how many blocks were changed.
    """
    from torchvision.models.mobilenetv3 import InvertedResidual
    from torchvision.models.resnet import BasicBlock, Bottleneck

    n = 0
    for m in net.modules():
        bn = None
        if isinstance(m, InvertedResidual) and m.use_res_connect:
            bn = m.block[-1][1]  # the projection: conv, BatchNorm, no activation
        elif isinstance(m, Bottleneck):
            bn = m.bn3
        elif isinstance(m, BasicBlock):
            bn = m.bn2
        if isinstance(bn, nn.BatchNorm2d):
            nn.init.zeros_(bn.weight)
            n += 1
    return n


def build_from_spec(spec: ArchSpec) -> DeepLabV3:
    """Rebuild an untrained network of the shape ``spec`` describes."""
    return build_deeplabv3(
        backbone=spec.backbone,
        num_classes=spec.num_classes,
        output_stride=spec.output_stride,
        atrous_rates=spec.atrous_rates,
        aux_loss=spec.aux_loss,
    )
