"""Tiny models for fast CPU tests."""

from __future__ import annotations

from model.deeplabv3 import build_deeplabv3
from model.weights import LoadedModel, ModelMeta, default_colours


def randomize_bn(net) -> None:
    """Give BatchNorm layers non-trivial statistics so folding/compat tests mean something."""
    import torch

    g = torch.Generator().manual_seed(0)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.bias.shape, generator=g) * 0.2 - 0.1)


def tiny_model(
    num_classes: int = 3, input_size: int | None = 64, aux: bool = False, class_names: list[str] | None = None
) -> LoadedModel:
    """A random MobileNetV3 DeepLabV3 that works on 64-pixel inputs (classes c0, c1, ... unless named)."""
    import torch

    torch.manual_seed(0)
    net = build_deeplabv3(backbone="mobilenet_v3_large", num_classes=num_classes, aux_loss=aux).eval()
    randomize_bn(net)
    meta = ModelMeta(
        arch=net.spec,
        class_names=list(class_names) if class_names else [f"c{i}" for i in range(num_classes)],
        colours=default_colours(num_classes),
        input_size=input_size,
        name="tiny",
    )
    return LoadedModel(net, meta)
