"""Bundles: save/load round trip with identical predictions, no optimizer state, listing, DEFAULT, bad bundles."""

from __future__ import annotations

import json
import os
import zipfile

import keras
import numpy as np
import pytest

from carclf.bundle import (
    DEFAULT_MARKER,
    LABELS_FILE,
    META_FILE,
    MODEL_FILE,
    default_bundle,
    delete_bundle,
    list_bundles,
    load_bundle,
    read_bundle_meta,
    save_bundle,
    set_default_bundle,
)
from carclf.config import load_config
from carclf.errors import BundleError
from carclf.images import load_rgb_array
from carclf.model import build_classifier

IMG_SIZE = 32
CLASSES = ["audi", "bmw", "ferrari"]


@pytest.fixture(scope="module")
def trained_model():
    """A compiled classifier that took one optimizer step (so it HAS optimizer state to leave out)."""
    keras.utils.set_random_seed(0)
    config = load_config(preset="quick", overrides={"img_size": IMG_SIZE, "weights": "none"})
    model = build_classifier(config, len(CLASSES))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.train_on_batch(np.zeros((2, IMG_SIZE, IMG_SIZE, 3), "float32"), np.array([0, 1]))
    return model


@pytest.fixture(scope="module")
def photos(shared_data):
    folder = shared_data / "cars" / "vidhyagupta_car_brands_5"
    paths = [sorted((folder / name).iterdir())[0] for name in CLASSES]
    return np.stack([load_rgb_array(path, IMG_SIZE) for path in paths]).astype("float32")


def save(model, models_dir, name="cars", **meta):
    return save_bundle(model, models_dir / name, CLASSES, ["Audi", "BMW", "Ferrari"],
                       meta={"backbone": "efficientnet_lite0", "run_id": "r1", **meta})


def test_round_trip_gives_identical_predictions_and_metadata(tmp_path, trained_model, photos):
    path = save(trained_model, tmp_path, val_metrics={"val_accuracy": 0.5})
    bundle = load_bundle(path)
    np.testing.assert_allclose(bundle.model.predict_on_batch(photos), trained_model.predict_on_batch(photos),
                               rtol=1e-6, atol=1e-7)
    assert bundle.class_names == CLASSES and bundle.display_names == ["Audi", "BMW", "Ferrari"]
    assert bundle.img_size == IMG_SIZE and bundle.path == path
    assert bundle.meta["val_metrics"] == {"val_accuracy": 0.5} and bundle.meta["run_id"] == "r1"
    assert bundle.meta["versions"]["keras"] == keras.__version__
    assert json.loads((path / LABELS_FILE).read_text()) == CLASSES
    assert oct(path.stat().st_mode & 0o777) == oct(0o755)


def test_model_file_has_no_optimizer_state(tmp_path, trained_model):
    import h5py

    path = save(trained_model, tmp_path)
    with zipfile.ZipFile(path / MODEL_FILE) as archive, archive.open("model.weights.h5") as weights:
        assert "optimizer" not in h5py.File(weights, "r")
    assert trained_model.optimizer is not None, "saving must not strip the caller's optimizer"


def test_existing_bundle_is_not_overwritten_unless_asked(tmp_path, trained_model):
    save(trained_model, tmp_path)
    with pytest.raises(BundleError, match="already exists"):
        save(trained_model, tmp_path)
    save_bundle(trained_model, tmp_path / "cars", CLASSES, meta={"backbone": "x"}, overwrite=True)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary folder left behind"


@pytest.mark.parametrize("kwargs, message", [
    ({"class_names": ["a", "b"]}, "3 outputs"),
    ({"display_names": ["A"]}, "display names"),
    ({"class_names": []}, "class names"),
])
def test_save_rejects_labels_that_do_not_fit(tmp_path, trained_model, kwargs, message):
    arguments = {"class_names": CLASSES, **kwargs}
    with pytest.raises(BundleError, match=message):
        save_bundle(trained_model, tmp_path / "b", **arguments)


@pytest.mark.parametrize("name", [".hidden", "..", "bad name!", "-dash"])
def test_unsafe_bundle_names_are_refused(tmp_path, trained_model, name):
    with pytest.raises(BundleError, match="invalid bundle name"):
        save_bundle(trained_model, tmp_path / name, CLASSES)
    with pytest.raises(BundleError, match="invalid bundle name"):
        set_default_bundle(tmp_path, name)


def _break(path, how):
    if how == "missing model":
        (path / MODEL_FILE).unlink()
    elif how == "missing meta":
        (path / META_FILE).unlink()
    elif how == "bad json":
        (path / META_FILE).write_text("{not json", encoding="utf-8")
    elif how == "labels mismatch":
        (path / LABELS_FILE).write_text(json.dumps(["x", "y", "z"]), encoding="utf-8")
    elif how == "future format":
        meta = json.loads((path / META_FILE).read_text())
        (path / META_FILE).write_text(json.dumps({**meta, "format": 99}), encoding="utf-8")
    elif how == "truncated model":
        data = (path / MODEL_FILE).read_bytes()
        (path / MODEL_FILE).write_bytes(data[: len(data) // 2])
    elif how == "wrong img_size":
        meta = json.loads((path / META_FILE).read_text())
        (path / META_FILE).write_text(json.dumps({**meta, "img_size": 64}), encoding="utf-8")
    elif how in ("text img_size", "text gate"):  # hand-edited meta.json values once raised ValueError
        meta = json.loads((path / META_FILE).read_text())
        key, value = ("img_size", "big") if how == "text img_size" else ("gate_threshold", "abc")
        (path / META_FILE).write_text(json.dumps({**meta, key: value}), encoding="utf-8")


@pytest.mark.parametrize("how, message", [
    ("missing model", "missing model.keras"),
    ("missing meta", "missing meta.json"),
    ("bad json", "not valid JSON"),
    ("labels mismatch", "does not match"),
    ("future format", "format 99"),
    ("truncated model", "cannot be loaded: it is damaged or truncated"),
    ("wrong img_size", "img_size 64"),
    ("text img_size", "img_size must be a positive whole number"),
    ("text gate", "gate_threshold must be a number"),
])
def test_broken_bundles_raise_bundle_error_saying_what_to_do(tmp_path, trained_model, how, message):
    path = save(trained_model, tmp_path)
    _break(path, how)
    with pytest.raises(BundleError, match=message) as error:
        load_bundle(path)
    assert any(word in str(error.value) for word in ("again", "retrain", "re-export", "delete"))


def test_missing_folder_is_a_bundle_error(tmp_path):
    with pytest.raises(BundleError, match="no such bundle"):
        load_bundle(tmp_path / "nothing")


def test_listing_is_newest_first_skips_broken_and_honours_default(tmp_path, trained_model):
    save(trained_model, tmp_path, "old", created_at="2026-01-01T00:00:00+00:00")
    save(trained_model, tmp_path, "new", created_at="2026-06-01T00:00:00+00:00")
    broken = save(trained_model, tmp_path, "broken", created_at="2026-12-01T00:00:00+00:00")
    (broken / MODEL_FILE).unlink()
    (tmp_path / ".tmp-half-written").mkdir()
    assert [info.name for info in list_bundles(tmp_path)] == ["new", "old"]
    assert default_bundle(tmp_path) == tmp_path / "new"

    set_default_bundle(tmp_path, "old")
    assert (tmp_path / DEFAULT_MARKER).read_text().strip() == "old"
    listing = list_bundles(tmp_path)
    assert [(info.name, info.is_default) for info in listing] == [("old", True), ("new", False)]
    assert default_bundle(tmp_path) == tmp_path / "old"
    with pytest.raises(BundleError):
        set_default_bundle(tmp_path, "broken")

    delete_bundle(tmp_path, "old")
    assert not (tmp_path / DEFAULT_MARKER).exists() and default_bundle(tmp_path) == tmp_path / "new"


def test_listing_an_absent_models_dir_is_empty(tmp_path):
    assert list_bundles(tmp_path / "models") == [] and default_bundle(tmp_path / "models") is None


def test_meta_can_be_read_without_loading_the_model(tmp_path, trained_model):
    path = save(trained_model, tmp_path)
    meta = read_bundle_meta(path)
    assert meta["class_names"] == CLASSES and meta["num_classes"] == 3 and meta["gate_threshold"] is None
    assert "created_at" in meta and os.path.isfile(path / MODEL_FILE)
