"""The cross-dataset evaluation: its metrics against hand-computed values, and the command on a labelled folder
in every evaluation setting (as trained, AdaBN, TTA, both)."""

import csv
import json
import shutil

import numpy as np
import pytest
import torch
import yaml
from omegaconf import OmegaConf

import wbc.predictor
from wbc.crossdata import (
    SAME_CELL_RMS,
    Inputs,
    bootstrap,
    evaluate_folder,
    headline,
    prior_settings,
    resamples,
    run,
    same_cell_groups,
    seed_mean,
    thumbnails,
)
from wbc.predict import Predictor
from wbc.prior import estimate_prior, reweight, training_prior


def test_headline_by_hand():
    # 5 images of classes 0, 0, 1, 1, 2 (class 3 absent); one class-0 image called 1
    y = np.array([0, 0, 1, 1, 2])
    pred = np.array([0, 1, 1, 1, 2])
    m = headline(y, pred, None, 4)
    assert m["accuracy"] == pytest.approx(0.8)
    # F1: class 0 (P 1, R 1/2) 2/3; class 1 (P 2/3, R 1) 0.8; class 2: 1; class 3 absent: left out of the mean
    assert m["f1_macro"] == pytest.approx((2 / 3 + 0.8 + 1) / 3)
    assert [m[f"recall/{c}"] for c in range(3)] == pytest.approx([0.5, 1.0, 1.0])
    assert "ece" not in m


def test_headline_ece_by_hand():
    # two images, confidence 0.9 (right) and 0.6 (wrong): bins hold one each; ECE = (0.1 + 0.6) / 2
    y = np.array([0, 1])
    probs = np.array([[0.9, 0.1], [0.6, 0.4]])
    assert headline(y, probs.argmax(1), probs, 2)["ece"] == pytest.approx(0.35, abs=1e-6)


def test_bootstrap_interval_holds_the_estimate():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    probs = np.eye(3)[np.where(rng.random(200) < 0.8, y, (y + 1) % 3)] * 0.7 + 0.1
    point = headline(y, probs.argmax(1), probs, 3)
    ci = bootstrap(y, probs, 3, n_boot=200)
    for key in ("accuracy", "f1_macro", "ece"):
        assert ci[key][0] <= point[key] <= ci[key][1]
        assert ci[key][1] - ci[key][0] < 0.2


def test_same_cell_groups_join_crops_of_one_cell_only():
    rng = np.random.default_rng(0)
    cells = rng.integers(0, 256, (3, 64, 64, 3)).astype(np.uint8)
    # cell 0 three times (once exactly, once with noise of 2 grey levels), cell 1 twice, cell 2 once
    noisy = np.clip(cells[0] + rng.normal(0, 2, cells[0].shape), 0, 255).astype(np.uint8)
    images = np.stack([cells[0], cells[1], noisy, cells[2], cells[0], cells[1]])
    groups = same_cell_groups(thumbnails(images))
    assert groups[0] == groups[2] == groups[4] and groups[1] == groups[5]
    assert len({groups[0], groups[1], groups[3]}) == 3
    # a uniform difference just over / under the threshold separates / joins two images (thumbnails keep it)
    base = np.full((2, 64, 64, 3), 100, np.uint8)
    base[1] += int(SAME_CELL_RMS) + 1
    assert len(set(same_cell_groups(thumbnails(base)))) == 2
    base[1] = 100 + int(SAME_CELL_RMS) - 1
    assert len(set(same_cell_groups(thumbnails(base)))) == 1
    assert same_cell_groups(np.zeros((0, 768), np.float32)).shape == (0,)


def test_cluster_bootstrap_counts_copies_of_a_cell_once():
    # 150 cells, 80 % right; each cell copied 5 times. Resampling images treats the copies as evidence and
    # narrows the interval by about sqrt(5); resampling cells gives the width of the 150 cells alone.
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 150)
    probs = np.eye(3)[np.where(rng.random(150) < 0.8, y, (y + 1) % 3)] * 0.7 + 0.1
    copies = np.repeat(np.arange(150), 5)

    def width(ci):
        return ci["accuracy"][1] - ci["accuracy"][0]

    alone = width(bootstrap(y, probs, 3, n_boot=400))
    by_image = width(bootstrap(y[copies], probs[copies], 3, n_boot=400))
    by_cell = width(bootstrap(y[copies], probs[copies], 3, n_boot=400, groups=copies))
    assert by_cell == pytest.approx(alone, rel=0.2)
    assert by_image == pytest.approx(alone / 5**0.5, rel=0.25)


@pytest.fixture(scope="module")
def labelled(trained_framed, tmp_path_factory):
    """The fixture run's own data folder (class folders named as its class map says) and its checkpoint."""
    run_dir, class_map = trained_framed
    return run_dir / "checkpoints/best.ckpt", run_dir.parent / "data", OmegaConf.create(class_map)


def test_evaluate_folder_leaves_the_predictor_as_it_was(labelled):
    ckpt, folder, class_map = labelled
    predictor = Predictor.from_checkpoint(ckpt, "cpu")
    before = {k: v.clone() for k, v in predictor.model.state_dict().items()}
    [plain] = evaluate_folder(predictor, folder, class_map, n_boot=50)
    [both] = evaluate_folder(predictor, folder, class_map, adapt_bn=True, tta=True, n_boot=50)
    for k, v in predictor.model.state_dict().items():
        torch.testing.assert_close(v, before[k])
    assert plain["images"] == both["images"] == 64 and plain["errors"] == 0
    assert (plain["adapt_bn"], plain["tta"], both["adapt_bn"], both["tta"]) == (False, False, True, True)
    assert both["adapted_on"] == 64 and both["adapted_layers"] is None  # auto: the checkpoint names none, all
    [first] = evaluate_folder(predictor, folder, class_map, adapt_bn=True, n_boot=50, adapt_layers=["net.features.1"])
    assert first["adapted_layers"] == ["net.features.1"] and first["metrics"] != plain["metrics"]
    # the same images, predicted again without AdaBN and TTA, give the same figures: nothing leaked
    [again] = evaluate_folder(predictor, folder, class_map, n_boot=50)
    assert again["metrics"] == plain["metrics"]


def test_evaluate_folder_on_inputs_prepared_once_gives_the_same_figures(labelled, tmp_path):
    ckpt, folder, class_map = labelled
    shutil.copytree(folder, tmp_path / "bad")
    bad = next((tmp_path / "bad").rglob("*.png")).with_name("broken.png")
    bad.write_bytes(b"not an image")  # one bad file: counted as an error either way
    predictor = Predictor.from_checkpoint(ckpt, "cpu")
    # AdaBN averages its statistics batch by batch, so it is compared where the batches are the same (no bad file)
    for where, adapt, tta in [(tmp_path / "bad", False, False), (tmp_path / "bad", False, True), (folder, True, True)]:
        files = wbc.crossdata.list_inputs(where)[0]
        um_per_px = wbc.crossdata.input_um_per_px(predictor, files)  # scale framing: the folder's ruler
        inputs = Inputs.load(predictor, files, um_per_px, batch_size=16, threads=1)
        assert len(inputs.indices) == 64 and inputs.images.shape == (64, 32, 32, 3)
        assert list(inputs.errors) == ([files.index(bad)] if where != folder else [])
        kw = {"adapt_bn": adapt, "tta": tta, "batch_size": 16, "threads": 1, "n_boot": 50}
        [streamed] = evaluate_folder(predictor, where, class_map, **kw)
        [shared] = evaluate_folder(predictor, where, class_map, inputs=inputs, **kw)
        assert shared["errors"] == streamed["errors"] == len(inputs.errors)
        assert shared["images"] == streamed["images"] == 64 and shared["cells"] == streamed["cells"]
        assert shared["adapted_on"] == streamed["adapted_on"] == (64 if adapt else 0)
        for key, value in streamed["metrics"].items():
            assert shared["metrics"][key] == pytest.approx(value, abs=1e-6), key


def cross_cfg(ckpt, folder, class_map, out, **kw):
    """cross_dataset.py's config on the fixture's folder (every setting of TTA; ``kw`` overrides)."""
    base = {
        "ckpt_path": ckpt if isinstance(ckpt, list) else str(ckpt),
        "datasets": {"mine": str(folder)},
        "class_map": class_map,
        "adapt_bn": [False, True],
        "tta": [False, True],
        "um_per_px": None,
        "bootstrap": 50,
        "same_cell": True,
        "adapt_bn_layers": "auto",
        "batch_size": 16,
        "decode_threads": 1,
        "device": "cpu",
        "trust_checkpoint": False,
        "output_dir": str(out),
    }
    return OmegaConf.create(base | kw)


def test_cross_dataset_command_writes_every_setting(labelled, tmp_path):
    ckpt, folder, class_map = labelled
    cfg = cross_cfg(ckpt, folder, class_map, tmp_path)
    assert run(cfg) == 0
    results = json.loads((tmp_path / "cross_dataset.json").read_text())["results"]
    assert [(r["adapt_bn"], r["tta"]) for r in results] == [(False, False), (False, True), (True, False), (True, True)]
    rows = list(csv.DictReader((tmp_path / "cross_dataset.csv").open()))
    assert [(r["adapt_bn"], r["tta"]) for r in rows] == [("False", "False"), ("False", "True"), ("True", "False"),
                                                         ("True", "True")]  # fmt: skip
    for r, row in zip(results, rows, strict=True):
        assert float(row["f1_macro"]) == pytest.approx(r["metrics"]["f1_macro"])
        assert r["ci95"]["f1_macro"][0] <= r["metrics"]["f1_macro"] <= r["ci95"]["f1_macro"][1]
        assert 0 < r["cells"] <= r["images"] and int(row["cells"]) == r["cells"]
    assert (tmp_path / "cross_dataset.md").read_text().count("| mine |") == 4
    # the cells' check of the pixel size, once per folder (this tiny model's classes are too few for it)
    assert ["cell_sizes" in r for r in results] == [True, False, False, False]
    assert "- mine: 0." in (tmp_path / "cross_dataset.md").read_text()


def test_cross_dataset_command_summarises_several_checkpoints(labelled, tmp_path, monkeypatch):
    ckpt, folder, class_map = labelled
    out = tmp_path / "not" / "made yet"  # an output_dir that does not exist: made
    cfg = cross_cfg([str(ckpt), str(ckpt.with_name("last.ckpt"))], folder, class_map, out, adapt_bn=False)
    loaded = []
    load = wbc.predictor._load
    monkeypatch.setattr(wbc.predictor, "_load", lambda path, *a: loaded.append(path) or load(path, *a))
    assert run(cfg) == 0
    # one preprocessing: every file decoded and framed once, for both checkpoints and both settings
    assert len(loaded) == len(set(loaded)) == 64
    results = json.loads((out / "cross_dataset.json").read_text())["results"]
    run_name = ckpt.parent.parent.name  # both in one run folder: numbered to tell them apart
    models = [f"1:{run_name}", f"2:{run_name}", "mean of 2", "ensemble of 2"]
    assert [(r["model"], r["tta"]) for r in results] == [(m, t) for t in (False, True) for m in models]
    for setting in (results[:4], results[4:]):
        one, two, mean, ensemble = setting
        for key in ("accuracy", "f1_macro", "ece"):
            assert mean["metrics"][key] == pytest.approx((one["metrics"][key] + two["metrics"][key]) / 2)
            assert mean["ci95"][key][0] <= mean["metrics"][key] <= mean["ci95"][key][1]
            assert ensemble["ci95"][key][0] <= ensemble["metrics"][key] <= ensemble["ci95"][key][1]
        assert mean["images"] == ensemble["images"] == one["images"] == 64
    rows = list(csv.DictReader((out / "cross_dataset.csv").open()))
    assert [r["model"] for r in rows] == models * 2
    text = (out / "cross_dataset.md").read_text()
    assert "| mine | mean of 2 | no | no | train | 64 (" in text and "`ensemble of K` averages" in text
    assert f"- mine [1:{run_name}]: 0." in text


def test_prior_settings_from_the_command_line():
    parse = lambda text: prior_settings(OmegaConf.create({"prior": yaml.safe_load(text)}).prior)  # noqa: E731
    assert parse("folder") == ["folder"]
    assert parse("[train, folder]") == ["train", "folder"]
    assert parse("[0.6, 0.3, 0.06, 0.04]") == [[0.6, 0.3, 0.06, 0.04]]  # numbers: one mix, not four settings
    assert parse("[train, [1, 1, 1, 1]]") == ["train", [1, 1, 1, 1]]


def test_evaluate_folder_gives_one_result_per_prior_from_one_pass(labelled):
    ckpt, folder, class_map = labelled
    predictor = Predictor.from_checkpoint(ckpt, "cpu")
    source = training_prior(predictor.model.hparams, len(predictor.class_names))
    train, uniform, estimated = evaluate_folder(
        predictor, folder, class_map, n_boot=50, arrays=True, priors=["train", "uniform", "folder"]
    )
    assert [r["prior"] for r in (train, uniform, estimated)] == ["train", "uniform", "folder"]
    assert train["prior_mix"] == pytest.approx(source.tolist()) and uniform["prior_mix"] == pytest.approx([0.25] * 4)
    p = train["arrays"]["probs"]
    np.testing.assert_allclose(uniform["arrays"]["probs"], reweight(p, source, np.full(4, 0.25)))
    np.testing.assert_allclose(estimated["prior_mix"], estimate_prior(p, source)[0], atol=1e-6)
    y = train["arrays"]["y"]
    for r in (train, uniform, estimated):
        q = r["arrays"]["probs"]
        assert r["metrics"] == headline(y, q.argmax(1), q, 4) and r["images"] == 64


def test_cross_dataset_command_writes_a_row_per_prior(labelled, tmp_path, caplog):
    ckpt, folder, class_map = labelled
    few = tmp_path / "few"
    for f in sorted(folder.rglob("*.png"))[:12]:  # too few images to estimate a class mix
        (few / f.parent.name).mkdir(parents=True, exist_ok=True)
        (few / f.parent.name / f.name).symlink_to(f)
    cfg = cross_cfg(
        [str(ckpt), str(ckpt.with_name("last.ckpt"))], folder, class_map, tmp_path / "out", adapt_bn=False,
        tta=False, prior=["train", "folder"], datasets={"mine": str(folder), "few": str(few)},
    )  # fmt: skip
    assert run(cfg) == 0
    results = json.loads((tmp_path / "out" / "cross_dataset.json").read_text())["results"]
    models = [m for m in (r.get("model") for r in results[:4])]
    assert [(r["name"], r["prior"], r["model"]) for r in results] == [
        *[("mine", p, m) for p in ("train", "folder") for m in models],
        *[("few", "train", m) for m in models],  # the folder prior left out there, with a warning
    ]
    assert "few: prior=folder estimates the folder's class mix" in caplog.text and "left out" in caplog.text
    rows = list(csv.DictReader((tmp_path / "out" / "cross_dataset.csv").open()))
    assert [r["prior"] for r in rows] == [r["prior"] for r in results]
    assert "| mine | mean of 2 | no | no | folder | 64 (" in (tmp_path / "out" / "cross_dataset.md").read_text()


def test_report_lists_each_folders_pixel_size_and_its_check(tmp_path):
    from wbc.reports.crossdata import write_report

    def result(name, sizes):
        return {"name": name, "adapt_bn": False, "tta": False, "images": 40, "cells": 40, "um_per_px": 0.1,
                "metrics": {"accuracy": 0.9, "f1_macro": 0.9}, "ci95": {"accuracy": (0.8, 1.0), "f1_macro": (0.8, 1.0)},
                "cell_sizes": sizes}  # fmt: skip

    per_class = {"a": {"ratio": 1.08}, "b": {"ratio": 1.12}, "c": {"ratio": 1.10}}
    results = [
        result("off", {"ratio": 1.10, "warn": True, "per_class": per_class}),
        result("unchecked", None),
        {**result("tta row", None), "tta": True} | {"um_per_px": 0.1},
    ]
    del results[2]["cell_sizes"]  # a second setting of a folder: checked once, with the first
    write_report(results, ["a", "b", "c"], tmp_path, "t")
    text = (tmp_path / "cross_dataset.md").read_text()
    assert "- off: 0.1000 um per pixel; its cells against the training cells: 1.100 (a 1.080, b 1.120, c 1.100)" in text
    assert "more than 5 % off, check the pixel size" in text
    assert "- unchecked: 0.1000 um per pixel; its cells against the training cells: no check" in text
    assert "- tta row" not in text
    assert (tmp_path / "cross_dataset.png").stat().st_size > 0


def test_cross_dataset_command_refuses_a_missing_folder(labelled, tmp_path):
    ckpt, _, class_map = labelled
    gone = {"gone": str(tmp_path / "nowhere")}
    cfg = cross_cfg(ckpt, None, class_map, tmp_path / "out", datasets=gone, adapt_bn=False, tta=False, bootstrap=10)
    assert run(cfg) == 2
    cfg.datasets = {"mine": str(tmp_path)}
    cfg.enlarger = str(tmp_path / "no-such-weights.pt")  # a bad enlarger: refused before any folder is read
    assert run(cfg) == 2


def test_seed_mean_by_hand():
    # two checkpoints on 4 images of classes 0, 0, 1, 1: the first right on all, the second calls one image 0 -> 1
    y = np.array([0, 0, 1, 1])
    right = np.eye(2)[y] * 0.8 + 0.1
    wrong = right.copy()
    wrong[0] = [0.3, 0.7]
    result = seed_mean(y, np.stack([right, wrong]), 2, n_boot=50)
    assert result["metrics"]["accuracy"] == pytest.approx((1 + 0.75) / 2)
    # second: class 0 P 1, R 1/2 -> F1 2/3; class 1 P 2/3, R 1 -> F1 0.8
    assert result["metrics"]["f1_macro"] == pytest.approx((1 + (2 / 3 + 0.8) / 2) / 2)
    assert result["seed_sd"]["accuracy"] == pytest.approx(np.std([1, 0.75], ddof=1))
    assert [m["accuracy"] for m in result["per_seed"]] == [1.0, 0.75]


def test_seed_mean_of_identical_checkpoints_is_the_cell_bootstrap():
    # no seed spread: the interval is the mean -/+ 1.96 bootstrap standard deviations of the (one) value over cells
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 120)
    probs = np.eye(3)[np.where(rng.random(120) < 0.8, y, (y + 1) % 3)] * 0.7 + 0.1
    groups = np.repeat(np.arange(60), 2)
    result = seed_mean(y, np.stack([probs, probs, probs]), 3, n_boot=200, groups=groups)
    draws = [headline(y[i], probs[i].argmax(1), probs[i], 3)["accuracy"] for i in resamples(120, 200, 0, groups)]
    half = 1.959964 * np.std(draws, ddof=1)
    assert result["seed_sd"]["accuracy"] == 0
    assert result["ci95"]["accuracy"] == pytest.approx(
        (result["metrics"]["accuracy"] - half, result["metrics"]["accuracy"] + half)
    )


def test_seed_mean_widens_with_seeds_that_disagree():
    # three checkpoints at 60 %, 80 % and 100 % accuracy on 300 images: the seed part dominates, and the interval
    # is wider than a normal interval of the three values' spread and near their Student-t interval (2 degrees of
    # freedom; a few more once the cells' part is added), cut at 1
    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 300)
    probs = np.stack([np.eye(4)[np.where(np.arange(300) % 10 < k, y, (y + 1) % 4)] * 0.6 + 0.1 for k in (6, 8, 10)])
    result = seed_mean(y, probs, 4, n_boot=100)
    lo, hi = result["ci95"]["accuracy"]
    seed_se = 0.2 / 3**0.5
    assert result["metrics"]["accuracy"] == pytest.approx(0.8)
    assert 1.96 * seed_se < 0.8 - lo < 4.302653 * seed_se * 1.2
    assert 0.8 - lo == pytest.approx(4.302653 * seed_se, rel=0.1)
    assert hi == 1.0  # 0.8 + 0.5 cut to what an accuracy can be


@pytest.mark.slow
def test_seed_mean_covers_the_recipe_value():
    # a recipe whose seeds differ in skill and whose cells differ in difficulty (logit skill + difficulty): over
    # repetitions (new seeds, new cells), the 95 % interval of the mean accuracy holds the recipe's expected
    # accuracy at least about 95 % of the time, and is not much wider than the estimator's actual spread
    rng = np.random.default_rng(4)
    truth = float(np.mean(1 / (1 + np.exp(-(rng.normal(0, 0.4, 10**6) + rng.normal(1.8, 1.0, 10**6))))))
    hits, widths, means = 0, [], []
    for _ in range(80):
        skill, difficulty = rng.normal(0, 0.4, 3), rng.normal(1.8, 1.0, 150)
        correct = rng.random((3, 150)) < 1 / (1 + np.exp(-(skill[:, None] + difficulty[None, :])))
        y = rng.integers(0, 4, 150)
        probs = np.stack([np.eye(4)[np.where(c, y, (y + 1) % 4)] * 0.6 + 0.1 for c in correct])
        r = seed_mean(y, probs, 4, n_boot=100, seed=int(rng.integers(1 << 30)))
        lo, hi = r["ci95"]["accuracy"]
        hits += lo <= truth <= hi
        widths.append(hi - lo)
        means.append(r["metrics"]["accuracy"])
    assert hits / 80 >= 0.9
    assert np.median(widths) < 2 * 1.96 * np.std(means) * 2.0
