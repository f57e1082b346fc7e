"""In-domain SR training on HR training images (L1, random aligned patches, Adam) and batch SR inference.

LR inputs come from the project's degradation (``wbc.resize.reduce``): training pairs match evaluation.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import nn

from wbc.resize import reduce
from wbc.sr.quality import psnr


@dataclass
class SRTrainConfig:
    """Hyper-parameters of :func:`train_sr`.

    ``patch_size`` is the HR patch side and must be divisible by the scale; smaller images are used whole.
    ``lr_decay_at``: the learning rate is halved once, after this fraction of ``steps`` (EDSR's step decay,
    compressed to one halving for short runs); a value >= 1 keeps it constant.
    ``augment``: random horizontal/vertical flips and 90-degree rotations of each patch pair.
    ``schedule``: ``step`` (the halving above) or ``cosine`` (from ``lr`` down to 0 over ``steps``, no halving).
    ``ema``: the decay of an exponential moving average of the weights, which become the model's at the end (0:
    off; 0.999 averages about the last thousand steps, smoothing the noise of small batches).
    ``loss``: ``l1`` (the patches' L1), or ``l1+task``: plus ``task_weight`` times a task term from a frozen
    classifier (``task_checkpoint``, trained on the reference images): the KL divergence of its class
    probabilities on the super-resolved whole image from those on the reference, over ``task_batch`` whole
    training images a step. Pixels the classifier relies on then weigh more than PSNR gives them.
    """

    steps: int = 2000
    batch_size: int = 16
    patch_size: int = 48
    lr: float = 1e-3
    lr_decay_at: float = 0.5
    seed: int = 0
    augment: bool = True
    log_every: int = 100
    schedule: str = "step"
    ema: float = 0.0
    loss: str = "l1"
    task_weight: float = 0.01
    task_checkpoint: str | None = None
    task_batch: int = 8


def _as_batch(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"expected a uint8 (N, H, W, C) batch, got {images.dtype} {images.shape}")
    return images


def make_lr(hr: np.ndarray, scale: int) -> np.ndarray:
    """Reduce each uint8 NHWC HR image by ``scale`` with the project's INTER_AREA degradation."""
    hr = _as_batch(hr)
    lr = [reduce(image, scale) for image in hr]
    if not lr:
        return np.empty((0, hr.shape[1] // scale, hr.shape[2] // scale, hr.shape[3]), dtype=np.uint8)
    out = np.stack(lr)
    # cv2.resize drops a trailing channel axis of 1; keep NHWC.
    return out.reshape(out.shape[0], out.shape[1], out.shape[2], hr.shape[3])


def _to_tensor(images: np.ndarray, device: torch.device | str) -> torch.Tensor:
    """uint8 NHWC -> float NCHW in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float().div_(255.0)


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    """float NCHW (any range) -> uint8 NHWC, clamped to [0, 1] and rounded."""
    return images.clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def sample_patch_pairs(
    lr_images: np.ndarray,
    hr_images: np.ndarray,
    scale: int,
    lr_patch: tuple[int, int],
    batch_size: int,
    rng: np.random.Generator,
    augment: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``batch_size`` aligned (LR, HR) uint8 NHWC patch pairs; LR patches are ``lr_patch`` = (h, w).

    The HR patch is the block of HR pixels that the LR patch was averaged from, so ``reduce(hr_patch, scale)``
    equals ``lr_patch`` exactly. With ``augment``, each pair gets the same random flips / transpose (together
    the 8 symmetries of the square, 90-degree rotations included; transpose only for square patches).
    """
    ph, pw = lr_patch
    n, lh, lw = lr_images.shape[:3]
    idx = rng.integers(0, n, batch_size)[:, None, None]
    y = rng.integers(0, lh - ph + 1, batch_size)[:, None, None]
    x = rng.integers(0, lw - pw + 1, batch_size)[:, None, None]
    # One fancy-indexing gather per array: (B, 1, 1) + (1, ph, 1) + (1, 1, pw) broadcasts to (B, ph, pw).
    lr = lr_images[idx, y + np.arange(ph)[None, :, None], x + np.arange(pw)[None, None, :]]
    hy = y * scale + np.arange(ph * scale)[None, :, None]
    hx = x * scale + np.arange(pw * scale)[None, None, :]
    hr = hr_images[idx, hy, hx]
    if augment:
        hflip, vflip = rng.random(batch_size) < 0.5, rng.random(batch_size) < 0.5
        transpose = rng.random(batch_size) < 0.5 if ph == pw else np.zeros(batch_size, dtype=bool)
        for flags, op in (
            (hflip, lambda a: a[:, :, ::-1]),
            (vflip, lambda a: a[:, ::-1]),
            (transpose, lambda a: a.transpose(0, 2, 1, 3)),
        ):
            lr[flags] = op(lr[flags])
            hr[flags] = op(hr[flags])
    return lr, hr


def train_sr(
    model: nn.Module,
    hr_images: np.ndarray,
    scale: int,
    cfg: SRTrainConfig,
    device: torch.device | str = "cpu",
    log: Callable[[str], None] | None = None,
    val_hr: np.ndarray | None = None,
    task: nn.Module | None = None,
) -> dict[str, float]:
    """Train ``model`` in place to map ``make_lr(hr, scale)`` patches to their HR patches with L1 loss.

    ``hr_images`` must be training-split images only (uint8 NHWC, one size). Images whose sides are not
    multiples of ``scale`` are cropped to the largest multiple (top-left), which keeps LR/HR blocks aligned.
    Deterministic for a given initial model and ``cfg.seed``: patch positions and augmentations come from
    ``np.random.default_rng(cfg.seed)`` and the loop draws nothing from torch's RNG.
    The model is left on ``device`` in eval mode. Returns ``steps``, ``initial_loss`` / ``final_loss`` (mean
    L1 over the first / last 10% of steps), ``seconds`` and, if ``val_hr`` is given, ``psnr_val`` (SR vs HR)
    and ``psnr_val_bicubic`` (bicubic upscale vs HR) on those images: the mean of the per-image PSNRs
    (:func:`wbc.sr.quality.psnr`, the SR report's definition). With ``loss=l1+task``, ``task`` is the
    frozen classifier (float NCHW images in 0..1 -> logits) and ``initial_task_loss`` / ``final_task_loss``
    are reported too.
    """
    hr_images = _as_batch(hr_images)
    if len(hr_images) == 0:
        raise ValueError("train_sr needs at least one HR image")
    if cfg.steps < 1 or cfg.batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {cfg.steps} and {cfg.batch_size}")
    if cfg.patch_size % scale:
        raise ValueError(f"patch_size={cfg.patch_size} is not divisible by scale={scale}")
    if cfg.schedule not in ("step", "cosine"):
        raise ValueError(f"sr.train.schedule must be step or cosine, got {cfg.schedule!r}")
    if not 0.0 <= cfg.ema < 1.0:
        raise ValueError(f"sr.train.ema must be in [0, 1), got {cfg.ema}")
    if cfg.loss not in ("l1", "l1+task"):
        raise ValueError(f"sr.train.loss must be l1 or l1+task, got {cfg.loss!r}")
    if cfg.loss == "l1+task" and task is None:
        raise ValueError("sr.train.loss=l1+task needs a classifier: set sr.train.task_checkpoint")
    start = time.perf_counter()
    h, w = (hr_images.shape[1] // scale) * scale, (hr_images.shape[2] // scale) * scale
    hr_images = np.ascontiguousarray(hr_images[:, :h, :w])
    lr_images = make_lr(hr_images, scale)  # once: the degradation is deterministic
    lh, lw = lr_images.shape[1:3]
    ph, pw = min(cfg.patch_size // scale, lh), min(cfg.patch_size // scale, lw)  # LR patch size

    rng = np.random.default_rng(cfg.seed)

    model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    cosine = cfg.schedule == "cosine"
    decay_step = math.ceil(cfg.lr_decay_at * cfg.steps) if cfg.lr_decay_at < 1 and not cosine else None
    average = (
        torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(cfg.ema))
        if cfg.ema
        else None
    )
    losses = np.empty(cfg.steps, dtype=np.float64)
    task_losses = np.zeros(cfg.steps, dtype=np.float64)
    if task is not None and cfg.loss == "l1+task":
        task = task.to(device).eval().requires_grad_(False)
    else:
        task = None
    for step in range(cfg.steps):
        if step == decay_step:
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr / 2
        if cosine:
            for group in optimizer.param_groups:
                group["lr"] = 0.5 * cfg.lr * (1 + math.cos(math.pi * step / cfg.steps))
        lr_np, hr_np = sample_patch_pairs(
            lr_images, hr_images, scale, (ph, pw), cfg.batch_size, rng, augment=cfg.augment
        )
        lr_t, hr_t = _to_tensor(lr_np, device), _to_tensor(hr_np, device)
        l1 = nn.functional.l1_loss(model(lr_t), hr_t)
        loss = l1
        if task is not None:
            pick = rng.integers(0, len(hr_images), cfg.task_batch)
            with torch.no_grad():
                target = task(_to_tensor(hr_images[pick], device)).log_softmax(1)
            restored = model(_to_tensor(lr_images[pick], device)).clamp(0.0, 1.0)
            term = nn.functional.kl_div(task(restored).log_softmax(1), target, log_target=True, reduction="batchmean")
            task_losses[step] = term.item()
            loss = loss + cfg.task_weight * term
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if average is not None:
            average.update_parameters(model)
        losses[step] = l1.item()
        done = step + 1
        if log is not None and cfg.log_every > 0 and (done % cfg.log_every == 0 or done == cfg.steps):
            recent = losses[max(0, done - cfg.log_every) : done].mean()
            lr_now = optimizer.param_groups[0]["lr"]
            log(f"sr step {done}/{cfg.steps} l1 {recent:.4f} lr {lr_now:.2e}")
    if average is not None:  # the averaged weights (and buffers, none in ESPCN/EDSR) become the model's
        model.load_state_dict(average.module.state_dict())
    model.eval()

    tenth = max(1, cfg.steps // 10)
    stats: dict[str, float] = {
        "steps": cfg.steps,
        "initial_loss": float(losses[:tenth].mean()),
        "final_loss": float(losses[-tenth:].mean()),
    }
    if task is not None:
        stats["initial_task_loss"] = float(task_losses[:tenth].mean())
        stats["final_task_loss"] = float(task_losses[-tenth:].mean())
    if val_hr is not None:
        val_hr = _as_batch(val_hr)
        vh, vw = (val_hr.shape[1] // scale) * scale, (val_hr.shape[2] // scale) * scale
        val_hr = np.ascontiguousarray(val_hr[:, :vh, :vw])
        val_lr = make_lr(val_hr, scale)
        stats["psnr_val"] = psnr(upscale_images(model, val_lr, device=device), val_hr)
        bicubic = np.stack([cv2.resize(im, (vw, vh), interpolation=cv2.INTER_CUBIC) for im in val_lr])
        stats["psnr_val_bicubic"] = psnr(bicubic.reshape(val_hr.shape), val_hr)
    stats["seconds"] = time.perf_counter() - start
    return stats


def upscale_images(
    model: nn.Module, lr_images: np.ndarray, batch_size: int = 64, device: torch.device | str = "cpu"
) -> np.ndarray:
    """Super-resolve uint8 NHWC (or one HWC) LR images with ``model``; returns uint8 at the model's scale.

    Runs under no_grad with the model in eval mode (its previous mode is restored); assumes the model is on
    ``device``.
    """
    images = np.asarray(lr_images)
    single = images.ndim == 3
    batch = _as_batch(images[None] if single else images)
    was_training = model.training
    model.eval()
    outputs: list[np.ndarray] = []
    try:
        with torch.no_grad():
            for i in range(0, len(batch), batch_size):
                outputs.append(_to_uint8(model(_to_tensor(batch[i : i + batch_size], device))))
    finally:
        model.train(was_training)
    if not outputs:  # empty batch: the output size needs the model's scale attribute (ESPCN and EDSR have it)
        s = int(model.scale)  # type: ignore[arg-type]
        return np.empty((0, batch.shape[1] * s, batch.shape[2] * s, batch.shape[3]), dtype=np.uint8)
    out = np.concatenate(outputs)
    return out[0] if single else out
