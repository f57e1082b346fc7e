"""Test-time classifier adjustment (T3A; Iwasawa and Matsuo, NeurIPS 2021) for one lab's folder.

A new lab's cells of one class form a cluster in the network's feature space (the input of its last linear layer)
that may lie away from the weight vector training gave that class. T3A moves each class's prototype towards the
folder's own cells: the class's weight vector plus the ``per_class`` images of the folder predicted as that class
with the lowest entropy (the most confident), each normalised, summed and normalised again; every image is then
classified by its most similar prototype (cosine). Nothing is trained, no labels are used; the folder must be one
lab's images (one domain), as for AdaBN and ``prior=folder``. The cosine scores are no calibrated probabilities:
what T3A changes is the decision.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from wbc.models.module import symmetry_views


def head(net: nn.Module) -> nn.Linear:
    """The network's last linear layer: the classifier whose weight vectors T3A starts from."""
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(net).__name__} has no linear layer: T3A needs a linear classifier head")
    return linears[-1]


@torch.no_grad()
def embed(model: nn.Module, images: torch.Tensor, tta: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 3, S, S) uint8 images -> (features (N, D): the input of the last linear layer, probabilities (N, C)),
    each the mean over the eight symmetry views when ``tta``."""
    captured: list[torch.Tensor] = []
    hook = head(model.net).register_forward_hook(lambda _m, args, _out: captured.append(args[0].float()))
    try:
        views = symmetry_views(images) if tta else [images]
        probs = torch.stack([model(v).float().softmax(1) for v in views]).mean(0)
    finally:
        hook.remove()
    return torch.stack(captured).mean(0), probs


def prototypes(features: np.ndarray, weight: np.ndarray, probs: np.ndarray, per_class: int | None) -> np.ndarray:
    """(C, D) unit prototypes: each class's normalised weight vector plus its ``per_class`` lowest-entropy
    images (all of them when None), normalised, summed and normalised."""
    z = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    w = weight / np.maximum(np.linalg.norm(weight, axis=1, keepdims=True), 1e-12)
    predicted = probs.argmax(1)
    entropy = -(probs * np.log(np.clip(probs, 1e-12, None))).sum(1)
    out = np.empty_like(w)
    for k in range(len(w)):
        mine = np.flatnonzero(predicted == k)
        mine = mine[np.argsort(entropy[mine], kind="stable")][:per_class]
        total = w[k] + z[mine].sum(0)
        out[k] = total / max(np.linalg.norm(total), 1e-12)
    return out


def adjusted_scores(features: np.ndarray, weight: np.ndarray, probs: np.ndarray, per_class: int | None) -> np.ndarray:
    """(N, C) cosine similarity of each image's features to the folder's class prototypes: argmax is T3A's call."""
    z = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    return z @ prototypes(features, weight, probs, per_class).T
