"""Train/val/test assignment that keeps identical images on one side and drops label conflicts."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from wbc.data.samples import Sample

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass
class SplitResult:
    splits: dict[str, list[Sample]]
    excluded: list[tuple[Sample, str]] = field(default_factory=list)  # (sample, reason)


def assign_splits(
    samples: Sequence[Sample],
    fractions: Mapping[str, float],
    seed: int,
    class_names: Sequence[str] | None = None,
) -> SplitResult:
    """Assign every sample to train, val or test.

    Samples with equal ``key`` (identical content) form one group that lands in one split. A group whose copies
    carry different labels is excluded and reported: training on it would teach a contradiction. Samples with a
    fixed ``split`` (split folders) keep it, except copies of an image already in an earlier split, which are
    excluded from the later one so that evaluation never sees a training image. Otherwise each class's groups
    are shuffled with ``seed`` and cut by ``fractions`` (stratified).
    """
    names = list(class_names) if class_names else None
    groups: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        groups[s.key].append(s)

    result = SplitResult(splits={name: [] for name in SPLITS})
    clean: dict[str, list[Sample]] = {}
    for key, members in groups.items():
        labels = sorted({m.label for m in members})
        if len(labels) > 1:
            shown = ", ".join(names[i] if names else str(i) for i in labels)
            for m in members:
                others = [o.path for o in members if o is not m]
                reason = f"identical content under different labels ({shown}); copies: {others}"
                result.excluded.append((m, reason))
            log.warning("identical image under labels %s excluded: %s", shown, [m.path for m in members])
        else:
            clean[key] = members

    if any(s.split is not None for s in samples):
        for members in clean.values():
            first = min((m.split or "train" for m in members), key=SPLITS.index)
            for m in members:
                split = m.split or "train"
                if split == first:
                    result.splits[split].append(m)
                else:
                    result.excluded.append((m, f"identical to an image in the {first} split"))
        return result

    total = sum(fractions.get(s, 0.0) for s in SPLITS)
    if total <= 0 or any(fractions.get(s, 0.0) < 0 for s in SPLITS):
        raise ValueError(f"split fractions must be non-negative and not all zero, got {dict(fractions)}")
    frac = {s: fractions.get(s, 0.0) / total for s in SPLITS}
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[str]] = defaultdict(list)
    for key in sorted(clean):  # sorted: the split depends on the seed and the content, not on scan order
        by_class[clean[key][0].label].append(key)
    for label in sorted(by_class):
        keys = by_class[label]
        order = rng.permutation(len(keys))
        n_val = int(round(frac["val"] * len(keys)))
        n_test = int(round(frac["test"] * len(keys)))
        for rank, idx in enumerate(order):
            split = "val" if rank < n_val else "test" if rank < n_val + n_test else "train"
            result.splits[split].extend(clean[keys[idx]])
    for split in SPLITS:
        result.splits[split].sort(key=lambda s: s.path)
    return result
