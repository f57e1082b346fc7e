"""Test-time adaptation: re-estimate batch-norm statistics on the target images (AdaBN, Li et al. 2016).

A network normalises each layer's activations with the mean and variance it saw in training. Another lab's
stain, camera and framing shift those statistics; replacing them by the target images' own (no labels, no
gradient step) removes much of the shift. Assumptions, which the caller must meet: the images come from one
domain (one lab, one scanner setting), there are enough of them for stable statistics, and they hold a mix of
classes (a folder of one class would make that class the "average" cell).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

MIN_IMAGES = 32


class AdaptationError(ValueError):
    """Adaptation refused (too few images); the message says why and what to do."""


@torch.no_grad()
def adapt_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor], min_images: int = MIN_IMAGES) -> int:
    """Replace the running mean/variance of every batch-norm layer of ``model`` by their average over
    ``batches`` (model inputs); returns the number of images used. Other layers stay in eval mode (no dropout).
    Raises AdaptationError, leaving the model unchanged, when fewer than ``min_images`` images came."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    saved = {
        m: (m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone(), m.momentum) for m in norms
    }
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all batches, not an exponential one
        m.train()
    seen = 0
    try:
        for x in batches:
            if len(x) < 2:  # a batch of one has no variance
                continue
            model(x)
            seen += len(x)
    finally:
        for m in norms:
            m.momentum = saved[m][3]
            m.eval()
    if seen < min_images:
        for m in norms:
            m.running_mean.copy_(saved[m][0])
            m.running_var.copy_(saved[m][1])
            m.num_batches_tracked.copy_(saved[m][2])
        raise AdaptationError(
            f"adapt_bn needs at least {min_images} readable images of one lab to re-estimate batch-norm "
            f"statistics; got {seen}. Predict without adapt_bn, or give a folder with more images"
        )
    return seen
