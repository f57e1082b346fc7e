"""WBCDataModule: source -> split -> cached deterministic pipeline -> augmentation -> DataLoaders."""

from __future__ import annotations

import csv
import logging
import math
import os
import random
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import albumentations as A
import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from wbc.cache import cached_array, digest
from wbc.data.decode import ImageReadError
from wbc.data.pipeline import Preprocessor
from wbc.data.samples import Sample
from wbc.data.split import SPLITS, assign_splits

log = logging.getLogger(__name__)

PIPELINE_VERSION = 2  # bump when the deterministic pipeline's output changes for the same inputs


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


class WBCDataModule(L.LightningDataModule):
    """Builds train/val/test datasets from a source.

    The deterministic pipeline's output (decode, resize, degrade, SR) is computed once per image and
    configuration and cached on disk under ``cache_dir`` (memory-mapped), so epochs after the first, and later
    runs of a sweep, decode no image and run no SR model.
    """

    def __init__(
        self,
        source: Any,
        image_size: int = 64,
        lr_scale: int = 1,
        batch_size: int = 64,
        num_workers: int = 0,
        split: Mapping[str, float] | None = None,
        split_seed: int = 0,
        augment: Mapping[str, Any] | Sequence[Any] | None = None,
        sampler: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        seed: int = 0,
        pin_memory: bool = False,
        restorer: Any = None,
        decode_threads: int = 2,
        root: str | os.PathLike | None = None,
        size: int | None = None,
    ):
        super().__init__()
        self.source = source
        # informational: sources read these through their own config (data.root for folders, data.size for
        # datasets published in several sizes such as data=bloodmnist)
        self.root, self.size = root, size
        self.class_names: list[str] = list(source.class_names)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.split_fractions = dict(split or {"train": 0.7, "val": 0.15, "test": 0.15})
        self.split_seed = split_seed
        self.augment = build_augmentation(augment, seed)
        if sampler not in (None, "weighted"):
            raise ValueError(f"data.sampler must be null or 'weighted', got {sampler!r}")
        self.sampler = sampler
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.seed = seed
        self.pin_memory = pin_memory
        self.decode_threads = decode_threads
        self.preprocessor = Preprocessor(image_size, lr_scale, restorer)
        self.samples: dict[str, list[Sample]] = {}
        self.excluded: list[tuple[Sample, str]] = []
        self.unreadable: list[tuple[Sample, str]] = []
        self.datasets: dict[str, ArrayDataset] = {}
        self._prepared = False

    # -- building ---------------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self._prepared:
            return
        result = assign_splits(self.source.scan(), self.split_fractions, self.split_seed, self.class_names)
        self.excluded = result.excluded
        keys = sorted({s.key for split in result.splits.values() for s in split})
        first_sample = {}
        for split in SPLITS:
            for s in result.splits[split]:
                first_sample.setdefault(s.key, s)
        row = {k: i for i, k in enumerate(keys)}

        references, failed = self._references(keys, [first_sample[k] for k in keys])
        self.unreadable = []
        for split in SPLITS:
            kept = []
            for s in result.splits[split]:
                if s.key in failed:
                    self.unreadable.append((s, failed[s.key]))
                else:
                    kept.append(s)
            self.samples[split] = kept
        if self.unreadable:
            log.warning(
                "%d file(s) could not be read as images and are skipped (listed in split_manifest.csv)",
                len(self.unreadable),
            )
            for s, why in self.unreadable[:20]:
                log.warning("  %s: %s", s.path, why)
        if not self.samples["train"]:
            raise ValueError(
                f"the training split is empty ({len(self.unreadable)} unreadable files): check data.root, "
                "the class mapping and the files"
            )

        self._prepare_restorer(references, [row[s.key] for s in self.samples["train"]])
        images = self._restored(references, keys)
        for split in SPLITS:
            samples = self.samples[split]
            self.datasets[split] = ArrayDataset(
                images,
                np.array([row[s.key] for s in samples], dtype=np.int64),
                np.array([s.label for s in samples], dtype=np.int64),
                self.augment if split == "train" else None,
            )
        self.references = references
        self._prepared = True
        log.info("data: %s", ", ".join(f"{k}={len(v)}" for k, v in self.samples.items()))

    def _cache_path(self, kind: str, token: str) -> Path | None:
        return None if self.cache_dir is None else self.cache_dir / f"{kind}-{token}.npy"

    def _references(self, keys: list[str], samples: list[Sample]) -> tuple[np.ndarray, dict[str, str]]:
        """(N, S, S, 3) references of the unique images, and {key: problem} of those that could not be read."""
        size = self.preprocessor.image_size
        token = digest(PIPELINE_VERSION, self.source.cache_token(), size, keys)

        def compute():
            out = np.zeros((len(keys), size, size, 3), dtype=np.uint8)
            failed: dict[str, str] = {}

            def work(i: int) -> None:
                try:
                    out[i] = self.preprocessor.reference(self.source.load(samples[i], min_size=size))
                except ImageReadError as err:
                    failed[keys[i]] = err.problem
                except Exception as err:  # one bad image never stops a run
                    failed[keys[i]] = f"{type(err).__name__}: {err}"

            log.info("decoding %d images at %d px (cached for later runs)", len(keys), size)
            with ThreadPoolExecutor(max(1, self.decode_threads)) as pool:
                list(pool.map(work, range(len(keys))))
            return out, {"keys": keys, "failed": failed}

        array, meta = cached_array(self._cache_path("ref", token), compute)
        return array, meta["failed"]

    def _prepare_restorer(self, references: np.ndarray, train_rows: list[int]) -> None:
        """Let a trainable SR stage fit itself on the training split's references (and nothing else)."""
        restorer = self.preprocessor.restorer
        if self.preprocessor.lr_scale > 1 and hasattr(restorer, "prepare"):
            rows = np.array(sorted(set(train_rows)))
            restorer.prepare(
                lambda: np.asarray(references[rows]),
                dataset_key=digest(
                    self.source.cache_token(),
                    self.preprocessor.image_size,
                    self.split_fractions,
                    self.split_seed,
                    len(rows),
                ),
                store_dir=None if self.cache_dir is None else self.cache_dir / "sr",
            )

    def _restored(self, references: np.ndarray, keys: list[str]) -> np.ndarray:
        if self.preprocessor.lr_scale == 1:
            return references
        token = digest(PIPELINE_VERSION, self.source.cache_token(), keys, self.preprocessor.cache_token())

        def compute():
            log.info("applying %s to %d images", self.preprocessor.cache_token(), len(keys))
            return self.preprocessor.restore(references), {"pipeline": self.preprocessor.cache_token()}

        return cached_array(self._cache_path("sr", token), compute)[0]

    # -- what the rest of a run needs -------------------------------------------------------------------
    @property
    def train_class_counts(self) -> list[int]:
        counts = np.bincount(self.datasets["train"].labels, minlength=len(self.class_names))
        return [int(c) for c in counts]

    def write_manifest(self, path: str | os.PathLike) -> None:
        """CSV of every file seen: path, label, split (train/val/test, or excluded/unreadable) and why."""
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "label", "split", "content_key", "note"])
            for split in SPLITS:
                for s in self.samples[split]:
                    writer.writerow([s.path, self.class_names[s.label], split, s.key, ""])
            for name, rows in (("excluded", self.excluded), ("unreadable", self.unreadable)):
                for s, why in rows:
                    writer.writerow([s.path, self.class_names[s.label], name, s.key, why])

    # -- loaders ----------------------------------------------------------------------------------------
    def _loader(self, split: str, train: bool) -> DataLoader:
        dataset = self.datasets[split]
        trainer = getattr(self, "trainer", None)
        replicas, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        if train:
            sampler = EpochSampler(dataset.labels, self.seed, self.sampler == "weighted", replicas, rank)
        else:
            sampler = ShardSampler(len(dataset), replicas, rank)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)
