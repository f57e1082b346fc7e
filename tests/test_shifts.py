"""Simulated lab differences (wbc.shifts): each shift changes what it says by the stated amount, and the script
writes one labelled folder per shift that cross_dataset.py evaluates."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.data.test_framing import smear
from tests.helpers import REPO_ROOT
from wbc.data.decode import read_image
from wbc.data.framing import locate_cell
from wbc.shifts import (
    CLASS_MIXES,
    SHIFTS,
    apply,
    blur,
    class_mix_indices,
    lamp,
    low_res,
    magnified,
    optical_density,
    tight,
    write_shifted_sets,
)


def field():
    return smear(rbc_d=60, n_rbc=10, size=(420, 420), cell=(210, 210), cell_d=110)


def test_magnified_enlarges_the_cells_and_keeps_the_image_size():
    image = field()
    out = magnified(image, 0.1)
    assert out.shape == image.shape
    before, after = locate_cell(image), locate_cell(out)
    assert after.cell_diameter == pytest.approx(1.4 * before.cell_diameter, rel=0.1)
    assert np.hypot(after.centre[0] - 210, after.centre[1] - 210) < 6  # the field's centre stays the centre


def test_low_res_halves_the_pixels_per_micrometre():
    image = field()
    out = low_res(image, 0.1)
    assert out.shape == (210, 210, 3)
    assert locate_cell(out).rbc_diameter == pytest.approx(locate_cell(image).rbc_diameter / 2, rel=0.12)


def test_tight_keeps_the_white_cell_and_no_red_cell():
    image = field()
    out = tight(image, 0.1)
    assert out.shape[0] == pytest.approx(110 * 1.2, rel=0.2) and out.shape[1] == pytest.approx(110 * 1.2, rel=0.2)
    loc = locate_cell(out)
    assert loc.found and loc.rbc_diameter is None
    blank = np.full((100, 100, 3), 230, np.uint8)
    assert tight(blank, 0.1) is blank  # no cell found: the image as it was


def test_blur_is_sigma_micrometres():
    image = np.zeros((81, 81, 3), np.uint8)
    image[:, 40:] = 255  # a step edge: the blurred edge's derivative is the Gaussian
    out = blur(image, 0.1, sigma_um=0.5).astype(np.float64)[40, :, 0]  # 5 px
    profile = np.diff(out) / np.diff(out).sum()
    x = np.arange(80) - 39.5
    assert np.sqrt((profile * x**2).sum()) == pytest.approx(5.0, rel=0.1)


def test_optical_density_gains_keep_white_and_scale_absorbance():
    image = np.array([[[255, 255, 255], [95, 45, 140]]], np.uint8)
    assert np.abs(optical_density(image, (1, 1, 1)).astype(int) - image).max() <= 1
    pale, dark = optical_density(image, (0.6,) * 3), optical_density(image, (1.5,) * 3)
    assert (pale[0, 0] == 255).all() and (dark[0, 0] == 255).all()  # the empty slide stays white
    assert (pale[0, 1] > image[0, 1]).all() and (dark[0, 1] < image[0, 1]).all()
    od = -np.log((image[0, 1].astype(float) + 1) / 256)
    expected = 256 * np.exp(-od * np.array([1.3, 1.0, 0.7])) - 1
    assert np.abs(optical_density(image, (1.3, 1.0, 0.7))[0, 1] - expected).max() <= 0.5
    assert lamp(image, 0.1)[0, 0].tolist() == [230, 207, 172]  # 255 x 0.9 x (1, 0.9, 0.75)


def test_shifts_combine_left_to_right():
    image = field()
    both = apply("tight+low_res", image, 0.1)
    np.testing.assert_array_equal(both, low_res(tight(image, 0.1), 0.1))
    assert both.shape[0] == pytest.approx(tight(image, 0.1).shape[0] / 2, abs=1)


def write_source(tmp_path, n=3):
    """A run's split_manifest.csv over a small folder: test images of two classes, one unreadable."""
    rows = []
    for folder in ("lymphocyte", "monocyte"):
        for i in range(n):
            path = tmp_path / "src" / folder / f"{folder[:2]}_{i}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(smear(rbc_d=60, n_rbc=10, size=(420, 420), cell=(210, 210), cell_d=110, seed=i)).save(path)
            rows.append([path, folder.capitalize(), "test", "", ""])
    broken = tmp_path / "src" / "monocyte" / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    rows += [[broken, "Monocyte", "test", "", ""], [tmp_path / "src" / "x.jpg", "Monocyte", "train", "", ""]]
    run = tmp_path / "run"
    run.mkdir()
    with open(run / "split_manifest.csv", "w", newline="") as f:
        csv.writer(f).writerows([["path", "label", "split", "content_key", "note"], *rows])
    return run


def test_write_shifted_sets_one_labelled_folder_per_shift(tmp_path):
    from wbc.shifts import test_files

    run = write_source(tmp_path)
    files = test_files(run / "split_manifest.csv")
    assert len(files) == 7 and {f for _, f in files} == {"lymphocyte", "monocyte"}  # test rows only
    counts = write_shifted_sets(files, tmp_path / "out", ["none", "low_res", "jpeg"], um_per_px=0.1)
    assert counts == {s: {"written": 6, "unreadable": 1} for s in ("none", "low_res", "jpeg")}
    assert "broken.jpg" in (tmp_path / "out" / "unreadable.txt").read_text()
    for shift in ("none", "low_res", "jpeg"):
        assert sorted(p.name for p in (tmp_path / "out" / shift / "monocyte").iterdir()) == [
            "mo_0.jpg",
            "mo_1.jpg",
            "mo_2.jpg",
        ]
    assert read_image(tmp_path / "out/low_res/lymphocyte/ly_0.jpg").shape == (210, 210, 3)
    none, jpeg = (tmp_path / "out" / s / "lymphocyte" / "ly_0.jpg" for s in ("none", "jpeg"))
    assert jpeg.stat().st_size < none.stat().st_size  # quality 20 against 95
    # blur needs the pixel size: measured on red cells (these drawn cells' are measurable), or an error
    blank = tmp_path / "blank.jpg"
    Image.fromarray(np.full((64, 64, 3), 230, np.uint8)).save(blank)
    with pytest.raises(ValueError, match="blur needs the images' pixel size"):
        write_shifted_sets([(blank, "monocyte")] * 6, tmp_path / "out3", ["blur"])
    assert write_shifted_sets([(blank, "monocyte")], tmp_path / "out4", ["pale"])["pale"]["written"] == 1
    for bad in ("sepia", "tight+sepia"):
        with pytest.raises(ValueError, match="unknown shift.*choose from none, magnified"):
            write_shifted_sets(files, tmp_path / "out2", [bad])


def test_script_writes_the_sets_and_prints_the_evaluation(tmp_path):
    run = write_source(tmp_path, n=6)  # 12 readable images: enough red cells to measure the pixel size
    cmd = [sys.executable, "scripts/shifted_sets.py", "--run", str(run), "--out", str(tmp_path / "sets"),
           "--shifts", "none,pale"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "none: 12 images written, 1 unreadable" in proc.stdout
    assert f"'datasets={{none: {tmp_path / 'sets' / 'none'}, pale: {tmp_path / 'sets' / 'pale'}}}'" in proc.stdout
    assert set(SHIFTS) >= {p.name for p in (tmp_path / "sets").iterdir() if p.is_dir()} == {"none", "pale"}


@pytest.mark.slow
def test_script_evaluates_a_checkpoint_on_every_shift(trained_framed, tmp_path):
    run_dir, class_map = trained_framed  # the fixture's folder names, mapped onto the classes
    cmd = [sys.executable, "scripts/shifted_sets.py", "--run", str(run_dir), "--out", str(tmp_path / "sets"),
           "--shifts", "none,tight,hue", "--ckpt", str(run_dir / "checkpoints/best.ckpt"),
           str(run_dir / "checkpoints/last.ckpt"), "--", f"hydra.run.dir={tmp_path / 'eval'}", "tta=[false]",
           "bootstrap=20", f"class_map={class_map}"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "eval" / "cross_dataset.json").read_text())["results"]
    # two checkpoints (a recipe's seeds, say): each, their mean and their ensemble on every set
    assert [r["name"] for r in results] == [s for s in ["none", "tight", "hue"] for _ in range(4)]
    assert [r["model"] for r in results[:4]][2:] == ["mean of 2", "ensemble of 2"]
    n_test = sum(1 for r in csv.DictReader(open(run_dir / "split_manifest.csv")) if r["split"] == "test")
    assert all(r["images"] + r["errors"] == n_test for r in results if "of 2" not in r["model"])


def test_class_mix_indices_follow_the_proportions_by_hand():
    labels = np.repeat([0, 1, 2, 3], [100, 50, 40, 10])
    # a normal differential (60/30/6/4 %): the eosinophils/basophils (10) allow 250 cells, neutrophils then
    # limit it to 100 / 0.6 = 166.7: 100, 50, 10 and 6 cells
    idx = class_mix_indices(labels, CLASS_MIXES["differential"])
    assert np.bincount(labels[idx], minlength=4).tolist() == [100, 50, 10, 6]
    uniform = class_mix_indices(labels, CLASS_MIXES["uniform"])
    assert np.bincount(labels[uniform], minlength=4).tolist() == [10, 10, 10, 10]
    assert len(set(uniform.tolist())) == len(uniform)  # drawn without replacement
    with pytest.raises(ValueError, match="summing to 1"):
        class_mix_indices(labels, (0.5, 0.5))


def run_study(script: str, trained_framed, tmp_path, *options: str) -> Path:
    """Run a study script (scripts/<script>) on the trained fixture's data: a criterion folder ``own`` (also
    re-mixed), the same folder reported as ``again``; returns its output folder."""
    run_dir, class_map = trained_framed
    data = run_dir.parent / "data"
    cmd = [sys.executable, f"scripts/{script}", "--ckpt", str(run_dir / "checkpoints/best.ckpt"),
           "--folders", f"own={data}", "--mixes", "own", "--eval", f"again={data}", "--class-map", class_map,
           "--out", str(tmp_path / "out"), *options]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp_path / "out"


@pytest.mark.slow
def test_adabn_layers_script_compares_layer_choices_on_re_mixed_sets(trained_framed, tmp_path):
    layers = "all=*;first=net.features.1;all@train=*"
    out = run_study("adabn_layers.py", trained_framed, tmp_path, "--layers", layers)
    results = json.loads((out / "results.json").read_text())
    # (own mix + 3 re-mixes) of the criterion folder, the own mix of the reported one; 4 settings each
    assert len(results) == (4 + 1) * 4
    uniform = [r for r in results if r["mix"] == "uniform"]
    assert uniform and all(r["images"] > 0 and r["images"] % 4 == 0 for r in uniform)  # equal counts of 4 classes
    by = {(r["folder"], r["mix"], r["setting"]): r["f1_macro"] for r in results}
    assert by[("own", "own", "all")] != by[("own", "own", "as trained")]  # AdaBN changed the predictions
    # in the training mix, AdaBN re-estimates on a resample of the folder: other statistics, other predictions
    assert any(by[(f, m, "all@train")] != by[(f, m, "all")] for f, m, _ in by)
    report = (out / "adabn_layers.md").read_text()
    assert "| again (reported only) | own |" in report and "criterion" in report


@pytest.mark.slow
def test_prior_shift_script_compares_the_priors_on_re_mixed_sets(trained_framed, tmp_path):
    options = ("--repeats", "4", "--cache", str(tmp_path / "new" / "cache"))
    out = run_study("prior_shift.py", trained_framed, tmp_path, *options)
    assert list((tmp_path / "new" / "cache").glob("own-*.npz"))  # a --cache folder that did not exist is made
    got = json.loads((out / "results.json").read_text())
    results, sizes = got["results"], got["sizes"]
    assert len(results) == (4 + 1) * 3  # (own mix + 3 re-mixes) of the criterion folder, the reported one; 3 priors
    by = {(r["folder"], r["mix"], r["prior"]): r for r in results}
    assert by[("own", "uniform", "uniform")]["prior_mix"] == pytest.approx([0.25] * 4)
    assert by[("own", "own", "folder")]["prior_mix"] != by[("own", "own", "train")]["prior_mix"]
    assert by[("again", "own", "train")]["f1_macro"] == by[("own", "own", "train")]["f1_macro"]  # one folder, twice
    # the estimate's study: every size for the criterion folder's four mixes, none for the reported folder
    assert {(s["mix"], s["n"]) for s in sizes} == {(m, n) for m in ("own", "uniform", "differential", "mono_lymph")
                                                   for n in (16, 32, 64, 128, 256)}  # fmt: skip
    assert all(len(s["gains"]) == 4 and all(-1 <= g <= 1 for g in s["gains"]) for s in sizes)
    report = (out / "prior_shift.md").read_text()
    assert "| again (reported only) | own |" in report and "criterion" in report and "| 64 |" in report
    # resumable: the probabilities are cached, a second run writes the same results
    run_study("prior_shift.py", trained_framed, tmp_path, *options)
    assert json.loads((out / "results.json").read_text())["results"] == results


@pytest.mark.slow
def test_t3a_shift_script_compares_t3a_with_the_class_mix_step(trained_framed, tmp_path):
    out = run_study("t3a_shift.py", trained_framed, tmp_path, "--per-class", "5,all")
    results = json.loads((out / "results.json").read_text())["results"]
    ways = ["train", "folder", "t3a 5", "folder+t3a 5", "t3a all", "folder+t3a all"]
    assert len(results) == (4 + 1) * len(ways)  # (own mix + 3 re-mixes) of the criterion folder, the reported one
    by = {(r["folder"], r["mix"], r["way"]): r for r in results}
    assert {w for _, _, w in by} == set(ways)
    assert by[("again", "own", "t3a all")]["f1_macro"] == by[("own", "own", "t3a all")]["f1_macro"]  # one folder
    report = (out / "t3a_shift.md").read_text()
    assert "| again (reported only) | own |" in report and "**criterion: mean over the sets above**" in report
    assert list(out.glob("features-own-*.npz"))  # cached: a second run reads them


@pytest.mark.slow
def test_scale_tta_script_frames_each_ruler_and_averages_the_chosen_scales(trained_framed, tmp_path):
    import importlib.util

    from wbc.predictor import Predictor

    run_dir, class_map = trained_framed
    data, ckpt, out = run_dir.parent / "data", run_dir / "checkpoints/best.ckpt", tmp_path / "out"
    cmd = [sys.executable, "scripts/scale_tta.py", "--ckpt", str(ckpt), "--pbc", str(data), "--rulers", "0.7,1",
           "--eval", f"again={data}", "--settings", "1x=1;wide=0.8,1,1.25", "--class-map", class_map,
           "--out", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert [(r["set"], r["setting"]) for r in results] == [
        (s, t) for s in ("pbc ruler x0.7", "pbc ruler x1", "again") for t in ("1x", "wide")
    ]
    # one cache per set: a ruler 0.7 times the measured one frames the cells 1/0.7 times larger
    cached = {p.name.split("-")[0]: np.load(p)["x"] for p in out.glob("*.npz")}
    assert set(cached) == {"pbc_ruler_x0.7", "pbc_ruler_x1", "again"}
    assert not np.array_equal(cached["pbc_ruler_x0.7"], cached["pbc_ruler_x1"])
    np.testing.assert_array_equal(cached["pbc_ruler_x1"], cached["again"])
    # the 1x setting is the recipe's eight-view TTA
    spec = importlib.util.spec_from_file_location("scale_tta", REPO_ROOT / "scripts/scale_tta.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    predictor = Predictor.from_checkpoint(ckpt, "cpu")
    x = cached["again"]
    probs = script.per_scale_probabilities(predictor, x, [1.0, 1.25])
    np.testing.assert_allclose(probs[1.0], predictor.probabilities(x, tta=True).numpy(), atol=1e-5)
    assert not np.allclose(probs[1.25], probs[1.0])
    report = (out / "scale_tta.md").read_text()
    assert "| again (reported only) |" in report and "criterion" in report
