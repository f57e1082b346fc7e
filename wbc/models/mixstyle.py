"""MixStyle (Zhou et al., ICLR 2021): mix instance-level feature statistics between training images.

A CNN's early feature maps carry an image's "style" (stain, light, camera) in their per-channel mean and standard
deviation. During training, after each chosen layer and with probability ``p`` per batch, every image's
statistics are replaced by a random convex combination (weight ~ Beta(alpha, alpha)) of its own and another
image's of the batch: the network sees new styles and cannot rely on one lab's. ``mode="dsu"`` (Li et al., ICLR
2022, "uncertainty modelling"): the statistics are instead drawn around their own values from a Gaussian as wide
as their spread over the batch, which reaches styles outside the mixes of two training images. No effect at
evaluation, prediction or batch-norm adaptation (the hooks act only while the hooked layer is in training mode
and gradients are on).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

EPS = 1e-6


def mix_styles(x: torch.Tensor, alpha: float) -> torch.Tensor:
    """(N, C, H, W) features with each image's per-channel mean/std mixed with a random partner's."""
    n = x.size(0)
    mu = x.mean(dim=(2, 3), keepdim=True).detach()
    sigma = (x.var(dim=(2, 3), keepdim=True) + EPS).sqrt().detach()
    weight = torch.distributions.Beta(alpha, alpha).sample((n, 1, 1, 1)).to(x.device, x.dtype)
    partner = torch.randperm(n, device=x.device)
    mu_mix = weight * mu + (1 - weight) * mu[partner]
    sigma_mix = weight * sigma + (1 - weight) * sigma[partner]
    return (x - mu) / sigma * sigma_mix + mu_mix


def perturb_styles(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) features with each image's per-channel mean/std resampled from a Gaussian centred on them
    whose standard deviation is that statistic's spread over the batch (DSU)."""
    mu = x.mean(dim=(2, 3), keepdim=True)
    sigma = (x.var(dim=(2, 3), keepdim=True) + EPS).sqrt()
    spread_mu = (mu.var(dim=0, keepdim=True) + EPS).sqrt()
    spread_sigma = (sigma.var(dim=0, keepdim=True) + EPS).sqrt()
    beta = mu + torch.randn_like(mu) * spread_mu
    gamma = sigma + torch.randn_like(sigma) * spread_sigma
    return (x - mu) / sigma * gamma + beta


def add_mixstyle(net: nn.Module, layers: Sequence[str], p: float = 0.5, alpha: float = 0.1, mode: str = "mix") -> None:
    """Hook MixStyle (``mode="mix"``) or DSU (``"dsu"``; ``alpha`` unused) onto the outputs of ``layers``
    (names of ``net``'s submodules, e.g. resnet's layer1)."""
    if mode not in ("mix", "dsu"):
        raise ValueError(f"model.mixstyle.mode must be mix or dsu, got {mode!r}")
    names = dict(net.named_modules())
    missing = [name for name in layers if name not in names]
    if missing:
        children = ", ".join(name for name, _ in net.named_children())
        raise ValueError(f"model.mixstyle.layers: {missing} not in the network; its top-level layers: {children}")

    def hook(module: nn.Module, _inputs, output: torch.Tensor) -> torch.Tensor | None:
        if module.training and torch.is_grad_enabled() and output.size(0) > 1 and torch.rand(()) < p:
            return mix_styles(output, alpha) if mode == "mix" else perturb_styles(output)
        return None

    for name in layers:
        names[name].register_forward_hook(hook)
