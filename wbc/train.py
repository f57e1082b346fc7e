"""The training recipe: seed -> data -> model -> callbacks, loggers, trainer -> fit -> test the best checkpoint."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from wbc.artefacts import save_figures, write_json, write_predictions
from wbc.callbacks import MetricHistory
from wbc.data.resize import upscale
from wbc.plots import save_figure
from wbc.sr.report import example_columns, plot_examples, sr_cost_ms, sr_quality

log = logging.getLogger(__name__)


def _instantiate_all(group: DictConfig | None) -> list[Any]:
    """Instantiate every ``_target_`` entry of a config group (callbacks, loggers); skip nulls."""
    if not group:
        return []
    return [instantiate(c) for c in group.values() if c is not None and "_target_" in c]


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train, test the best checkpoint, write the run's artefacts; return metrics.json's content."""
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    if cfg.data.lr_scale == 1 and cfg.sr.method != "none":
        # At f=1 there is nothing to super-resolve: this run would repeat the sr=none reference. A sweep over
        # sr x lr_scale includes such points; skip them instead of spending a training run on a duplicate.
        log.warning("sr=%s at data.lr_scale=1 is the reference (sr=none); run skipped", cfg.sr.method)
        result = {"skipped": "sr at lr_scale=1 equals the sr=none reference", "run": _run_info(cfg, out)}
        write_json(out / "metrics.json", result)
        return result
    L.seed_everything(cfg.seed, workers=True)

    restorer = instantiate(cfg.sr)
    datamodule = instantiate(cfg.data, restorer=restorer, seed=cfg.seed)
    datamodule.setup("fit")
    datamodule.write_manifest(out / "split_manifest.csv")

    sr_state = restorer.state()
    model = instantiate(
        cfg.model,
        class_names=datamodule.class_names,
        class_counts=datamodule.train_class_counts,
        preprocessing={
            "image_size": cfg.data.image_size,
            "lr_scale": cfg.data.lr_scale,
            "sr": {k: sr_state[k] for k in ("method", "scale", "backend", "arch")},
        },
    )
    model.sr_state = sr_state  # the SR weights travel inside every checkpoint (see WBCClassifier)
    history = MetricHistory()
    callbacks = [*_instantiate_all(cfg.get("callbacks")), history]
    loggers = _instantiate_all(cfg.get("logger"))
    if not loggers:  # Lightning refuses a learning-rate monitor without a logger; logger=none means "no logs"
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    tb = next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)
    sr_report = _sr_report(datamodule, cfg.sr.method, out, tb) if datamodule.preprocessor.lr_scale > 1 else None

    started = time.perf_counter()
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    fit_seconds = time.perf_counter() - started

    checkpoint = getattr(trainer.checkpoint_callback, "best_model_path", "") or None
    result: dict[str, Any] = {
        "run": _run_info(cfg, out),
        "data": {split: len(samples) for split, samples in datamodule.samples.items()}
        | {
            "excluded": len(datamodule.excluded),
            "unreadable": len(datamodule.unreadable),
            "unreadable_files": [f"{s.path}: {why}" for s, why in datamodule.unreadable],
        },
        "best_checkpoint": checkpoint,
        "best_val_f1_macro": _float(getattr(trainer.checkpoint_callback, "best_model_score", None)),
        "epochs": len(history.history),
        "fit_seconds": fit_seconds,
        "epoch_seconds": [round(h["seconds"], 3) for h in history.history],
        "history": history.history,
        "sr": sr_report,
    }
    if cfg.get("test", True) and datamodule.samples["test"]:
        trainer.test(model, datamodule=datamodule, ckpt_path=checkpoint or None, weights_only=False)
        test = {k: _float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
        result["test"] = test
        if trainer.is_global_zero:
            paths = [s.path for s in datamodule.samples["test"]]
            write_predictions(out / "test_predictions.csv", paths, datamodule.class_names, model.test_outputs)
            result["test_confusion_matrix"] = model.test_confusion.tolist()

    if trainer.is_global_zero:
        if tb is not None and sr_report:
            tb.log_metrics({f"sr/{k}": v for k, v in sr_report.items() if isinstance(v, float)}, step=0)
        save_figures(
            out,
            datamodule.class_names,
            model.test_confusion,
            result.get("test", {}),
            history.history,
            tb_writer=tb.experiment if tb else None,
            step=trainer.global_step,
        )
        if tb is not None:
            tb.log_hyperparams(
                _flat_hparams(cfg), {k: v for k, v in result.get("test", {}).items() if "/" not in k.split("/", 1)[1]}
            )
        write_json(out / "metrics.json", result)
        log.info("run folder: %s", out)
    return result


def _run_info(cfg: DictConfig, out: Path) -> dict[str, Any]:
    """What identifies a run in a sweep: the axes the comparison groups by, and the seeds."""
    return {
        "seed": cfg.seed,
        "split_seed": cfg.data.split_seed,
        "source": cfg.data.source.get("name", "synthetic"),
        "image_size": cfg.data.image_size,
        "lr_scale": cfg.data.lr_scale,
        "sr": cfg.sr.method,
        "sr_backend": cfg.sr.get("backend", "torch"),
        "model": cfg.model.net.name,
        "class_names": list(cfg.class_names),
        "output_dir": str(out),
    }


def _sr_report(datamodule, method: str, out: Path, tb: TensorBoardLogger | None, n_examples: int = 6) -> dict:
    """PSNR/SSIM of the SR stage (and of bicubic) against the reference on the test split, its cost per image,
    and a grid of example cells (PNG, TensorBoard, and the arrays for the sweep-level grid)."""
    test = datamodule.datasets["test"]
    rows = np.unique(test.rows)
    references, restored = np.asarray(datamodule.references[rows]), np.asarray(test.images[rows])
    pre = datamodule.preprocessor
    bicubic = np.stack([upscale(im, pre.image_size, "bicubic") for im in pre.degrade(references)])
    restorer = pre.restorer
    report = {
        "method": method,
        "scale": pre.lr_scale,
        **sr_quality(restored, references),
        **{f"{k}_bicubic": v for k, v in sr_quality(bicubic, references).items()},
        "ms_per_image": sr_cost_ms(pre, references),
        "train": getattr(restorer, "train_stats", None),
        "test_images": len(rows),
    }
    columns = example_columns(pre, references[:n_examples], restored[:n_examples], method)
    np.savez_compressed(out / "sr_examples.npz", **{f"col{i}": v for i, v in enumerate(columns.values())},
                        names=np.array(list(columns)))  # fmt: skip
    fig = plot_examples(columns, title=f"sr={method}, x{pre.lr_scale}: test cells")
    if tb is not None:
        tb.experiment.add_figure("figures/sr_examples", fig, global_step=0, close=False)
    save_figure(fig, out / "sr_examples.png")
    log.info("sr=%s x%d: PSNR %.2f dB (bicubic %.2f), SSIM %.4f, %.2f ms/image", method, pre.lr_scale,
             report["psnr"], report["psnr_bicubic"], report["ssim"], report["ms_per_image"])  # fmt: skip
    return report


def _float(value: Any) -> float | None:
    if value is None:
        return None
    return float(value.item() if hasattr(value, "item") else value)


def _flat_hparams(cfg: DictConfig) -> dict[str, Any]:
    """The config as flat scalar hyperparameters for TensorBoard's HPARAMS tab."""
    container = OmegaConf.to_container(cfg, resolve=True)
    flat: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(node, (int, float, str, bool)) or node is None:
            flat[prefix] = "null" if node is None else node
        else:
            flat[prefix] = str(node)

    walk("", {k: container[k] for k in ("seed", "data", "sr", "model", "trainer") if k in container})
    return flat
