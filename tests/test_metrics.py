"""ClassificationMetrics against values worked out by hand (no sklearn, no torchmetrics functional calls)."""

import math
import warnings

import pytest
import torch
from torchmetrics import Metric

from wbc.metrics import ClassificationMetrics, prefixed

NAMES3 = ["Neutrophil", "Lymphocyte", "Eosinophil/Basophil"]
NAMES4 = ["Neutrophil", "Lymphocyte", "Monocyte", "Eosinophil/Basophil"]


def one_hot_probs(pred: list[int], num_classes: int) -> torch.Tensor:
    """Probabilities whose argmax is `pred`: 0.6 on the predicted class, the rest spread evenly."""
    p = torch.full((len(pred), num_classes), 0.4 / (num_classes - 1))
    p[torch.arange(len(pred)), torch.tensor(pred)] = 0.6
    return p


# Hand example, 10 samples, rows = true class, cols = predicted:
#            pred 0  1  2
#   true 0:     [3, 1, 0]    4 samples
#   true 1:     [0, 2, 0]    2 samples
#   true 2:     [1, 1, 2]    4 samples
HAND_CM = [[3, 1, 0], [0, 2, 0], [1, 1, 2]]
TARGET = [0, 0, 0, 0, 1, 1, 2, 2, 2, 2]
PRED = [0, 0, 0, 1, 1, 1, 0, 1, 2, 2]


def test_hand_computed_example():
    m = ClassificationMetrics(NAMES3)
    m.update(one_hot_probs(PRED, 3), torch.tensor(TARGET))
    r = m.compute()
    assert m.confusion_matrix().tolist() == HAND_CM
    assert m.confusion_matrix().dtype == torch.int64

    # accuracy = diagonal / N = (3 + 2 + 2) / 10
    assert r["accuracy"] == pytest.approx(7 / 10)
    # class 0: TP=3, FN=1, FP=1 (true 2 -> pred 0), TN=10-3-1-1=5
    # class 1: TP=2, FN=0, FP=2 (true 0 and true 2 -> pred 1), TN=10-2-0-2=6
    # class 2: TP=2, FN=2, FP=0, TN=10-2-2-0=6
    precision = [3 / 4, 2 / 4, 2 / 2]  # TP / (TP + FP)
    recall = [3 / 4, 2 / 2, 2 / 4]  # TP / (TP + FN)
    specificity = [5 / 6, 6 / 8, 6 / 6]  # TN / (TN + FP)
    # F1 = 2PR / (P + R): class 0: 3/4; class 1: 2*(1/2)*1/(3/2) = 2/3; class 2: 2*1*(1/2)/(3/2) = 2/3
    f1 = [3 / 4, 2 / 3, 2 / 3]
    expected = {"precision": precision, "recall": recall, "specificity": specificity, "f1": f1}
    for name, vals in expected.items():
        for cls, v in zip(NAMES3, vals, strict=True):
            assert r[f"{name}/{cls}"] == pytest.approx(v), (name, cls)
    assert r["precision_macro"] == pytest.approx(3 / 4)  # (3/4 + 1/2 + 1) / 3 = (9/4) / 3
    assert r["recall_macro"] == pytest.approx(3 / 4)  # (3/4 + 1 + 1/2) / 3
    assert r["balanced_accuracy"] == pytest.approx(3 / 4)  # = macro recall
    assert r["specificity_macro"] == pytest.approx(31 / 36)  # (10/12 + 9/12 + 12/12) / 3
    assert r["f1_macro"] == pytest.approx(25 / 36)  # (9/12 + 8/12 + 8/12) / 3
    assert all(type(v) is float for v in r.values())


def test_auroc_separable_is_one():
    # Each sample puts 0.8 on its true class and 0.1 elsewhere: for every class all positives score 0.8
    # and all negatives 0.1, so every one-vs-rest ranking is perfect.
    target = torch.tensor([0, 0, 1, 1, 2, 2])
    probs = torch.full((6, 3), 0.1)
    probs[torch.arange(6), target] = 0.8
    m = ClassificationMetrics(NAMES3)
    m.update(probs, target)
    r = m.compute()
    assert [r[f"auroc/{c}"] for c in NAMES3] == pytest.approx([1.0, 1.0, 1.0])
    assert r["auroc_macro"] == pytest.approx(1.0)


def test_auroc_with_inverted_pairs():
    target = torch.tensor([0, 0, 1, 1, 2, 2])
    probs = torch.tensor(
        [
            [0.7, 0.2, 0.1],
            [0.4, 0.5, 0.1],  # class-0 score 0.4 < 0.5 of the next (negative) sample: one inverted pair
            [0.5, 0.3, 0.2],  # class-1 score 0.3 < 0.5 of the previous (negative) sample: one inverted pair
            [0.1, 0.8, 0.1],
            [0.2, 0.1, 0.7],
            [0.1, 0.2, 0.7],
        ]
    )
    m = ClassificationMetrics(NAMES3)
    m.update(probs, target)
    r = m.compute()
    # AUROC = fraction of (positive, negative) pairs ranked correctly; 2 positives x 4 negatives = 8 pairs.
    # class 0: pos {0.7, 0.4}, neg {0.5, 0.1, 0.2, 0.1}: 0.7 beats 4, 0.4 beats 3 -> 7/8
    # class 1: pos {0.3, 0.8}, neg {0.2, 0.5, 0.1, 0.2}: 0.8 beats 4, 0.3 beats 3 -> 7/8
    # class 2: pos {0.7, 0.7}, neg {0.1, 0.1, 0.2, 0.1}: 8/8
    assert r["auroc/Neutrophil"] == pytest.approx(7 / 8)
    assert r["auroc/Lymphocyte"] == pytest.approx(7 / 8)
    assert r["auroc/Eosinophil/Basophil"] == pytest.approx(1.0)
    assert r["auroc_macro"] == pytest.approx(11 / 12)  # (7/8 + 7/8 + 8/8) / 3 = (22/8) / 3


def test_class_absent_from_targets_gives_nan_auroc_without_warning():
    # Class 2 never occurs in the targets but is predicted once.
    target = torch.tensor([0, 0, 1, 1])
    probs = torch.tensor([[0.8, 0.1, 0.1], [0.3, 0.6, 0.1], [0.2, 0.7, 0.1], [0.2, 0.2, 0.6]])
    m = ClassificationMetrics(NAMES3)
    m.update(probs, target)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = m.compute()
    assert math.isnan(r["auroc/Eosinophil/Basophil"])
    # class 0: pos {0.8, 0.3}, neg {0.2, 0.2} -> 4/4; class 1: pos {0.7, 0.2}, neg {0.1, 0.6} -> 3/4
    assert r["auroc/Neutrophil"] == pytest.approx(1.0)
    assert r["auroc/Lymphocyte"] == pytest.approx(3 / 4)
    assert r["auroc_macro"] == pytest.approx(7 / 8)  # mean over the two defined classes
    # Class 2: TP=0, FN=0 -> recall 0/0 reported as 0 (torchmetrics convention); FP=1 -> precision 0, F1 0.
    assert r["recall/Eosinophil/Basophil"] == 0.0
    assert r["f1/Eosinophil/Basophil"] == 0.0
    # It was predicted, so it stays in the macro mean: recall = (1/2 + 1/2 + 0) / 3
    # (class 0: TP=1 of 2, sample 1 goes to class 1; class 1: TP=1 of 2, sample 3 goes to class 2)
    assert r["recall_macro"] == pytest.approx(1 / 3)


def test_single_target_class_and_collapsed_predictions():
    # All targets are class 0 and every prediction is class 0: AUROC is undefined for every class.
    m = ClassificationMetrics(NAMES3)
    m.update(one_hot_probs([0, 0, 0], 3), torch.tensor([0, 0, 0]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = m.compute()
    assert math.isnan(r["auroc_macro"])
    assert all(math.isnan(r[f"auroc/{c}"]) for c in NAMES3)
    assert r["accuracy"] == 1.0
    # Classes 1 and 2 appear neither in targets nor predictions: skipped by the macro means.
    assert r["f1_macro"] == 1.0 and r["balanced_accuracy"] == 1.0


def test_collapsed_predictions_on_mixed_targets():
    # The model predicts class 0 for everything; targets [0, 1, 2, 0].
    m = ClassificationMetrics(NAMES3)
    m.update(one_hot_probs([0, 0, 0, 0], 3), torch.tensor([0, 1, 2, 0]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = m.compute()
    assert r["accuracy"] == pytest.approx(2 / 4)
    assert r["precision/Neutrophil"] == pytest.approx(2 / 4)  # TP=2, FP=2
    assert r["precision/Lymphocyte"] == 0.0  # never predicted: 0/0 -> 0
    assert r["recall/Neutrophil"] == 1.0 and r["recall/Lymphocyte"] == 0.0
    assert r["balanced_accuracy"] == pytest.approx(1 / 3)  # (1 + 0 + 0) / 3
    # F1 class 0 = 2*(1/2)*1/(3/2) = 2/3, others 0 -> macro (2/3) / 3
    assert r["f1_macro"] == pytest.approx(2 / 9)
    assert m.confusion_matrix().tolist() == [[2, 0, 0], [1, 0, 0], [1, 0, 0]]


def test_two_batches_equal_one_concatenated_batch():
    g = torch.Generator().manual_seed(0)
    probs = torch.rand(40, 4, generator=g).softmax(dim=1)
    target = torch.randint(0, 4, (40,), generator=g)
    split, whole = ClassificationMetrics(NAMES4), ClassificationMetrics(NAMES4)
    split.update(probs[:15], target[:15])
    split.update(probs[15:], target[15:])
    whole.update(probs, target)
    a, b = split.compute(), whole.compute()
    assert a.keys() == b.keys()
    for k in a:
        assert a[k] == pytest.approx(b[k], nan_ok=True), k
    assert torch.equal(split.confusion_matrix(), whole.confusion_matrix())
    assert split.confusion_matrix().sum() == 40


def test_names_use_class_names():
    m = ClassificationMetrics(NAMES4)
    expected = {"accuracy", "balanced_accuracy"}
    expected |= {f"{n}_macro" for n in ("precision", "recall", "specificity", "f1", "auroc")}
    expected |= {f"{n}/{c}" for n in ("precision", "recall", "specificity", "f1", "auroc") for c in NAMES4}
    assert set(m.names()) == expected
    m.update(one_hot_probs([0, 1, 2, 3], 4), torch.tensor([0, 1, 2, 3]))
    r = m.compute()
    assert list(r) == m.names()
    assert r["f1/Eosinophil/Basophil"] == 1.0 and r["specificity/Monocyte"] == 1.0
    # The torchmetrics objects are submodules, so Lightning's .to(device) and DDP sync reach them.
    assert sum(isinstance(x, Metric) for x in m.modules()) == 11


def test_cheap_set_and_empty_state_and_reset():
    cheap = ClassificationMetrics(NAMES4, full=False)
    cheap.update(one_hot_probs([0, 1, 1, 3], 4), torch.tensor([0, 1, 2, 3]))
    r = cheap.compute()
    assert set(r) == {"accuracy", "f1_macro"}
    assert r["accuracy"] == pytest.approx(3 / 4)
    with pytest.raises(RuntimeError):
        cheap.confusion_matrix()

    m = ClassificationMetrics(NAMES4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert all(math.isnan(v) for v in m.compute().values())  # before any update: NaN, no raise
        assert m.confusion_matrix().tolist() == [[0] * 4] * 4
    m.update(one_hot_probs([0, 1], 4), torch.tensor([0, 1]))
    m.reset()
    m.update(one_hot_probs([2], 4), torch.tensor([3]))
    assert m.compute()["accuracy"] == 0.0
    assert m.confusion_matrix().sum() == 1


def test_prefixed():
    assert prefixed({"f1_macro": 0.5, "recall/Eosinophil/Basophil": 1.0}, "val") == {
        "val/f1_macro": 0.5,
        "val/recall/Eosinophil/Basophil": 1.0,
    }
