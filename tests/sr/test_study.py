"""data.lr_scale=auto, the CPU-sized default EDSR, and the options a run is recorded under (Hydra's choices)."""

import logging

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf, open_dict

import wbc
from tests.helpers import CONF_DIR
from wbc.sr.study import resolve_lr_scale, run_choices, sweeps_sr
from wbc.train import describe


def composed(overrides, mode=None, task=None, tmp_path=None):
    """The train config as Hydra composes it for a job (``mode``, ``task``: what a multirun job would have);
    data.lr_scale left as composed (``auto`` unless given)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        if mode is not None:
            cfg.hydra.mode = mode
        cfg.hydra.overrides.task = list(task if task is not None else overrides)
        if tmp_path is not None:
            cfg.paths.cache_dir = str(tmp_path / "cache")
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        del cfg.hydra
    return cfg


def test_default_is_auto_and_train_py_stays_the_reference(caplog):
    cfg = composed([])
    assert cfg.data.lr_scale == "auto"
    with caplog.at_level(logging.INFO, logger="wbc.sr.study"):
        why = resolve_lr_scale(cfg)
    assert cfg.data.lr_scale == 1 and isinstance(cfg.data.lr_scale, int)
    assert "reference" in why and "data.lr_scale=auto -> 1" in caplog.text
    assert cfg.sr.scale == 1  # sr.scale follows data.lr_scale


@pytest.mark.parametrize("option", sorted(p.stem for p in (CONF_DIR / "sr").glob("*.yaml") if p.stem != "none"))
def test_an_sr_method_runs_the_study_factor(option, caplog):
    cfg = composed([f"sr={option}"])
    with caplog.at_level(logging.INFO, logger="wbc.sr.study"):
        why = resolve_lr_scale(cfg)
    assert cfg.data.lr_scale == 4 == cfg.sr_study_scale and cfg.sr.scale == 4
    assert f"sr={cfg.sr.method}" in why and "data.lr_scale=auto -> 4" in caplog.text
    cfg = composed([f"sr={option}", "sr_study_scale=8"])
    resolve_lr_scale(cfg)
    assert cfg.data.lr_scale == 8


def test_every_job_of_a_multirun_over_sr_runs_at_the_study_factor():
    # python train.py -m sr=none,espcn,edsr: the sr=none job too
    cfg = composed(["sr=none"], mode=RunMode.MULTIRUN, task=["sr=none"])
    assert sweeps_sr()
    why = resolve_lr_scale(cfg)
    assert cfg.data.lr_scale == 4 and "multirun over sr" in why
    # sweeper params (experiment files) arrive as task overrides too
    cfg = composed(["sr=none"], mode=RunMode.MULTIRUN, task=["seed=1", "sr=none"])
    resolve_lr_scale(cfg)
    assert cfg.data.lr_scale == 4
    # a multirun that does not choose sr (seeds, models) stays at the reference; so does a single sr=none run
    for mode, task in ((RunMode.MULTIRUN, ["seed=1"]), (RunMode.MULTIRUN, ["sr.train.steps=5"]), (RunMode.RUN, [])):
        cfg = composed(["sr=none"], mode=mode, task=task)
        resolve_lr_scale(cfg)
        assert cfg.data.lr_scale == 1, (mode, task)


def test_explicit_values_are_kept_and_bad_ones_refused():
    for overrides, expected in ((["sr=espcn", "data.lr_scale=2"], 2), (["sr=espcn", "data.lr_scale=1"], 1)):
        cfg = composed(overrides, mode=RunMode.MULTIRUN, task=overrides)
        assert resolve_lr_scale(cfg) is None and cfg.data.lr_scale == expected
    cfg = composed(["data.lr_scale=AUTO", "sr=espcn"])
    resolve_lr_scale(cfg)
    assert cfg.data.lr_scale == 4
    for bad in ("two", "0", "2.5"):
        cfg = composed([f"data.lr_scale={bad}"])
        with pytest.raises(ValueError, match="integer >= 1 or 'auto'"):
            resolve_lr_scale(cfg)
    cfg = composed(["sr=espcn", "data.image_size=30"])
    with pytest.raises(ValueError, match="not divisible"):
        resolve_lr_scale(cfg)


def test_a_resumed_run_keeps_its_recorded_factor(tmp_path):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"data": {"lr_scale": 4}}))
    cfg = composed(["sr=none", f"resume={tmp_path}"])  # a multirun job's sr=none, resumed as a single run
    why = resolve_lr_scale(cfg)
    assert cfg.data.lr_scale == 4 and "multirun over sr" in why  # the reason the job gave: identical metrics.json
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"data": {"lr_scale": 1}}))
    cfg = composed(["sr=none", f"resume={tmp_path}"])
    assert resolve_lr_scale(cfg) == "sr=none: the high-resolution reference" and cfg.data.lr_scale == 1
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"data": {"lr_scale": 2}}))
    cfg = composed(["sr=espcn", f"resume={tmp_path}"])
    assert "resumed" in resolve_lr_scale(cfg) and cfg.data.lr_scale == 2


def test_edsr_is_sized_for_the_device():
    assert wbc.on_gpu("cuda:0", 16, 4) == 16 and wbc.on_gpu("cpu", 16, 4) == 4
    for device, expected in (("cpu", (4, 32)), ("cuda", (16, 64))):
        cfg = composed(["sr=edsr", f"sr.device={device}"])
        assert (cfg.sr.arch.n_resblocks, cfg.sr.arch.n_feats) == expected
    for device in ("cpu", "cuda"):
        full, small = composed(["sr=edsr_full", f"sr.device={device}"]), composed(["sr=edsr_small"])
        assert (full.sr.arch.n_resblocks, full.sr.arch.n_feats) == (16, 64)
        assert (small.sr.arch.n_resblocks, small.sr.arch.n_feats) == (4, 32)
    # the resolved size is what config.yaml and the SR stage get
    cfg = composed(["sr=edsr", "sr.device=cpu"])
    assert OmegaConf.to_container(cfg.sr.arch, resolve=True) == {"n_resblocks": 4, "n_feats": 32, "res_scale": 0.1}


def test_runs_are_recorded_under_their_options(tmp_path):
    cfg = composed(["sr=edsr_small", "model=resnet18"])
    resolve_lr_scale(cfg)
    run = describe(cfg, "why")
    assert run["sr"] == "edsr_small" and run["sr_method"] == "edsr" and run["model"] == "resnet18"
    assert run["choices"] == {"data": "synthetic", "model": "resnet18", "sr": "edsr_small"}
    assert run["lr_scale"] == 4 and run["lr_scale_auto"] == "why"
    assert run["sr_arch"]["n_resblocks"] == 4
    # a folder source without a name is its data option, not "synthetic"
    cfg = composed(["data=folder", f"data.root={tmp_path}", "~data.source.name"])
    resolve_lr_scale(cfg)
    run = describe(cfg)
    assert run["data"] == "folder" and run["source"] == "folder"
    # outside Hydra (a config composed by hand): the names the config itself holds
    GlobalHydra.instance().clear()
    HydraConfig.instance().cfg = None
    assert run_choices(cfg) == {"data": "FolderSource", "model": "cnn", "sr": "none"}
