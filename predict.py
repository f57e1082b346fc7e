"""Label a folder of new cell images: `python predict.py ckpt_path=... input=<folder, file or glob>`.

Exit status: 0 when at least one file was predicted (and, with evaluate=true, evaluated); 1 when none could be;
2 for a mistake in the command (a missing setting, a wrong path, a class_map that maps no folder): one line
says what to do.
"""

import sys

import hydra
from omegaconf import DictConfig

import wbc  # noqa: F401  (sets NO_ALBUMENTATIONS_UPDATE before albumentations loads)


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    from wbc.errors import reported_errors
    from wbc.predict import run

    with reported_errors():
        code = run(cfg)
    if code:
        sys.exit(code)


if __name__ == "__main__":
    main()
