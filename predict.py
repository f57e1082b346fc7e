"""Label a folder of new cell images: `python predict.py ckpt_path=... input=<folder, file or glob>`."""

import sys

import hydra
from omegaconf import DictConfig

import wbc  # noqa: F401  (sets NO_ALBUMENTATIONS_UPDATE before albumentations loads)


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    from wbc.predict import run

    code = run(cfg)
    if code:
        sys.exit(code)


if __name__ == "__main__":
    main()
