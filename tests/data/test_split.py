"""The splitter: stratified by class, duplicates on one side, label conflicts excluded, fixed splits kept."""

from collections import Counter

import pytest

from wbc.data.samples import Sample
from wbc.data.split import assign_splits

FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}


def samples_of(counts: dict[int, int]) -> list[Sample]:
    return [Sample(f"c{label}/{i}.png", label, f"k{label}-{i}") for label, n in counts.items() for i in range(n)]


def split_of(result) -> dict[str, str]:
    return {s.path: name for name, members in result.splits.items() for s in members}


def test_stratified_fractions_per_class():
    result = assign_splits(samples_of({0: 100, 1: 50, 2: 20}), FRACTIONS, seed=0)
    for label, n in {0: 100, 1: 50, 2: 20}.items():
        per_split = {name: sum(s.label == label for s in members) for name, members in result.splits.items()}
        assert per_split == {"train": n * 0.6, "val": n * 0.2, "test": n * 0.2}


def test_seed_changes_the_split_and_is_reproducible():
    data = samples_of({0: 50, 1: 50})
    a, b, c = (assign_splits(data, FRACTIONS, seed=s) for s in (0, 0, 1))
    assert split_of(a) == split_of(b)
    assert split_of(a) != split_of(c)


def test_split_does_not_depend_on_scan_order():
    data = samples_of({0: 30, 1: 30})
    assert split_of(assign_splits(data, FRACTIONS, 3)) == split_of(assign_splits(data[::-1], FRACTIONS, 3))


def test_identical_content_lands_in_one_split():
    data = samples_of({0: 40, 1: 40})
    # ten images with three byte-identical copies each, under other names
    data += [Sample(f"c0/copy{j}-{i}.png", 0, f"k0-{i}") for i in range(10) for j in range(3)]
    result = assign_splits(data, FRACTIONS, seed=1)
    where: dict[str, set[str]] = {}
    for name, members in result.splits.items():
        for s in members:
            where.setdefault(s.key, set()).add(name)
    assert all(len(splits) == 1 for splits in where.values())
    assert sum(len(m) for m in result.splits.values()) == len(data)


def test_identical_content_under_two_labels_is_excluded_and_reported():
    data = samples_of({0: 10, 1: 10}) + [Sample("c1/dup.png", 1, "k0-3")]
    result = assign_splits(data, FRACTIONS, seed=0, class_names=["A", "B"])
    excluded = {s.path: why for s, why in result.excluded}
    assert set(excluded) == {"c0/3.png", "c1/dup.png"}
    assert "different labels (A, B)" in excluded["c1/dup.png"] and "c0/3.png" in excluded["c1/dup.png"]
    kept = [s.path for m in result.splits.values() for s in m]
    assert "c0/3.png" not in kept and len(kept) == 19


def test_fixed_split_folders_are_kept_and_leaks_removed():
    data = [Sample(f"train/{i}.png", i % 2, f"k{i}", "train") for i in range(6)]
    data += [Sample("test/a.png", 0, "k-test", "test"), Sample("test/leak.png", 0, "k0", "test")]
    result = assign_splits(data, FRACTIONS, seed=0)
    assert [s.path for s in result.splits["test"]] == ["test/a.png"]
    assert len(result.splits["train"]) == 6 and not result.splits["val"]
    assert [(s.path, why) for s, why in result.excluded] == [
        ("test/leak.png", "identical to an image in the train split")
    ]


def test_bad_fractions_raise():
    with pytest.raises(ValueError, match="fractions"):
        assign_splits(samples_of({0: 4}), {"train": 0, "val": 0, "test": 0}, seed=0)


def test_class_balance_is_kept_with_unequal_classes():
    result = assign_splits(samples_of({0: 7, 1: 3}), FRACTIONS, seed=0)
    assert Counter(s.label for s in result.splits["train"]) == Counter({0: 5, 1: 1})  # 7 -> 1 val, 1 test; 3 -> 1, 1
