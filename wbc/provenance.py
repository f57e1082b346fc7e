"""What a run records about where it came from: git commit, package versions, command, machine, timings."""

from __future__ import annotations

import importlib.metadata
import platform
import socket
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

PACKAGES = (
    "wbc",
    "torch",
    "torchvision",
    "lightning",
    "torchmetrics",
    "hydra-core",
    "omegaconf",
    "albumentations",
    "opencv-contrib-python-headless",
    "opencv-python-headless",
    "numpy",
    "scipy",
    "pillow",
    "matplotlib",
)


def git_state(folder: Path | None = None) -> dict[str, Any]:
    """Commit and dirtiness of the checkout that holds the code, or ``{"commit": "not a git checkout"}``."""
    folder = folder or Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(folder), *args], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": "not a git checkout"}


def versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def provenance() -> dict[str, Any]:
    return {
        "git": git_state(),
        "versions": {"python": platform.python_version(), **versions()},
        "command": [sys.executable, *sys.argv],
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
