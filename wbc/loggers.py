"""A run's figures, scalars and hyperparameters for every configured logger, each in its own reader's form.

TensorBoard gets figures (``add_figure``), the hyperparameters with the headline metrics (HPARAMS tab) and a
custom-scalars layout: one multi-line chart per per-class metric (a line per class) instead of one chart per class.
MLflow gets the figures as PNG artefacts (``log_figure``) and the hyperparameters as params; Weights & Biases the
figures as ``wandb.Image`` (``log_image``) and the hyperparameters as the run's config. The CSV logger keeps scalars
only: the figures are PNG files in the run folder. Optional packages (mlflow, wandb) are imported by Lightning only
when such a logger is used; :func:`check_installed` names the missing one before a run starts.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from typing import Any

from lightning.pytorch.loggers import Logger, MLFlowLogger, TensorBoardLogger, WandbLogger
from matplotlib.figure import Figure
from omegaconf import DictConfig, OmegaConf

from wbc.errors import UserError
from wbc.metrics import PER_CLASS

# config keys that are plumbing, not hyperparameters: Hydra's instantiation keys and paths of this machine
_NOT_HPARAMS = ("_target_", "_convert_", "_partial_", "root", "cache_dir", "weights", "default_root_dir", "dirpath")
# loggers that need an optional extra: the module they import and the extra of pyproject.toml that installs it
_EXTRAS = {"MLFlowLogger": ("mlflow", "mlflow"), "WandbLogger": ("wandb", "wandb")}


def check_installed(group: DictConfig | None) -> None:
    """A :class:`UserError` naming the package and its install command when a chosen logger needs a missing one."""
    for name, node in (group or {}).items():
        module, extra = _EXTRAS.get(str((node or {}).get("_target_", "")).rsplit(".", 1)[-1], (None, None))
        if module and importlib.util.find_spec(module) is None:
            raise UserError(f'logger={name} needs the {module} package: pip install -e ".[{extra}]"')


def log_figures(loggers: Sequence[Logger], figures: Mapping[str, Figure], step: int = 0) -> None:
    """Each figure to each logger that shows figures, under ``figures/<name>``."""
    for logger in loggers:
        for name, fig in figures.items():
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_figure(f"figures/{name}", fig, global_step=step, close=False)
            elif isinstance(logger, MLFlowLogger):
                logger.experiment.log_figure(logger.run_id, fig, f"figures/{name}.png")
            elif isinstance(logger, WandbLogger):
                logger.log_image(f"figures/{name}", [fig], step=step)


def hyperparameters(cfg: DictConfig) -> dict[str, Any]:
    """The run's config as flat scalar hyperparameters (seed, data, sr, model, trainer, tags), without Hydra's
    instantiation keys and without paths."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if str(k) not in _NOT_HPARAMS:
                    walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(node, (int, float, str, bool)) or node is None:
            flat[prefix] = "null" if node is None else node
        else:
            flat[prefix] = str(node)

    container = OmegaConf.to_container(cfg, resolve=True)
    walk("", {k: container[k] for k in ("seed", "data", "sr", "model", "trainer") if k in container})
    flat["tags"] = ",".join(str(t) for t in container.get("tags") or [])
    return flat


def log_hyperparameters(loggers: Sequence[Logger], params: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
    """``params`` to every logger; TensorBoard also ties ``metrics`` (headline values) to them in its HPARAMS tab.
    The metrics go under ``hparams/``: the scalars of the same names were logged once already, by the run."""
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(dict(params), {f"hparams/{k}": v for k, v in metrics.items() if v is not None})
        else:
            logger.log_hyperparams(dict(params))


def tensorboard_layout() -> dict[str, dict[str, list]]:
    """The custom-scalars layout: per stage (val, test), one multi-line chart per per-class metric, a line per
    class (a regular expression over the ``<stage>/<metric>/<class>`` tags), and the macro means and losses."""
    layout: dict[str, dict[str, list]] = {}
    for stage in ("val", "test"):
        layout[f"{stage}: per class"] = {f"{stage} {m}": ["Multiline", [rf"^{stage}/{m}/[^/]+$"]] for m in PER_CLASS}
    layout["macro means and loss"] = {
        "macro F1": ["Multiline", [r"^(train|val)/f1_macro$"]],
        "accuracy": ["Multiline", [r"^(train|val)/accuracy$"]],
        "loss": ["Multiline", [r"^(train|val)/loss$"]],
    }
    return layout


def add_tensorboard_layout(loggers: Sequence[Logger]) -> None:
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_custom_scalars(tensorboard_layout())


def finish(loggers: Sequence[Logger]) -> None:
    """End the W&B run: the next run of a multirun in this process (Hydra's basic launcher, a joblib worker)
    would otherwise log into it."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.experiment.finish()
