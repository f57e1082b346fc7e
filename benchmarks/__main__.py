"""`python -m benchmarks`: the command line; runs the chosen parts, writes their JSON files and results.md."""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import benchmarks
from benchmarks import accuracy, data, memory, predict, sr, step, sweep
from benchmarks.harness import OUT, REPO, machine, render, resolve_device

PARTS = {
    "data": data.run,
    "step": step.run,
    "memory": memory.run,
    "sr": sr.run,
    "sweep": sweep.run,
    "predict": predict.run,
    "accuracy": accuracy.run,
}


def parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=benchmarks.__doc__, formatter_class=formatter)
    p.add_argument("--parts", default="data,step,memory,sr,predict", help=f"comma-separated: {','.join(PARTS)}")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto: cuda when present")
    p.add_argument("--pbc", type=Path, default=REPO.parent / "shared" / "data" / "pbc")
    p.add_argument("--sr-models", type=Path, default=REPO.parent / "shared" / "sr_models")
    p.add_argument("--cache", type=Path, default=REPO / "outputs" / "cache", help="shared with train.py runs")
    p.add_argument("--batches", type=int, default=40, help="training batches timed per epoch")
    p.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="timed repeats: the step part keeps the best, the data and predict parts the median",
    )
    p.add_argument("--workers", type=lambda s: [int(x) for x in s.split(",")], default=[0, 2])
    p.add_argument("--precision", default="32-true", help="32-true or bf16-mixed")
    p.add_argument("--predict-images", type=int, default=1000)
    p.add_argument("--decode-threads", type=int, default=2)
    p.add_argument("--sr-size", type=int, default=128)
    p.add_argument("--sweep-epochs", type=int, default=3)
    experiments = "default: the experiment's (conf/experiment/pbc_*.yaml)"
    p.add_argument("--epochs-64", type=int, help=f"max epochs of the accuracy runs at S=64; {experiments}")
    p.add_argument("--epochs-128", type=int, help=f"max epochs of the accuracy runs at S=128; {experiments}")
    p.add_argument("--seeds", help=f"training seeds of the accuracy sweeps, e.g. 0,1; {experiments}")
    p.add_argument("--jobs", type=int, default=1, help="parallel jobs of the accuracy sweeps (joblib)")
    p.add_argument("--accuracy-only", type=lambda s: s.split(","), default=None, help=",".join(accuracy.SWEEPS))
    p.add_argument("--accuracy-overrides", type=lambda s: s.split(), default=[], help="extra train.py overrides")
    p.add_argument("--edsr", default="edsr_small", help="the sr option used for EDSR (edsr: the baseline)")
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The options, with --device resolved (auto: cuda or cpu) and --parts checked."""
    p = parser()
    args = p.parse_args(argv)
    unknown = [part for part in args.parts.split(",") if part not in PARTS]
    if unknown:
        p.error(f"unknown part(s) {','.join(unknown)}; the parts: {','.join(PARTS)}")
    try:
        args.device = resolve_device(args.device)
    except ValueError as err:
        p.error(str(err))
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    for part in args.parts.split(","):
        started = time.perf_counter()
        try:
            result = PARTS[part](args)
        except subprocess.CalledProcessError as err:  # a failed part is reported, the others still run
            print(f"part {part} failed: {err}\n{(err.stderr or b'')[-3000:].decode(errors='replace')}", flush=True)
            continue
        result["machine"] = machine(args.device)
        result["wall_seconds"] = time.perf_counter() - started
        (OUT / f"{part}.json").write_text(json.dumps(result, indent=2))
    print(render(OUT))


if __name__ == "__main__":
    main()
