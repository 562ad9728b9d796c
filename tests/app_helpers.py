"""Helpers for the dashboard's AppTest tests: open a page of app.py with tmp folders and fresh caches."""

from __future__ import annotations

from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from inference_helpers import copy_photos  # noqa: F401  (re-exported for the app tests)

REPO_ROOT = Path(__file__).resolve().parents[1]
APP = REPO_ROOT / "app.py"
# Seconds one script run may take: the first run loads TensorFlow and a model on 2 shared cores.
RUN_TIMEOUT_S = 240


@pytest.fixture
def app_env(tmp_path, monkeypatch):
    """Empty models/runs/augment folders in tmp_path and no cached models or scans from other tests."""
    folders = {name: tmp_path / name for name in ("models", "runs", "augment")}
    for folder in folders.values():
        folder.mkdir()
    monkeypatch.setenv("CARCLF_MODELS_DIR", str(folders["models"]))
    monkeypatch.setenv("CARCLF_RUNS_DIR", str(folders["runs"]))
    monkeypatch.setenv("CARCLF_AUGMENT_DIR", str(folders["augment"]))
    monkeypatch.delenv("CARCLF_DATA_DIR", raising=False)
    _fresh_server_state()
    yield folders
    _fresh_server_state()


def _fresh_server_state() -> None:
    """What a restarted server starts with: empty caches, no login failures, CARCLF_MODEL_URL not yet handled
    (the last two live in module globals, out of reach of a visitor's 'clear cache')."""
    from carclf.ui import access, bundle_io

    st.cache_resource.clear()
    st.cache_data.clear()
    access._global_throttle().succeed()
    bundle_io._env_model_state().update(done=False, path=None, error=None)


def open_page(script: str, model: str | None = None) -> AppTest:
    """Run app.py (navigation + sidebar) on pages/<script>, without first running the default page.

    ``model`` preselects the sidebar's model choice (a bundle folder, or "default").
    """
    at = AppTest.from_file(str(APP), default_timeout=RUN_TIMEOUT_S)
    if model is not None:
        at.session_state["carclf_model"] = model
    at.switch_page(f"pages/{script}")
    at.run()
    assert not at.exception, at.exception
    return at


def texts(elements) -> list[str]:
    """The text of each element (markdown, error, info...), for assertions."""
    return [str(e.value) for e in elements]


def make_bundle(models_dir: Path, name: str, classes: list[str], display_names: list[str],
                tta: int | None = None, extra_meta: dict | None = None) -> Path:
    """A real (untrained, tiny) classifier saved as a bundle: efficientnet_lite0 at 32 px, random weights;
    ``tta``: the views its (pretend) validation score was measured with, stored in its meta.json;
    ``extra_meta``: more meta.json keys (e.g. a calibration).

    Its answers are arbitrary but deterministic; the tests check what the pages show, not accuracy.
    """
    import keras

    from carclf.bundle import save_bundle
    from carclf.config import load_config
    from carclf.model import build_classifier

    keras.utils.set_random_seed(0)
    config = load_config(preset="quick", overrides={"img_size": 32, "weights": "none", "name": name})
    model = build_classifier(config, len(classes))
    meta = {"backbone": config.backbone, "val_metrics": {"val_accuracy": 0.5}}
    if tta is not None:
        meta["tta"] = tta
    meta.update(extra_meta or {})
    return save_bundle(model, models_dir / name, classes, display_names, meta=meta)
