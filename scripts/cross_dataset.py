"""Evaluate a checkpoint on other labs' labelled folders: `python scripts/cross_dataset.py ckpt_path=...
'datasets={lisc: ../shared/data/lisc}'` (see conf/cross_dataset.yaml). Writes cross_dataset.md/.csv/.json/.png."""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import wbc  # noqa: E402,F401  (sets NO_ALBUMENTATIONS_UPDATE, registers resolvers)


@hydra.main(version_base="1.3", config_path="../conf", config_name="cross_dataset")
def main(cfg: DictConfig) -> int:
    from wbc.crossdata import run

    code = run(cfg)
    if code:
        sys.exit(code)
    return code


if __name__ == "__main__":
    main()
