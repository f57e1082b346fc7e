"""Train (or load) the in-domain SR model of a configuration and report its quality.

    python scripts/train_sr.py sr=edsr data=pbc data.root=/path/to/PBC data.image_size=128 data.lr_scale=4

(data.lr_scale defaults to auto: sr_study_scale, 4, for an SR method, as in train.py.)

With ``+reference_checkpoint=<best.ckpt of a data.lr_scale=1 run at the same S and split>`` it also reports how
that frozen classifier, trained on the reference images, reads the val and test images as each way back to S
gives them (the references themselves, the plain resize, bicubic, this SR stage): the question of a lab that
deploys a high-resolution classifier behind an SR stage without retraining it.

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
    if cfg.get("reference_checkpoint"):
        for split in ("val", "test"):
            if split in report:
                report[split]["reference_accuracy"] = frozen_accuracy(cfg.reference_checkpoint, datamodule, split)
    if restorer.weights_path is not None:
        shutil.copy(restorer.weights_path, out / "sr_weights.pt")
    (out / "sr_metrics.json").write_text(json.dumps(report, indent=2))
    log.info("SR report (also in %s):\n%s", out / "sr_metrics.json", json.dumps(report, indent=2))


def frozen_accuracy(checkpoint: str, datamodule, split: str) -> dict[str, float]:
    """Accuracy of a frozen classifier of the reference images on ``split``: on the references, and on their
    reductions by f brought back by the plain resize, bicubic and the SR stage."""
    import numpy as np
    import torch

    from wbc.predict import Predictor
    from wbc.sr.stage import SuperResolver

    predictor = Predictor.from_checkpoint(checkpoint)
    pre, ref_pre = datamodule.preprocessor, predictor.preprocessor
    if ref_pre.lr_scale != 1 or ref_pre.image_size != pre.image_size:
        sys.exit(f"reference_checkpoint={checkpoint}: trained at S={ref_pre.image_size}, f={ref_pre.lr_scale}; it "
                 f"must be a data.lr_scale=1 run at data.image_size={pre.image_size}")  # fmt: skip
    if ref_pre.describe() != pre.describe():  # the views below are this run's framed, colour-normalised images
        sys.exit(f"reference_checkpoint={checkpoint}: framed or colour-normalised otherwise ({ref_pre.describe()}) "
                 f"than this run ({pre.describe()})")  # fmt: skip
    dataset = datamodule.datasets[split]
    refs, labels = np.asarray(datamodule.references[dataset.rows]), np.asarray(dataset.labels)
    low = pre.degrade(refs)
    views = {
        "reference": refs,
        # the plain stages themselves (not a copy of their resize): what sr=none and sr=bicubic give a run
        **{method: SuperResolver(method, pre.lr_scale)(low) for method in ("none", "bicubic")},
        pre.restorer.method: np.asarray(dataset.images[dataset.rows]),
    }

    def accuracy(images: np.ndarray) -> float:
        probs = torch.cat([predictor.probabilities(images[i : i + 256]) for i in range(0, len(images), 256)])
        return float((probs.argmax(1).numpy() == labels).mean())

    return {name: accuracy(images) for name, images in views.items()}


if __name__ == "__main__":
    main()
