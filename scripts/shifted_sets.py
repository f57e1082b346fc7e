"""Simulated lab differences (wbc.shifts): write labelled copies of a run's held-out test images, each changed in
one way other labs' images differ (magnification, resolution, tight crops, blur, stain amount and balance, lamp,
JPEG), and with --ckpt evaluate a checkpoint on all of them (scripts/cross_dataset.py: accuracy, macro-F1,
per-class recall and ECE with bootstrap intervals).

    python scripts/shifted_sets.py --run outputs/runs/<run> --out outputs/shifted
    python scripts/shifted_sets.py --run <run> --out outputs/shifted --ckpt <run>/checkpoints/best.ckpt
    python scripts/shifted_sets.py --run <run> --out outputs/shifted --ckpt <seed 0>/best.ckpt <seed 1>/best.ckpt

The images are the run's test split (its split_manifest.csv), which the model never trained on. Existing
folders are reused (delete <out> to write them again). Extra arguments after `--` go to cross_dataset.py
(`-- adapt_bn=[false,true]`).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from wbc.shifts import SHIFTS, test_files, write_shifted_sets  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a run folder (its split_manifest.csv names the test images)")
    parser.add_argument("--out", default="outputs/shifted")
    parser.add_argument(
        "--shifts", default=",".join(SHIFTS), help=f"comma-separated, of {', '.join(SHIFTS)}; a+b combines two"
    )
    parser.add_argument("--split", default="test")
    parser.add_argument("--um-per-px", type=float, default=None, help="the images' pixel size (default: measured)")
    parser.add_argument(
        "--ckpt", nargs="+", default=None, help="evaluate this checkpoint (or a recipe's seeds) on every shifted set"
    )
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    out = Path(args.out).resolve()
    shifts = args.shifts.split(",")
    todo = [s for s in shifts if not (out / s).is_dir()]
    if todo:
        try:
            files = test_files(Path(args.run) / "split_manifest.csv", args.split)
            counts = write_shifted_sets(files, out, todo, args.um_per_px)
        except (OSError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        for name, c in counts.items():
            print(f"{name}: {c['written']} images written, {c['unreadable']} unreadable", flush=True)
    datasets = "{" + ", ".join(f"{s}: {out / s}" for s in shifts) + "}"
    given = [str(Path(c).resolve()) for c in args.ckpt or ["<best.ckpt>"]]
    ckpt = given[0] if len(given) == 1 else "[" + ",".join(given) + "]"  # several: their mean, with its interval
    cmd = [sys.executable, "scripts/cross_dataset.py", f"ckpt_path={ckpt}", f"datasets={datasets}",
           "adapt_bn=[false]", *extra]  # fmt: skip
    if not args.ckpt:
        print("evaluate a checkpoint on them:", " ".join(f"'{c}'" if " " in c else c for c in cmd[1:]))
        return 0
    return subprocess.run(cmd, cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main())
