"""PyTorch super-resolution networks (ESPCN, FSRCNN, EDSR baseline), registered as SR methods.

Each meets the contract written in :mod:`wbc.sr.registry`: ``cls(scale, **arch)``, float NCHW RGB in [0, 1] ->
NCHW at ``scale`` x the size, unclamped (callers clamp).
"""

from __future__ import annotations

import math
import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from wbc.sr.registry import get_method, register_network

# Mean RGB of DIV2K in [0, 1], subtracted before EDSR's body and added back after (Lim et al. 2017).
DIV2K_RGB_MEAN: tuple[float, float, float] = (0.4488, 0.4371, 0.4040)


def _check_scale(scale: int, model: str) -> int:
    """Accept any integral scale >= 2 (Hydra or numpy ints included) and return it as a Python int."""
    try:
        value = operator.index(scale)
    except TypeError:
        raise ValueError(f"{model} scale must be an integer >= 2, got {scale!r}") from None
    if value < 2:
        raise ValueError(f"{model} scale must be an integer >= 2, got {scale!r}")
    return value


def _bicubic(x: torch.Tensor, scale: int) -> torch.Tensor:
    return F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)


@register_network("espcn")
class ESPCN(nn.Module):
    """Efficient sub-pixel CNN (Shi et al. 2016): every conv runs at LR size, PixelShuffle upsamples last.

    ``residual=True`` adds the bicubic upscale of the input to the output (global residual learning, as in VDSR):
    the network learns only the detail bicubic misses, so a short in-domain training starts at bicubic quality
    instead of at noise. ``residual=False`` is the paper's network.
    """

    def __init__(
        self, scale: int, channels: int = 3, features: tuple[int, int] = (64, 32), residual: bool = False
    ) -> None:
        super().__init__()
        self.scale = scale = _check_scale(scale, "ESPCN")
        self.residual = residual
        f1, f2 = features
        # Paper setting (f1, f2, f3) = (5, 3, 3), (n1, n2) = (64, 32), tanh activations.
        self.body = nn.Sequential(
            nn.Conv2d(channels, f1, kernel_size=5, padding=2),
            nn.Tanh(),
            nn.Conv2d(f1, f2, kernel_size=3, padding=1),
            nn.Tanh(),
            nn.Conv2d(f2, channels * scale**2, kernel_size=3, padding=1),
        )
        self.upsample = nn.PixelShuffle(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.upsample(self.body(x))
        return out + _bicubic(x, self.scale) if self.residual else out


@register_network("fsrcnn")
class FSRCNN(nn.Module):
    """Fast SR CNN (Dong et al. 2016): feature extraction, shrinking, ``m`` mapping layers and expanding at LR
    size, then one transposed convolution upsamples. ``d, s, m`` = 56, 12, 4 is the paper's setting.
    ``residual=True`` adds the bicubic upscale of the input (as ESPCN's option; not in the paper).
    """

    def __init__(self, scale: int, d: int = 56, s: int = 12, m: int = 4, channels: int = 3, residual: bool = False):
        super().__init__()
        self.scale = scale = _check_scale(scale, "FSRCNN")
        self.residual = residual
        layers: list[nn.Module] = [nn.Conv2d(channels, d, 5, padding=2), nn.PReLU(d), nn.Conv2d(d, s, 1), nn.PReLU(s)]
        for _ in range(m):
            layers += [nn.Conv2d(s, s, 3, padding=1), nn.PReLU(s)]
        layers += [nn.Conv2d(s, d, 1), nn.PReLU(d)]
        self.body = nn.Sequential(*layers)
        # kernel 9, padding 4, output_padding scale - 1: exactly scale x the input size for any integer scale
        self.deconv = nn.ConvTranspose2d(d, channels, 9, stride=scale, padding=4, output_padding=scale - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.deconv(self.body(x))
        return out + _bicubic(x, self.scale) if self.residual else out


class ResBlock(nn.Module):
    """EDSR residual block: conv-ReLU-conv without batch norm, residual scaled by ``res_scale`` then added."""

    def __init__(self, n_feats: int, res_scale: float = 0.1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(n_feats, n_feats, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(n_feats, n_feats, kernel_size=3, padding=1),
        )
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) * self.res_scale


def _upsampler(scale: int, n_feats: int) -> nn.Sequential:
    """EDSR upsampler: log2(scale) x (conv, PixelShuffle(2)) for powers of two, one PixelShuffle(3) for x3."""
    layers: list[nn.Module] = []
    if scale & (scale - 1) == 0:
        for _ in range(int(math.log2(scale))):
            layers += [nn.Conv2d(n_feats, 4 * n_feats, kernel_size=3, padding=1), nn.PixelShuffle(2)]
    elif scale == 3:
        layers += [nn.Conv2d(n_feats, 9 * n_feats, kernel_size=3, padding=1), nn.PixelShuffle(3)]
    else:
        raise ValueError(f"EDSR supports scale 3 or a power of two >= 2 (2, 4, 8, ...), got {scale!r}")
    return nn.Sequential(*layers)


@register_network("edsr")
class EDSR(nn.Module):
    """EDSR baseline (Lim et al. 2017): mean shift, head, residual body with global skip, upsampler, tail."""

    def __init__(
        self,
        scale: int,
        n_resblocks: int = 16,
        n_feats: int = 64,
        res_scale: float = 0.1,
        channels: int = 3,
        residual: bool = False,
    ) -> None:
        super().__init__()
        self.scale = scale = _check_scale(scale, "EDSR")
        self.residual = residual  # as ESPCN's: add the bicubic upscale of the input (not in the paper)
        # The DIV2K mean is an RGB mean; for other channel counts use its average on every channel.
        mean = DIV2K_RGB_MEAN if channels == 3 else (sum(DIV2K_RGB_MEAN) / 3,) * channels
        # A buffer (not a parameter): follows .to(device) and lands in the state dict, never trained.
        self.register_buffer("rgb_mean", torch.tensor(mean, dtype=torch.float32).view(1, channels, 1, 1))
        self.head = nn.Conv2d(channels, n_feats, kernel_size=3, padding=1)
        self.body = nn.Sequential(
            *[ResBlock(n_feats, res_scale) for _ in range(n_resblocks)],
            nn.Conv2d(n_feats, n_feats, kernel_size=3, padding=1),
        )
        self.upsampler = _upsampler(scale, n_feats)
        self.tail = nn.Conv2d(n_feats, channels, kernel_size=3, padding=1)

    def forward(self, x_in: torch.Tensor) -> torch.Tensor:
        x = self.head(x_in - self.rgb_mean)
        x = x + self.body(x)  # global skip
        out = self.tail(self.upsampler(x))
        return out + _bicubic(x_in, self.scale) if self.residual else out + self.rgb_mean


def build_sr_model(method: str, scale: int, **arch: Any) -> nn.Module:
    """Instantiate a learned SR method's network by (case-insensitive) name."""
    found = get_method(method)
    if not found.learned:
        raise ValueError(f"sr={method} is an interpolation, not a network")
    return found.network(scale=scale, **arch)
