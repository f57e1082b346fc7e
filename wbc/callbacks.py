"""Lightning callbacks of a run: epoch times, RNG state in checkpoints, a checkpoint on interruption, a moving
average of the weights."""

from __future__ import annotations

import contextlib
import logging
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import WeightAveraging
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch.optim.swa_utils import get_ema_multi_avg_fn

log = logging.getLogger(__name__)


class EpochTimer(L.Callback):
    """Wall time of every training epoch (its validation included), for run.json."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.seconds.append(time.perf_counter() - self._start)


class RNGState(L.Callback):
    """Stores the torch, numpy and Python RNG states in checkpoints and restores them on resume, so that a resumed
    run draws the same dropout masks and loader seeds as one that never stopped."""

    def state_dict(self) -> dict[str, Any]:
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
            "python": random.getstate(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["torch"])
        if state_dict.get("cuda") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])
        kind, keys, pos, has_gauss, cached = state_dict["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
        random.setstate(state_dict["python"])


class InterruptCheckpoint(L.Callback):
    """On Ctrl-C or SIGTERM (a cluster's pre-emption), save ``interrupted.ckpt`` before the process exits, and make
    it exit with a non-zero status: 130 after Ctrl-C, 143 after SIGTERM (128 + the signal number, as a shell
    reports a process killed by that signal), so that a scheduler or a script does not read it as success.

    Resuming (``ckpt_path=last``) prefers ``last.ckpt``, written at the end of the last complete epoch, which
    continues exactly; ``interrupted.ckpt`` is used when no epoch had completed. Lightning ends an interrupted
    ``fit`` or ``test`` with ``SystemExit`` of status 0 (SIGTERM) or 1 (Ctrl-C); wrap those calls in
    :meth:`exit_status` to get the statuses above.

    Not Lightning's OnExceptionCheckpoint: that is a ``Checkpoint`` callback, and Lightning takes the first of
    those as the run's ``trainer.checkpoint_callback`` (the best model's path, ``ckpt_path="best"``), and it
    saves on any exception (a bug's broken state too) and deletes its file at teardown.
    """

    EXIT_STATUS = {"KeyboardInterrupt": 128 + signal.SIGINT, "SIGTERMException": 128 + signal.SIGTERM}

    def __init__(self, dirpath: str | Path, run_dir: str | Path | None = None, sweep_dir: str | Path | None = None):
        self.dirpath = Path(dirpath)
        self.run_dir = Path(run_dir) if run_dir is not None else self.dirpath.parent
        self.sweep_dir = sweep_dir  # a job of a multirun: the whole sweep is resumed
        self.exit_code: int | None = None

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, (KeyboardInterrupt, SIGTERMException)):
            path = self.dirpath / "interrupted.ckpt"
            trainer.save_checkpoint(path)
            what = "Ctrl-C" if isinstance(exception, KeyboardInterrupt) else "SIGTERM"
            self.exit_code = self.EXIT_STATUS[type(exception).__name__]
            resume = f"-m resume={self.sweep_dir}" if self.sweep_dir else f"resume={self.run_dir}"
            log.warning(
                "interrupted (%s): checkpoint saved to %s; continue with: python train.py %s (exit status %d)",
                what,
                path,
                resume,
                self.exit_code,
            )

    @contextlib.contextmanager
    def exit_status(self) -> Iterator[None]:
        """Turn Lightning's exit after an interruption into ``SystemExit(130 or 143)``."""
        try:
            yield
        except SystemExit:
            if self.exit_code is None:
                raise
            raise SystemExit(self.exit_code) from None


class EMA(WeightAveraging):
    """An exponential moving average of the weights (batch-norm statistics included) over the last part of
    training: Lightning's WeightAveraging, which validates, checkpoints and ends training with the average, started
    after ``start`` (a fraction) of the optimizer steps. An average begun at the first step would keep the random
    initialisation in it (0.998 ** 1150 = 10 % of the weight after 12 PBC epochs); SWA (Izmailov et al. 2018)
    likewise averages only the end of training. Until the average begins, validation and checkpoints use the
    weights being trained."""

    def __init__(self, decay: float = 0.998, start: float = 0.5) -> None:
        if not 0 < decay < 1 or not 0 <= start < 1:
            raise ValueError(f"EMA: decay must be in (0, 1) and start in [0, 1), got decay={decay}, start={start}")
        super().__init__(multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
        self.start = start
        self._first_step = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._first_step = int(self.start * trainer.estimated_stepping_batches)

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        return step_idx is not None and step_idx >= self._first_step

    def started(self) -> bool:
        return self._average_model is not None and int(self._average_model.n_averaged) > 0

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.started():
            super().on_validation_epoch_start(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.started():
            super().on_validation_epoch_end(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.started():
            super().on_train_end(trainer, pl_module)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        if self.started():
            super().on_save_checkpoint(trainer, pl_module, checkpoint)
