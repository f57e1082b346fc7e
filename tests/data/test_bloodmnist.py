"""BloodMNIST source and downloads, offline: a small npz in the official format stands in for the real file."""

import multiprocessing as mp
import os
import pickle
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate

from tests.helpers import REPO_ROOT, compose_config
from wbc.data.bloodmnist import LABELS, MEDMNIST_URLS, BloodMNISTSource, file_name
from wbc.data.datamodule import build_datamodule
from wbc.data.download import DownloadError, download, download_lock, md5sum
from wbc.errors import UserError

CLASSES = ["Neutrophil", "Lymphocyte", "Monocyte", "Eosinophil/Basophil"]
MAP = {"basophil": "Eosinophil/Basophil", "eosinophil": "Eosinophil/Basophil", "lymphocyte": "Lymphocyte",
       "monocyte": "Monocyte", "neutrophil": "Neutrophil"}  # fmt: skip
CLASSES8 = ["Basophil", "Eosinophil", "Erythroblast", "Immature granulocyte", "Lymphocyte", "Monocyte",
            "Neutrophil", "Platelet"]  # fmt: skip
MAP8 = dict(zip(LABELS, CLASSES8, strict=True))
PER_LABEL = {"train": 5, "val": 3, "test": 4}  # images of each of the 8 labels in each split
KEPT = {split: 5 * n for split, n in PER_LABEL.items()}  # 5 of the 8 labels map onto the four classes


def write_npz(path: Path, seed: int = 0, gray: bool = False) -> dict[str, np.ndarray]:
    """A BloodMNIST-format file: {split}_images (N, 28, 28, 3) uint8, {split}_labels (N, 1) uint8."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in PER_LABEL.items():
        shape = (8 * n, 28, 28) if gray else (8 * n, 28, 28, 3)
        arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = np.repeat(np.arange(8, dtype=np.uint8), n)[:, None]
    arrays["train_images"][1] = arrays["train_images"][0]  # an identical pair (both basophils)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return arrays


@pytest.fixture(scope="module")
def fixture(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    """(root folder holding bloodmnist.npz, its arrays)."""
    root = tmp_path_factory.mktemp("medmnist")
    return root, write_npz(root / file_name(28))


def source(root: Path, **kw) -> BloodMNISTSource:
    kw = {"class_names": CLASSES, "label_map": MAP, "download": False} | kw
    return BloodMNISTSource(root, **kw)


def test_official_splits_mapped_labels_and_dropped_classes(fixture, caplog):
    root, arrays = fixture
    src = source(root)
    with caplog.at_level("INFO", logger="wbc.data.bloodmnist"):
        samples = src.scan()
    assert Counter(s.split for s in samples) == KEPT
    for split, n in PER_LABEL.items():  # Eosinophil/Basophil holds both of its labels
        assert Counter(s.label for s in samples if s.split == split) == {0: n, 1: n, 2: n, 3: 2 * n}
    assert src.dropped == {"erythroblast": 12, "ig": 12, "platelet": 12}
    assert "dropped 36 erythroblast/ig/platelet images not in the class mapping" in caplog.text
    first = samples[0]
    assert first.path == "bloodmnist.npz#train/0" and first.split == "train" and first.label == 3
    neutrophil = next(s for s in samples if s.path == "bloodmnist.npz#test/24")  # label 6 at rows 24..27
    assert neutrophil.label == CLASSES.index("Neutrophil")


def test_eight_classes_keep_everything(fixture):
    root, arrays = fixture
    samples = source(root, class_names=CLASSES8, label_map=MAP8).scan()
    assert len(samples) == sum(8 * n for n in PER_LABEL.values())
    for s in samples:
        split, i = s.path.split("#")[1].split("/")
        assert s.label == arrays[f"{split}_labels"][int(i), 0]  # the class order follows BloodMNIST's labels


def test_load_returns_the_image_and_equal_images_share_a_key(fixture):
    root, arrays = fixture
    src = source(root)
    samples = {s.path: s for s in src.scan()}
    s = samples["bloodmnist.npz#val/4"]
    image = src.load(s)
    assert image.shape == (28, 28, 3) and image.dtype == np.uint8 and image.flags.c_contiguous
    np.testing.assert_array_equal(image, arrays["val_images"][4])
    image[:] = 0  # a copy: the source's arrays are untouched
    np.testing.assert_array_equal(src.load(s), arrays["val_images"][4])
    a, b = samples["bloodmnist.npz#train/0"], samples["bloodmnist.npz#train/1"]
    assert a.key == b.key
    assert len({x.key for x in samples.values()}) == len(samples) - 1
    with pytest.raises(ValueError, match="not an image of"):
        src.load(type(s)(path="other.npz#val/4", label=0, key=""))


def test_grayscale_becomes_rgb(tmp_path):
    arrays = write_npz(tmp_path / file_name(28), gray=True)
    src = source(tmp_path)
    image = src.load(src.scan()[5])
    assert image.shape == (28, 28, 3)
    assert (image == arrays["train_images"][5][..., None]).all()


def test_pickled_source_leaves_arrays_behind(fixture):
    src = source(fixture[0])
    samples = src.scan()
    state = pickle.dumps(src)
    assert len(state) < 10_000  # no image arrays inside
    copy = pickle.loads(state)
    np.testing.assert_array_equal(copy.load(samples[3]), src.load(samples[3]))


def test_bad_arguments():
    with pytest.raises(UserError, match="one of"):
        BloodMNISTSource("x", size=32, class_names=CLASSES, label_map=MAP)
    with pytest.raises(UserError, match="not BloodMNIST labels"):
        BloodMNISTSource("x", class_names=CLASSES, label_map={"neutrophils": "Neutrophil"})


def test_cache_token_follows_content(fixture, tmp_path):
    root, _ = fixture
    token = source(root).cache_token()
    assert token.startswith("bloodmnist:28:") and token == source(root).cache_token()
    write_npz(tmp_path / file_name(28), seed=1)
    assert source(tmp_path).cache_token() != token


def test_missing_file_without_download_says_where_to_put_it(tmp_path):
    with pytest.raises(UserError) as err:
        source(tmp_path / "none", size=64).scan()
    message = str(err.value)
    assert str(tmp_path / "none" / "bloodmnist_64.npz") in message and MEDMNIST_URLS[64] in message


def test_missing_file_is_downloaded(fixture, tmp_path):
    url, md5 = (fixture[0] / file_name(28)).as_uri(), md5sum(fixture[0] / file_name(28))
    src = source(tmp_path / "root", download=True, url=url, md5=md5)
    assert len(src.scan()) == sum(KEPT.values())
    assert md5sum(tmp_path / "root" / "bloodmnist.npz") == md5


def test_existing_file_is_checked_only_with_verify(tmp_path):
    write_npz(tmp_path / file_name(28))
    assert source(tmp_path).scan()  # not the official file, but trusted
    with pytest.raises(UserError, match="expected 7053d0359d879ad8a5505303e11de1dc"):
        source(tmp_path, verify=True).scan()


def leftovers(folder: Path) -> list[str]:
    """Everything a download left in its folder (lock files included: none may remain)."""
    return sorted(p.name for p in folder.iterdir())


def test_wrong_md5_keeps_no_file(fixture, tmp_path):
    dest = tmp_path / "dl" / "bloodmnist.npz"
    with pytest.raises(DownloadError, match="expected md5 0{32}, got [0-9a-f]{32}.*discarded"):
        download((fixture[0] / file_name(28)).as_uri(), dest, "0" * 32)
    assert leftovers(dest.parent) == []


def test_unreachable_url_says_where_to_put_the_file(tmp_path):
    dest = tmp_path / "bloodmnist.npz"
    url = "http://127.0.0.1:9/x.npz"
    with pytest.raises(DownloadError) as err:
        download(url, dest, "0" * 32, timeout=2)
    assert url in str(err.value) and f"put it at {dest}" in str(err.value)
    assert leftovers(tmp_path) == []


def test_concurrent_downloads_fetch_once(fixture, tmp_path, monkeypatch):
    src_file = fixture[0] / file_name(28)
    url, md5, dest = src_file.as_uri(), md5sum(src_file), tmp_path / "dl" / "bloodmnist.npz"
    fetches = tmp_path / "fetches"
    urlopen = urllib.request.urlopen

    def counting_urlopen(*args, **kw):
        with open(fetches, "a") as f:
            f.write("fetch\n")
        time.sleep(0.3)  # widen the window in which the other process would start a second download
        return urlopen(*args, **kw)

    monkeypatch.setattr(urllib.request, "urlopen", counting_urlopen)  # inherited by the forked processes
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=download, args=(url, dest, md5)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0, 0]
    assert fetches.read_text().count("fetch") == 1
    assert md5sum(dest) == md5 and leftovers(dest.parent) == ["bloodmnist.npz"]


def _hold_lock(dest, marker, seconds):
    with download_lock(dest):
        with open(marker, "a") as f:
            f.write(f"in {time.monotonic()}\n")
        time.sleep(seconds)
        with open(marker, "a") as f:
            f.write(f"out {time.monotonic()}\n")


def test_download_lock_is_exclusive_and_leaves_no_file(tmp_path):
    dest, marker = tmp_path / "f.npz", tmp_path / "marker"
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_hold_lock, args=(dest, marker, 0.3)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    events = [line.split()[0] for line in marker.read_text().splitlines()]
    assert events == ["in", "out"] * 3  # never two holders at once
    assert leftovers(tmp_path) == ["marker"]  # no f.npz.lock


@pytest.mark.slow
def test_offline_training_run_prints_one_line(tmp_path):
    env = {**os.environ, "MEDMNIST_ROOT": str(tmp_path / "medmnist"), "WBC_CACHE_DIR": str(tmp_path / "cache")}
    cmd = [sys.executable, "train.py", "data=bloodmnist", "data.size=64", "+data.source.url=http://127.0.0.1:9/x.npz",
           "logger=none", f"hydra.run.dir={tmp_path / 'run'}"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output[-3000:]
    assert "Traceback" not in output and "Error executing job" not in output
    errors = [line for line in output.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and f"put it at {tmp_path / 'medmnist' / 'bloodmnist_64.npz'}" in errors[0]
    assert leftovers(tmp_path / "medmnist") == []  # no partial file, no lock


def test_config_size_sets_file_and_image_size(tmp_path):
    cfg = compose_config(["data=bloodmnist", "data.size=64"], tmp_path)
    assert cfg.data.image_size == 64 and cfg.data.source.size == 64


def test_datamodule_keeps_the_official_splits(fixture, tmp_path):
    root, _ = fixture
    cfg = compose_config(["data=bloodmnist", f"data.root={root}", "data.size=28", "data.source.download=false",
                          "data.batch_size=8"], tmp_path)  # fmt: skip
    dm = build_datamodule(cfg.data, restorer=instantiate(cfg.sr), seed=0)
    dm.setup("fit")
    assert {split: len(samples) for split, samples in dm.samples.items()} == KEPT
    assert all(s.split == split for split, samples in dm.samples.items() for s in samples)
    x, y, _ = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 3, 28, 28)


def test_eight_class_option(fixture, tmp_path):
    cfg = compose_config(["data=bloodmnist8", f"data.root={fixture[0]}", "data.source.download=false"], tmp_path)
    assert list(cfg.class_names) == CLASSES8
    dm = build_datamodule(cfg.data, restorer=instantiate(cfg.sr), seed=0)
    dm.setup()
    assert dm.class_names == CLASSES8
    assert {split: len(samples) for split, samples in dm.samples.items()} == {
        split: 8 * n for split, n in PER_LABEL.items()
    }
