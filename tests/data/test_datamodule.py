"""WBCDataModule on synthetic data and on a sample of the real PBC folder."""

import csv
import os
import random
from collections import Counter
from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import torch

from tests.helpers import CLASSES, PBC_MAP
from wbc.data.datamodule import WBCDataModule
from wbc.data.loaders import EpochSampler, ShardSampler
from wbc.data.sources import FolderSource
from wbc.data.synthetic import SyntheticSource
from wbc.sr.stage import SuperResolver


class CountingSource(SyntheticSource):
    """A synthetic source that counts how many images it had to produce."""

    loads = 0

    def load(self, sample, min_size=None):
        CountingSource.loads += 1
        return super().load(sample, min_size)


def make_dm(tmp_path, source=None, **kw) -> WBCDataModule:
    kw.setdefault("image_size", 32)
    kw.setdefault("batch_size", 16)
    kw.setdefault("cache_dir", tmp_path / "cache")
    kw.setdefault("restorer", SuperResolver("none", kw.get("lr_scale", 1)))
    return WBCDataModule(source or SyntheticSource(n_per_class=20, seed=0), **kw)


def test_synthetic_batches_and_stratified_split(tmp_path):
    dm = make_dm(tmp_path)
    dm.setup("fit")
    sizes = {k: len(v) for k, v in dm.samples.items()}
    assert sizes == {"train": 56, "val": 12, "test": 12}  # 20 per class: 14 / 3 / 3
    for split in ("train", "val", "test"):
        assert set(Counter(s.label for s in dm.samples[split]).values()) == {sizes[split] // 4}
    x, y, idx = next(iter(dm.train_dataloader()))
    assert x.dtype == torch.uint8 and x.shape == (16, 3, 32, 32)
    assert y.dtype == torch.int64 and idx.shape == (16,)


def test_second_setup_decodes_nothing(tmp_path):
    CountingSource.loads = 0
    make_dm(tmp_path, CountingSource(n_per_class=10, seed=0)).setup()
    assert CountingSource.loads == 40
    dm = make_dm(tmp_path, CountingSource(n_per_class=10, seed=0))
    dm.setup()
    assert CountingSource.loads == 40  # all images came from the disk cache
    # a different size is a different cache entry
    make_dm(tmp_path, CountingSource(n_per_class=10, seed=0), image_size=16).setup()
    assert CountingSource.loads == 80


def test_epochs_decode_nothing(tmp_path):
    CountingSource.loads = 0
    dm = make_dm(tmp_path, CountingSource(n_per_class=10, seed=0), cache_dir=None)
    dm.setup()
    for _ in range(2):
        for _batch in dm.train_dataloader():
            pass
    assert CountingSource.loads == 40


def test_augmentation_is_train_only(tmp_path):
    flip = {"flip": A.HorizontalFlip(p=1.0)}
    dm = make_dm(tmp_path, augment=flip)
    dm.setup()
    train, val = dm.datasets["train"], dm.datasets["val"]
    cached = np.asarray(train.images[train.rows[0]])
    assert torch.equal(train[0][0], torch.from_numpy(cached[:, ::-1].transpose(2, 0, 1).copy()))
    cached_val = np.asarray(val.images[val.rows[0]])
    assert torch.equal(val[0][0], torch.from_numpy(cached_val.transpose(2, 0, 1).copy()))


def test_calibration_batches_plain_and_shifted(tmp_path):
    """calibrate=shifted fits the temperature on the validation split and a copy of it under the training
    augmentation, the same copy every time (fixed seeds)."""
    dm = make_dm(tmp_path, augment={"rot": A.RandomRotate90(p=0.9), "grey": A.ToGray(p=0.5)})
    dm.setup()
    val = dm.datasets["val"]

    def collect(shifted):
        batches = list(dm.calibration_batches(shifted))
        return torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])

    plain, y = collect(False)
    assert len(plain) == len(val) and torch.equal(y, torch.as_tensor(val.labels))
    assert torch.equal(plain[0], val[0][0])  # the validation images themselves
    shifted, y2 = collect(True)
    assert len(shifted) == 2 * len(val) and torch.equal(y2, torch.cat([y, y]))
    assert torch.equal(shifted[: len(val)], plain)
    assert not torch.equal(shifted[len(val) :], plain)  # augmented
    assert torch.equal(collect(True)[0], shifted)  # deterministic


def test_augmentation_is_seeded(tmp_path):
    jitter = {"rot": A.RandomRotate90(p=0.5), "flip": A.HorizontalFlip(p=0.5)}

    def first_epoch(seed):
        dm = make_dm(tmp_path, augment=jitter, seed=seed)
        dm.setup()
        return torch.stack([dm.datasets["train"][i][0] for i in range(20)])

    assert torch.equal(first_epoch(0), first_epoch(0))
    assert not torch.equal(first_epoch(0), first_epoch(1))


def test_weighted_sampler_balances_classes(tmp_path, pbc_root):
    dm = make_dm(
        tmp_path,
        FolderSource(pbc_sample(tmp_path, pbc_root, per_class=(30, 6, 6, 6, 6)), CLASSES, PBC_MAP),
        sampler="weighted",
        batch_size=400,
    )
    dm.setup()
    loader = dm.train_dataloader()
    labels = []
    for epoch in range(20):
        loader.sampler.set_epoch(epoch)
        labels += [y for _, y, _ in loader]
    labels = torch.cat(labels)
    counts = torch.bincount(labels, minlength=4).float() / len(labels)
    assert torch.all((counts > 0.18) & (counts < 0.32)), counts  # 30:6:6:12 without weighting


def test_lr_scale_pipeline_and_its_cache(tmp_path):
    dm = make_dm(tmp_path, lr_scale=4)
    dm.setup()
    ref, seen = np.asarray(dm.references[0]), np.asarray(dm.datasets["train"].images[0])
    assert seen.shape == ref.shape == (32, 32, 3)
    assert not np.array_equal(seen, ref)  # the classifier sees the restored low-resolution image
    assert len(list((tmp_path / "cache").glob("sr-*.npy"))) == 1


def pbc_sample(tmp_path: Path, pbc_root: Path, per_class=(12, 12, 12, 12, 12)) -> Path:
    """A folder of symlinks to a few PBC files per class, plus the dataset's duplicate and non-image quirks."""
    root = tmp_path / "pbc"
    rng = random.Random(0)
    for folder, n in zip(("neutrophil", "lymphocyte", "monocyte", "eosinophil", "basophil"), per_class, strict=True):
        (root / folder).mkdir(parents=True)
        for name in rng.sample(sorted(os.listdir(pbc_root / folder)), n):
            if not name.startswith("."):
                (root / folder / name).symlink_to(pbc_root / folder / name)
    for rel in ("eosinophil/EO_225902.jpg", "neutrophil/BNE_191112.jpg", "neutrophil/.DS_169665.jpg"):
        if not (root / rel).exists():
            (root / rel).symlink_to(pbc_root / rel)
    return root


def test_pbc_sample_quirks_and_manifest(tmp_path, pbc_root):
    dm = make_dm(tmp_path, FolderSource(pbc_sample(tmp_path, pbc_root), CLASSES, PBC_MAP), split_seed=0)
    dm.setup()
    assert [Path(s.path).name for s, _ in dm.excluded] == ["EO_225902.jpg", "BNE_191112.jpg"] or sorted(
        Path(s.path).name for s, _ in dm.excluded
    ) == ["BNE_191112.jpg", "EO_225902.jpg"]
    assert [(Path(s.path).name, why.split(" (")[0]) for s, why in dm.unreadable] == [
        (".DS_169665.jpg", "not a readable image")
    ]
    counts = Counter(s.label for s in dm.samples["train"])
    assert counts[3] == 2 * counts[1]  # eosinophil + basophil map to one class
    manifest = tmp_path / "manifest.csv"
    dm.write_manifest(manifest)
    rows = list(csv.DictReader(manifest.open()))
    assert len(rows) == 60 + 2 + 1  # 12 per folder, the duplicate pair, the non-image
    splits = Counter(r["split"] for r in rows)
    assert splits["excluded"] == 2 and splits["unreadable"] == 1
    assert splits["train"] + splits["val"] + splits["test"] == 60
    assert {r["label"] for r in rows} == set(CLASSES)


def test_empty_training_split_is_an_error(tmp_path):
    dm = make_dm(tmp_path, SyntheticSource(n_per_class=1, seed=0), split={"train": 0, "val": 1, "test": 0})
    with pytest.raises(ValueError, match="training split is empty"):
        dm.setup()


def test_sr_outputs_are_computed_once_per_configuration(tmp_path, monkeypatch):
    """A sweep over seeds reuses each method's SR outputs: counted SR calls on the second setup are zero."""
    calls = []
    real_call = SuperResolver.__call__
    monkeypatch.setattr(SuperResolver, "__call__", lambda self, x: calls.append(len(x)) or real_call(self, x))
    tiny = {"arch": {"n_resblocks": 1, "n_feats": 8}, "train": {"steps": 3, "batch_size": 4, "patch_size": 16}}

    def setup(seed=0, train_seed=0):
        restorer = SuperResolver("edsr", 4, device="cpu", **{**tiny, "train": {**tiny["train"], "seed": train_seed}})
        dm = make_dm(tmp_path, lr_scale=4, restorer=restorer, seed=seed)
        dm.setup()
        return dm

    setup(seed=0)
    assert sum(calls) == 80  # every unique image once
    calls.clear()
    setup(seed=1)  # another training seed of the classifier: same SR weights, same images
    assert calls == []
    setup(train_seed=5)  # other SR weights: a cache miss
    assert sum(calls) == 80
    assert len(list((tmp_path / "cache").glob("sr-*.npy"))) == 2
    assert len(list((tmp_path / "cache" / "sr").glob("edsr-x4-*.pt"))) == 2


def test_epoch_sampler_is_a_function_of_seed_and_epoch():
    labels = np.arange(10) % 2
    a, b = EpochSampler(labels, seed=1), EpochSampler(labels, seed=1)
    a.set_epoch(3)
    b.set_epoch(3)
    assert list(a) == list(b)
    b.set_epoch(4)
    assert list(a) != list(b)
    assert sorted(i for i, _ in a) == list(range(10))  # a permutation, with one augmentation seed per draw
    shards = [list(EpochSampler(labels, seed=1, num_replicas=3, rank=r)) for r in range(3)]
    assert [len(s) for s in shards] == [4, 4, 4]  # padded to equal length so that ranks step together
    assert {i for s in shards for i, _ in s} == set(range(10))


def test_shard_sampler_covers_each_item_once():
    shards = [list(ShardSampler(10, num_replicas=3, rank=r)) for r in range(3)]
    assert sorted(i for s in shards for i in s) == list(range(10))


def test_augmentation_does_not_depend_on_workers(tmp_path):
    jitter = {"rot": A.RandomRotate90(p=0.5), "flip": A.HorizontalFlip(p=0.5)}

    def epoch(workers):
        dm = make_dm(tmp_path, augment=jitter, seed=3, num_workers=workers)
        dm.setup()
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(2)
        return torch.cat([x for x, _, _ in loader])

    assert torch.equal(epoch(0), epoch(2))
