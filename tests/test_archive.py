"""A sweep's results packed without weights and unpacked elsewhere: the same report, finished jobs skipped on resume,
nothing overwritten, deterministic files."""

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import REPO_ROOT, fake_run
from wbc.reports.archive import pack, unpack
from wbc.reports.compare import compare
from wbc.train import finished_run


def _multirun(*task):
    """A multirun.yaml as Hydra writes it, with these task overrides."""
    return "hydra:\n  overrides:\n    task:\n" + "".join(f"    - {t}\n" for t in task)


def _sweep(root):
    """A four-job sweep folder: two finished pairs (none and bicubic, two seeds), one unfinished job."""
    rng = np.random.default_rng(0)
    (root / "multirun.yaml").parent.mkdir(parents=True)
    (root / "multirun.yaml").write_text(_multirun("sr=none,bicubic", "seed=0,1"))
    for job, (sr, seed) in enumerate([("none", 0), ("bicubic", 0), ("none", 1), ("bicubic", 1)]):
        fake_run(root / str(job), rng.random(200) < 0.8, seed, sr)
        (root / str(job) / ".hydra").mkdir()
        (root / str(job) / ".hydra/overrides.yaml").write_text(f"- sr={sr}\n- seed={seed}\n")
        (root / str(job) / "checkpoints").mkdir()
        (root / str(job) / "checkpoints/last.ckpt").write_bytes(b"weights" * 100)
    (root / "4").mkdir()  # started, not finished: a checkpoint, no metrics.json
    (root / "4/checkpoints").mkdir()
    (root / "4/checkpoints/last.ckpt").write_bytes(b"weights")


def test_pack_and_unpack_give_the_same_report_without_weights(tmp_path):
    sweep, archive, elsewhere = tmp_path / "sweep", tmp_path / "archive", tmp_path / "elsewhere"
    _sweep(sweep)
    assert pack(sweep, archive) == {"written": ["0", "1", "2", "3"], "unchanged": [], "unfinished": ["4"]}
    assert sorted(p.name for p in archive.iterdir()) == [f"{j}.json.gz" for j in range(4)] + ["multirun.yaml"]
    first = {p.name: p.read_bytes() for p in archive.iterdir()}
    assert pack(sweep, archive)["unchanged"] == ["0", "1", "2", "3"]  # re-packing writes the same bytes
    assert {p.name: p.read_bytes() for p in archive.iterdir()} == first
    # a resume that skips job 0 rewrites its Hydra record: the archive keeps the record of the run that trained;
    # a job whose result changed is packed again
    (sweep / "0/.hydra/overrides.yaml").write_text("- sr=none\n- seed=0\n- ckpt_path=last\n")
    metrics = json.loads((sweep / "1/metrics.json").read_text())
    (sweep / "1/metrics.json").write_text(json.dumps({**metrics, "note": "retrained"}))
    assert pack(sweep, archive) == {"written": ["1"], "unchanged": ["0", "2", "3"], "unfinished": ["4"]}
    assert (archive / "0.json.gz").read_bytes() == first["0.json.gz"]
    assert (archive / "1.json.gz").read_bytes() != first["1.json.gz"]
    (sweep / "0/.hydra/overrides.yaml").write_text("- sr=none\n- seed=0\n")
    (sweep / "1/metrics.json").write_text(json.dumps(metrics))
    pack(sweep, archive)

    assert unpack(archive, elsewhere) == {"restored": ["0", "1", "2", "3"], "kept": []}
    assert not list(elsewhere.glob("**/*.ckpt")) and not (elsewhere / "4").exists()
    for job in "0123":
        assert finished_run(elsewhere / job) == finished_run(sweep / job) is not None  # resume skips these jobs
        for name in ("test_predictions.csv", ".hydra/overrides.yaml"):
            assert (elsewhere / job / name).read_bytes() == (sweep / job / name).read_bytes()
    compare(sweep)
    compare(elsewhere)
    assert json.loads((elsewhere / "comparison.json").read_text()) == json.loads(
        (sweep / "comparison.json").read_text()
    )


def test_unpack_keeps_finished_jobs_and_refuses_another_sweep(tmp_path):
    sweep, archive = tmp_path / "sweep", tmp_path / "archive"
    _sweep(sweep)
    pack(sweep, archive)
    (sweep / "0/metrics.json").write_text('{"test": {"test/accuracy": 0.5}, "run": {}}')  # a newer result here
    assert unpack(archive, sweep) == {"restored": [], "kept": ["0", "1", "2", "3"]}
    assert json.loads((sweep / "0/metrics.json").read_text())["test"]["test/accuracy"] == 0.5
    resumed = _multirun("sr=none,bicubic", "seed=0,1", "ckpt_path=last", "hydra.sweep.dir=x")
    (sweep / "multirun.yaml").write_text(resumed)  # what a resume writes: the same sweep
    assert unpack(archive, sweep)["kept"] == ["0", "1", "2", "3"]
    (sweep / "multirun.yaml").write_text(_multirun("sr=none", "seed=0,1"))
    with pytest.raises(ValueError, match="another sweep than"):
        unpack(archive, sweep)
    with pytest.raises(ValueError, match="another sweep than"):
        pack(sweep, archive)


def test_script_names_the_folder_that_is_not_a_sweep(tmp_path):
    proc = subprocess.run(
        [sys.executable, "scripts/sweep_archive.py", "pack", str(tmp_path), str(tmp_path / "a")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and f"{tmp_path}: not a sweep folder" in proc.stderr
