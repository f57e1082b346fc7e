"""The classification metric set shared by every stage (train/val/test) and by `predict.py evaluate=true`.

Keys are flat and carry no stage prefix ("f1_macro", "recall/Monocyte"); `prefixed` adds one for logging.

One definition, in :func:`rates_from_confusion` (precision, recall, specificity, F1) and
:meth:`ClassificationMetrics.compute` (AUROC, macro means), for training, validation, testing and evaluation:

- A class **absent** from the evaluated targets (no true sample) has no per-class values: precision, recall,
  specificity, F1 and AUROC are all undefined (``NaN``, ``null`` in JSON), whether or not it was predicted.
- Each macro value is the mean over the classes where that metric is defined, and ``<name>_macro_n_classes``
  beside it says how many classes that was (``NaN`` macro when none).
- For a class that is present: precision of a class never predicted is 0 (it exists and was missed: a
  failure, as sklearn's ``zero_division=0``); specificity needs negatives and AUROC needs positives and
  negatives, so with a single class in the evaluated set both are undefined.
- Accuracy is micro (correct / all); balanced accuracy is ``recall_macro`` (the mean recall over the present
  classes, as sklearn's ``balanced_accuracy_score``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics.classification import MulticlassAUROC, MulticlassConfusionMatrix

PER_CLASS = ("precision", "recall", "specificity", "f1", "auroc")
MACRO = ("precision_macro", "recall_macro", "specificity_macro", "f1_macro", "auroc_macro")
N_CLASSES = "_n_classes"  # suffix of the key that counts the classes a macro value averages
# torchmetrics warns (and returns 0) when a class has no positive or no negative targets; we report NaN.
_UNDEFINED_AUROC_WARNING = r"No (positive|negative) samples in targets"


def rates_from_confusion(confusion: Tensor) -> dict[str, Tensor]:
    """Per-class precision, recall, specificity and F1 (float64, NaN where undefined) from a (C, C) confusion
    matrix (rows = true class, columns = predicted class); see the module docstring for the rules."""
    cm = confusion.double()
    tp = cm.diagonal()
    support = cm.sum(dim=1)  # true samples of each class
    predicted = cm.sum(dim=0)
    fn, fp = support - tp, predicted - tp
    tn = cm.sum() - tp - fn - fp
    nan = torch.full_like(tp, math.nan)
    present = support > 0
    rates = {
        "precision": torch.where(predicted > 0, tp / predicted.clamp(min=1), torch.zeros_like(tp)),
        "recall": tp / support.clamp(min=1),
        "specificity": torch.where(tn + fp > 0, tn / (tn + fp).clamp(min=1), nan),
        "f1": 2 * tp / (2 * tp + fp + fn).clamp(min=1),  # = 2PR / (P + R), and 0 when TP = 0
    }
    return {name: torch.where(present, values, nan) for name, values in rates.items()}


def macro(values: Tensor) -> tuple[float, int]:
    """(mean over the defined (non-NaN) entries, how many there are); NaN when none is defined."""
    defined = ~values.isnan()
    n = int(defined.sum())
    return (values[defined].mean().item() if n else math.nan), n


class ClassificationMetrics(torch.nn.Module):
    """Stateful metric set for one stage: `update` with probabilities and integer targets, `compute` a dict.

    The torchmetrics objects (a confusion matrix, and AUROC for the full set) are submodules, so Lightning
    moves them to the model's device and they sync across processes under DDP when computed; every other
    value is derived from the synchronised confusion matrix by :func:`rates_from_confusion`.

    full=True: accuracy (micro), balanced_accuracy (= recall_macro), precision/recall/specificity/F1 per class
    and macro, AUROC per class and macro (each macro with its ``_n_classes``), confusion matrix. AUROC keeps
    every prediction of the epoch (exact). full=False (cheap, for training batches): accuracy and f1_macro
    (with f1_macro_n_classes). compute() before any update returns NaN for every key instead of raising.
    """

    def __init__(self, class_names: Sequence[str], full: bool = True) -> None:
        super().__init__()
        self.class_names = list(class_names)
        self.full = full
        c = len(self.class_names)
        if c < 2:
            raise ValueError(f"need at least 2 classes, got {self.class_names}")
        self.confmat = MulticlassConfusionMatrix(c)
        self.auroc = MulticlassAUROC(c, average=None) if full else None
        self._updates = 0

    def names(self) -> list[str]:
        """All keys `compute` returns, in order."""
        if not self.full:
            return ["accuracy", "f1_macro", f"f1_macro{N_CLASSES}"]
        macros = [key for name in MACRO for key in (name, f"{name}{N_CLASSES}")]
        per_class = [f"{m}/{n}" for m in PER_CLASS for n in self.class_names]
        return ["accuracy", "balanced_accuracy", *macros, *per_class]

    def update(self, preds: Tensor, target: Tensor) -> None:
        """preds: (N, C) class probabilities (softmax the logits first: AUROC ranks the probabilities, and
        torchmetrics only softmaxes inputs outside [0, 1]); target: (N,) integer class indices."""
        if target.numel() == 0:
            return
        self.confmat.update(preds, target)
        if self.auroc is not None:
            self.auroc.update(preds, target)
        self._updates += 1

    def compute(self) -> dict[str, float | int]:
        """{key: value}: floats (NaN where undefined), and an int for each ``*_n_classes`` key."""
        if self._updates == 0:
            return {k: (0 if k.endswith(N_CLASSES) else math.nan) for k in self.names()}
        confusion = self.confmat.compute().double()
        rates = rates_from_confusion(confusion)
        out: dict[str, float | int] = {"accuracy": (confusion.trace() / confusion.sum()).item()}
        if not self.full:
            out["f1_macro"], out[f"f1_macro{N_CLASSES}"] = macro(rates["f1"])
            return out

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_UNDEFINED_AUROC_WARNING)
            auroc = self.auroc.compute().double().cpu()
        support = confusion.sum(dim=1).cpu()
        defined = (support > 0) & (support < support.sum())  # needs both positives and negatives
        rates["auroc"] = torch.where(defined, auroc, torch.full_like(auroc, math.nan))
        for name in PER_CLASS:
            out[f"{name}_macro"], out[f"{name}_macro{N_CLASSES}"] = macro(rates[name].cpu())
        out["balanced_accuracy"] = out["recall_macro"]
        for name in PER_CLASS:
            out |= {f"{name}/{cls}": float(v) for cls, v in zip(self.class_names, rates[name].tolist(), strict=True)}
        return {k: out[k] for k in self.names()}

    def confusion_matrix(self) -> Tensor:
        """(C, C) int64 counts; rows = true class, columns = predicted class. Zeros before any update."""
        if not self.full:
            raise RuntimeError("the confusion matrix is only tracked with full=True")
        if self._updates == 0:
            c = len(self.class_names)
            return torch.zeros(c, c, dtype=torch.int64)
        return self.confmat.compute().to(torch.int64)

    def reset(self) -> None:
        self.confmat.reset()
        if self.auroc is not None:
            self.auroc.reset()
        self._updates = 0


def reported(values: dict[str, float]) -> dict[str, float | int | None]:
    """Logged values as a report writes them: ``*_n_classes`` as ints (Lightning logs them as floats)."""
    return {k: (None if v is None else int(v) if k.endswith(N_CLASSES) else float(v)) for k, v in values.items()}


def prefixed(metrics: dict[str, float], stage: str) -> dict[str, float]:
    """Add a stage prefix for logging: {"f1_macro": x} -> {"val/f1_macro": x}."""
    return {f"{stage}/{k}": v for k, v in metrics.items()}
