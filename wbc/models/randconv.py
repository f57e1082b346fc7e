"""Random convolutions on the input (RandConv; Xu et al., ICLR 2021), for models meant for other labs' images.

A stain, a lamp and a camera act on an image mostly as a colour mixing of its channels (how much of each dye's
absorption each sensor channel records) and a small point-spread of the optics. A convolution with random
weights is exactly such a pair: its 1x1 part is a random 3x3 colour matrix, its larger kernels a random local
blur or sharpening. During training, with probability ``p`` per batch, each image is replaced by a random
convex combination (weight ~ U(0, 1)) of itself and its random convolution, rescaled to the image's own
per-channel mean and spread, so the lab's overall brightness and colour level stay and only the mixing and the
local texture change. Shapes (nucleus lobes, granules, cell size) pass unchanged; what one lab's stain and
camera make of them does not. One kernel (size drawn from ``kernel_sizes``, weights ~ N(0, 1/(k*k*3)), the
paper's choice) per image. No effect at evaluation, prediction or batch-norm adaptation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

EPS = 1e-5


def random_convolution(x: torch.Tensor, kernel_sizes: Sequence[int] = (1, 3, 5, 7)) -> torch.Tensor:
    """(N, C, H, W) images (normalised), each mixed with its own random convolution (see the module's text)."""
    n, c = x.shape[:2]
    mu = x.mean(dim=(2, 3), keepdim=True)
    sigma = x.std(dim=(2, 3), keepdim=True) + EPS
    out = torch.empty_like(x)
    sizes = torch.tensor(list(kernel_sizes))[torch.randint(len(kernel_sizes), (n,))].tolist()
    for k in sorted(set(sizes)):  # one grouped convolution per kernel size: one kernel per image
        rows = [i for i, size in enumerate(sizes) if size == k]
        weight = torch.randn(len(rows) * c, c, k, k, device=x.device, dtype=x.dtype) / (k * k * c) ** 0.5
        batch = x[rows].reshape(1, len(rows) * c, *x.shape[2:])
        conv = F.conv2d(F.pad(batch, [k // 2] * 4, mode="reflect") if k > 1 else batch, weight, groups=len(rows))
        out[rows] = conv.reshape(len(rows), c, *x.shape[2:])
    conv_mu = out.mean(dim=(2, 3), keepdim=True)
    conv_sigma = out.std(dim=(2, 3), keepdim=True) + EPS
    out = (out - conv_mu) / conv_sigma * sigma + mu
    weight = torch.rand(n, 1, 1, 1, device=x.device, dtype=x.dtype)
    return weight * x + (1 - weight) * out
