"""Test settings: one torch thread (two threads and a second busy process slow each other badly), offline."""

import os
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
PBC_ROOT = SHARED / "data" / "pbc"
SR_MODELS = SHARED / "sr_models"


@pytest.fixture(scope="session")
def pbc_root() -> Path:
    if not PBC_ROOT.is_dir():
        pytest.skip(f"PBC data not found at {PBC_ROOT}")
    return PBC_ROOT


@pytest.fixture(scope="session")
def sr_models_dir() -> Path:
    if not SR_MODELS.is_dir():
        pytest.skip(f"shared SR models not found at {SR_MODELS}")
    return SR_MODELS
