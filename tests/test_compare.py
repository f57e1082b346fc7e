"""The SR study report: the headline sweep as typed, a real tiny multirun, and the pairing, grouping and
multiplicity logic on hand-made run folders."""

import csv
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.helpers import REPO_ROOT, TINY, fake_run
from wbc.reports.compare import compare, paired_tests, verdict_lines
from wbc.reports.runs import load_runs, summarise

ENV = {"OMP_NUM_THREADS": "1"}


def _sweep(tmp_path, *overrides, n_per_class=12):
    sweep = tmp_path / "sweep"
    env = {**os.environ, "WBC_CACHE_DIR": str(tmp_path / "cache"), **ENV}
    tiny = [o for o in TINY if not o.startswith(("trainer.max_epochs", "data.source.n_per_class"))]
    cmd = [
        sys.executable,
        "train.py",
        "-m",
        *overrides,
        f"data.source.n_per_class={n_per_class}",
        "trainer.max_epochs=1",
        "logger=none",
        *tiny,
        f"hydra.sweep.dir={sweep}",
    ]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return sweep, proc


@pytest.mark.slow
def test_the_headline_sweep_as_typed(tmp_path):
    """`python train.py -m sr=none,espcn,edsr` (here tiny): three comparable runs at the study factor, sr=none
    included, and a report with a verdict for espcn and for edsr against none."""
    sweep, proc = _sweep(tmp_path, "sr=none,espcn,edsr", "sr.train.steps=5")
    runs = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/metrics.json"))]
    assert len(runs) == 3 and not any("skipped" in r for r in runs)
    assert [r["run"]["sr"] for r in runs] == ["none", "espcn", "edsr"]
    assert all(r["run"]["lr_scale"] == 4 and "sr_study_scale" in r["run"]["lr_scale_auto"] for r in runs)
    assert "multirun over sr" in runs[0]["run"]["lr_scale_auto"]
    # the concrete factor is in config.yaml and in the checkpoint (prediction needs no Hydra)
    assert "lr_scale: 4" in (sweep / "0" / "config.yaml").read_text()
    ckpt = torch.load(sweep / "1" / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["hyper_parameters"]["preprocessing"]["lr_scale"] == 4
    run_json = json.loads((sweep / "2" / "run.json").read_text())
    assert run_json["choices"] == {"data": "synthetic", "model": "cnn", "sr": "edsr"}

    table = (sweep / "comparison.md").read_text()
    verdicts = verdict_lines(table)
    assert [v.split(" ")[0] for v in verdicts] == ["sr=espcn", "sr=edsr"]
    assert all(("helped" in v or "hurt" in v or "no measurable difference" in v) and "x4" in v for v in verdicts)
    assert "SR study verdicts" in proc.stdout and all(v in proc.stdout for v in verdicts)
    tests = json.loads((sweep / "comparison.json").read_text())["paired_tests"]
    assert [t["sr"] for t in tests] == ["espcn", "edsr"] and all(t["comparisons"] == 2 for t in tests)


@pytest.mark.slow
def test_multirun_writes_the_comparison(tmp_path):
    sweep, _ = _sweep(tmp_path, "sr=none,bicubic", "data.lr_scale=1,4", "seed=0,1")

    # bicubic at f=1 (given explicitly) is the reference: skipped, not trained twice
    skipped = [json.loads(p.read_text()) for p in sweep.glob("*/metrics.json")]
    assert sum("skipped" in m for m in skipped) == 2 and len(skipped) == 8

    # the Hydra callback wrote the report at the end of the multirun
    for name in (
        "comparison.md",
        "comparison.csv",
        "comparison.json",
        "comparison.png",
        "comparison_differences.png",
        "sr_examples.png",
    ):
        assert (sweep / name).is_file(), name
    table = (sweep / "comparison.md").read_text()
    assert "| synthetic | cnn | 32 | 1 | none | 2 |" in table and "| synthetic | cnn | 32 | 4 | bicubic | 2 |" in table
    assert "sr=bicubic at x4" in table and "McNemar exact p per seed" in table and "over 2 seeds" in table
    rows = list(csv.DictReader((sweep / "comparison.csv").open()))
    assert [(r["sr"], r["lr_scale"]) for r in rows] == [("none", "1"), ("none", "4"), ("bicubic", "4")]
    assert all(r["seeds"] == "0 1" for r in rows)

    # the paired test compares the same images of the same seed
    runs = load_runs(sweep)
    tests = paired_tests(runs)
    assert len(tests) == 1 and [p["seed"] for p in tests[0]["per_seed"]] == [0, 1]
    assert tests[0]["analysis"].startswith("seeds x images") and tests[0]["p_holm"] == tests[0]["p"]
    for p in tests[0]["per_seed"]:
        assert p["images"] == 8  # round(12 x 0.15) = 2 test images per class, 4 classes
    # compare.py on demand reproduces the same table
    assert compare(sweep) == table
    script = subprocess.run(
        [sys.executable, "scripts/compare.py", str(sweep)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert script.returncode == 0 and "# SR study" in script.stdout


@pytest.mark.slow
def test_compare_on_an_empty_folder_is_a_clear_error(tmp_path):
    proc = subprocess.run(
        [sys.executable, "scripts/compare.py", str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and "no finished runs" in proc.stderr


def test_runs_are_grouped_by_the_option_they_ran(tmp_path):
    """sr=edsr and sr=edsr_small are two methods, not six seeds of one; one option run in two forms (here an
    OpenCV backend beside torch) is split and labelled; verdicts are Holm-corrected over the whole report."""
    rng = np.random.default_rng(0)
    base = (rng.random((3, 400)) < 0.85).astype(int)
    big = base.copy()
    big[:, :120] = 1  # edsr fixes many images on every seed
    for seed in range(3):
        fake_run(tmp_path / f"none{seed}", base[seed], seed, "none")
        fake_run(tmp_path / f"edsr{seed}", big[seed], seed, "edsr", arch={"n_resblocks": 16, "n_feats": 64})
        fake_run(tmp_path / f"small{seed}", base[seed], seed, "edsr_small", "edsr", arch={"n_resblocks": 4})
        fake_run(tmp_path / f"espcn{seed}", base[seed], seed, "espcn")
        fake_run(tmp_path / f"espcn_cv{seed}", base[seed], seed, "espcn", backend="opencv")
    runs = load_runs(tmp_path)
    rows = summarise(runs)
    assert [(r["sr"], r["seeds"]) for r in rows] == [
        ("none", [0, 1, 2]),
        ("espcn (default)", [0, 1, 2]),
        ("espcn (opencv)", [0, 1, 2]),
        ("edsr", [0, 1, 2]),
        ("edsr_small", [0, 1, 2]),
    ]
    tests = paired_tests(runs)
    by = {t["sr"]: t for t in tests}
    assert set(by) == {"espcn (default)", "espcn (opencv)", "edsr", "edsr_small"}
    assert all(t["comparisons"] == 4 and t["p_holm"] >= t["p"] for t in tests)
    assert by["edsr"]["verdict"] == "helped" and by["edsr_small"]["verdict"] == "no measurable difference"
    assert by["edsr_small"]["accuracy_diff"] == 0 and by["edsr_small"]["p"] == 1.0

    text = compare(tmp_path)
    assert "| pbc | cnn | 64 | 4 | edsr_small | 3 |" in text and "| pbc | cnn | 64 | 4 | edsr | 3 |" in text
    assert "Holm's correction over all 4 comparisons" in text
    study = json.loads((tmp_path / "comparison.json").read_text())["studies"][0]
    assert study["seeds"] == 3 and study["between_seed_sd"] > 0 and study["mdd"] > 0
    assert "between-seed SD of test accuracy" in text and "MDD = (t[1-alpha/2, S-1]" in text
    assert study["mdd_holm_strictest"] > study["mdd"]


def test_old_runs_and_different_split_seeds(tmp_path):
    """Runs written before the options were recorded still load; replicates from different split seeds (other
    test images) are compared by a paired t over seeds, never crossed as if they shared images."""
    rng = np.random.default_rng(1)
    for split_seed in (0, 1):
        for seed in (0, 1):
            base = (rng.random(200) < 0.8).astype(int)
            better = base.copy()
            better[: 10 + 5 * seed] = 1
            kw = {"split_seed": split_seed, "old": True}
            fake_run(tmp_path / f"n{split_seed}{seed}", base, seed, "none", **kw)
            fake_run(tmp_path / f"b{split_seed}{seed}", better, seed, "bicubic", **kw)
    runs = load_runs(tmp_path)
    assert {r["run"]["data"] for r in runs} == {"pbc"} and {r["label"] for r in runs} == {"none", "bicubic"}
    (test,) = paired_tests(runs)
    assert test["seeds"] == 4 and test["analysis"].startswith("paired t over 4 seeds") and test["df"] == 3
    assert [(p["split_seed"], p["seed"]) for p in test["per_seed"]] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    text = compare(tmp_path)
    assert "split0/seed0 split0/seed1 split1/seed0 split1/seed1" in (tmp_path / "comparison.csv").read_text()
    assert verdict_lines(text)[0].startswith("sr=bicubic at x4 (pbc, cnn, 64 px)")
    assert math.isfinite(json.loads((tmp_path / "comparison.json").read_text())["studies"][0]["between_seed_sd"])


@pytest.mark.parametrize("seeds", [1, 2])
def test_one_seed_verdicts_say_so(tmp_path, seeds):
    base = np.zeros(300, dtype=int)
    base[50:] = 1
    better = base.copy()
    better[:40] = 1
    for seed in range(seeds):
        fake_run(tmp_path / f"n{seed}", base, seed, "none")
        fake_run(tmp_path / f"e{seed}", better, seed, "espcn")
    line = verdict_lines(compare(tmp_path))[0]
    if seeds == 1:
        assert "helped on this training run (1 seed)" in line and "does not measure training noise" in line
        assert "1 seed per group" in (tmp_path / "comparison.md").read_text()
    else:  # identical seeds: no seed noise, a clear gain
        assert "helped —" in line and "over 2 seeds" in line
