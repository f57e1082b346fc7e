"""SR on real small cells: `python scripts/native_sr.py 'ckpt_paths=[.../best.ckpt]'
'datasets={lisc: ../shared/data/lisc}' 'enlargers={resize: none, bicubic: bicubic, espcn: <weights>}'`
(see conf/native_sr.yaml). Writes native_sr.md/.json."""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import wbc  # noqa: E402,F401  (sets NO_ALBUMENTATIONS_UPDATE, registers resolvers)


@hydra.main(version_base="1.3", config_path="../conf", config_name="native_sr")
def main(cfg: DictConfig) -> int:
    from wbc.sr.native_study import run

    code = run(cfg)
    if code:
        sys.exit(code)
    return code


if __name__ == "__main__":
    main()
