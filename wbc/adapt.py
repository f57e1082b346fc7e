"""Test-time adaptation: re-estimate batch-norm statistics on the target images (AdaBN, Li et al. 2016).

A network normalises each layer's activations with the mean and variance it saw in training. Another lab's
stain, camera and framing shift those statistics; replacing them by the target images' own (no labels, no
gradient step) removes much of the shift. Assumptions, which the caller must meet: the images come from one
domain (one lab, one scanner setting), there are enough of them for stable statistics, and they hold a mix of
classes (a folder of one class would make that class the "average" cell).

Which layers: deep layers' statistics describe the cells' content, so a folder whose class mix differs from the
training split's (a normal differential is about 60 % neutrophils) moves them and the decisions with them;
shallow layers' statistics describe stain, light and optics. ``layers`` restricts the re-estimation to the
batch-norm layers whose names start with one of its prefixes (``["net.bn1", "net.layer1"]``: resnet's stem and
first stage); scripts/adabn_layers.py measures the choice on label-shifted and stain-shifted copies of a test split.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import nn

MIN_IMAGES = 32


class AdaptationError(ValueError):
    """Adaptation refused (too few images, or layers that name none); the message says why and what to do."""


def batchnorm_layers(model: nn.Module, layers: Sequence[str] | None = None) -> list[nn.Module]:
    """The batch-norm layers of ``model``, or those whose qualified names start with one of ``layers``; a prefix
    that names none is an AdaptationError that lists the layers there are."""
    norms = {n: m for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    if layers is None:
        return list(norms.values())
    if not layers:
        raise AdaptationError("adapt_bn_layers is empty: give batch-norm layer name prefixes, or null for all")
    unknown = [p for p in layers if not any(n.startswith(p) for n in norms)]
    if unknown:
        raise AdaptationError(
            f"adapt_bn_layers: {', '.join(unknown)} name no batch-norm layer of this network; its batch-norm "
            f"layers are {', '.join(norms)}"
        )
    return [m for n, m in norms.items() if n.startswith(tuple(layers))]


@torch.no_grad()
def adapt_batchnorm(
    model: nn.Module,
    batches: Iterable[torch.Tensor],
    min_images: int = MIN_IMAGES,
    layers: Sequence[str] | None = None,
) -> int:
    """Replace the running mean/variance of the batch-norm layers of ``model`` (all, or those named by the
    prefixes ``layers``) by their average over ``batches`` (model inputs); returns the number of images used.
    Other layers stay in eval mode (no dropout). Raises AdaptationError, leaving the model unchanged, when fewer
    than ``min_images`` images came or ``layers`` names no batch-norm layer."""
    norms = batchnorm_layers(model, layers)
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


def training_mix_sample(probs: np.ndarray, source: np.ndarray, folder: np.ndarray, seed: int = 0) -> np.ndarray:
    """Indices of a resample (with replacement, as many as ``probs`` has rows, seeded) of a folder's images whose
    class mix is the training split's ``source`` instead of the folder's own ``folder`` (estimated by EM,
    wbc.prior.estimate_prior), for AdaBN to estimate statistics that differ from training's in stain and optics but
    not in class mix. ``probs`` (N, C) are the images' class probabilities as trained (under ``source``). Image i is
    drawn with its importance weight sum_c q[i, c] * source[c] / folder[c], q its probabilities under the folder's
    mix (Bayes' rule), which is 1 / sum_c probs[i, c] * folder[c] / source[c]."""
    source, folder = np.asarray(source, dtype=np.float64), np.asarray(folder, dtype=np.float64)
    z = np.asarray(probs, dtype=np.float64) @ np.divide(folder, source, out=np.zeros_like(folder), where=source > 0)
    if not (z > 0).all():
        raise AdaptationError("no image carries weight under the training mix: the class probabilities are empty")
    w = 1 / z
    return np.random.default_rng(seed).choice(len(w), size=len(w), replace=True, p=w / w.sum())
