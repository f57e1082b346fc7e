"""Part `accuracy`: the accuracy experiments (conf/experiment/pbc_<sweep>.yaml) run as `train.py -m` sweeps, each
reported by wbc.reports.compare: cnn and resnet18 at S=64 (models64), resnet18 at S=128 (models128) and the SR study at
S=128, x4 with the cnn (sr_study128, whose f=1 runs are the cnn at 128)."""

from __future__ import annotations

import json

from benchmarks.harness import OUT, compose_train, device_overrides, run_sweep

SWEEPS = ("models64", "models128", "sr_study128")


def experiment(name: str) -> str:
    return f"pbc_{name}"


def sweep_overrides(args, name: str) -> list[str]:
    """`train.py -m` overrides of one sweep: its experiment, the axes it sweeps with the options of this run
    (--seeds, --edsr), its epochs (--epochs-64 or --epochs-128 by its image size), and the common settings."""
    cfg = compose_train([f"experiment={experiment(name)}", f"data.root={args.pbc}"], hydra_node=True)
    axes = {key: str(value) for key, value in cfg.hydra.sweeper.params.items()}
    if args.seeds:
        axes["seed"] = args.seeds
    if "sr" in axes:
        axes["sr"] = ",".join(args.edsr if m.startswith("edsr") else m for m in axes["sr"].split(","))
    epochs = {64: args.epochs_64, 128: args.epochs_128}.get(cfg.data.image_size)
    return [
        f"experiment={experiment(name)}",
        f"data.root={args.pbc}",
        "logger=none",
        f"trainer.precision={args.precision}",
        *device_overrides(args.device),
        *(f"{key}={value}" for key, value in axes.items()),
        *([f"trainer.max_epochs={epochs}"] if epochs else []),
        *args.accuracy_overrides,
    ]


def run(args) -> dict:
    from wbc.reports.compare import compare

    previous = OUT / "accuracy.json"  # sweeps run one at a time add to what earlier ones wrote
    result = {k: v for k, v in json.loads(previous.read_text()).items() if k in SWEEPS} if previous.exists() else {}
    for name in SWEEPS:
        if args.accuracy_only and name not in args.accuracy_only:
            continue
        overrides = sweep_overrides(args, name)
        if args.jobs > 1:
            overrides = [*overrides, "hydra/launcher=joblib", f"hydra.launcher.n_jobs={args.jobs}"]
        seconds = run_sweep(args, f"accuracy-{name}", overrides)
        table = compare(OUT / "sweeps" / f"accuracy-{name}")
        result[name] = {"seconds": seconds, "overrides": overrides, "table": table}
        print(table, flush=True)
    return result
