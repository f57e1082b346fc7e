"""Part `sweep`: wall time of a 4-method x 3-seed SR sweep against 12 runs of sr=none, each with a fresh cache."""

from __future__ import annotations

import shutil

from benchmarks.harness import OUT, device_overrides, run_sweep


def run(args) -> dict:
    for name in ("study", "plain", "study-cache", "plain-cache"):
        shutil.rmtree(OUT / "sweeps" / name, ignore_errors=True)
    common = [
        "data=pbc",
        f"data.root={args.pbc}",
        "data.image_size=64",
        "data.lr_scale=4",
        "logger=none",
        f"trainer.max_epochs={args.sweep_epochs}",
        f"trainer.precision={args.precision}",
        *device_overrides(args.device),
    ]
    # fresh caches: the sweep pays for SR training and SR inference once per method, the plain runs for decoding
    study = run_sweep(
        args, "study", [*common, f"sr=none,bicubic,espcn,{args.edsr}", "seed=0,1,2"], OUT / "sweeps" / "study-cache"
    )
    plain = run_sweep(
        args, "plain", [*common, "sr=none", "seed=0,1,2,3,4,5,6,7,8,9,10,11"], OUT / "sweeps" / "plain-cache"
    )
    print(
        f"sweep: 4 methods x 3 seeds {study:.0f} s, 12 x sr=none {plain:.0f} s, ratio {study / plain:.2f}", flush=True
    )
    return {
        "study_seconds": study,
        "plain_seconds": plain,
        "ratio": study / plain,
        "goal": "< 1.3",
        "overrides": common,
    }
