"""Shared test helpers: composing the real Hydra config with tiny limits, and small image folders."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict
from PIL import Image

from wbc.data.synthetic import SyntheticSource
from wbc.sr.study import resolve_lr_scale

REPO_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = REPO_ROOT / "conf"
# The four classes and PBC's folder mapping, read from the config files that define them.
CLASSES: list[str] = list(OmegaConf.load(CONF_DIR / "train.yaml").class_names)
PBC_MAP: dict[str, str] = dict(OmegaConf.load(CONF_DIR / "data" / "pbc.yaml").source.class_map)

# Overrides that make a run take seconds on one CPU thread.
TINY = [
    "data.source.n_per_class=24",
    "data.image_size=32",
    "data.batch_size=16",
    "trainer.max_epochs=2",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "~callbacks.progress_bar",
]


def compose_config(overrides: list[str], tmp_path: Path, config_name: str = "train") -> DictConfig:
    """The real config with ``overrides``, outputs and caches under ``tmp_path``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
        HydraConfig().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
        cfg.paths.cache_dir = str(tmp_path / "cache")
        del cfg.hydra
    if config_name == "train":
        resolve_lr_scale(cfg)  # data.lr_scale=auto -> an integer, as train.py's recipe does first
    return cfg


def smooth_batch(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Blurred noise stretched to 0..255, uint8 NHWC: smooth but not trivially flat, like upsampled microscopy."""
    rng = np.random.default_rng(seed)
    noise = rng.random((n, size, size, 3)).astype(np.float32)
    blurred = np.stack([cv2.GaussianBlur(im, (0, 0), 2.0) for im in noise])
    blurred = (blurred - blurred.min()) / (blurred.max() - blurred.min())
    return (blurred * 255).round().astype(np.uint8)


def write_image(path: Path, rng: np.random.Generator, size: tuple[int, int] = (40, 44), mode: str = "RGB") -> Path:
    """Write a random image of ``size`` (w, h) in ``mode`` to ``path`` (format from the extension)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(data).convert(mode).save(path)
    return path


FOLDERS = {
    "neutrophil": "Neutrophil",
    "lymphocyte": "Lymphocyte",
    "monocyte": "Monocyte",
    "eos_baso": "Eosinophil/Basophil",
}


def write_dataset(root: Path, per_class: int = 16) -> Path:
    """Synthetic cells written as PNG files in class folders (a folder source with real files)."""
    source = SyntheticSource(n_per_class=per_class, seed=3, native_size=64)
    folders = list(FOLDERS)
    for s in source.scan():
        path = root / folders[s.label] / f"cell_{Path(s.path).name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(source.load(s)).save(path)
    return root


SR_X2 = ["data.lr_scale=2", "sr=espcn", "sr.train.steps=10"]


def train_folder_run(tmp, options: list[str] = SR_X2) -> tuple[Path, str]:
    """A tiny classifier trained by `python train.py` on a folder; by default with a trained ESPCN stage (x2)."""
    data = write_dataset(tmp / "data")
    class_map = "{" + ", ".join(f"{k}: {v}" for k, v in FOLDERS.items()) + "}"
    overrides = [o for o in TINY if not o.startswith("data.source.n_per_class")]
    cmd = [
        sys.executable,
        "train.py",
        *overrides,
        "data=folder",
        f"data.root={data}",
        f"data.source.class_map={class_map}",
        *options,
        "logger=none",
        f"hydra.run.dir={tmp / 'run'}",
    ]
    env = {**os.environ, "WBC_CACHE_DIR": str(tmp / "cache"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp / "run", class_map


class SignalAt:
    """A Lightning callback for tests: the process signals itself (SIGTERM, SIGINT) at a given epoch and batch,
    as a cluster's pre-emption or a user's Ctrl-C would; never in a resumed run."""

    def __new__(cls, *args, **kwargs):
        import lightning as L

        class _SignalAt(L.Callback):
            def __init__(self, epoch: int = 1, batch: int = 1, signal: str = "SIGTERM"):
                self.epoch, self.batch, self.signal = epoch, batch, signal

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                import signal as sig

                if trainer.ckpt_path is None and (trainer.current_epoch, batch_idx) == (self.epoch, self.batch):
                    os.kill(os.getpid(), getattr(sig, self.signal))

        return _SignalAt(*args, **kwargs)


def fake_run(folder, correct, seed, sr, method=None, f=4, split_seed=0, arch=None, backend="torch", old=False):
    """A finished run folder as train.py writes it: metrics.json (run, test) and test_predictions.csv."""
    folder.mkdir(parents=True)
    correct = np.asarray(correct, dtype=int)
    run = {"seed": seed, "split_seed": split_seed, "image_size": 64, "lr_scale": f, "sr": sr, "model": "cnn"}
    if old:  # metrics.json from before the options were recorded
        run |= {"source": "pbc", "sr_backend": backend}
    else:
        run |= {"data": "pbc", "source": "pbc", "sr_method": method or sr, "sr_backend": backend, "sr_arch": arch}
    metrics = {"run": run, "test": {"test/accuracy": float(correct.mean()), "test/f1_macro": float(correct.mean())}}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    with (folder / "test_predictions.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "correct"])
        writer.writerows([f"split{split_seed}/img{i:04d}.png", c] for i, c in enumerate(correct))


def assert_acts_in_training_only(**options) -> None:
    """A WBCClassifier built with a training-time option (``mixstyle=...``, ``randconv=...``, at p=1) equals the
    plain model at evaluation and under AdaBN (batch norms in training mode, no gradients), and differs in
    training."""
    import torch

    from wbc.adapt import adapt_batchnorm
    from wbc.models.module import WBCClassifier

    classes = ["Neutrophil", "Lymphocyte", "Monocyte", "Eosinophil/Basophil"]
    net = {"name": "cnn", "channels": [8, 16], "hidden": 16}
    torch.manual_seed(0)
    model = WBCClassifier(net, classes, **options)
    plain = WBCClassifier(net, classes)
    plain.load_state_dict(model.state_dict())
    x = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    model.eval(), plain.eval()
    torch.testing.assert_close(model(x), plain(x))
    with torch.no_grad():  # AdaBN puts batch norms in training mode: the statistics must be the target's own
        adapt_batchnorm(model, [x.float() / 255] * 4, min_images=8)
        adapt_batchnorm(plain, [x.float() / 255] * 4, min_images=8)
    torch.testing.assert_close(model.state_dict(), plain.state_dict())
    model.train(), plain.train()
    assert not torch.allclose(model(x), plain(x))  # p=1: every training batch is changed
