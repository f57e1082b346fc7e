"""Classification networks: a registry and one ``create_model`` factory. Plain nn.Modules, no training logic."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torchvision import models as tvm


class SimpleCNN(nn.Module):
    """Convolution + pooling blocks, global pooling, a dense head with dropout: small enough to train on a CPU."""

    def __init__(
        self,
        num_classes: int,
        channels: Sequence[int] = (32, 64, 128, 256),
        convs_per_block: int = 1,
        hidden: int = 256,
        dropout: float = 0.3,
    ):
        super().__init__()
        blocks, c_in = [], 3
        for c_out in channels:
            for _ in range(convs_per_block):
                blocks += [
                    nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                    nn.BatchNorm2d(c_out),
                    nn.ReLU(inplace=True),
                ]
                c_in = c_out
            blocks.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(c_in, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _resnet18(num_classes: int, pretrained: bool = False) -> nn.Module:
    net = tvm.resnet18(weights=tvm.ResNet18_Weights.DEFAULT if pretrained else None)
    net.fc = nn.Linear(net.fc.in_features, num_classes)
    return net


def _efficientnet_b0(num_classes: int, pretrained: bool = False, dropout: float = 0.2) -> nn.Module:
    net = tvm.efficientnet_b0(weights=tvm.EfficientNet_B0_Weights.DEFAULT if pretrained else None, dropout=dropout)
    net.classifier[-1] = nn.Linear(net.classifier[-1].in_features, num_classes)
    return net


def _cnn(num_classes: int, pretrained: bool = False, **kwargs) -> nn.Module:
    if pretrained:
        raise ValueError("model=cnn has no pretrained weights; use model=resnet18 or model=efficientnet_b0")
    return SimpleCNN(num_classes, **kwargs)


MODELS: dict[str, Callable[..., nn.Module]] = {
    "cnn": _cnn,
    "resnet18": _resnet18,
    "efficientnet_b0": _efficientnet_b0,
}


def create_model(name: str, num_classes: int, pretrained: bool = False, **kwargs) -> nn.Module:
    """Build a registered network. ``pretrained=True`` downloads ImageNet weights (needs the network once)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {sorted(MODELS)}")
    return MODELS[name](num_classes=num_classes, pretrained=pretrained, **kwargs)
