"""Every config group option composes and instantiates; Hydra's command line works as Hydra users expect."""

import json
import os
import subprocess
import sys

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tests.helpers import CONF_DIR, REPO_ROOT, compose_config
from wbc.data.datamodule import WBCDataModule, build_datamodule
from wbc.models.module import WBCClassifier
from wbc.sr.stage import SuperResolver


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def test_groups_exist():
    for group in ("data", "sr", "model", "trainer", "logger", "callbacks", "experiment", "hydra", "paths"):
        assert (CONF_DIR / group).is_dir(), group
    assert {"none", "bicubic", "espcn", "edsr"} <= set(options("sr"))
    assert {"cnn", "resnet18", "efficientnet_b0"} <= set(options("model"))
    assert {"default", "cpu", "gpu", "ddp"} <= set(options("trainer"))


@pytest.mark.parametrize("option", options("data"))
def test_data_options(option, tmp_path, pbc_root):
    overrides = [f"data={option}"] + ([f"data.root={pbc_root}"] if option in ("folder", "pbc") else [])
    cfg = compose_config(overrides, tmp_path)
    dm = build_datamodule(cfg.data, restorer=instantiate(cfg.sr), seed=0)
    assert isinstance(dm, WBCDataModule)
    assert dm.class_names == list(cfg.class_names)


@pytest.mark.parametrize("option", options("sr"))
def test_sr_options(option, tmp_path):
    cfg = compose_config([f"sr={option}", "data.lr_scale=4"], tmp_path)
    resolver = instantiate(cfg.sr)
    assert isinstance(resolver, SuperResolver)
    assert resolver.method == option.split("_")[0] and resolver.scale == 4


@pytest.mark.parametrize("option", options("model"))
def test_model_options(option, tmp_path):
    cfg = compose_config([f"model={option}"], tmp_path)
    model = instantiate(cfg.model, class_names=list(cfg.class_names))
    assert isinstance(model, WBCClassifier)
    logits = model(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    assert logits.shape == (2, 4)


@pytest.mark.parametrize("option", options("trainer"))
def test_trainer_options(option, tmp_path):
    cfg = compose_config([f"trainer={option}"], tmp_path)
    if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        pytest.skip("no GPU here; composing is checked, instantiating needs CUDA")
    assert isinstance(instantiate(cfg.trainer), L.Trainer)


@pytest.mark.parametrize("group", ["logger", "callbacks"])
def test_logger_and_callback_options(group, tmp_path):
    for option in options(group):
        cfg = compose_config([f"{group}={option}"], tmp_path)
        node = cfg.get(group) or {}
        objects = [instantiate(c) for c in node.values()]
        assert all(o is not None for o in objects)


@pytest.mark.parametrize("option", options("experiment"))
def test_experiment_options(option, tmp_path, pbc_root):
    cfg = compose_config([f"experiment={option}", f"data.root={pbc_root}"], tmp_path)
    assert cfg.data and cfg.model and cfg.trainer


def test_robustness_ablation_recipes_compose(tmp_path, pbc_root):
    """Every recipe of scripts/robustness_ablation.py is a valid command: it composes, its augmentation and its
    classifier build, and each override lands where it is meant to."""
    import runpy

    recipes = runpy.run_path(str(REPO_ROOT / "scripts" / "robustness_ablation.py"), run_name="recipes")["RECIPES"]
    for name, overrides in recipes.items():
        cfg = compose_config(["experiment=pbc_robust", f"data.root={pbc_root}", *overrides], tmp_path)
        augment = instantiate(cfg.data.augment)
        model = instantiate(cfg.model, class_names=["a", "b", "c", "d"])
        full = name.startswith("pbc_robust")  # the experiment: white balance and MixStyle (+ random convolutions)
        assert ("dyes" in name) == (augment.get("dyes") is not None), name
        assert ("mixstyle" in name or full) == bool(cfg.model.mixstyle), name
        assert ("white" in name or full) == (cfg.data.stain == "white"), name
        assert cfg.calibrate == ("shifted" if full else True), name
        assert ("ibn" in name) == cfg.model.net.ibn, name
        assert ("dsu" in name) == (cfg.model.mixstyle is not None and cfg.model.mixstyle.mode == "dsu"), name
        assert ("ema" in name) == ("weight_averaging" in cfg.callbacks), name
        # 20 epochs (+ a change)
        changed = ("field24", "balanced", "ampmix")
        twenty = {"pbc_robust", "pbc_robust_e20", *(f"pbc_robust+{x}" for x in changed)}
        recipe = name in ("pbc_robust_e12", *twenty)  # the experiment, at 12 or 20 epochs
        assert (recipe or "+randconv" in name) == bool(cfg.model.randconv), name
        assert not recipe or cfg.model.randconv.p == 0.25
        assert cfg.trainer.max_epochs == (20 if name in twenty else 12), name
        assert cfg.data.field_um == (24 if "field24" in name else 30), name
        assert cfg.data.image_size == (96 if name == "pbc_robust" else 64), name
        assert cfg.data.sampler == ("weighted" if "balanced" in name else None), name
        assert bool(cfg.model.ampmix) == ("ampmix" in name) and (not model.ampmix or model.ampmix["p"] == 0.5), name
        assert cfg.tta, name  # every recipe is also tested with the eight flips/rotations (metrics.json test_tta)
        assert cfg.prior == "folder", name  # predicted under each folder's own class mix (prior=auto)
        assert cfg.callbacks.early_stopping is None or not full, name  # fixed epochs in every pbc_robust recipe
        assert isinstance(model, WBCClassifier)


def _hydra(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "train.py", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow
def test_help_and_cfg_job():
    help_out = _hydra("--help")
    assert help_out.returncode == 0
    for group in ("data", "sr", "model", "trainer"):
        assert f"{group}:" in help_out.stdout
    job = _hydra("--cfg", "job", "sr=bicubic", "data.lr_scale=2")
    assert job.returncode == 0, job.stderr
    assert "method: bicubic" in job.stdout and "lr_scale: 2" in job.stdout


def test_readme_folder_command_fits_a_real_layout(tmp_path, lisc_root):
    readme = (REPO_ROOT / "README.md").read_text()
    line = next(x for x in readme.splitlines() if "'data.source.class_map=" in x).strip()
    override = line.strip("'")
    cfg = compose_config(["data=folder", f"data.root={lisc_root}", override], tmp_path)
    assert cfg.data.source.class_map["basophil"] == "Eosinophil/Basophil"
    source = instantiate(cfg.data.source)
    assert len(source.scan()) == 1287 and source.unknown_folders == {}  # every LISC folder maps


def test_readme_run_folders_match_the_config():
    readme = (REPO_ROOT / "README.md").read_text()
    dirs = (CONF_DIR / "hydra" / "default.yaml").read_text()
    assert "${now:%H-%M-%S}_${pid:}" in dirs and "outputs/runs/<date>/<time>_<pid>/" in readme
    assert "<date>/<time>/" not in readme and "<date>/<time>`" not in readme


@pytest.mark.parametrize("launcher", ["joblib", "slurm"])
def test_launcher_options_compose(launcher):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose("train", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
    target = cfg.hydra.launcher._target_
    assert target.endswith({"joblib": "JoblibLauncher", "slurm": "SlurmLauncher"}[launcher])
    if launcher == "slurm":
        assert cfg.hydra.launcher.timeout_min == 240 and cfg.hydra.launcher.gpus_per_node == 1


@pytest.mark.parametrize(
    "option, expected",
    [
        ("fdr", {"trainer.fast_dev_run": True}),
        ("overfit", {"trainer.overfit_batches": 3, "trainer.max_epochs": 20, "callbacks.early_stopping": None}),
        ("limit", {"trainer.limit_train_batches": 4, "trainer.max_epochs": 3}),
        ("profiler", {"trainer.profiler": "simple", "trainer.max_epochs": 1}),
    ],
)
def test_debug_configs(option, expected, tmp_path):
    cfg = compose_config([f"debug={option}", "trainer=gpu"], tmp_path)
    for key, value in expected.items():
        assert OmegaConf.select(cfg, key) == value, key
    # every debug run: the CPU whatever the command line chose before, no loggers, no workers, anomaly detection
    assert (cfg.trainer.accelerator, cfg.trainer.devices, cfg.logger, cfg.data.num_workers) == ("cpu", 1, None, 0)
    assert cfg.trainer.detect_anomaly is True
    if option == "overfit":
        assert not cfg.data.augment  # the same batches, unaugmented, every epoch


@pytest.mark.slow
def test_debug_overfit_fits_its_batches(tmp_path):
    """debug=overfit trains on 3 fixed batches: a working model reaches a training accuracy of about 1."""
    env = {**os.environ, "WBC_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "train.py", "debug=overfit", "data.source.n_per_class=24", "data.image_size=32",
           f"hydra.run.dir={tmp_path / 'run'}"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    history = json.loads((tmp_path / "run/metrics.json").read_text())["history"]
    assert len(history) == 20 and history[-1]["train/accuracy"] >= 0.95 > history[0]["train/accuracy"]
