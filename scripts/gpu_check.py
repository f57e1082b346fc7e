"""The GPU check's steps (run by scripts/gpu_check.sh after it has installed what the machine lacks).

Each step is the project's own command, timed, with its exit status and the figures it produced, all in one JSON
(<out>/gpu_check.json, rewritten after every step so that a check cut short keeps what it did). Steps:

  env        torch, CUDA, the GPUs' names and memory
  train      train.py data=pbc model=resnet18 trainer=gpu (bf16) for 2 epochs: accuracy, seconds per epoch
  sr_sweep   train.py -m sr=none,espcn,edsr for 1 epoch per run: the report's verdict lines, wall time
  predict    predict.py on the GPU over PBC's test split of that run: images per second
  export     scripts/export.py format=onnx and format=export (torch.export): max |p - p_torch|
  ddp        train.py trainer=ddp on every GPU present (synthetic data, 1 epoch)
  pytest     pytest -m gpu: a trainer=gpu run with an SR stage predicts on the GPU what it predicts on the CPU
  benchmark  python -m benchmarks --parts step,predict --device cuda in bf16: throughput against the bare model

`--device cpu` runs the same steps on a CPU (float32, tiny limits): the check of this script itself.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_step(name: str, cmd: list[str], out: Path, timeout: int) -> dict:
    started = time.perf_counter()
    log = out / f"{name}.log"
    try:
        with log.open("w") as f:
            rc = subprocess.run(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        rc = "timeout"
    result = {"command": " ".join(cmd[1:]), "rc": rc, "seconds": round(time.perf_counter() - started, 1)}
    print(f"{name}: rc {rc}, {result['seconds']} s", flush=True)
    if rc != 0:
        result["log_tail"] = log.read_text(errors="replace")[-1500:]
    return result


def environment() -> dict:
    import torch

    gpus = [
        {"name": torch.cuda.get_device_name(i), "memory_gib": torch.cuda.get_device_properties(i).total_memory / 2**30}
        for i in range(torch.cuda.device_count())
    ]
    return {"torch": torch.__version__, "cuda": torch.version.cuda, "gpus": gpus, "python": sys.version.split()[0]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pbc", default=str(REPO.parent / "shared" / "data" / "pbc"))
    parser.add_argument("--out", default=str(REPO / "outputs" / "gpu_check"))
    parser.add_argument("--device", choices=["gpu", "cpu"], default="gpu")
    parser.add_argument("--steps", default="env,train,predict,export,pytest,benchmark,sr_sweep,ddp")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per step")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    gpu = args.device == "gpu"
    trainer = ["trainer=gpu", "trainer.precision=bf16-mixed"] if gpu else ["trainer=cpu"]
    quick = (
        [] if gpu else ["trainer.limit_train_batches=3", "trainer.limit_val_batches=2", "trainer.limit_test_batches=2"]
    )
    common = ["logger=csv", "~callbacks.progress_bar", "trainer.enable_progress_bar=false", *trainer, *quick]
    run = out / "train"
    report: dict = {"device": args.device, "pbc": args.pbc}
    path = out / "gpu_check.json"

    def save() -> None:
        path.write_text(json.dumps(report, indent=2))

    for step in args.steps.split(","):
        if step == "env":
            report["env"] = environment()
        elif step == "train":
            cmd = [py, "train.py", "data=pbc", f"data.root={args.pbc}", "model=resnet18", "trainer.max_epochs=2",
                   *common, f"hydra.run.dir={run}"]  # fmt: skip
            r = report["train"] = run_step(step, cmd, out, args.timeout)
            if (run / "metrics.json").is_file():
                metrics = json.loads((run / "metrics.json").read_text())
                timing = json.loads((run / "run.json").read_text())
                r |= {"test_accuracy": metrics["test"]["test/accuracy"], "epoch_seconds": timing["epoch_seconds"]}
        elif step == "sr_sweep":
            sweep = out / "sr_sweep"
            cmd = [py, "train.py", "-m", "sr=none,espcn,edsr", "trainer.max_epochs=1", *common,
                   f"hydra.sweep.dir={sweep}", *([] if gpu else ["sr.train.steps=20"])]  # fmt: skip
            r = report["sr_sweep"] = run_step(step, cmd, out, args.timeout)
            if (sweep / "comparison.md").is_file():
                r["verdicts"] = [line for line in (sweep / "comparison.md").read_text().splitlines() if "sr=" in line][
                    :6
                ]
        elif step == "predict":
            rows = list(csv.DictReader((run / "test_predictions.csv").open())) if run.is_dir() else []
            listing = out / "test_files"
            listing.mkdir(exist_ok=True)
            for row in rows:  # the run's own test split, as symlinks: predicted images the model never saw
                link = listing / f"{len(list(listing.iterdir()))}{Path(row['path']).suffix}"
                link.symlink_to(Path(row["path"]).resolve())
            cmd = [py, "predict.py", f"ckpt_path={run / 'checkpoints' / 'best.ckpt'}", f"input={listing}",
                   f"device={'cuda' if gpu else 'cpu'}", f"hydra.run.dir={out / 'predict'}"]  # fmt: skip
            r = report["predict"] = run_step(step, cmd, out, args.timeout)
            summary = out / "predict" / "summary.json"
            if summary.is_file():
                r |= {k: v for k, v in json.loads(summary.read_text()).items() if k in ("files", "predicted", "errors")}
        elif step == "export":
            for fmt in ("onnx", "export"):
                target = out / f"model.{'onnx' if fmt == 'onnx' else 'pt2'}"
                cmd = [py, "scripts/export.py", f"ckpt_path={run / 'checkpoints' / 'best.ckpt'}", f"format={fmt}",
                       f"output={target}"]  # fmt: skip
                report[f"export_{fmt}"] = run_step(f"export_{fmt}", cmd, out, args.timeout)
        elif step == "ddp":
            devices = str(max(1, len(report.get("env", {}).get("gpus", [])))) if gpu else "2"
            cmd = [py, "train.py", "trainer=ddp", f"trainer.devices={devices}", "trainer.max_epochs=1",
                   "data.source.n_per_class=64", "logger=none", "~callbacks.progress_bar",
                   "trainer.enable_progress_bar=false", f"hydra.run.dir={out / 'ddp'}"]  # fmt: skip
            if not gpu:
                cmd.append("trainer.accelerator=cpu")
            report["ddp"] = run_step(step, cmd, out, args.timeout) | {"devices": devices}
        elif step == "pytest":
            cmd = [py, "-m", "pytest", "-m", "gpu", "tests/test_gpu.py", "-q", "-p", "no:cacheprovider"]
            report["pytest"] = run_step(step, cmd, out, args.timeout)
        elif step == "benchmark":
            # one repeat, so that the two parts fit well inside the step's timeout; tiny limits on a CPU
            tiny = ["--batches", "3", "--workers", "0", "--predict-images", "64"]
            cmd = [py, "-m", "benchmarks", "--parts", "step,predict", "--device", "cuda" if gpu else "cpu",
                   "--repeats", "1", "--pbc", args.pbc, *(["--precision", "bf16-mixed"] if gpu else tiny)]  # fmt: skip
            r = report["benchmark"] = run_step(step, cmd, out, args.timeout)
            for part in ("step", "predict"):
                result = REPO / "outputs" / "benchmarks" / f"{part}.json"
                if result.is_file():
                    r[part] = json.loads(result.read_text())
        else:
            raise SystemExit(f"unknown step {step!r}")
        save()
    failed = [k for k, v in report.items() if isinstance(v, dict) and v.get("rc") not in (None, 0)]
    report["failed_steps"] = failed
    save()
    print(f"wrote {path}; failed steps: {', '.join(failed) or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    sys.exit(main())
