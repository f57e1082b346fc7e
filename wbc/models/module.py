"""WBCClassifier: the LightningModule that trains, validates and tests a network on uint8 image batches."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from wbc.metrics import ClassificationMetrics, prefixed
from wbc.models.ampmix import amplitude_mix
from wbc.models.mixstyle import add_mixstyle
from wbc.models.networks import create_model
from wbc.models.randconv import random_convolution

CHECKPOINT_FORMAT = 1  # bump when what predict.py needs from a checkpoint changes
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def symmetry_views(x: torch.Tensor) -> list[torch.Tensor]:
    """The eight flips and 90-degree rotations of an (N, C, H, W) batch: a cell on a smear has no orientation, so
    averaging a classifier's probabilities over them (test-time augmentation) gives an orientation-free one."""
    return [v for k in range(4) for v in (x.rot90(k, (2, 3)), x.rot90(k, (2, 3)).flip(3))]


def zoomed(x: torch.Tensor, scale: float) -> torch.Tensor:
    """An (N, C, H, W) float batch magnified ``scale`` times about its centre (bilinear; reflected borders when
    ``scale`` < 1, as the training augmentation's Affine): what the images would be had the pixel size been
    measured ``scale`` times larger (scale framing's field ``scale`` times smaller)."""
    if scale == 1:
        return x
    theta = torch.tensor([[1 / scale, 0, 0], [0, 1 / scale, 0]], dtype=x.dtype, device=x.device)
    grid = torch.nn.functional.affine_grid(theta.expand(len(x), 2, 3), list(x.shape), align_corners=False)
    return torch.nn.functional.grid_sample(x, grid, "bilinear", "reflection", align_corners=False)


class WBCClassifier(L.LightningModule):
    """Network + loss + AdamW with a cosine or plateau schedule + the metric set of each stage.

    Batches carry uint8 images; scaling and normalisation happen here, on the device, so the checkpoint holds
    them and no copy of that step lives elsewhere. ``preprocessing`` records the deterministic pipeline that
    made the images (size, lr_scale, SR method) so that a checkpoint alone can predict. ``tta`` is the recipe's
    way to predict: the mean over the eight flips/rotations (:func:`symmetry_views`), scored by the test stage
    beside the single view (``test_tta/*``) and used by predict.py's ``tta=auto``; ``adapt_bn_layers`` (batch-norm
    layer name prefixes) is what predict.py's ``adapt_bn=true`` re-estimates with ``adapt_bn_layers=auto``.
    ``class_prior`` is the class mix its probabilities carry (the training split's, uniform when training balanced
    the classes) and ``prior`` the mix predict.py's ``prior=auto`` assumes of a new folder (:mod:`wbc.prior`).
    """

    def __init__(
        self,
        net: Mapping[str, Any],
        class_names: Sequence[str],
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        scheduler: str | None = "cosine",
        label_smoothing: float = 0.0,
        class_weighted_loss: bool = False,
        class_counts: Sequence[int] | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        preprocessing: Mapping[str, Any] | None = None,
        channels_last: bool = True,
        mixstyle: Mapping[str, Any] | None = None,
        randconv: Mapping[str, Any] | None = None,
        ampmix: Mapping[str, Any] | None = None,
        tta: bool = False,
        adapt_bn_layers: Sequence[str] | None = None,
        class_prior: Sequence[float] | None = None,
        prior: str | Sequence[float] = "train",
    ):
        super().__init__()
        if scheduler not in (None, "none", "cosine", "plateau"):
            raise ValueError(f"model.scheduler must be cosine, plateau or none, got {scheduler!r}")
        self.save_hyperparameters()
        self.class_names = list(class_names)
        self.net = create_model(num_classes=len(self.class_names), **dict(net))
        if mixstyle:  # training-time feature-style mixing (wbc.models.mixstyle); no effect at inference
            add_mixstyle(self.net, **dict(mixstyle))
        # training-time random convolutions of the input (wbc.models.randconv): {p, kernel_sizes}
        self.randconv = {"p": 0.5, "kernel_sizes": (1, 3, 5, 7), **dict(randconv)} if randconv else None
        # training-time Fourier amplitude mixing of the input (wbc.models.ampmix): {p, eta}
        self.ampmix = {"p": 0.5, "eta": 1.0, **dict(ampmix)} if ampmix else None
        # NHWC ("channels last") weights and activations: oneDNN's and cuDNN's fast layout for convolutions; the
        # images arrive NHWC-strided already (uint8 HWC arrays permuted), so no copy is needed on the way in
        self.channels_last = channels_last
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        # Temperature scaling (wbc.calibration): 1 while training, fitted on the validation split afterwards
        self.register_buffer("temperature", torch.ones(()))
        weight = None
        if class_weighted_loss:
            if not class_counts:
                raise ValueError("class_weighted_loss needs the training split's class_counts")
            counts = torch.tensor(class_counts, dtype=torch.float).clamp(min=1)
            weight = counts.sum() / (len(counts) * counts)  # inverse frequency, mean weight 1
        self.register_buffer("class_weight", weight, persistent=False)
        self.train_metrics = ClassificationMetrics(self.class_names, full=False)
        self.val_metrics = ClassificationMetrics(self.class_names)
        self.test_metrics = ClassificationMetrics(self.class_names)
        self.test_tta = tta  # the test split also through the mean of the eight symmetry views
        self.test_tta_metrics = ClassificationMetrics(self.class_names)
        self.test_outputs: dict[str, torch.Tensor] = {}
        self.test_confusion: torch.Tensor | None = None
        self.sr_state: dict[str, Any] | None = None  # SuperResolver.state(): saved with every checkpoint
        self.history: list[dict[str, float]] = []  # one row of train/val metrics per epoch, kept in checkpoints

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["wbc_format"] = CHECKPOINT_FORMAT
        checkpoint["metric_history"] = self.history
        if self.sr_state is not None:
            checkpoint["sr_stage"] = self.sr_state

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["state_dict"].setdefault("temperature", torch.ones(()))  # checkpoints from before calibration
        self.sr_state = checkpoint.get("sr_stage", self.sr_state)
        self.history = list(checkpoint.get("metric_history", []))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a batch of RGB images (uint8 in 0..255, or float in 0..1), divided by the fitted
        temperature: their softmax is the calibrated confidence."""
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if x.dtype == torch.uint8:
            x = x.float().div_(255)
        if self.ampmix and self.training and torch.is_grad_enabled():
            x = amplitude_mix(x, **self.ampmix)
        x = (x - self.mean) / self.std
        if self.randconv and self.training and torch.is_grad_enabled() and torch.rand(()) < self.randconv["p"]:
            x = random_convolution(x, self.randconv["kernel_sizes"])
        return self.net(x) / self.temperature

    def _step(self, batch, metrics: ClassificationMetrics, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        x, y, _ = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y, weight=self.class_weight, label_smoothing=self.hparams.label_smoothing)
        probs = logits.detach().float().softmax(dim=1)
        metrics.update(probs, y)
        self.log(
            f"{stage}/loss",
            loss,
            on_step=False,
            on_epoch=True,
            prog_bar=stage != "test",
            batch_size=len(y),
            sync_dist=True,
        )
        return loss, probs

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._step(batch, self.train_metrics, "train")[0]

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step(batch, self.val_metrics, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        _, probs = self._step(batch, self.test_metrics, "test")
        parts = {"probs": probs, "target": batch[1], "index": batch[2]}
        if self.test_tta:  # the first symmetry view is the image itself, scored above
            views = symmetry_views(batch[0])[1:]
            parts["probs_tta"] = torch.stack([probs, *(self(v).float().softmax(1) for v in views)]).mean(0)
            self.test_tta_metrics.update(parts["probs_tta"], batch[1])
        for name, value in parts.items():
            self._test_parts.setdefault(name, []).append(value.detach())

    def on_test_epoch_start(self) -> None:
        self._test_parts: dict[str, list[torch.Tensor]] = {}

    def _log_epoch(self, metrics: ClassificationMetrics, stage: str) -> None:
        # Lightning logs floats; the *_n_classes counts come back as whole numbers (metrics.json writes ints).
        self.log_dict({k: float(v) for k, v in prefixed(metrics.compute(), stage).items()}, prog_bar=False)
        metrics.reset()

    def on_train_epoch_end(self) -> None:
        self._log_epoch(self.train_metrics, "train")
        # The epoch's train and val values are all logged now (validation ran inside the epoch); checkpoints
        # saved after this hook hold the history up to this epoch, so a resumed run's history is complete.
        row = {"epoch": self.current_epoch}
        for name, value in sorted(self.trainer.callback_metrics.items()):
            if name.startswith(("train/", "val/")) and name.count("/") == 1:
                row[name] = float(value)
        self.history = [h for h in self.history if h["epoch"] != row["epoch"]] + [row]

    def on_validation_epoch_end(self) -> None:
        self._log_epoch(self.val_metrics, "val")

    def on_test_epoch_end(self) -> None:
        self.test_confusion = self.test_metrics.confusion_matrix().cpu()
        self._log_epoch(self.test_metrics, "test")
        if self.test_tta:
            self._log_epoch(self.test_tta_metrics, "test_tta")
        outputs = {k: torch.cat(v).cpu() for k, v in self._test_parts.items()}
        if self.trainer.world_size > 1:  # every rank's share of the test set (shards differ in size)
            shares: list[dict[str, torch.Tensor]] = [{} for _ in range(self.trainer.world_size)]
            torch.distributed.all_gather_object(shares, outputs)
            outputs = {k: torch.cat([share[k] for share in shares]) for k in outputs}
            order = torch.argsort(outputs["index"])
            outputs = {k: v[order] for k, v in outputs.items()}
        self.test_outputs = {k: v.cpu() for k, v in outputs.items()}

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        if self.hparams.scheduler == "cosine":
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, self.trainer.max_epochs))
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
        if self.hparams.scheduler == "plateau":
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=2)
            return {
                "optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "monitor": "val/f1_macro", "interval": "epoch"},
            }
        return optimizer
