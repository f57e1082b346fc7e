"""ClassificationMetrics against values worked out by hand (no sklearn, no torchmetrics functional calls)."""

import math
import warnings

import pytest
import torch
from torchmetrics import Metric

from wbc.metrics import MACRO, PER_CLASS, ClassificationMetrics, macro, prefixed, rates_from_confusion, reported

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
    assert all(r[f"{name}_n_classes"] == 3 for name in MACRO)  # every class present: all three averaged
    assert all(type(v) is (int if k.endswith("_n_classes") else float) for k, v in r.items())


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


def test_class_absent_from_targets_has_no_values_and_leaves_the_macro_means():
    # Class 2 never occurs in the targets but is predicted once. targets [0, 0, 1, 1], predictions [0, 1, 1, 2].
    target = torch.tensor([0, 0, 1, 1])
    probs = torch.tensor([[0.8, 0.1, 0.1], [0.3, 0.6, 0.1], [0.2, 0.7, 0.1], [0.2, 0.2, 0.6]])
    m = ClassificationMetrics(NAMES3)
    m.update(probs, target)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = m.compute()
    # The absent class has no per-class value at all, although it was predicted (precision would read 0/1).
    assert all(math.isnan(r[f"{name}/Eosinophil/Basophil"]) for name in PER_CLASS)
    # class 0: TP=1, FN=1, FP=0, TN=2 -> P=1, R=1/2, F1=2/3, specificity 2/2
    # class 1: TP=1, FN=1 (sample 3 -> class 2), FP=1 (sample 1), TN=1 -> P=1/2, R=1/2, F1=1/2, spec 1/2
    expected = {"precision": [1, 1 / 2], "recall": [1 / 2, 1 / 2], "f1": [2 / 3, 1 / 2], "specificity": [1, 1 / 2]}
    for name, (v0, v1) in expected.items():
        assert r[f"{name}/Neutrophil"] == pytest.approx(v0) and r[f"{name}/Lymphocyte"] == pytest.approx(v1), name
    # AUROC: class 0: pos {0.8, 0.3}, neg {0.2, 0.2} -> 4/4; class 1: pos {0.7, 0.2}, neg {0.1, 0.6} -> 3/4
    assert r["auroc/Neutrophil"] == pytest.approx(1.0) and r["auroc/Lymphocyte"] == pytest.approx(3 / 4)
    # Macro means over the two present classes, and the count beside each.
    assert r["precision_macro"] == pytest.approx(3 / 4)  # (1 + 1/2) / 2
    assert r["recall_macro"] == r["balanced_accuracy"] == pytest.approx(1 / 2)
    assert r["f1_macro"] == pytest.approx(7 / 12)  # (2/3 + 1/2) / 2
    assert r["specificity_macro"] == pytest.approx(3 / 4)
    assert r["auroc_macro"] == pytest.approx(7 / 8)
    assert all(r[f"{name}_n_classes"] == 2 for name in MACRO)
    assert r["accuracy"] == pytest.approx(2 / 4)  # micro: the mistake on the absent class counts


def test_single_target_class_all_correct():
    # The case: a set that holds one class, all predicted right. Macro-F1 1.0 over 1 class, not 4.
    m = ClassificationMetrics(NAMES3)
    m.update(one_hot_probs([0, 0, 0], 3), torch.tensor([0, 0, 0]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = m.compute()
    assert r["accuracy"] == 1.0 and r["f1_macro"] == 1.0 and r["f1_macro_n_classes"] == 1
    assert r["balanced_accuracy"] == 1.0 and r["recall_macro_n_classes"] == 1
    for cls in NAMES3[1:]:
        assert all(math.isnan(r[f"{name}/{cls}"]) for name in PER_CLASS)  # null, not F1 0.0
    # Specificity and AUROC need negatives: undefined for the only class, so no macro value (not 0.0).
    assert math.isnan(r["specificity/Neutrophil"]) and math.isnan(r["auroc/Neutrophil"])
    assert math.isnan(r["specificity_macro"]) and r["specificity_macro_n_classes"] == 0
    assert math.isnan(r["auroc_macro"]) and r["auroc_macro_n_classes"] == 0


def test_single_target_class_with_mistakes():
    # targets [0, 0, 0], predictions [0, 0, 1]: class 0 TP=2, FN=1, FP=0.
    m = ClassificationMetrics(NAMES3)
    m.update(one_hot_probs([0, 0, 1], 3), torch.tensor([0, 0, 0]))
    r = m.compute()
    assert r["accuracy"] == pytest.approx(2 / 3)
    assert r["precision/Neutrophil"] == 1.0 and r["recall/Neutrophil"] == pytest.approx(2 / 3)
    assert r["f1/Neutrophil"] == pytest.approx(4 / 5)  # 2TP / (2TP + FP + FN) = 4 / 5
    assert r["f1_macro"] == pytest.approx(4 / 5) and r["f1_macro_n_classes"] == 1
    assert math.isnan(r["precision/Lymphocyte"])  # predicted once, but absent: no value


def test_collapsed_predictions_on_mixed_targets():
    # The model predicts class 0 for everything; targets [0, 1, 2, 0]: every class present.
    m = ClassificationMetrics(NAMES3)
    m.update(one_hot_probs([0, 0, 0, 0], 3), torch.tensor([0, 1, 2, 0]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = m.compute()
    assert r["accuracy"] == pytest.approx(2 / 4)
    assert r["precision/Neutrophil"] == pytest.approx(2 / 4)  # TP=2, FP=2
    assert r["precision/Lymphocyte"] == 0.0  # present but never predicted: a failure, 0 (not undefined)
    assert r["recall/Neutrophil"] == 1.0 and r["recall/Lymphocyte"] == 0.0
    assert r["balanced_accuracy"] == pytest.approx(1 / 3)  # (1 + 0 + 0) / 3
    # F1 class 0 = 2*(1/2)*1/(3/2) = 2/3, others 0 -> macro (2/3) / 3
    assert r["f1_macro"] == pytest.approx(2 / 9) and r["f1_macro_n_classes"] == 3
    # specificity: class 0 TN=0, FP=2 -> 0; classes 1 and 2: FP=0 -> 1; macro 2/3
    assert r["specificity_macro"] == pytest.approx(2 / 3)
    assert m.confusion_matrix().tolist() == [[2, 0, 0], [1, 0, 0], [1, 0, 0]]


def test_rates_from_confusion_by_hand():
    # The one definition, on a confusion matrix directly: rows true, columns predicted; class 2 absent.
    rates = rates_from_confusion(torch.tensor([[3, 1, 0], [0, 0, 0], [0, 0, 0]]))
    assert rates["recall"][0] == pytest.approx(3 / 4) and rates["precision"][0] == 1.0
    assert math.isnan(rates["specificity"][0])  # no negatives
    assert all(math.isnan(rates[name][i]) for name in rates for i in (1, 2))
    assert macro(torch.tensor([0.5, math.nan, 1.0])) == (pytest.approx(0.75), 2)
    value, n = macro(torch.tensor([math.nan, math.nan]))
    assert math.isnan(value) and n == 0


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
    expected |= {
        f"{n}_macro{s}" for n in ("precision", "recall", "specificity", "f1", "auroc") for s in ("", "_n_classes")
    }
    expected |= {f"{n}/{c}" for n in ("precision", "recall", "specificity", "f1", "auroc") for c in NAMES4}
    assert set(m.names()) == expected
    m.update(one_hot_probs([0, 1, 2, 3], 4), torch.tensor([0, 1, 2, 3]))
    r = m.compute()
    assert list(r) == m.names()
    assert r["f1/Eosinophil/Basophil"] == 1.0 and r["specificity/Monocyte"] == 1.0
    # The torchmetrics objects (confusion matrix, AUROC) are submodules: Lightning's .to(device) and DDP sync
    # reach them.
    assert sum(isinstance(x, Metric) for x in m.modules()) == 2


def test_cheap_set_and_empty_state_and_reset():
    cheap = ClassificationMetrics(NAMES4, full=False)
    cheap.update(one_hot_probs([0, 1, 1, 3], 4), torch.tensor([0, 1, 2, 3]))
    r = cheap.compute()
    assert set(r) == {"accuracy", "f1_macro", "f1_macro_n_classes"}
    assert r["accuracy"] == pytest.approx(3 / 4)
    with pytest.raises(RuntimeError):
        cheap.confusion_matrix()

    m = ClassificationMetrics(NAMES4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        empty = m.compute()  # before any update: NaN (and 0 classes averaged), no raise
        assert all(v == 0 if k.endswith("_n_classes") else math.isnan(v) for k, v in empty.items())
        assert m.confusion_matrix().tolist() == [[0] * 4] * 4
    m.update(one_hot_probs([0, 1], 4), torch.tensor([0, 1]))
    m.reset()
    m.update(one_hot_probs([2], 4), torch.tensor([3]))
    assert m.compute()["accuracy"] == 0.0
    assert m.confusion_matrix().sum() == 1


def test_reported_writes_counts_as_ints():
    assert reported({"test/f1_macro": 0.5, "test/f1_macro_n_classes": 3.0, "test/auroc/X": None}) == {
        "test/f1_macro": 0.5,
        "test/f1_macro_n_classes": 3,
        "test/auroc/X": None,
    }
    assert type(reported({"test/f1_macro_n_classes": 3.0})["test/f1_macro_n_classes"]) is int


def test_prefixed():
    assert prefixed({"f1_macro": 0.5, "recall/Eosinophil/Basophil": 1.0}, "val") == {
        "val/f1_macro": 0.5,
        "val/recall/Eosinophil/Basophil": 1.0,
    }
