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


class IBN(nn.Module):
    """Instance-batch normalisation (IBN-Net, Pan et al., ECCV 2018): the first ``ratio`` of the channels
    normalised per image (instance norm: each image's own contrast and colour statistics removed, whatever lab it
    comes from), the rest by batch norm (which keeps what tells the classes apart)."""

    def __init__(self, bn: nn.BatchNorm2d, ratio: float = 0.5):
        super().__init__()
        self.split = int(bn.num_features * ratio)
        self.IN = nn.InstanceNorm2d(self.split, affine=True)
        self.BN = nn.BatchNorm2d(bn.num_features - self.split)
        with torch.no_grad():  # keep what ``bn`` learnt (ImageNet weights) in both halves' affine parameters
            for part, sl in ((self.IN, slice(None, self.split)), (self.BN, slice(self.split, None))):
                part.weight.copy_(bn.weight[sl])
                part.bias.copy_(bn.bias[sl])
            self.BN.running_mean.copy_(bn.running_mean[self.split :])
            self.BN.running_var.copy_(bn.running_var[self.split :])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first, rest = x[:, : self.split], x[:, self.split :]
        return torch.cat((self.IN(first.contiguous()), self.BN(rest)), dim=1)


def _resnet18(num_classes: int, pretrained: bool = False, ibn: bool = False) -> nn.Module:
    net = tvm.resnet18(weights=tvm.ResNet18_Weights.DEFAULT if pretrained else None)
    net.fc = nn.Linear(net.fc.in_features, num_classes)
    if ibn:  # IBN-Net-a: the first normalisation of every block of layer1-3 (style lives in early features)
        for layer in (net.layer1, net.layer2, net.layer3):
            for block in layer:
                block.bn1 = IBN(block.bn1)
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


TIMM_PREFIX = "timm/"


def _timm(arch: str, num_classes: int, pretrained: bool = False, **kwargs) -> nn.Module:
    """Any timm architecture (``timm/convnext_atto``, ``timm/resnet18d``, ...) with a ``num_classes`` head;
    ``pretrained=True`` downloads its weights from the Hugging Face Hub (needs the network once)."""
    try:
        import timm
    except ImportError as err:
        from wbc.errors import UserError

        raise UserError(f'model.net.name={TIMM_PREFIX}{arch} needs timm: pip install -e ".[timm]"') from err
    if arch not in timm.list_models():
        from wbc.errors import UserError

        close = timm.list_models(f"*{arch.split('_')[0]}*")[:8]
        raise UserError(f"timm has no architecture {arch!r}; similar: {', '.join(close) or 'none'}")
    return timm.create_model(arch, pretrained=pretrained, num_classes=num_classes, **kwargs)


def create_model(name: str, num_classes: int, pretrained: bool = False, **kwargs) -> nn.Module:
    """Build a registered network, or a timm one (``timm/<architecture>``). ``pretrained=True`` downloads
    ImageNet weights (needs the network once)."""
    if name.startswith(TIMM_PREFIX):
        return _timm(name[len(TIMM_PREFIX) :], num_classes, pretrained, **kwargs)
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {sorted(MODELS)} or timm/<architecture>")
    return MODELS[name](num_classes=num_classes, pretrained=pretrained, **kwargs)
