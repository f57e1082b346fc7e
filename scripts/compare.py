"""Aggregate a multirun folder into the SR study's report: `python scripts/compare.py <multirun dir>`."""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wbc.reports.compare import compare  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("sweep_dir", type=Path, help="a multirun folder, e.g. outputs/multirun/2026-11-26/10-00-00")
    args = parser.parse_args()
    try:
        print(compare(args.sweep_dir))
    except FileNotFoundError as err:
        sys.exit(f"error: {err}")
    print(f"written: {args.sweep_dir}/comparison.md, comparison.csv, comparison.json, comparison.png")


if __name__ == "__main__":
    main()
