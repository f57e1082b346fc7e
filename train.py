"""Train a WBC classifier: `python train.py [group=option ...] [key=value ...]`, `-m` for sweeps."""

import hydra
from omegaconf import DictConfig

import wbc  # noqa: F401  (sets NO_ALBUMENTATIONS_UPDATE before albumentations loads)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from wbc.train import run

    result = run(cfg)
    return (result.get("test") or {}).get("test/f1_macro")


if __name__ == "__main__":
    main()
