"""scripts/train_sr.py trains the in-domain SR model a run would use, stores it once and reports its quality."""

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import REPO_ROOT


@pytest.mark.slow
def test_train_sr_script_stores_weights_that_runs_reuse(tmp_path):
    env = {**os.environ, "WBC_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    args = ["sr=espcn", "data.lr_scale=2", "data.image_size=32", "data.source.n_per_class=8", "sr.train.steps=5"]

    def train_sr(run: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "scripts/train_sr.py", *args, f"hydra.run.dir={tmp_path / run}"]
        return subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)

    first = train_sr("first")
    assert first.returncode == 0, first.stderr[-2000:]
    report = json.loads((tmp_path / "first/sr_metrics.json").read_text())
    assert report["method"] == "espcn" and report["scale"] == 2 and report["train"]["steps"] == 5
    for split in ("val", "test"):
        assert report[split]["psnr"] > 10 and 0 < report[split]["ssim"] <= 1 and "psnr_bicubic" in report[split]
    assert (tmp_path / "first/sr_weights.pt").is_file()
    (weights,) = (tmp_path / "cache/sr").glob("espcn-x2-*.pt")
    stamp = weights.stat().st_mtime_ns
    assert "training sr=espcn" in (tmp_path / "first/train_sr.log").read_text()
    second = train_sr("second")  # the same configuration: loaded, not trained again
    assert second.returncode == 0 and weights.stat().st_mtime_ns == stamp
    assert "training sr=espcn" not in (tmp_path / "second/train_sr.log").read_text()
    assert json.loads((tmp_path / "second/sr_metrics.json").read_text())["test"] == report["test"]


@pytest.mark.slow
def test_train_sr_needs_a_trainable_method(tmp_path):
    proc = subprocess.run(
        [sys.executable, "scripts/train_sr.py", "sr=bicubic", "data.lr_scale=2", f"hydra.run.dir={tmp_path}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and "needs a trainable method" in proc.stderr


@pytest.mark.slow
def test_train_sr_reports_a_frozen_reference_classifier(tmp_path):
    env = {**os.environ, "WBC_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    data = ["data.image_size=32", "data.source.n_per_class=8"]
    quiet = ["logger=none", "~callbacks.progress_bar", "trainer.enable_progress_bar=false"]
    reference = [sys.executable, "train.py", *data, "data.lr_scale=1", "trainer.max_epochs=1", *quiet,
                 f"hydra.run.dir={tmp_path / 'ref'}"]  # fmt: skip
    proc = subprocess.run(reference, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ckpt = tmp_path / "ref/checkpoints/best.ckpt"
    sr = [sys.executable, "scripts/train_sr.py", "sr=espcn", "data.lr_scale=2", "sr.train.steps=5",
          f"+reference_checkpoint={ckpt}"]  # fmt: skip
    run = [*sr, *data, f"hydra.run.dir={tmp_path / 'sr'}"]
    proc = subprocess.run(run, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    frozen = json.loads((tmp_path / "sr/sr_metrics.json").read_text())["test"]["reference_accuracy"]
    assert set(frozen) == {"reference", "none", "bicubic", "espcn"} and all(0 <= v <= 1 for v in frozen.values())
    # on the references it is the reference run's own test accuracy: the same classifier, split and images
    tested = json.loads((tmp_path / "ref/metrics.json").read_text())["test"]["test/accuracy"]
    assert frozen["reference"] == pytest.approx(tested, abs=1e-6)
    bad = [*sr, "data.image_size=16", "data.source.n_per_class=8", f"hydra.run.dir={tmp_path / 'bad'}"]
    proc = subprocess.run(bad, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "must be a data.lr_scale=1 run at data.image_size=16" in proc.stderr
