"""Keep a sweep's results without its weights, and bring them back on another machine:

    python scripts/sweep_archive.py pack <sweep folder> <archive folder>
    python scripts/sweep_archive.py unpack <archive folder> <sweep folder>

pack: one small file per finished job (metrics, test predictions, overrides; no checkpoints) plus multirun.yaml.
unpack: recreate those jobs, so that `python train.py -m resume=<sweep folder>` skips them and trains the rest, and
`python scripts/compare.py <sweep folder>` reports them. See wbc/reports/archive.py.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wbc.reports.archive import pack, unpack  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("verb", choices=("pack", "unpack"))
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    args = parser.parse_args()
    try:
        report = (pack if args.verb == "pack" else unpack)(args.source, args.target)
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f"error: {err}")
    for key, jobs in report.items():
        print(f"{key}: {len(jobs)}" + (f" ({' '.join(jobs)})" if jobs else ""))


if __name__ == "__main__":
    main()
