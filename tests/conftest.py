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


def _shared(path: Path) -> Path:
    """A folder of ../shared: skipped where it is absent, a failure in CI (where it must be)."""
    if not path.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{path} is missing: CI must have ../shared beside the checkout")
        pytest.skip(f"{path} not found")
    return path


@pytest.fixture(scope="session")
def pbc_root() -> Path:
    return _shared(PBC_ROOT)


@pytest.fixture(scope="session")
def lisc_root() -> Path:
    """LISC (another lab), in class folders named as PBC names them."""
    return _shared(SHARED / "data" / "lisc")


@pytest.fixture(scope="session")
def sr_models_dir() -> Path:
    return _shared(SR_MODELS)


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """(run folder, class_map) of a tiny classifier with an in-domain ESPCN x2 stage, trained by train.py."""
    from tests.helpers import train_folder_run

    return train_folder_run(tmp_path_factory.mktemp("trained"))


@pytest.fixture(scope="session")
def trained_framed(tmp_path_factory):
    """(run folder, class_map) of a tiny classifier with scale framing, stain normalisation and the robust
    augmentation, no SR stage."""
    from tests.helpers import train_folder_run

    options = ["data.framing=scale", "data.stain=reinhard", "data/augment=robust", "data.lr_scale=1", "sr=none"]
    return train_folder_run(tmp_path_factory.mktemp("trained_framed"), options)
