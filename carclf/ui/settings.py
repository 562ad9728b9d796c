"""Where the dashboard keeps its folders: read from environment variables so tests and deployments can
point the app at temporary or mounted folders without editing code."""

from __future__ import annotations

import os
from pathlib import Path

import carclf

# Environment variable -> folder, relative to the working directory unless absolute.
MODELS_DIR_ENV = "CARCLF_MODELS_DIR"  # trained bundles (carclf.bundle layout)
RUNS_DIR_ENV = "CARCLF_RUNS_DIR"  # training runs (carclf.runs layout)
AUGMENT_DIR_ENV = "CARCLF_AUGMENT_DIR"  # augmentation configs saved from the lab
DATA_DIR_ENV = "CARCLF_DATA_DIR"  # the folder the data/train/evaluate forms start with

# Defaults when the variables are unset: the repository's own folders (git-ignored).
DEFAULT_MODELS_DIR = "models"
DEFAULT_RUNS_DIR = "runs"
DEFAULT_AUGMENT_DIR = "augment"

# Public-domain sample images shipped with the package (see their LICENSE.md).
SAMPLES_DIR = Path(carclf.__file__).parent / "resources" / "samples"


def _folder(env: str, default: str) -> Path:
    return Path(os.environ.get(env) or default).expanduser()


def models_dir() -> Path:
    """Folder of trained inference bundles."""
    return _folder(MODELS_DIR_ENV, DEFAULT_MODELS_DIR)


def runs_dir() -> Path:
    """Folder of training runs."""
    return _folder(RUNS_DIR_ENV, DEFAULT_RUNS_DIR)


def augment_dir() -> Path:
    """Folder of named augmentation configs saved from the Augmentation lab."""
    return _folder(AUGMENT_DIR_ENV, DEFAULT_AUGMENT_DIR)


def default_data_dir() -> str:
    """The data folder pre-filled in forms ('' when none is configured)."""
    return os.environ.get(DATA_DIR_ENV, "")
