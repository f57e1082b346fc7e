"""The classification metric set shared by every stage (train/val/test), built from torchmetrics.

Keys are flat and carry no stage prefix ("f1_macro", "recall/Monocyte"); `prefixed` adds one for logging.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
    MulticlassSpecificity,
)

PER_CLASS = ("precision", "recall", "specificity", "f1", "auroc")
MACRO = ("precision_macro", "recall_macro", "specificity_macro", "f1_macro", "auroc_macro")
# torchmetrics warns (and returns 0) when a class has no positive or no negative targets; we report NaN.
_UNDEFINED_AUROC_WARNING = r"No (positive|negative) samples in targets"


class ClassificationMetrics(torch.nn.Module):
    """Stateful metric set for one stage: `update` with probabilities and integer targets, `compute` a dict.

    The torchmetrics objects are submodules, so Lightning moves them to the model's device and they sync
    across processes under DDP when computed.

    full=True: accuracy (micro), balanced_accuracy (= recall_macro), precision/recall/specificity/F1 per class
    and macro, AUROC per class and macro, confusion matrix. AUROC keeps every prediction of the epoch (exact).
    full=False (cheap, for training batches): accuracy and f1_macro only.

    Edge cases (a class absent from the targets, or never predicted, e.g. a collapsed model):
    - precision/recall/specificity/F1 follow torchmetrics (same as sklearn's zero_division=0): a per-class
      ratio with a zero denominator is 0, and macro means skip only classes that appear neither in the
      targets nor in the predictions. So a class absent from the targets but predicted counts with
      recall 0 in recall_macro/balanced_accuracy (sklearn's balanced accuracy would drop it).
    - AUROC of a class with no positive or no negative targets is undefined: reported as NaN (torchmetrics'
      0 would read as "perfectly wrong"), and auroc_macro is the mean over the defined classes (NaN if none).
      torchmetrics' warning for exactly this case is silenced; other warnings pass through.
    - compute() before any update returns NaN for every key instead of raising.
    """

    def __init__(self, class_names: Sequence[str], full: bool = True) -> None:
        super().__init__()
        self.class_names = list(class_names)
        self.full = full
        c = len(self.class_names)
        if c < 2:
            raise ValueError(f"need at least 2 classes, got {self.class_names}")
        metrics = {
            "accuracy": MulticlassAccuracy(c, average="micro"),
            "f1_macro": MulticlassF1Score(c, average="macro"),
        }
        if full:
            metrics |= {
                "precision_macro": MulticlassPrecision(c, average="macro"),
                "recall_macro": MulticlassRecall(c, average="macro"),
                "specificity_macro": MulticlassSpecificity(c, average="macro"),
                "precision": MulticlassPrecision(c, average=None),
                "recall": MulticlassRecall(c, average=None),
                "specificity": MulticlassSpecificity(c, average=None),
                "f1": MulticlassF1Score(c, average=None),
                # Per class only: compute() derives the macro value, skipping classes where it is undefined.
                "auroc": MulticlassAUROC(c, average=None),
                "confmat": MulticlassConfusionMatrix(c),
            }
        # compute_groups (the default) lets precision/recall/specificity/F1 share one set of TP/FP/TN/FN.
        self.collection = MetricCollection(metrics)
        self._updates = 0

    def names(self) -> list[str]:
        """All keys `compute` returns, in order."""
        if not self.full:
            return ["accuracy", "f1_macro"]
        per_class = [f"{m}/{n}" for m in PER_CLASS for n in self.class_names]
        return ["accuracy", "balanced_accuracy", *MACRO, *per_class]

    def update(self, preds: Tensor, target: Tensor) -> None:
        """preds: (N, C) class probabilities (softmax the logits first: AUROC ranks the probabilities, and
        torchmetrics only softmaxes inputs outside [0, 1]); target: (N,) integer class indices."""
        if target.numel() == 0:
            return
        self.collection.update(preds, target)
        self._updates += 1

    def compute(self) -> dict[str, float]:
        if self._updates == 0:
            return dict.fromkeys(self.names(), math.nan)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_UNDEFINED_AUROC_WARNING)
            values = self.collection.compute()
        out = {"accuracy": values["accuracy"].item(), "f1_macro": values["f1_macro"].item()}
        if not self.full:
            return out

        support = values["confmat"].sum(dim=1)
        auroc = values["auroc"].float().clone()
        defined = (support > 0) & (support < support.sum())  # needs both positives and negatives
        auroc[~defined] = math.nan
        out["balanced_accuracy"] = values["recall_macro"].item()
        for name in MACRO[:-1]:
            out[name] = values[name].item()
        out["auroc_macro"] = auroc[defined].mean().item() if defined.any() else math.nan
        per_class = {name: values[name].tolist() for name in PER_CLASS[:-1]} | {"auroc": auroc.tolist()}
        for name, vals in per_class.items():
            out |= {f"{name}/{cls}": float(v) for cls, v in zip(self.class_names, vals, strict=True)}
        return {k: out[k] for k in self.names()}

    def confusion_matrix(self) -> Tensor:
        """(C, C) int64 counts; rows = true class, columns = predicted class. Zeros before any update."""
        if not self.full:
            raise RuntimeError("the confusion matrix is only tracked with full=True")
        if self._updates == 0:
            c = len(self.class_names)
            return torch.zeros(c, c, dtype=torch.int64)
        return self.collection["confmat"].compute().to(torch.int64)

    def reset(self) -> None:
        self.collection.reset()
        self._updates = 0


def prefixed(metrics: dict[str, float], stage: str) -> dict[str, float]:
    """Add a stage prefix for logging: {"f1_macro": x} -> {"val/f1_macro": x}."""
    return {f"{stage}/{k}": v for k, v in metrics.items()}
