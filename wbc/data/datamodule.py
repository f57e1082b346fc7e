"""WBCDataModule: source -> split -> cached deterministic pipeline -> augmentation -> DataLoaders."""

from __future__ import annotations

import csv
import itertools
import logging
import os
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from torch.utils.data import DataLoader

from wbc.cache import cached_array, digest
from wbc.data.framing import (
    DEFAULT_FIELD_UM,
    CellLocation,
    Framing,
    class_cell_um,
    locate_cell,
    location_overlay,
    measure_um_per_px,
    median_cell_um,
)
from wbc.data.loaders import ArrayDataset, EpochSampler, ShardSampler, build_augmentation
from wbc.data.pipeline import DataSource, Preprocessor
from wbc.data.references import PIPELINE_VERSION, ReferenceBuilder
from wbc.data.samples import Sample
from wbc.data.split import SPLITS, assign_splits
from wbc.data.stain import build_stain
from wbc.sr.native import NativeEnlarger

log = logging.getLogger(__name__)

CALIBRATION_SEED = 1_000_003  # augmentation seeds of the shifted calibration copy: i + this, for image i


class WBCDataModule(L.LightningDataModule):
    """Builds train/val/test datasets from a source.

    The deterministic pipeline's output (decode, resize, degrade, SR) is computed once per image and
    configuration and cached on disk under ``cache_dir`` (memory-mapped), so epochs after the first, and later
    runs of a sweep, decode no image and run no SR model.
    """

    def __init__(
        self,
        source: DataSource,
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
        framing: str = "centre",
        field_um: float = DEFAULT_FIELD_UM,
        stain: str | None = None,
    ):
        super().__init__()
        self.source = source
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
        native = NativeEnlarger(restorer) if getattr(restorer, "native", False) else None
        self.preprocessor = Preprocessor(
            image_size, lr_scale, restorer, Framing(framing, field_um), build_stain(stain), enlarger=native
        )
        self.um_per_px: float | None = getattr(source, "um_per_px", None)  # scale framing: given, or measured
        self.cell_um: float | None = None  # scale framing: the training cells' median diameter as located, in um
        self.class_cell_um: dict[str, float] = {}  # the same per class (predict.py's check of a folder's pixel size)
        self.framing_used: dict[str, str] = {}  # content key -> framing applied (after fallbacks)
        self.framing_notes: dict[str, str] = {}  # content key -> why it differs from data.framing
        self.small_crops: set[str] = set()  # content keys framed at fewer pixels than S (native SR enlarges them)
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

        train_keys = {s.key for s in result.splits["train"]}
        references, failed = self._references(keys, [first_sample[k] for k in keys], train_keys)
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

        notes = [
            (s.path, self.framing_notes[s.key])
            for sp in SPLITS
            for s in self.samples[sp]
            if s.key in self.framing_notes
        ]
        if notes:
            log.warning(
                "framing=%s fell back for %d image(s) (split_manifest.csv lists them):",
                self.preprocessor.framing.method,
                len(notes),
            )
            for path, note in notes[:20]:
                log.warning("  %s: %s", path, note)
        train_rows = [row[s.key] for s in self.samples["train"]]
        if self.preprocessor.enlarger is not None:  # native SR: trained on the references as framed, then used
            self._prepare_restorer(references, train_rows)
            references = self._builder.enlarged(references, self.small_crops, self.um_per_px, self._locations)
        references = self._normalised(references, train_rows)
        if self.preprocessor.enlarger is None:
            self._prepare_restorer(references, train_rows)
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

    def _references(
        self, keys: list[str], samples: list[Sample], train_keys: set[str]
    ) -> tuple[np.ndarray, dict[str, str]]:
        """(N, S, S, 3) framed references of the unique images, and {key: problem} of those that could not be
        read. Scale framing first measures the source's pixel size on the training images' red cells (unless
        the source states it)."""
        pre = self.preprocessor
        builder = ReferenceBuilder(self.source, pre, keys, samples, self.cache_dir, self.decode_threads)
        self._locations: list[CellLocation | None] = [None] * len(keys)
        if pre.framing.method == "scale":
            self._locations = builder.locations()
            if self.um_per_px is None:
                self.um_per_px = measure_um_per_px(
                    [loc.rbc_diameter for k, loc in zip(keys, self._locations, strict=True) if k in train_keys and loc]
                )
                if self.um_per_px is None:
                    log.warning("framing=scale: too few red cells measurable in the training images; cell framing")
                else:
                    log.info(
                        "framing=scale: %.4f um per pixel, measured on the training images' red cells", self.um_per_px
                    )
            train = [(loc, s) for k, loc, s in zip(keys, self._locations, samples, strict=True) if k in train_keys]
            self.cell_um = median_cell_um([loc for loc, _ in train if loc], self.um_per_px)
            classes = [self.class_names[s.label] for _, s in train]
            self.class_cell_um = class_cell_um([loc for loc, _ in train], classes, self.um_per_px)
        array, meta = builder.references(self.um_per_px, self._locations)
        self._builder = builder
        self.small_crops = set(meta.get("small", []))
        self.framing_used = meta.get("framing_used", {})
        self.framing_notes = meta.get("framing_notes", {})
        return array, meta["failed"]

    def _normalised(self, references: np.ndarray, train_rows: list[int]) -> np.ndarray:
        """Stain-normalised references; the normaliser is fitted on the training split's references."""
        stain = self.preprocessor.stain
        if stain is None:
            return references
        if stain.target is None:
            stain.fit(np.asarray(references[np.array(sorted(set(train_rows)))]))
            log.info("stain normalisation fitted on %d training images: %s", len(set(train_rows)), stain.token())
        return stain(np.asarray(references))

    def _prepare_restorer(self, references: np.ndarray, train_rows: list[int]) -> None:
        """Let a trainable SR stage fit itself on the training split's references (and nothing else)."""
        restorer = self.preprocessor.restorer
        native = self.preprocessor.enlarger is not None  # trained on the references before stain normalisation
        if (self.preprocessor.lr_scale > 1 or native) and hasattr(restorer, "prepare"):
            rows = np.array(sorted(set(train_rows)))
            restorer.prepare(
                lambda: np.asarray(references[rows]),
                dataset_key=digest(
                    self.source.cache_token(),
                    self.preprocessor.image_size,
                    self.preprocessor.framing.token(),
                    self.um_per_px,
                    None if self.preprocessor.stain is None or native else self.preprocessor.stain.token(),
                    self.split_fractions,
                    self.split_seed,
                    len(rows),
                ),
                store_dir=None if self.cache_dir is None else self.cache_dir / "sr",
            )

    def _restored(self, references: np.ndarray, keys: list[str]) -> np.ndarray:
        if self.preprocessor.lr_scale == 1:
            return references
        token = digest(
            PIPELINE_VERSION,
            self.source.cache_token(),
            keys,
            self.preprocessor.framing.token(),
            self.um_per_px,
            self.preprocessor.cache_token(),
        )

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
                    writer.writerow(
                        [s.path, self.class_names[s.label], split, s.key, self.framing_notes.get(s.key, "")]
                    )
            for name, rows in (("excluded", self.excluded), ("unreadable", self.unreadable)):
                for s, why in rows:
                    writer.writerow([s.path, self.class_names[s.label], name, s.key, why])

    def framing_summary(self) -> dict[str, Any]:
        """How the images were framed: the framing asked for, how many got each framing after fallbacks, the
        pixel size of scale framing, and the files whose framing fell back (with why)."""
        kept = {s.key: s.path for split in SPLITS for s in self.samples[split]}
        used = Counter(self.framing_used.get(k, "centre") for k in kept)
        return {
            "asked": self.preprocessor.framing.method,
            "field_um": self.preprocessor.framing.field_um,
            "um_per_px": self.um_per_px,
            "used": dict(sorted(used.items())),
            "fallbacks": {kept[k]: note for k, note in sorted(self.framing_notes.items()) if k in kept},
        }

    def framing_examples(self, n: int = 6) -> list[tuple[str, np.ndarray, np.ndarray | None, np.ndarray]]:
        """Rows for plots.plot_framing_examples: test images (those whose framing fell back first, then one
        per class in turn), each as (title, source, located nucleus/cell, framed crop)."""
        pool = self.samples.get("test") or self.samples.get("val") or self.samples["train"]
        fallbacks = [s for s in pool if s.key in self.framing_notes]
        by_class = [
            [s for s in pool if s.label == c and s.key not in self.framing_notes] for c in range(len(self.class_names))
        ]
        chosen = fallbacks[: n // 2]
        while len(chosen) < n and any(by_class):
            for group in by_class:
                if group and len(chosen) < n:
                    chosen.append(group.pop(0))
        rows = []
        for s in chosen:
            try:
                image = self.source.load(s)
            except Exception:
                continue
            loc = locate_cell(image)
            crop, framed = self.preprocessor.frame(image, self.um_per_px, loc)
            title = f"{Path(s.path).name} ({self.class_names[s.label]}){': ' + framed.note if framed.note else ''}"
            rows.append((title, image, location_overlay(loc), crop))
        return rows

    # -- loaders ----------------------------------------------------------------------------------------
    def _loader(self, split: str, train: bool) -> DataLoader:
        dataset = self.datasets[split]
        trainer = getattr(self, "trainer", None)
        replicas, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        # overfit_batches (debug=overfit) must see the same batches every epoch: no shuffling then
        if train and not getattr(trainer, "overfit_batches", 0):
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

    def calibration_batches(self, shifted: bool = False) -> Iterator:
        """The whole validation split (every rank the same) for temperature scaling; ``shifted`` adds a copy of
        it under the training augmentation, with fixed seeds: the stain, light and optics changes the model was
        taught to expect, so that the fitted temperature does not only describe images like the training lab's."""
        val = self.datasets["val"]
        batches = DataLoader(val, batch_size=self.batch_size)
        if not shifted or self.augment is None:
            return iter(batches)
        augmented = ArrayDataset(val.images, val.rows, val.labels, self.augment)
        seeds = [(i, CALIBRATION_SEED + i) for i in range(len(val))]
        return itertools.chain(batches, DataLoader(augmented, batch_size=self.batch_size, sampler=seeds))


# Keys of a data config that only its source reads (interpolated into data.source: data.root, data.size), not
# parameters of the datamodule.
SOURCE_KEYS = ("root", "size")


def build_datamodule(data: Any, **kwargs: Any) -> WBCDataModule:
    """The datamodule of the config's ``data`` node (Hydra's instantiate) without the keys only its source reads."""
    from hydra.utils import instantiate
    from omegaconf import open_dict

    node = data.copy()  # keeps its parent: ${data.root} and ${paths...} still resolve
    with open_dict(node):
        for key in SOURCE_KEYS:
            node.pop(key, None)
    return instantiate(node, **kwargs)
