"""Part `memory`: peak resident memory of a PBC training run at S=128 (a child process: ru_maxrss of children)."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time

from benchmarks.harness import OUT, REPO, device_overrides


def run(args) -> dict:
    cmd = [
        sys.executable,
        "train.py",
        "data=pbc",
        f"data.root={args.pbc}",
        "data.image_size=128",
        "trainer.max_epochs=1",
        f"trainer.limit_train_batches={args.batches}",
        "logger=none",
        f"trainer.precision={args.precision}",
        *device_overrides(args.device),
        f"hydra.run.dir={OUT / 'memory_run'}",
    ]
    env = {**os.environ, "WBC_CACHE_DIR": str(args.cache)}
    start = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, env=env, check=True, capture_output=True)
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(f"memory: peak RSS {peak_kb / 2**20:.2f} GiB", flush=True)
    return {
        "peak_rss_gib": peak_kb / 2**20,
        "seconds": time.perf_counter() - start,
        "goal": "< 4 GB",
        "command": " ".join(cmd[1:]),
    }
