"""Shared fixtures: the real photos in ../shared/data, quiet TensorFlow, fresh Keras state."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # tests are CPU tests, even on a GPU machine

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only folder of real test photos (see its README). Never write into it."""
    if not (SHARED_DATA / "labels.csv").is_file():
        pytest.fail(f"real test photos not found at {SHARED_DATA}: the tests need ../shared/data")
    return SHARED_DATA
