"""What the datamodule's loaders are made of: the in-memory dataset, the training and evaluation samplers (a
resumed or sharded run sees exactly the order an uninterrupted one would) and the augmentation pipeline."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


class ArrayDataset(Dataset):
    """Rows of a cached (N, S, S, 3) uint8 array; returns (CHW uint8 tensor, label, sample index).

    An index may come with an augmentation seed, ``(i, seed)``, from :class:`EpochSampler`: each augmented
    image then depends only on (training seed, epoch, position), whatever the workers, ranks or resumes.
    """

    def __init__(self, images: np.ndarray, rows: np.ndarray, labels: np.ndarray, transform=None):
        self.images, self.rows, self.labels, self.transform = images, rows, labels, transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, item: int | tuple[int, int]):
        i, seed = item if isinstance(item, tuple) else (item, None)
        image = np.asarray(self.images[self.rows[i]])
        if self.transform is not None:
            if seed is not None:
                self.transform.set_random_state(np.random.default_rng(seed), random.Random(seed))
            image = self.transform(image=image)["image"]
        tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return tensor, int(self.labels[i]), i


class EpochSampler(Sampler):
    """Training order (shuffled, or class-balanced with replacement) and augmentation seeds as a function of
    (seed, epoch) alone, sharded over DDP ranks: a resumed run continues exactly where an uninterrupted one
    would be. Lightning calls :meth:`set_epoch` at the start of every epoch."""

    def __init__(self, labels: np.ndarray, seed: int, weighted: bool = False, num_replicas: int = 1, rank: int = 0):
        self.n, self.seed, self.num_replicas, self.rank = len(labels), seed, num_replicas, rank
        self.weights = None
        if weighted:
            counts = np.bincount(labels).astype(float)
            self.weights = torch.as_tensor(1.0 / counts[labels], dtype=torch.double)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(self.n / self.num_replicas)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        if self.weights is None:
            order = torch.randperm(self.n, generator=g)
        else:
            order = torch.multinomial(self.weights, self.n, replacement=True, generator=g)
        seeds = torch.randint(0, 2**31 - 1, (self.n,), generator=g)
        total = len(self) * self.num_replicas  # pad so that every rank runs the same number of steps
        order, seeds = order.repeat(2)[:total], seeds.repeat(2)[:total]
        mine = slice(self.rank, None, self.num_replicas)
        yield from zip(order[mine].tolist(), seeds[mine].tolist(), strict=True)


class ShardSampler(Sampler):
    """Evaluation order: rank r gets items r, r + R, ...: every item exactly once over all ranks (no padding,
    so metrics synchronised by torchmetrics count each test image once)."""

    def __init__(self, n: int, num_replicas: int = 1, rank: int = 0):
        self.indices = list(range(rank, n, num_replicas))

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self):
        return iter(self.indices)


def build_augmentation(transforms: Mapping[str, Any] | Sequence[Any] | None, seed: int) -> A.Compose | None:
    """An albumentations pipeline from instantiated transforms, by name or in a list; None when empty."""
    if isinstance(transforms, Mapping):
        transforms = [t for t in transforms.values() if t is not None]
    if not transforms:
        return None
    return A.Compose(list(transforms), seed=seed)
