"""Class priors: a classifier's probabilities carry the class mix of its training split, and another lab's folder
has its own (PBC was collected to fill each class, not in a blood count's proportions; one lab's folder may be
a normal differential, another's rich in lymphocytes). With Bayes' rule the probabilities can be moved to another
mix without retraining, p_t(y | x) ~ p_s(y | x) p_t(y) / p_s(y), as long as each class's images look alike in
both (label shift):

* ``train``: as trained, the training split's mix (the classifier's own probabilities);
* ``uniform``: every class equally likely beforehand (a balanced decision, no target image needed);
* ``folder``: the folder's own mix, estimated from its images by expectation-maximisation (Saerens, Latinne and
  Decaestecker 2002, "Adjusting the outputs of a classifier to new a priori probabilities"; with calibrated
  probabilities it is the maximum-likelihood estimate, Alexandari et al. 2020). It assumes one folder is one
  population (one lab, one mix), as AdaBN does, and needs enough images for its estimate;
* a list of proportions, one per class: a mix known from elsewhere (a lab's manual differential).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from wbc.errors import UserError

log = logging.getLogger(__name__)

SETTINGS = ("train", "uniform", "folder")
# prior=folder below this many predicted images is refused: on random sub-folders of PBC's test split in its own
# mix (scripts/prior_shift.py, docs/lab_transfer.md) the estimate cost 0.25 points of accuracy at 16 images, 0.19
# at 32, 0.02 at 64
MIN_IMAGES = 64


class PriorError(UserError):
    """A prior setting that cannot be used; the message says why and what to do."""


def split_prior(counts: Sequence[int], balanced: bool) -> list[float]:
    """The class mix a classifier learns from a training split with these class counts: their proportions, or
    uniform when training balanced the classes (``data.sampler=weighted``, ``model.class_weighted_loss``)."""
    if balanced or sum(counts) == 0:
        return [1 / len(counts)] * len(counts)
    return [c / sum(counts) for c in counts]


def check_setting(setting: Any, n_classes: int) -> None:
    """Raise PriorError for a prior setting that is not one of SETTINGS or ``n_classes`` non-negative proportions."""
    if isinstance(setting, str):
        if setting not in SETTINGS:
            raise PriorError(f"prior={setting}: use {', '.join(SETTINGS)} or a list of {n_classes} class proportions")
        return
    try:
        mix = np.asarray(list(setting), dtype=np.float64)
    except (TypeError, ValueError):
        mix = np.array([])
    if mix.shape != (n_classes,) or (mix < 0).any() or mix.sum() <= 0:
        raise PriorError(f"prior={setting}: give {n_classes} non-negative class proportions")


def training_prior(hparams: Mapping[str, Any], n_classes: int) -> np.ndarray:
    """The class mix a checkpoint's probabilities carry: ``class_prior`` as training recorded it (uniform when it
    balanced the classes by sampling or by loss weights), else its training split's ``class_counts`` (checkpoints
    before the prior was recorded; uniform with ``class_weighted_loss``), else uniform."""
    recorded = hparams.get("class_prior")
    if recorded is not None:
        prior = np.asarray(recorded, dtype=np.float64)
    elif hparams.get("class_counts") and not hparams.get("class_weighted_loss"):
        prior = np.asarray(hparams["class_counts"], dtype=np.float64)
    else:
        prior = np.ones(n_classes)
    if prior.shape != (n_classes,) or (prior < 0).any() or prior.sum() <= 0:
        raise PriorError(f"the checkpoint's class prior {prior.tolist()} does not fit its {n_classes} classes")
    return prior / prior.sum()


def reweight(probs: np.ndarray, source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(N, C) probabilities under the class mix ``source`` -> under ``target`` (Bayes' rule)."""
    source, target = np.asarray(source, dtype=np.float64), np.asarray(target, dtype=np.float64)
    # a class absent from training (share 0) was never learned: it keeps no probability
    w = np.divide(target, source, out=np.zeros_like(target), where=source > 0)
    q = np.asarray(probs, dtype=np.float64) * w
    return q / q.sum(1, keepdims=True)


def estimate_prior(
    probs: np.ndarray, source: np.ndarray, tol: float = 1e-6, max_iter: int = 1000
) -> tuple[np.ndarray, int]:
    """The class mix of the images behind ``probs`` (N, C; computed under ``source``) by EM: reweight the
    probabilities to the current estimate, take their mean as the next; returns (mix, iterations)."""
    target = np.asarray(source, dtype=np.float64)
    for iteration in range(1, max_iter + 1):
        new = reweight(probs, source, target).mean(0)
        if np.abs(new - target).max() < tol:
            return new, iteration
        target = new
    return target, max_iter


def require_images(n: int, n_classes: int, min_images: int = MIN_IMAGES) -> None:
    """Raise PriorError when ``n`` images are too few for prior=folder's estimate."""
    if n < min_images:
        raise PriorError(
            f"prior=folder estimates the folder's class mix from its images and needs at least {min_images} "
            f"predicted images; got {n}. Use prior=train, or give the mix: prior=[p1,...,p{n_classes}]"
        )


def apply_prior(
    probs: np.ndarray, source: np.ndarray, setting: Any, min_images: int = MIN_IMAGES
) -> tuple[np.ndarray, np.ndarray]:
    """``probs`` (N, C; rows of NaN for files that failed stay NaN) moved to the class mix ``setting`` asks for
    (module docstring); returns (probabilities, the mix used). Raises PriorError for a setting it does not know,
    proportions that do not fit, or ``folder`` with fewer than ``min_images`` predicted images."""
    probs = np.asarray(probs, dtype=np.float64)
    ok = ~np.isnan(probs).any(1)
    n_classes = probs.shape[1]
    check_setting(setting, n_classes)
    if setting == "train":
        return probs, np.asarray(source, dtype=np.float64)
    if setting == "uniform":
        target = np.full(n_classes, 1 / n_classes)
    elif setting == "folder":
        require_images(int(ok.sum()), n_classes, min_images)
        target, _ = estimate_prior(probs[ok], source)
    else:
        target = np.asarray(list(setting), dtype=np.float64)
        target = target / target.sum()
    out = probs.copy()
    out[ok] = reweight(probs[ok], source, target)
    return out, target


def resolve(setting: Any, hparams: Mapping[str, Any]) -> Any:
    """``auto`` -> the checkpoint's recipe's setting (its training config's ``prior``; ``train`` without one)."""
    return (hparams.get("prior") or "train") if isinstance(setting, str) and setting == "auto" else setting


def adjust(
    probs: np.ndarray,
    hparams: Mapping[str, Any],
    setting: Any = "auto",
    min_images: int = MIN_IMAGES,
) -> tuple[np.ndarray, dict[str, Any]]:
    """A checkpoint's probabilities (``hparams``: its hyperparameters) under the class mix ``setting`` asks for;
    ``auto`` is the checkpoint's recipe's (its training config's ``prior``; ``train`` when it has none), and an
    ``auto`` that means ``folder`` on a folder too small to estimate keeps the training mix. Returns (probabilities,
    {"prior": the setting used, "mix": the mix used, "training_mix": the checkpoint's})."""
    source = training_prior(hparams, np.shape(probs)[1])
    auto = isinstance(setting, str) and setting == "auto"
    if auto:
        setting = resolve(setting, hparams)
        n = int((~np.isnan(np.asarray(probs, dtype=np.float64)).any(1)).sum())
        if setting == "folder" and n < min_images:
            log.info("prior=auto: %d predicted images are too few to estimate their class mix: the training mix", n)
            setting = "train"
    out, mix = apply_prior(probs, source, setting, min_images)
    used = setting if isinstance(setting, str) else [float(v) for v in setting]
    return out, {"prior": used, "mix": mix.tolist(), "training_mix": source.tolist()}


def tag(setting: str | Sequence[float] | None) -> str:
    """A prior setting as reports write it: its name, or its proportions."""
    if setting is None or isinstance(setting, str):
        return setting or "train"
    return "[" + ", ".join(f"{p:g}" for p in setting) + "]"


def describe(mix: Sequence[float], class_names: Sequence[str]) -> str:
    """'Neutrophil 0.20, Lymphocyte 0.21, ...'"""
    return ", ".join(f"{n} {float(p):.2f}" for n, p in zip(class_names, mix, strict=True))
