"""Lightning callbacks of a run: the per-epoch metric history behind the training curves and epoch times."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch


class MetricHistory(L.Callback):
    """Records every epoch's logged train/val metrics and its wall time.

    Lightning aggregates epoch metrics after the epoch-end hooks, so an epoch is recorded when the next one
    starts, and the last one when training ends.
    """

    def __init__(self) -> None:
        self.history: list[dict[str, float]] = []
        self._epoch_start: float | None = None
        self._epoch: int | None = None

    def _record(self, trainer: L.Trainer) -> None:
        if self._epoch is None or self._epoch_start is None:
            return
        row: dict[str, float] = {"epoch": self._epoch, "seconds": time.perf_counter() - self._epoch_start}
        for name, value in trainer.callback_metrics.items():
            if name.startswith(("train/", "val/")) and "/" not in name.split("/", 1)[1]:
                row[name] = float(value.item() if isinstance(value, torch.Tensor) else value)
        if not self.history or self.history[-1]["epoch"] != self._epoch:
            self.history.append(row)
        self._epoch = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._record(trainer)
        self._epoch, self._epoch_start = trainer.current_epoch, time.perf_counter()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._record(trainer)

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))
