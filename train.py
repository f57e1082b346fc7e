"""Train a WBC classifier: `python train.py [group=option ...] [key=value ...]`, `-m` for sweeps.

`python train.py ckpt_path=last ...` continues the latest run of the same configuration in its own folder;
`python train.py resume=<run folder>` continues that run.
"""

import sys

import hydra
from omegaconf import DictConfig

import wbc  # noqa: F401  (sets NO_ALBUMENTATIONS_UPDATE and registers config resolvers)
from wbc.resume import resume_arguments


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from wbc.train import run

    result = run(cfg)
    return (result.get("test") or {}).get("test/f1_macro")


if __name__ == "__main__":
    sys.argv[1:] = resume_arguments(sys.argv[1:])
    main()
