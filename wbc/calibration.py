"""Calibrated confidence: temperature scaling (Guo et al. 2017) and the expected calibration error.

A network's softmax confidence is usually too high. One scalar T, fitted on the validation split by minimising
the negative log-likelihood of softmax(logits / T), fixes most of that without changing any prediction (the
arg-max is the same for every T > 0). The classifier stores T and divides its logits by it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import multiclass_calibration_error

ECE_BINS = 15


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor, max_iter: int = 200) -> float:
    """The T > 0 that minimises the NLL of ``softmax(logits / T)`` (optimised over log T with L-BFGS)."""
    logits, targets = logits.detach().double(), targets.detach().long()
    if len(logits) == 0:
        return 1.0
    log_t = torch.zeros((), dtype=torch.double, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), targets)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.detach().exp())
    return t if torch.isfinite(torch.tensor(t)) and 1e-2 < t < 1e2 else 1.0


def expected_calibration_error(probs: torch.Tensor, targets: torch.Tensor, n_bins: int = ECE_BINS) -> float | None:
    """ECE (torchmetrics, L1, equal-width confidence bins): the mean |accuracy - confidence| over bins, weighted
    by the share of images in each. None for an empty set."""
    if len(probs) == 0:
        return None
    return float(multiclass_calibration_error(probs.float(), targets.long(), num_classes=probs.shape[1], n_bins=n_bins))


def rescale_probabilities(probs: torch.Tensor, factor: float) -> torch.Tensor:
    """softmax(factor * log p): the probabilities a temperature ``1 / factor`` times larger would have given
    (``factor = T`` turns calibrated probabilities back into the uncalibrated ones)."""
    return torch.softmax(factor * probs.clamp_min(1e-12).log(), dim=1)


@torch.no_grad()
def collect_logits(model: torch.nn.Module, loader) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C) logits and (N,) targets of a loader of (uint8 images, labels, index) batches, in eval mode."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    logits, targets = [], []
    for x, y, _ in loader:
        logits.append(model(x.to(device)).float().cpu())
        targets.append(y)
    model.train(was_training)
    return torch.cat(logits), torch.cat(targets)


def calibrate_checkpoint(model, loader, ckpt_path: str, write: bool = True) -> dict:
    """Load the checkpoint's weights into ``model``, fit its temperature on ``loader`` (the validation split)
    and store it in the checkpoint file (``write``: the process that owns the file). Returns the fit's figures."""
    from wbc.cache import atomic_write  # noqa: PLC0415 (keeps this module light for prediction)

    state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    state["state_dict"]["temperature"] = torch.ones(())
    model.load_state_dict(state["state_dict"])
    logits, targets = collect_logits(model, loader)
    t = fit_temperature(logits, targets)
    state["state_dict"]["temperature"] = torch.tensor(t)
    model.temperature.fill_(t)
    if write:
        atomic_write(ckpt_path, lambda f: torch.save(state, f))
    before, after = logits.softmax(1), (logits / t).softmax(1)
    return {
        "temperature": t,
        "val_nll_before": float(F.cross_entropy(logits, targets)),
        "val_nll_after": float(F.cross_entropy(logits / t, targets)),
        "val_ece_before": expected_calibration_error(before, targets),
        "val_ece_after": expected_calibration_error(after, targets),
    }
