"""Reproducibility, interruption and resume, provenance, run folders, concurrent caches, DDP, joblib sweeps."""

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml
from hydra.utils import instantiate

from tests.helpers import REPO_ROOT, TINY, compose_config
from wbc.cache import cached_array
from wbc.data.datamodule import build_datamodule
from wbc.provenance import git_state
from wbc.reports.archive import pack, unpack
from wbc.resume import find_previous_run, resume_arguments

DETERMINISTIC = [*TINY, "trainer.max_epochs=3", "trainer.deterministic=true", "logger=none"]


def train(tmp_path, run_dir, *overrides, check=True):
    env = {**os.environ, "WBC_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "train.py", *overrides]
    if run_dir is not None:
        cmd.append(f"hydra.run.dir={run_dir}")
    # Ctrl-C reaches a run started from a terminal; a shell without job control starts background commands with
    # SIGINT ignored, and the child would inherit that: give it the terminal's default, whatever started pytest
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_two_runs_give_identical_metrics(tmp_path):
    train(tmp_path, tmp_path / "a", *DETERMINISTIC)
    train(tmp_path, tmp_path / "b", *DETERMINISTIC)
    a, b = (tmp_path / "a/metrics.json").read_text(), (tmp_path / "b/metrics.json").read_text()
    assert a == b
    metrics = json.loads(a)
    assert metrics["epochs"] == 3
    # what train.py returns to a sweeper: the best validation macro-F1 over the epochs, never a test metric
    best = max(metrics["history"], key=lambda h: h["val/f1_macro"])
    assert metrics["optimized"] == {"metric": "val/f1_macro", "value": best["val/f1_macro"], "epoch": best["epoch"]}


@pytest.mark.slow
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(tmp_path, sig):
    train(tmp_path, tmp_path / "straight", *DETERMINISTIC)
    stop = ["+callbacks.stop._target_=tests.helpers.SignalAt", "+callbacks.stop.epoch=1",
            "+callbacks.stop.batch=1", f"+callbacks.stop.signal={sig}"]  # fmt: skip
    interrupted = train(tmp_path, tmp_path / "cut", *DETERMINISTIC, *stop, check=False)
    assert not (tmp_path / "cut/metrics.json").exists(), interrupted.stderr[-2000:]
    # not a success for a scheduler or a script: 128 + the signal number, as a shell reports a killed process
    assert interrupted.returncode == {"SIGTERM": 143, "SIGINT": 130}[sig], interrupted.stderr[-2000:]
    assert f"continue with: python train.py resume={tmp_path / 'cut'}" in interrupted.stdout + interrupted.stderr
    assert (tmp_path / "cut/checkpoints/interrupted.ckpt").is_file()
    assert (tmp_path / "cut/checkpoints/last.ckpt").is_file()  # the end of epoch 0
    train(tmp_path, None, f"resume={tmp_path / 'cut'}")
    resumed = json.loads((tmp_path / "cut/metrics.json").read_text())
    straight = json.loads((tmp_path / "straight/metrics.json").read_text())
    assert resumed == straight
    assert json.loads((tmp_path / "cut/run.json").read_text())["resumed_from"].endswith("last.ckpt")


def test_ckpt_path_last_finds_the_latest_run_of_the_same_configuration(tmp_path):
    def make_run(name, overrides, ckpt=True, age=0.0):
        folder = tmp_path / "2026-01-01" / name
        (folder / ".hydra").mkdir(parents=True)
        (folder / ".hydra/overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
        if ckpt:
            (folder / "checkpoints").mkdir()
            (folder / "checkpoints/last.ckpt").write_bytes(b"x")
        os.utime(folder, (time.time() - age, time.time() - age))
        return folder

    old = make_run("old", ["seed=1", "sr=edsr"], age=100)
    new = make_run("new", ["sr=edsr", "seed=1"], age=10)
    make_run("newest_no_ckpt", ["seed=1", "sr=edsr"], ckpt=False)
    make_run("other", ["seed=2", "sr=edsr"])
    assert find_previous_run(["seed=1", "sr=edsr", "ckpt_path=last"], tmp_path) == new
    args = resume_arguments(["sr=edsr", "seed=1", "ckpt_path=last"], tmp_path)
    assert args[-1] == f"hydra.run.dir={new}"
    with pytest.raises(SystemExit, match="no earlier run"):
        resume_arguments(["seed=3", "ckpt_path=last"], tmp_path)
    resumed = resume_arguments([f"resume={old}", "trainer.max_epochs=9"], tmp_path)
    assert set(resumed) >= {"seed=1", "sr=edsr", "trainer.max_epochs=9", "ckpt_path=last", f"hydra.run.dir={old}"}
    assert resume_arguments(["-m", "seed=1,2"], tmp_path) == ["-m", "seed=1,2"]


@pytest.mark.slow
def test_run_records_provenance(tmp_path):
    train(tmp_path, tmp_path / "r", *TINY, "logger=none", "trainer.max_epochs=1")
    info = json.loads((tmp_path / "r/run.json").read_text())
    assert len(info["git"]["commit"]) == 40 or info["git"]["commit"] == "not a git checkout"
    assert {"torch", "lightning", "torchmetrics", "hydra-core", "albumentations"} <= set(info["versions"])
    assert info["epoch_seconds"] and info["fit_seconds"] > 0
    assert (tmp_path / "r/config.yaml").read_text().count("image_size: 32") >= 1
    assert git_state(tmp_path) == {"commit": "not a git checkout"}


def test_runs_started_together_get_different_folders():
    cmd = [sys.executable, "train.py", "--cfg", "hydra", "--resolve", "-p", "hydra.run.dir"]
    procs = [subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    dirs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert all(d.startswith("outputs/runs/") for d in dirs) and dirs[0] != dirs[1]


def _fill_cache(path, marker_dir, index, crash):
    def compute():
        (marker_dir / f"computed-{index}").touch()
        if crash:
            os.kill(os.getpid(), signal.SIGKILL)  # dies mid-computation, holding the lock
        time.sleep(0.5)
        return np.full((50, 8, 8, 3), 7, np.uint8), {"keys": ["a"]}

    array, meta = cached_array(path, compute)
    assert array.shape == (50, 8, 8, 3) and int(array[0, 0, 0, 0]) == 7 and meta == {"keys": ["a"]}


def test_concurrent_and_crashed_cache_writers(tmp_path):
    ctx = mp.get_context("fork")
    crasher = ctx.Process(target=_fill_cache, args=(tmp_path / "c.npy", tmp_path, 0, True))
    crasher.start()
    crasher.join(60)
    assert crasher.exitcode == -signal.SIGKILL
    assert not (tmp_path / "c.npy").exists()  # nothing half-written is left behind
    writers = [ctx.Process(target=_fill_cache, args=(tmp_path / "c.npy", tmp_path, i, False)) for i in (1, 2)]
    for w in writers:
        w.start()
    for w in writers:
        w.join(60)
    assert [w.exitcode for w in writers] == [0, 0]
    assert len(list(tmp_path.glob("computed-*"))) == 2  # the crashed one and exactly one of the two writers
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_gives_correct_metrics(tmp_path):
    run = tmp_path / "ddp"
    train(tmp_path, run, *TINY, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "logger=none",
          "data.source.n_per_class=25")  # fmt: skip
    metrics = json.loads((run / "metrics.json").read_text())
    # the same checkpoint evaluated in one process on the same test split
    cfg = compose_config([*TINY, "data.source.n_per_class=25"], tmp_path)
    from wbc.models.module import WBCClassifier

    datamodule = build_datamodule(cfg.data, restorer=instantiate(cfg.sr), seed=0)
    datamodule.setup()
    best = torch.load(run / "checkpoints/best.ckpt", map_location="cpu", weights_only=True)
    model = WBCClassifier(**best["hyper_parameters"])
    model.load_state_dict(best["state_dict"])
    model.eval()
    with torch.no_grad():
        for x, y, _ in datamodule.test_dataloader():
            model.test_metrics.update(model(x).softmax(1), y)
    single = model.test_metrics.compute()
    assert metrics["data"]["test"] == 16  # round(25 x 0.15) = 4 per class; 8 per rank, each image once
    for name in ("accuracy", "f1_macro", "specificity/Monocyte", "auroc_macro"):
        assert metrics["test"][f"test/{name}"] == pytest.approx(single[name], abs=1e-6), name
    assert torch.equal(torch.tensor(metrics["test_confusion_matrix"]), model.test_metrics.confusion_matrix())


@pytest.mark.slow
def test_joblib_launcher_runs_a_parallel_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    env = {**os.environ, "WBC_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "train.py", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=0,1",
           *TINY, "trainer.max_epochs=1", "logger=none", f"hydra.sweep.dir={sweep}"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seeds = sorted(json.loads((sweep / str(i) / "metrics.json").read_text())["run"]["seed"] for i in (0, 1))
    assert seeds == [0, 1] and (sweep / "comparison.md").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("how", ["resume", "requeue"])
def test_interrupted_sweep_resumes_with_one_command(tmp_path, how):
    """A two-job sweep killed (SIGTERM) during job 2, then resumed with `-m resume=<sweep folder>`, or its jobs
    run again as SLURM requeues them (same overrides and folder, SLURM_RESTART_COUNT set): job 1 is skipped, job 2
    continues from its checkpoint in its own folder, and both end as in an uninterrupted sweep."""
    env = {**os.environ, "WBC_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}

    def sweep(folder, epochs, *extra, **more_env):
        cmd = [sys.executable, "train.py", "-m", *DETERMINISTIC, "+callbacks.stop._target_=tests.helpers.SignalAt",
               "+callbacks.stop.batch=1", f"+callbacks.stop.epoch={epochs}", *extra]  # fmt: skip
        if folder is not None:
            cmd.append(f"hydra.sweep.dir={folder}")
        return subprocess.run(cmd, cwd=REPO_ROOT, env={**env, **more_env}, capture_output=True, text=True, timeout=600)

    straight, cut = tmp_path / "straight", tmp_path / "cut"
    assert sweep(straight, "98,99").returncode == 0  # the signal never fires: 3 epochs
    killed = sweep(cut, "99,1")  # job 1 (the second) is signalled in its epoch 1
    assert killed.returncode == 143, killed.stderr[-2000:]
    assert f"continue with: python train.py -m resume={cut}" in killed.stdout + killed.stderr
    assert (cut / "0/metrics.json").is_file() and not (cut / "1/metrics.json").exists()
    finished = (cut / "0/metrics.json").read_bytes()
    if how == "resume":
        cmd = [sys.executable, "train.py", "-m", f"resume={cut}"]
        resumed = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    else:
        resumed = sweep(cut, "99,1", SLURM_RESTART_COUNT="1")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "holds a finished run: skipped" in resumed.stdout + resumed.stderr
    assert (cut / "0/metrics.json").read_bytes() == finished  # not trained again
    assert json.loads((cut / "1/run.json").read_text())["resumed_from"].endswith("last.ckpt")
    for job in ("0", "1"):
        assert json.loads((cut / job / "metrics.json").read_text()) == json.loads(
            (straight / job / "metrics.json").read_text()
        )
    assert (cut / "comparison.md").is_file()
    assert not list(tmp_path.glob("[0-9]*"))  # nothing written beside the sweep folders
    if how == "resume":  # the sweep's results moved without weights to another folder (machine): nothing retrained
        moved = tmp_path / "moved"
        assert pack(cut, tmp_path / "archive")["written"] == ["0", "1"]
        assert unpack(tmp_path / "archive", moved)["restored"] == ["0", "1"]
        cmd = [sys.executable, "train.py", "-m", f"resume={moved}"]
        again = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert again.returncode == 0, again.stderr[-3000:]
        assert (again.stdout + again.stderr).count("holds a finished run: skipped") == 2
        assert not list(moved.glob("**/*.ckpt")) and (moved / "comparison.md").is_file()
        assert (moved / "comparison.csv").read_text() == (cut / "comparison.csv").read_text()


def test_ckpt_path_last_finds_the_latest_sweep_of_the_same_overrides(tmp_path):
    def make_sweep(name, task, age=0.0):
        folder = tmp_path / "multirun" / "2026-01-01" / name
        folder.mkdir(parents=True)
        (folder / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"overrides": {"task": task}}}))
        os.utime(folder / "multirun.yaml", (time.time() - age, time.time() - age))
        return folder

    old = make_sweep("old", ["sr=none,espcn", "seed=0,1"], age=100)
    new = make_sweep("new", ["seed=0,1", "sr=none,espcn"], age=10)
    make_sweep("other", ["sr=none,edsr"])
    runs = tmp_path / "runs"
    args = resume_arguments(["-m", "sr=none,espcn", "seed=0,1", "ckpt_path=last"], runs)
    assert args[-1] == f"hydra.sweep.dir={new}"
    with pytest.raises(SystemExit, match="no earlier sweep"):
        resume_arguments(["-m", "sr=bicubic", "ckpt_path=last"], runs)
    resumed = resume_arguments(["-m", f"resume={old}", "trainer.max_epochs=9"], runs)
    assert resumed[0] == "-m" and f"hydra.sweep.dir={old}" in resumed and "ckpt_path=last" in resumed
    assert set(resumed) >= {"sr=none,espcn", "seed=0,1", "trainer.max_epochs=9"}
    assert not any(a.startswith("resume=") for a in resumed)
    with pytest.raises(SystemExit, match="not a sweep folder"):
        resume_arguments(["-m", f"resume={tmp_path}"], runs)


def test_cache_lock_waits_and_times_out_with_the_file_named(tmp_path):
    from wbc.cache import file_lock

    held, release = mp.get_context("fork").Event(), mp.get_context("fork").Event()

    def hold():
        with file_lock(tmp_path / "entry"):
            held.set()
            release.wait(10)

    holder = mp.get_context("fork").Process(target=hold)
    holder.start()
    assert held.wait(10)
    with pytest.raises(TimeoutError, match="entry.lock: still locked"):
        with file_lock(tmp_path / "entry", timeout=0.2):
            pass
    release.set()
    holder.join(10)
    with file_lock(tmp_path / "entry", timeout=5):  # free again once the holder is gone
        pass
