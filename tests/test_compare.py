"""The SR study report on a real tiny multirun, and its pairing logic."""

import csv
import json
import os
import subprocess
import sys

from tests.helpers import REPO_ROOT, TINY
from wbc.compare import compare, load_runs, paired_tests


def test_multirun_writes_the_comparison(tmp_path):
    sweep = tmp_path / "sweep"
    env = {**os.environ, "WBC_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    overrides = [o for o in TINY if not o.startswith(("trainer.max_epochs", "data.source.n_per_class"))]
    cmd = [
        sys.executable,
        "train.py",
        "-m",
        "sr=none,bicubic",
        "data.lr_scale=1,4",
        "seed=0,1",
        "data.source.n_per_class=12",
        "trainer.max_epochs=1",
        "logger=none",
        *overrides,
        f"hydra.sweep.dir={sweep}",
    ]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    # bicubic at f=1 is the reference: skipped, not trained twice
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
    assert "| cnn | 32 | 1 | none | 2 |" in table and "| cnn | 32 | 4 | bicubic | 2 |" in table
    assert "sr=bicubic at x4" in table and "McNemar exact p per seed" in table
    rows = list(csv.DictReader((sweep / "comparison.csv").open()))
    assert [(r["sr"], r["lr_scale"]) for r in rows] == [("none", "1"), ("none", "4"), ("bicubic", "4")]
    assert all(r["seeds"] == "0 1" for r in rows)

    # the paired test compares the same images of the same seed
    runs = load_runs(sweep)
    tests = paired_tests(runs)
    assert len(tests) == 1 and [p["seed"] for p in tests[0]["per_seed"]] == [0, 1]
    for p in tests[0]["per_seed"]:
        assert p["images"] == 8  # round(12 x 0.15) = 2 test images per class, 4 classes
    # compare.py on demand reproduces the same table
    assert compare(sweep) == table
    script = subprocess.run(
        [sys.executable, "scripts/compare.py", str(sweep)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert script.returncode == 0 and "# SR study" in script.stdout


def test_compare_on_an_empty_folder_is_a_clear_error(tmp_path):
    proc = subprocess.run(
        [sys.executable, "scripts/compare.py", str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and "no finished runs" in proc.stderr
