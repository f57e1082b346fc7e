"""Train (or load) the in-domain SR model of a configuration and report its quality.

    python scripts/train_sr.py sr=edsr data=pbc data.root=/path/to/PBC data.image_size=128 data.lr_scale=4

(data.lr_scale defaults to auto: sr_study_scale, 4, for an SR method, as in train.py.)

Uses the training config (conf/train.yaml): the same data, split and SR settings as `train.py`, so the
weights it stores under paths.cache_dir/sr are the ones every later run of that configuration reuses. Trains on
the training split only; reports PSNR/SSIM of SR and bicubic against the reference on the val and test splits.
"""

import json
import logging
import shutil
import sys
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import wbc  # noqa: E402,F401
from wbc.data.datamodule import build_datamodule  # noqa: E402
from wbc.resize import upscale  # noqa: E402
from wbc.sr.quality import sr_quality  # noqa: E402

log = logging.getLogger("train_sr")


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> None:
    import numpy as np

    from wbc.sr.study import resolve_lr_scale

    resolve_lr_scale(cfg)  # data.lr_scale=auto: sr_study_scale for an SR method, as in train.py
    if cfg.data.lr_scale < 2 or cfg.sr.method in ("none", "bicubic"):
        sys.exit("train_sr needs a trainable method (sr=espcn or sr=edsr) and data.lr_scale >= 2")
    out = Path(cfg.paths.output_dir)
    restorer = instantiate(cfg.sr)
    datamodule = build_datamodule(cfg.data, restorer=restorer, seed=cfg.seed)
    datamodule.setup("fit")  # trains (or loads) the SR model on the training split, then caches its outputs
    pre = datamodule.preprocessor
    report = {
        "method": cfg.sr.method,
        "scale": pre.lr_scale,
        "image_size": pre.image_size,
        "train": restorer.train_stats,
        "weights": str(restorer.weights_path),
    }
    for split in ("val", "test"):
        rows = np.unique(datamodule.datasets[split].rows)
        if not len(rows):
            continue
        refs = np.asarray(datamodule.references[rows])
        bicubic = np.stack([upscale(im, pre.image_size, "bicubic") for im in pre.degrade(refs)])
        report[split] = {
            **sr_quality(np.asarray(datamodule.datasets[split].images[rows]), refs),
            **{f"{k}_bicubic": v for k, v in sr_quality(bicubic, refs).items()},
        }
    if restorer.weights_path is not None:
        shutil.copy(restorer.weights_path, out / "sr_weights.pt")
    (out / "sr_metrics.json").write_text(json.dumps(report, indent=2))
    log.info("SR report (also in %s):\n%s", out / "sr_metrics.json", json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
