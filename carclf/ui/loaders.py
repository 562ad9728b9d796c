"""Cached loaders: heavy objects are built once per server process and shared by all sessions."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

import carclf
from carclf.default_model import DEFAULT_MODEL_NAME
from carclf.images import is_image_file, load_image
from carclf.ui import settings

# Models kept in memory at once: each holds a Keras graph (100-300 MB); switching back and forth between two
# is common, more than two is rare and would push a 2.7 GB Community Cloud box towards its limit.
MAX_CACHED_MODELS = 2


@st.cache_resource(show_spinner="Loading the model…", max_entries=MAX_CACHED_MODELS)
def _load_predictor(path: str | None, stamp: float):
    """``stamp`` is the bundle folder's mtime, so a re-trained bundle under the same name is reloaded.

    Loading takes a slot of the model line like a prediction: visitors switching between several bundles
    load them one at a time, not all at once (each load peaks at several hundred MB)."""
    from carclf.work_queue import shared_queue

    del stamp
    with shared_queue().slot():
        return carclf.load_model(path)


def load_predictor(path: str | None):
    """The Predictor for a bundle folder, or the built-in default model for ``None`` (raises carclf errors).

    None is passed on as "default": carclf.load_model(None) would pick the newest bundle of ./models.
    """
    path = path or DEFAULT_MODEL_NAME
    stamp = Path(path).stat().st_mtime if path != DEFAULT_MODEL_NAME and Path(path).exists() else 0.0
    return _load_predictor(path, stamp)


@st.cache_resource(show_spinner=False)
def gpu_info():
    """GPU description from carclf.devices; probing devices imports TensorFlow, so do it once."""
    from carclf.devices import gpu_info as probe

    return probe()


def list_samples() -> list[Path]:
    """The shipped public-domain sample images, cars first."""
    return sorted(p for p in settings.SAMPLES_DIR.iterdir() if is_image_file(p))


@st.cache_data(show_spinner=False, max_entries=256)
def thumbnail(path: str, size: int, stamp: float):
    """A small upright RGB copy of an image file for grids (``stamp`` = mtime invalidates edits)."""
    del stamp
    image = load_image(path)
    image.thumbnail((size, size))
    return image


def thumbnail_of(path: Path | str, size: int = 160):
    """``thumbnail`` keyed by the file's mtime (raises ImageError for unreadable files)."""
    return thumbnail(str(path), size, Path(path).stat().st_mtime)


# Seconds a dataset scan is reused: long enough that widget clicks do not rescan 15k files, short enough
# that photos added on disk show up without a restart (the Data page also has a Rescan button).
SCAN_TTL_S = 300


@st.cache_data(show_spinner="Scanning the folder…", ttl=SCAN_TTL_S, max_entries=8)
def _scan_dataset(path: str, decisions_stamp: tuple):
    del decisions_stamp
    from carclf.data import scan_dataset as scan

    return scan(path)


def scan_dataset(path: str):
    """carclf.data.scan_dataset, cached by folder and by its decisions file's mtime, so a keep/exclude/relabel
    recorded on the Data page shows at once (raises DataError for unusable folders)."""
    from carclf.decisions import decisions_path

    try:
        stat = decisions_path(path).stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
    except OSError:  # no decisions file (or an unreadable one: the scan reports it)
        stamp = ()
    return _scan_dataset(path, stamp)


def clear_scans() -> None:
    """Forget every cached scan (the Data page's Rescan button)."""
    _scan_dataset.clear()
