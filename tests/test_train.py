"""End to end: `python train.py` with tiny limits leaves every artefact a run promises."""

import csv
import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.helpers import REPO_ROOT, TINY


def run_train(tmp_path, *overrides: str, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "WBC_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1", **(extra_env or {})}
    cmd = [sys.executable, "train.py", *TINY, f"hydra.run.dir={tmp_path / 'run'}", *overrides]
    return subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_train_end_to_end(tmp_path):
    proc = run_train(tmp_path, "calibrate=shifted", "tta=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "run"
    for name in (
        "config.yaml",
        "split_manifest.csv",
        "metrics.json",
        "test_predictions.csv",
        "train.log",
        "confusion_matrix.png",
        "confusion_matrix_normalized.png",
        "per_class_metrics.png",
        "training_curves.png",
        "checkpoints/best.ckpt",
        "checkpoints/last.ckpt",
    ):
        assert (run / name).is_file(), name
        assert (run / name).stat().st_size > 0, name
    for png in run.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and len(metrics["history"]) == 2
    assert len(json.loads((run / "run.json").read_text())["epoch_seconds"]) == 2
    assert {"train/loss", "val/loss", "train/accuracy", "val/f1_macro", "train/f1_macro"} <= set(metrics["history"][1])
    test = metrics["test"]
    for name in (
        "test/accuracy",
        "test/balanced_accuracy",
        "test/f1_macro",
        "test/auroc_macro",
        "test/precision/Neutrophil",
        "test/recall/Lymphocyte",
        "test/specificity/Monocyte",
        "test/f1/Eosinophil/Basophil",
    ):
        assert name in test, name
    assert 0.0 <= test["test/accuracy"] <= 1.0
    assert test["test/f1_macro_n_classes"] == 4 and type(test["test/f1_macro_n_classes"]) is int  # all 4 present
    assert set(metrics["test_tta"]) == {k.replace("test/", "test_tta/") for k in test if k != "test/loss"}
    assert 0.0 <= metrics["calibration"]["test_tta_ece_after"] <= 1.0
    assert metrics["run"]["seed"] == 0 and metrics["run"]["split_seed"] == 0
    calibration = metrics["calibration"]
    assert calibration["data"] == "val + val under the training augmentation" and calibration["temperature"] > 0
    assert {k: v for k, v in metrics["data"].items() if k != "framing"} == {  # framing: see tests/data
        "train": 64,
        "val": 16,
        "test": 16,
        "excluded": 0,
        "unreadable": 0,
        "unreadable_files": [],
    }

    # the confusion matrix, the predictions file and the test metrics tell one story
    cm = torch.tensor(metrics["test_confusion_matrix"])
    rows = list(csv.DictReader((run / "test_predictions.csv").open()))
    assert len(rows) == cm.sum() == 16
    assert abs(sum(int(r["correct"]) for r in rows) / len(rows) - test["test/accuracy"]) < 1e-6
    assert cm.trace().item() == sum(int(r["correct"]) for r in rows)

    manifest = list(csv.DictReader((run / "split_manifest.csv").open()))
    assert len(manifest) == 96 and {r["split"] for r in manifest} == {"train", "val", "test"}

    ckpt = torch.load(run / "checkpoints/best.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["hyper_parameters"]["class_names"][3] == "Eosinophil/Basophil"
    assert ckpt["hyper_parameters"]["preprocessing"]["image_size"] == 32

    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0, "scalars": 0}).Reload()
    tags = events.Tags()
    assert {"train/loss", "val/f1_macro", "test/specificity/Monocyte"} <= set(tags["scalars"])
    assert {"figures/confusion_matrix", "figures/training_curves"} <= set(tags["images"])
    assert (run / "tensorboard" / "hparams.yaml").is_file()


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output and "Error executing job" not in output, output[-3000:]
    return [line for line in output.splitlines() if "ERROR" in line or line.startswith("error:")]


@pytest.mark.slow
def test_mistakes_give_one_line_that_says_what_to_do(tmp_path):
    def run_train(tmp_path, *overrides):  # as a user types it: no test limits
        cmd = [sys.executable, "train.py", f"hydra.run.dir={tmp_path / 'run'}", "logger=none", *overrides]
        env = {**os.environ, "WBC_CACHE_DIR": str(tmp_path / "cache")}
        return subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)

    no_root = run_train(tmp_path, "data=pbc")
    assert no_root.returncode == 2
    (line,) = error_lines(no_root)
    assert "data.root is required for data=pbc: the folder that holds the class folders (neutrophil/" in line

    wrong_key = run_train(tmp_path, "data=folder", f"data.root={tmp_path}", "data.class_map={neut: Neutrophil}")
    assert wrong_key.returncode != 0
    (line,) = error_lines(wrong_key)
    assert "there is no data.class_map: the key is data.source.class_map" in line

    bad_calibration = run_train(tmp_path, "calibrate=maybe")
    assert bad_calibration.returncode == 2
    (line,) = error_lines(bad_calibration)
    assert "calibrate must be true, false or shifted, got 'maybe'" in line

    for folder in ("neut", "lymp", "mixt"):  # folders that map onto no class without data.source.class_map
        (tmp_path / "cells" / folder).mkdir(parents=True)
        (tmp_path / "cells" / folder / "a.png").write_bytes(b"")
    unmapped = run_train(tmp_path, "data=folder", f"data.root={tmp_path / 'cells'}")
    assert unmapped.returncode == 2
    (line,) = error_lines(unmapped)
    assert "'data.source.class_map={lymp: Lymphocyte, mixt: <class>, neut: Neutrophil}'" in line


def test_optimized_metric_is_the_best_epoch_and_never_test():
    from wbc.errors import UserError
    from wbc.train import check_optimized_metric, optimized

    history = [
        {"epoch": 0, "val/f1_macro": 0.5, "val/loss": 0.9},
        {"epoch": 1, "val/f1_macro": 0.8, "val/loss": 0.7},
        {"epoch": 2, "val/f1_macro": 0.7, "val/loss": 0.6},
    ]
    assert optimized(history, "val/f1_macro") == {"metric": "val/f1_macro", "value": 0.8, "epoch": 1}
    assert optimized(history, "val/loss") == {"metric": "val/loss", "value": 0.6, "epoch": 2}  # a loss: lowest
    assert optimized(history, "val/auroc")["value"] is None
    check_optimized_metric("val/accuracy")
    with pytest.raises(UserError, match="never test"):
        check_optimized_metric("test/f1_macro")


@pytest.mark.slow
def test_optuna_search_selects_on_validation(tmp_path):
    """hparams_search=optuna with 2 trials: each trial returns its best validation macro-F1, and the study's best
    value is the best of the trials' (never a test metric)."""
    import yaml

    sweep = tmp_path / "sweep"
    env = {**os.environ, "WBC_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "train.py", "hparams_search=optuna", "hydra.sweeper.n_trials=2",
           "hydra.sweeper.sampler.n_startup_trials=2", *TINY, "logger=none", f"hydra.sweep.dir={sweep}"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = [json.loads((sweep / str(i) / "metrics.json").read_text()) for i in (0, 1)]
    lrs = [yaml.safe_load((sweep / str(i) / "config.yaml").read_text())["model"]["lr"] for i in (0, 1)]
    assert lrs[0] != lrs[1] and all(1e-4 <= lr <= 1e-2 for lr in lrs)  # sampled from the search space
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    best = max(t["optimized"]["value"] for t in trials)
    assert results["best_value"] == best
    assert all(t["optimized"]["value"] == max(h["val/f1_macro"] for h in t["history"]) for t in trials)


def test_hyperparameters_are_clean_and_the_layout_groups_classes(tmp_path):
    from tests.helpers import compose_config
    from wbc.loggers import hyperparameters, tensorboard_layout

    params = hyperparameters(compose_config(["data=pbc", "data.root=/somewhere", "tags=[a,b]"], tmp_path))
    assert not [k for k in params if k.rsplit(".", 1)[-1] in ("_target_", "_convert_", "root", "cache_dir")]
    assert params["tags"] == "a,b" and params["model.lr"] == 2.0e-3 and params["seed"] == 0
    assert all(isinstance(v, (int, float, str, bool)) for v in params.values())
    layout = tensorboard_layout()
    chart = layout["val: per class"]["val f1"]
    assert chart[0] == "Multiline" and chart[1] == ["^val/f1/[^/]+$"]


@pytest.mark.slow
def test_every_logger_gets_the_figures_and_hyperparameters(tmp_path):
    """'logger=[tensorboard,mlflow]': each logger's own reader shows the run's scalars, figures, clean
    hyperparameters (TensorBoard: with the headline metrics; a custom-scalars layout), nothing logged twice."""
    import mlflow
    from tensorboard.plugins.custom_scalar import layout_pb2

    env = {"WBC_MLFLOW_DIR": str(tmp_path / "mlflow")}
    proc = run_train(tmp_path, "logger=[tensorboard,mlflow]", "tags=[e2e]", extra_env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "run"

    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    events.Reload()
    tags = events.Tags()
    assert len(events.Scalars("test/accuracy")) == 1  # logged once
    assert "hparams/test/accuracy" in tags["scalars"] and "hparams/best_val/f1_macro" in tags["scalars"]
    layout = layout_pb2.Layout.FromString(events.Tensors("custom_scalars__config__")[0].tensor_proto.string_val[0])
    charts = {c.title: list(c.multiline.tag) for cat in layout.category for c in cat.chart}
    assert charts["test recall"] == ["^test/recall/[^/]+$"]

    client = mlflow.tracking.MlflowClient(f"sqlite:///{tmp_path / 'mlflow'}/mlflow.db")
    (found,) = client.search_runs([client.get_experiment_by_name("wbc").experiment_id])
    assert found.data.params["tags"] == "e2e" and found.data.params["data.image_size"] == "32"
    assert not [k for k in found.data.params if k.endswith(("_target_", "_convert_", "root", "cache_dir"))]
    assert {"val/f1_macro", "test/accuracy", "test/recall/Monocyte"} <= set(found.data.metrics)
    assert len(client.get_metric_history(found.info.run_id, "val/f1_macro")) == 2  # one per epoch
    figures = {a.path for a in client.list_artifacts(found.info.run_id, "figures")}
    assert {"figures/confusion_matrix.png", "figures/training_curves.png", "figures/per_class_metrics.png"} <= figures


def wandb_records(run_dir) -> dict[str, Any]:
    """An offline W&B run as its ``.wandb`` file holds it: the run record, config, last summary, history rows and
    files. The file is a LevelDB-style log (32 KiB blocks of chunks with a 7-byte header, after a 7-byte ``:W&B``
    file header) of wandb's own ``Record`` protobufs; wandb 0.31 no longer ships a Python reader of it."""
    from wandb.proto.wandb_internal_pb2 import Record

    (path,) = Path(run_dir).glob("*.wandb")
    data, pos, chunks = path.read_bytes(), 7, b""
    assert data[:4] == b":W&B"
    found: dict[str, Any] = {"run": None, "config": {}, "summary": {}, "history": [], "files": set()}
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        _checksum, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunks, pos = chunks + data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind not in (1, 4):  # 1: a whole record, 4: the last chunk of one; 2, 3: first and middle chunks
            continue
        record = Record.FromString(chunks)
        chunks = b""
        which = record.WhichOneof("record_type")
        items = {"config": record.config.update, "summary": record.summary.update, "history": record.history.item}
        values = {".".join(i.nested_key) or i.key: json.loads(i.value_json) for i in items.get(which, ())}
        if which == "run":
            found["run"] = record.run
        elif which == "history":
            found["history"].append(values)
        elif which in ("config", "summary"):
            found[which] |= values
        elif which == "files":
            found["files"] |= {f.path for f in record.files.files}
    return found


@pytest.mark.slow
def test_wandb_logger_offline(tmp_path):
    """'logger=[tensorboard,wandb]' offline, read back from the run's .wandb file with wandb's Record protobuf: the
    clean hyperparameters and tags, the test scalars of metrics.json, the val scalars per epoch, the figures."""
    pytest.importorskip("wandb", reason='logger=wandb needs wandb: pip install -e ".[wandb]"')
    env = {
        "WBC_WANDB_DIR": str(tmp_path / "wandb"),
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        **{f"WANDB_{v}_DIR": str(tmp_path / f"wandb-{v.lower()}") for v in ("CONFIG", "CACHE", "DATA", "ARTIFACT")},
    }
    env["WANDB_DIR"] = env["WBC_WANDB_DIR"]
    proc = run_train(tmp_path, "logger=[tensorboard,wandb]", "tags=[e2e]", extra_env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert (tmp_path / "run" / "tensorboard").is_dir()  # the other logger still logs

    (run_dir,) = (tmp_path / "wandb" / "wandb").glob("offline-run-*")
    found = wandb_records(run_dir)
    assert found["run"].project == "wbc" and list(found["run"].tags) == ["e2e"]
    config = found["config"]
    assert config["tags"] == "e2e" and config["data.image_size"] == 32 and config["model.lr"] == 2.0e-3
    assert not [k for k in config if k.rsplit(".", 1)[-1] in ("_target_", "_convert_", "root", "cache_dir")]
    summary = found["summary"]
    for name in ("test/accuracy", "test/f1_macro", "test/recall/Monocyte"):
        assert summary[name] == pytest.approx(metrics["test"][name], rel=1e-6, abs=1e-9), name
    assert len([h for h in found["history"] if "val/f1_macro" in h]) == 2  # one per epoch
    for name in ("confusion_matrix", "training_curves", "per_class_metrics"):
        assert summary[f"figures/{name}._type"] == "images/separated", name
        (png,) = summary[f"figures/{name}.filenames"]
        assert png in found["files"] and (run_dir / "files" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_missing_logger_package_is_named_with_its_install_command(monkeypatch):
    from omegaconf import OmegaConf

    from wbc.errors import UserError
    from wbc.loggers import check_installed

    group = OmegaConf.create({"tensorboard": {"_target_": "lightning.pytorch.loggers.TensorBoardLogger"},
                              "wandb": {"_target_": "lightning.pytorch.loggers.WandbLogger"}})  # fmt: skip
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    with pytest.raises(UserError, match=re.escape('logger=wandb needs the wandb package: pip install -e ".[wandb]"')):
        check_installed(group)
    check_installed(None)  # logger=none


@pytest.mark.slow
def test_gpu_check_script_writes_its_report(tmp_path):
    """scripts/gpu_check.sh on a CPU (its own check): finds what it needs installed, runs the steps asked for and
    writes one JSON with each step's exit status; an unknown step is refused."""
    cmd = ["bash", "scripts/gpu_check.sh", "--device", "cpu", "--steps", "env", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["device"] == "cpu" and report["failed_steps"] == [] and report["env"]["torch"] == torch.__version__
    bad = subprocess.run([*cmd[:-4], "--steps", "nope", "--out", str(tmp_path)], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert bad.returncode != 0 and "unknown step 'nope'" in bad.stderr


@pytest.mark.slow
def test_ema_callbacks_average_the_weights_that_are_checkpointed_and_predicted(tmp_path):
    """callbacks=ema: best.ckpt holds the moving average (the raw weights beside it, for resuming), and a
    Predictor built from it uses the average."""
    from tests.helpers import compose_config
    from wbc.predictor import Predictor
    from wbc.train import run

    cfg = compose_config([*TINY, "callbacks=ema", "logger=none", "callbacks.weight_averaging.decay=0.9"],
                         tmp_path)  # fmt: skip
    run(cfg)
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "best.ckpt", weights_only=True)
    average, raw = ckpt["state_dict"], ckpt["current_model_state"]
    weights = [k for k, v in average.items() if v.is_floating_point() and "weight" in k]
    assert weights and any(not torch.equal(average[k], raw[k]) for k in weights)
    predictor = Predictor.from_checkpoint(tmp_path / "run" / "checkpoints" / "best.ckpt", "cpu")
    for k, v in predictor.model.state_dict().items():
        if k in average:
            torch.testing.assert_close(v.cpu(), average[k])
