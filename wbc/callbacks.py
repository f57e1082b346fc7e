"""Lightning callbacks of a run: epoch times, RNG state in checkpoints, a checkpoint on interruption."""

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
from lightning.pytorch.utilities.exceptions import SIGTERMException

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
