"""Kept so that existing commands work: `python scripts/benchmark.py ...` is `python -m benchmarks ...`
(the benchmarks/ package; `python -m benchmarks --help` lists the parts and options)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.__main__ import main  # noqa: E402

if __name__ == "__main__":
    main()
