"""The SR study's design decisions about a run: which degradation factor ``data.lr_scale=auto`` means, and which
config options (Hydra's choices) a run is recorded and grouped under.

``data.lr_scale`` is f: each image is reduced from S to S/f and the SR stage brings it back to S. Its default,
``auto``, resolves once, at the start of a run (:func:`resolve_lr_scale`), to

- ``sr_study_scale`` (4) when the run uses an SR method (``sr`` is not ``none``): ``python train.py sr=espcn`` is
  the SR study at f=4 (a 16 px input at S=64), not a copy of the reference;
- ``sr_study_scale`` for every job of a multirun whose overrides choose ``sr``, ``sr=none`` included: in
  ``python train.py -m sr=none,espcn,edsr`` the three jobs see the same 16 px input and compare;
- 1 otherwise: ``python train.py`` (and ``-m seed=0,1,2``) is the high-resolution reference;
- a resumed run (``resume=<folder>``) keeps the factor its folder recorded.

The resolved integer replaces ``auto`` in the config before anything reads it, so config.yaml, metrics.json, the
TensorBoard hyperparameters and the checkpoints hold the number (prediction never needs Hydra).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)

AUTO = "auto"
DEFAULT_STUDY_SCALE = 4
RECORDED_CHOICES = ("data", "model", "sr")


def _hydra():
    """Hydra's runtime config of this job, or None outside a Hydra app."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.get() if HydraConfig.initialized() else None
    except (ImportError, ValueError):
        return None


def _override_keys(overrides: Any) -> set[str]:
    return {str(o).split("=", 1)[0].lstrip("+~") for o in overrides or [] if "=" in str(o)}


def sweeps_sr() -> bool:
    """True in a job of a multirun whose overrides (command line or sweeper params) choose the ``sr`` option."""
    hc = _hydra()
    if hc is None:
        return False
    from hydra.types import RunMode

    return hc.mode == RunMode.MULTIRUN and "sr" in _override_keys(hc.overrides.task)


def _recorded_scale(folder: str | Path) -> int | None:
    path = Path(folder) / "config.yaml"
    if not path.is_file():
        return None
    value = OmegaConf.select(OmegaConf.load(path), "data.lr_scale")
    return value if isinstance(value, int) else None


def auto_lr_scale(cfg: DictConfig) -> tuple[int, str]:
    """(f, why) for ``data.lr_scale=auto`` in this run (see the module docstring)."""
    study = int(cfg.get("sr_study_scale", DEFAULT_STUDY_SCALE))
    method = cfg.sr.method
    reasons = {
        "method": (study, f"sr={method} runs the SR study at f=sr_study_scale={study}"),
        "sweep": (
            study,
            f"sr=none in a multirun over sr: every method, sr=none included, at f=sr_study_scale={study} so that "
            "they compare",
        ),
        "reference": (1, "sr=none: the high-resolution reference"),
        "native": (1, f"sr={method} sr.native=true: SR enlarges the crops smaller than S; no simulated coarser camera"),
    }
    if cfg.sr.get("native"):
        return reasons["native"]
    case = "method" if method != "none" else "sweep" if sweeps_sr() else "reference"
    if cfg.get("resume"):
        # a resumed run is a single run: keep the factor its folder recorded (a multirun job's sr=none ran at the
        # study factor), with the reason the original run gave, so that its metrics.json is the same
        recorded = _recorded_scale(cfg.resume)
        if recorded is not None and recorded != reasons[case][0]:
            if method == "none" and recorded in (study, 1):
                return reasons["sweep" if recorded == study else "reference"]
            return recorded, f"the resumed run {cfg.resume} recorded f={recorded}"
    return reasons[case]


def resolve_lr_scale(cfg: DictConfig) -> str | None:
    """Replace ``data.lr_scale=auto`` in ``cfg`` by its integer (and check any value); log and return why.

    Returns None when the value was given as a number. Call it once, before anything reads the config.
    """
    value = cfg.data.lr_scale
    if isinstance(value, str) and value.strip().lower() == AUTO:
        scale, why = auto_lr_scale(cfg)
        size = cfg.data.get("image_size")
        if isinstance(size, int) and size % scale:
            raise ValueError(
                f"data.lr_scale=auto chose f={scale} ({why}), but data.image_size={size} is not divisible by it: "
                "give data.lr_scale (a divisor of the image size) or sr_study_scale"
            )
        log.info("data.lr_scale=auto -> %d: %s", scale, why)
    else:
        try:
            scale, why = int(value), None
        except (TypeError, ValueError):
            raise ValueError(f"data.lr_scale must be an integer >= 1 or 'auto', got {value!r}") from None
        if scale < 1 or scale != value and str(scale) != str(value).strip():
            raise ValueError(f"data.lr_scale must be an integer >= 1 or 'auto', got {value!r}")
    with open_dict(cfg):
        cfg.data.lr_scale = scale
    return why


def run_choices(cfg: DictConfig) -> dict[str, str]:
    """The config options this run was composed from (Hydra's ``hydra:runtime.choices``) for data, model and sr.

    Outside Hydra (a config composed by hand), the names the config itself gives: the data source's ``name`` or
    its class, the network's name, the SR method.
    """
    hc = _hydra()
    choices = dict(hc.runtime.choices) if hc is not None else {}
    source = cfg.data.get("source") or {}
    fallback = {
        "data": source.get("name") or str(source.get("_target_", "unknown")).rsplit(".", 1)[-1],
        "model": cfg.model.net.name if "net" in cfg.model else "unknown",
        "sr": cfg.sr.method,
    }
    return {k: str(choices.get(k) or fallback[k]) for k in RECORDED_CHOICES}
