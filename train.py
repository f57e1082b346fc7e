"""Train a WBC classifier: `python train.py [group=option ...] [key=value ...]`, `-m` for sweeps.

`python train.py ckpt_path=last ...` continues the latest run of the same configuration in its own folder;
`python train.py resume=<run folder>` continues that run; `python train.py -m resume=<sweep folder>` continues an
interrupted sweep (finished jobs skipped, unfinished ones continued from their checkpoints, in their folders).

Returns (to a sweeper such as Optuna) the best validation value of `optimized_metric` (default val/f1_macro).

Exit status: 0 when the run finished; 2 for a mistake in the command, the config or the data (one line says what
to do); 130 after Ctrl-C and 143 after SIGTERM (the run saved checkpoints/interrupted.ckpt: resume it); 1 for
anything else.
"""

import sys

import hydra
from omegaconf import DictConfig

import wbc  # noqa: F401  (sets NO_ALBUMENTATIONS_UPDATE and registers config resolvers)
from wbc.resume import resume_arguments

# Keys that do not exist but that users type (an older message named the first): the one line says which does.
MISTYPED_KEYS = {"data.class_map": "data.source.class_map"}


def check_keys(args: list[str]) -> None:
    for arg in args:
        key = arg.split("=", 1)[0].lstrip("+~")
        if key in MISTYPED_KEYS:
            right = MISTYPED_KEYS[key]
            sys.exit(f"error: there is no {key}: the key is {right}, e.g. '{right}={{neut: Neutrophil, ...}}'")


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig

    from wbc.data.sources import require_root
    from wbc.errors import reported_errors
    from wbc.train import run

    with reported_errors():
        require_root(cfg.data, HydraConfig.get().runtime.choices.get("data"))
        result = run(cfg)
    # what a sweeper (Optuna, ...) optimises: the best validation value of optimized_metric, never a test metric
    return (result.get("optimized") or {}).get("value")


if __name__ == "__main__":
    check_keys(sys.argv[1:])
    sys.argv[1:] = resume_arguments(sys.argv[1:])
    main()
