"""Test settings: one torch thread (two threads and a second busy process slow each other badly), offline."""

import os
import tempfile
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# logger=mlflow and logger=wandb write where these say (a config test instantiates them): never into the checkout
os.environ.setdefault("WBC_MLFLOW_DIR", os.path.join(tempfile.mkdtemp(prefix="wbc-mlflow-"), "mlflow"))
os.environ.setdefault("WBC_WANDB_DIR", os.path.join(tempfile.mkdtemp(prefix="wbc-wandb-"), "wandb"))

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


# Tests that need a classifier trained by `python train.py` (the session fixtures above, a subprocess each) are
# end-to-end tests: marked slow, like the tests that run a command in a subprocess (marked where they are defined).
TRAINED_FIXTURES = {"trained", "trained_framed"}


@pytest.hookimpl(tryfirst=True)  # before -m selects
def pytest_collection_modifyitems(config, items):
    for item in items:
        params = getattr(item, "callspec", None)
        by_name = {v for v in (params.params.values() if params else ()) if isinstance(v, str)}  # getfixturevalue
        if TRAINED_FIXTURES & (set(getattr(item, "fixturenames", ())) | by_name):
            item.add_marker(pytest.mark.slow)
