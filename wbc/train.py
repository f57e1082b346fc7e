"""The training recipe: seed -> data -> model -> callbacks, loggers, trainer -> fit -> test the best checkpoint.

A run folder gets config.yaml, split_manifest.csv, checkpoints/, metrics.json (deterministic: identical for two
runs of one configuration and seed with trainer.deterministic=true), run.json (provenance and timings),
test_predictions.csv, the figures and TensorBoard logs.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor
from omegaconf import DictConfig, OmegaConf

from wbc.calibration import calibrate_checkpoint, expected_calibration_error, rescale_probabilities
from wbc.callbacks import EpochTimer, InterruptCheckpoint, RNGState
from wbc.data.datamodule import build_datamodule
from wbc.errors import UserError
from wbc.loggers import add_tensorboard_layout, check_installed, finish, hyperparameters, log_hyperparameters
from wbc.metrics import reported
from wbc.prior import check_setting, split_prior
from wbc.provenance import provenance
from wbc.reports.artefacts import save_figures, write_json
from wbc.reports.plots import plot_framing_examples, save_figure
from wbc.reports.predictions import write_predictions
from wbc.sr.report import report_sr
from wbc.sr.study import resolve_lr_scale, run_choices

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train, test the best checkpoint, write the run's artefacts; return metrics.json's content."""
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    check_optimized_metric(cfg.get("optimized_metric", "val/f1_macro"))
    check_installed(cfg.get("logger"))
    if cfg.get("calibrate", True) not in (True, False, "shifted"):
        raise UserError(f"calibrate must be true, false or shifted, got {cfg.calibrate!r}")
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path is None and sweep_folder() and int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0:
        ckpt_path = "last"  # a sweep's SLURM job requeued after its time limit (submitit): continue in its folder
    if ckpt_path == "last" and (finished := finished_run(out)) is not None:
        log.info("%s holds a finished run: skipped (ckpt_path=last); its metrics.json is the result", out)
        return finished
    lr_scale_auto = resolve_lr_scale(cfg)  # data.lr_scale=auto -> an integer, before anything reads the config
    (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    identity = describe(cfg, lr_scale_auto)
    run_info = {
        **provenance(),
        "output_dir": str(out),
        "tags": list(cfg.get("tags") or []),
        "choices": identity["choices"],
    }
    if cfg.data.lr_scale == 1 and cfg.sr.method != "none" and not cfg.sr.get("native"):
        # Only with data.lr_scale=1 given explicitly (auto gives an SR method f=sr_study_scale): at f=1 there is
        # nothing to super-resolve and this run would repeat the sr=none reference. A sweep over sr x lr_scale
        # includes such points; skip them instead of spending a training run on a duplicate.
        log.warning(
            "sr=%s with data.lr_scale=1 given explicitly: nothing to super-resolve, the run would equal the sr=none "
            "reference; skipped (data.lr_scale=auto, the default, runs sr=%s at f=%s)",
            identity["sr"],
            identity["sr"],
            cfg.get("sr_study_scale", 4),
        )
        result = {"skipped": "sr at lr_scale=1 equals the sr=none reference", "run": identity}
        write_json(out / "metrics.json", result)
        write_json(out / "run.json", run_info)
        return result
    L.seed_everything(cfg.seed, workers=True)

    restorer = instantiate(cfg.sr)
    datamodule = build_datamodule(cfg.data, restorer=restorer, seed=cfg.seed)
    datamodule.setup("fit")
    datamodule.write_manifest(out / "split_manifest.csv")
    if datamodule.preprocessor.framing.locates:
        save_figure(plot_framing_examples(datamodule.framing_examples()), out / "framing_examples.png")

    sr_state = restorer.state()
    prior = cfg.get("prior", "train")
    prior = OmegaConf.to_object(prior) if OmegaConf.is_list(prior) else prior
    check_setting(prior, len(datamodule.class_names))  # a setting predict.py could not use fails now, not there
    balanced = cfg.data.get("sampler") == "weighted" or bool(cfg.model.get("class_weighted_loss"))
    model = instantiate(
        cfg.model,
        class_names=datamodule.class_names,
        class_counts=datamodule.train_class_counts,
        class_prior=split_prior(datamodule.train_class_counts, balanced),
        prior=prior,
        tta=bool(cfg.get("tta", False)),
        adapt_bn_layers=list(cfg.adapt_bn_layers) if cfg.get("adapt_bn_layers") is not None else None,
        preprocessing={
            "image_size": cfg.data.image_size,
            "lr_scale": cfg.data.lr_scale,
            "sr": {k: sr_state[k] for k in ("method", "scale", "backend", "arch", "native")},
            **datamodule.preprocessor.describe(),
            "train_um_per_px": datamodule.um_per_px,
            "train_cell_um": datamodule.cell_um,  # the white-cell ruler of folders without red cells (predict.py)
            "train_class_cell_um": datamodule.class_cell_um,  # per class: predict.py's check of a folder's ruler
        },
    )
    model.sr_state = sr_state  # the SR weights travel inside every checkpoint (see WBCClassifier)

    timer = EpochTimer()
    interrupt = InterruptCheckpoint(out / "checkpoints", sweep_dir=sweep_folder())
    callbacks = [timer, RNGState(), interrupt, *instantiate_all(cfg.get("callbacks"))]
    loggers = instantiate_all(cfg.get("logger"))
    if not loggers:  # Lightning refuses a learning-rate monitor without a logger; logger=none means "no logs"
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    add_tensorboard_layout(trainer.loggers)
    sr_metrics, sr_timing = (
        report_sr(*sr_test_images(datamodule), identity["sr"], out, trainer.loggers)
        if cfg.data.lr_scale > 1
        else (None, {})
    )
    ckpt_path = resume_checkpoint(out, ckpt_path, required=sweep_folder() is None)
    started = time.perf_counter()
    with interrupt.exit_status():  # 130 after Ctrl-C, 143 after SIGTERM, once the checkpoint is saved
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    history = list(model.history)  # before testing: loading the best checkpoint brings back that epoch's history
    best = getattr(trainer.checkpoint_callback, "best_model_path", "") or None
    calibration = None
    calibrate = cfg.get("calibrate", True)
    if calibrate and best and datamodule.samples["val"]:
        # the whole validation split in every process: each fits the same temperature, rank 0 writes it
        val = datamodule.calibration_batches(shifted=calibrate == "shifted")
        calibration = calibrate_checkpoint(model, val, best, write=trainer.is_global_zero)
        calibration["data"] = "val + val under the training augmentation" if calibrate == "shifted" else "val"
        trainer.strategy.barrier()
        log.info(
            "temperature scaling: T=%.3f (validation ECE %.4f -> %.4f)",
            calibration["temperature"],
            calibration["val_ece_before"],
            calibration["val_ece_after"],
        )
    run_info |= {
        "resumed_from": ckpt_path,
        "fit_seconds": time.perf_counter() - started,
        "epoch_seconds": [round(s, 3) for s in timer.seconds],
        "best_checkpoint": best,
        **sr_timing,
    }

    result: dict[str, Any] = {
        "run": identity,
        "data": {
            **{split: len(samples) for split, samples in datamodule.samples.items()},
            "excluded": len(datamodule.excluded),
            "unreadable": len(datamodule.unreadable),
            "unreadable_files": [f"{s.path}: {why}" for s, why in datamodule.unreadable],
            "framing": datamodule.framing_summary(),
        },
        "best_val_f1_macro": _float(getattr(trainer.checkpoint_callback, "best_model_score", None)),
        "optimized": optimized(history, cfg.get("optimized_metric", "val/f1_macro")),
        "epochs": len(history),
        "history": history,
        "sr": sr_metrics,
        "calibration": calibration,
    }
    if cfg.get("test", True) and datamodule.samples["test"]:
        with interrupt.exit_status():
            trainer.test(model, datamodule=datamodule, ckpt_path=best, weights_only=False)
        for stage in ("test", "test_tta") if model.test_tta else ("test",):
            values = {k: _float(v) for k, v in sorted(trainer.callback_metrics.items()) if k.startswith(f"{stage}/")}
            result[stage] = reported(values)
        result["test_confusion_matrix"] = model.test_confusion.tolist()
        if calibration is not None:
            probs, target = model.test_outputs["probs"], model.test_outputs["target"]
            calibration["test_ece_before"] = expected_calibration_error(
                rescale_probabilities(probs, calibration["temperature"]), target
            )
            calibration["test_ece_after"] = expected_calibration_error(probs, target)
            if model.test_tta:
                calibration["test_tta_ece_after"] = expected_calibration_error(model.test_outputs["probs_tta"], target)
        if trainer.is_global_zero:
            paths = [s.path for s in datamodule.samples["test"]]
            outputs = model.test_outputs
            write_predictions(
                out / "test_predictions.csv",
                [paths[i] for i in outputs["index"].tolist()],
                datamodule.class_names,
                outputs["probs"],
                labels=outputs["target"].tolist(),
                correct=True,
            )

    if trainer.is_global_zero:
        save_figures(
            out,
            datamodule.class_names,
            model.test_confusion,
            result.get("test", {}),
            history,
            loggers=trainer.loggers,
            step=trainer.global_step,
        )
        headline = {k: v for k, v in result.get("test", {}).items() if "/" not in k.split("/", 1)[1]}
        headline[f"best_{result['optimized']['metric']}"] = result["optimized"]["value"]
        log_hyperparameters(trainer.loggers, hyperparameters(cfg), headline)
        write_json(out / "metrics.json", result)
        write_json(out / "run.json", run_info)
        finish(trainer.loggers)
        log.info("run folder: %s", out)
    return result


def sr_test_images(datamodule) -> tuple[np.ndarray, np.ndarray, np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """What the SR report (:func:`wbc.sr.report.report_sr`) measures: the test split's references, the restored
    images the classifier sees, their low-resolution versions, and the SR stage that restored them."""
    test = datamodule.datasets["test"]
    rows = np.unique(test.rows)
    references, restored = np.asarray(datamodule.references[rows]), np.asarray(test.images[rows])
    pre = datamodule.preprocessor
    return references, restored, pre.degrade(references), pre.restorer


def resume_checkpoint(out: Path, ckpt_path: str | None, required: bool = True) -> str | None:
    """``ckpt_path=last``: the run folder's last.ckpt (end of the last complete epoch: exact continuation), or
    interrupted.ckpt when no epoch had completed; any other value is used as given. A job of a resumed sweep
    (``required=False``) that had not saved a checkpoint starts from scratch."""
    if ckpt_path != "last":
        return ckpt_path
    for name in ("last.ckpt", "interrupted.ckpt"):
        if (out / "checkpoints" / name).is_file():
            return str(out / "checkpoints" / name)
    if not required:
        log.info("ckpt_path=last: no checkpoint in %s yet; this job of the sweep starts from scratch", out)
        return None
    raise FileNotFoundError(f"ckpt_path=last: no checkpoints/last.ckpt or interrupted.ckpt in {out}")


def finished_run(out: Path) -> dict[str, Any] | None:
    """metrics.json of a run folder whose run finished (trained and tested, or skipped), else None."""
    path = out / "metrics.json"
    if not path.is_file():
        return None
    result = json.loads(path.read_text())
    return result if "test" in result or "skipped" in result or "best_val_f1_macro" in result else None


def sweep_folder() -> Path | None:
    """The sweep folder when this run is a job of a Hydra multirun, else None."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hydra_cfg = HydraConfig.get()
    except (ImportError, ValueError):  # no Hydra context (a run composed in a test or a notebook)
        return None
    return Path(hydra_cfg.sweep.dir) if hydra_cfg.mode == RunMode.MULTIRUN else None


def check_optimized_metric(metric: str) -> None:
    """Only validation and training metrics qualify: a sweeper selecting on test would leak the test set."""
    if not str(metric).startswith(("val/", "train/")):
        raise UserError(f"optimized_metric={metric}: a sweeper must optimise a val/ (or train/) metric, never test")


def optimized(history: list[dict[str, float]], metric: str) -> dict[str, Any]:
    """The value train.py returns to a sweeper: ``metric``'s best value over the epochs (the lowest for a loss,
    else the highest), and that epoch; value None (with a warning) when no epoch logged it."""
    values = [(h[metric], h["epoch"]) for h in history if h.get(metric) is not None]
    if not values:
        known = sorted({k for h in history for k in h if k.startswith(("val/", "train/"))})
        log.warning("optimized_metric=%s was not logged in any epoch (logged: %s)", metric, ", ".join(known))
        return {"metric": metric, "value": None, "epoch": None}
    value, epoch = (min if metric.endswith("loss") else max)(values, key=lambda v: v[0])
    return {"metric": metric, "value": value, "epoch": epoch}


def instantiate_all(group: DictConfig | None) -> list[Any]:
    """Instantiate every ``_target_`` entry of a config group (callbacks, loggers); skip nulls."""
    if not group:
        return []
    return [instantiate(c) for c in group.values() if c is not None and "_target_" in c]


def describe(cfg: DictConfig, lr_scale_auto: str | None = None) -> dict[str, Any]:
    """What identifies a run in a sweep: the axes the comparison groups by, and the seeds.

    ``data``, ``model`` and ``sr`` are the config options the run was composed from (Hydra's choices: sr=edsr and
    sr=edsr_small are two methods, a folder source without a name is its data option); ``sr_method``, ``sr_arch``
    and ``net`` say what those options contain. ``lr_scale`` is the integer the run used; ``lr_scale_auto`` says
    why when it came from data.lr_scale=auto.
    """
    choices = run_choices(cfg)
    arch = cfg.sr.get("arch")
    return {
        "seed": cfg.seed,
        "split_seed": cfg.data.split_seed,
        "data": choices["data"],
        "source": cfg.data.source.get("name") or choices["data"],
        "image_size": cfg.data.image_size,
        "lr_scale": cfg.data.lr_scale,
        "lr_scale_auto": lr_scale_auto,
        "sr": choices["sr"],
        "sr_method": cfg.sr.method,
        "sr_backend": cfg.sr.get("backend", "torch"),
        "sr_arch": OmegaConf.to_container(arch, resolve=True) if arch is not None else None,
        "sr_weights": str(cfg.sr.weights) if cfg.sr.get("weights") else None,
        "model": choices["model"],
        "net": cfg.model.net.name,
        "choices": choices,
        "class_names": list(cfg.class_names),
    }


def _float(value: Any) -> float | None:
    if value is None:
        return None
    return float(value.item() if hasattr(value, "item") else value)
