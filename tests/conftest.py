"""Shared fixtures: where the real data lives, and deterministic CPU settings."""

import os
from pathlib import Path

import pytest
import torch

# ../shared/data beside the project root (every checkout and CI have it).
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MODELNET40_H5 = SHARED_DATA / "modelnet40_hdf5_1024"


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"real data not found at {SHARED_DATA}; CI must have ../shared/data")
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def modelnet40_root(shared_data: Path) -> Path:
    return MODELNET40_H5
