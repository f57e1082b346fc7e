"""What the benchmark parts share: the device and the machine, the config composed by Hydra, the PBC datamodule,
the clocks of our training path and of the bare model (training steps, inference), the train.py sweeps the parts
launch, and outputs/benchmarks/results.md."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path

import torch
from omegaconf import DictConfig

import wbc  # noqa: F401  (sets NO_ALBUMENTATIONS_UPDATE and registers the config resolvers)
from wbc.callbacks import EpochTimer

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "outputs" / "benchmarks"


def resolve_device(device: str) -> str:
    """``auto``: cuda when a CUDA device is present, else cpu; ``cuda`` where there is none is an error."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: this machine has no CUDA device")
    return device


def machine(device: str) -> dict:
    return {
        "device": device,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def accelerator(device: str) -> str:
    """Lightning's name of ``device``."""
    return "gpu" if device == "cuda" else "cpu"


def device_overrides(device: str) -> list[str]:
    """train.py overrides that put a run's classifier and its SR stage on ``device``."""
    return [f"trainer.accelerator={accelerator(device)}", f"sr.device={device}"]


def clock(device: str) -> float:
    """time.perf_counter() once the work queued on ``device`` is done (CUDA kernels run asynchronously)."""
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def compose_train(overrides: Sequence[str] = (), hydra_node: bool = False) -> DictConfig:
    """conf/train.yaml composed by Hydra with ``overrides``; ``hydra_node``: with its hydra node (the sweeper's
    params of an experiment)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "conf")):
        return compose("train", overrides=list(overrides), return_hydra_config=hydra_node)


@cache
def pbc_config() -> DictConfig:
    """The training config with data=pbc: the four class names, PBC's folder map, the training augmentation."""
    return compose_train(["data=pbc"])


def classes() -> list[str]:
    return list(pbc_config().class_names)


def pbc_map() -> dict[str, str]:
    return dict(pbc_config().data.source.class_map)


def datamodule(args, image_size: int, lr_scale: int = 1, sr=None, augment: bool = True, **kw):
    """A WBCDataModule on PBC at ``image_size`` (``args.pbc``, cache ``args.cache``), ``sr`` (default: none)."""
    from hydra.utils import instantiate

    from wbc.data.datamodule import WBCDataModule
    from wbc.data.sources import FolderSource
    from wbc.sr.stage import SuperResolver

    return WBCDataModule(
        FolderSource(args.pbc, classes(), pbc_map(), name="pbc"),
        image_size=image_size,
        lr_scale=lr_scale,
        restorer=sr or SuperResolver("none", lr_scale, device=args.device),
        augment=instantiate(pbc_config().data.augment) if augment else None,
        cache_dir=args.cache,
        **kw,
    )


def sr_resolvers(args, scale: int) -> dict:
    """The SR stages of the study at ``scale`` (none, bicubic, espcn, ``args.edsr``) on ``args.device``, and
    OpenCV's DIV2K ESPCN when ``args.sr_models`` holds it."""
    from hydra.utils import instantiate

    from wbc.sr.stage import SuperResolver

    resolvers = {}
    for method in ("none", "bicubic", "espcn", args.edsr):
        cfg = compose_train([f"sr={method}", f"data.lr_scale={scale}", f"sr.device={args.device}"])
        resolvers[method] = instantiate(cfg.sr)
    if (args.sr_models / f"ESPCN_x{scale}.pb").exists():
        resolvers["espcn-opencv (DIV2K)"] = SuperResolver(
            "espcn", scale, backend="opencv", weights=args.sr_models / f"ESPCN_x{scale}.pb"
        )
    return resolvers


class DeviceEpochTimer(EpochTimer):
    """EpochTimer whose clock waits at both ends of an epoch for the work queued on the module's device."""

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        clock(pl_module.device.type)
        super().on_train_epoch_start(trainer, pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        clock(pl_module.device.type)
        super().on_train_epoch_end(trainer, pl_module)


def lightning_epoch(args, dm, model_name: str, batches: int, repeats: int = 1) -> float:
    """Images per second of our training path (Lightning, WBCDataModule, WBCClassifier) on ``args.device``:
    the median of ``repeats`` epochs after the first."""
    import lightning as L

    from wbc.models.module import WBCClassifier

    dm.setup()
    model = WBCClassifier({"name": model_name}, classes(), scheduler="none")
    timer = DeviceEpochTimer()
    trainer = L.Trainer(
        accelerator=accelerator(args.device),
        devices=1,
        max_epochs=1 + repeats,
        limit_train_batches=batches,
        limit_val_batches=0,
        precision=args.precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
        use_distributed_sampler=False,
    )
    trainer.fit(model, datamodule=dm)
    return batches * dm.batch_size / statistics.median(timer.seconds[1:])


def autocast(device: str, precision: str):
    return torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16-mixed")


def timed_steps(
    net: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    precision: str,
    limit: int | None = None,
    warmup: int = 0,
) -> float:
    """Images per second of forward/backward/optimizer steps of ``net`` on its device over the first ``limit``
    of ``batches``; the clock restarts after ``warmup`` batches (the allocator, oneDNN or cuDNN set-up)."""
    device = next(net.parameters()).device
    net.train()
    n, start = 0, clock(device.type)
    for i, (x, y) in enumerate(batches):
        if i == limit:
            break
        if warmup and i == warmup:
            n, start = 0, clock(device.type)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast(device.type, precision):
            loss = torch.nn.functional.cross_entropy(net(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        n += len(y)
    return n / (clock(device.type) - start)


@torch.no_grad()
def bare_inference(net: torch.nn.Module, tensors: torch.Tensor, batch_size: int = 64) -> float:
    """Images per second of the model alone (softmax included) on images already in the device's memory."""
    net(tensors[:batch_size])  # warm-up
    start = clock(tensors.device.type)
    for i in range(0, len(tensors), batch_size):
        net(tensors[i : i + batch_size]).softmax(1)
    return len(tensors) / (clock(tensors.device.type) - start)


def run_sweep(args, name: str, overrides: list[str], cache: Path | None = None) -> float:
    """Seconds of `python train.py -m <overrides>` into outputs/benchmarks/sweeps/<name>."""
    env = {**os.environ, "WBC_CACHE_DIR": str(cache or args.cache)}
    if args.jobs > 1:  # parallel jobs of one thread each share the cores better than one job of several
        env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "train.py", "-m", *overrides, f"hydra.sweep.dir={OUT / 'sweeps' / name}"]
    start = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def render(out: Path) -> str:
    """results.md from every <part>.json in ``out``."""
    lines = ["# Benchmark results", ""]
    for path in sorted(out.glob("*.json")):
        data = json.loads(path.read_text())
        lines += [f"## {path.stem}", "", f"Machine: {json.dumps(data.get('machine'))}", ""]
        results = data.get("results")
        if isinstance(results, dict) and results and all(isinstance(v, dict) for v in results.values()):
            keys = list(next(iter(results.values())))
            lines.append("| case | " + " | ".join(keys) + " |")
            lines.append("|" + "---|" * (len(keys) + 1))
            for case, row in results.items():
                cells = [f"{row.get(k):.3g}" if isinstance(row.get(k), float) else str(row.get(k)) for k in keys]
                lines.append(f"| {case} | " + " | ".join(cells) + " |")
        for key, value in data.items():
            if key not in ("results", "machine", "table") and not isinstance(value, dict):
                lines.append(f"- {key}: {value:.3g}" if isinstance(value, float) else f"- {key}: {value}")
        for name, sweep in data.items() if path.stem == "accuracy" else []:
            if isinstance(sweep, dict) and "table" in sweep:
                lines += ["", f"### {name}", "", sweep["table"]]
        lines.append("")
    text = "\n".join(lines)
    (out / "results.md").write_text(text)
    return text
