"""The Predictor: TTA in one model call, averaging, batches with bad files, bundles, the default model."""

from __future__ import annotations

import os
import shutil

import keras
import numpy as np
import pytest

import carclf
from carclf.bundle import MODEL_FILE, save_bundle
from carclf.errors import BundleError, ConfigError, ImageError
from carclf.gate import car_score
from carclf.predict import KIND_DEFAULT, KIND_TRAINED, Predictor, clear_cache, load_model
from carclf.tta import tta_views

CLF_SIZE = 32  # the tiny classifier's input
GATE_SIZE = 48  # the tiny stand-in gate's input (different on purpose: each model gets its own rendering)
CLASSES = ("0", "1", "2")
DISPLAY = ("Lada Priora", "Ford Focus", "VAZ-2114 Samara")

CAR_PHOTOS = [
    "cars/sf_dl_car_classification_ostrebko/3/3201.jpg",
    "cars/sf_dl_car_classification_ostrebko/8/4694.jpg",
    "cars/manzhura_ru_5models/bmw_x5",
]
CAT = "noncars/caffe_cat.jpg"


def tiny_classifier(size: int = CLF_SIZE, num_classes: int = len(CLASSES), seed: int = 0) -> keras.Model:
    """A classifier with the contract's structure: Input -> "backbone" -> "head" -> softmax."""
    keras.utils.set_random_seed(seed)
    backbone_in = keras.Input((size, size, 3))
    features = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(keras.layers.Rescaling(1 / 64.0)(backbone_in))
    backbone = keras.Model(backbone_in, features, name="backbone")
    head_in = keras.Input(backbone.output.shape[1:])
    logits = keras.layers.Dense(num_classes)(keras.layers.GlobalAveragePooling2D()(head_in))
    head = keras.Model(head_in, logits, name="head")
    image = keras.Input((size, size, 3))
    logits = head(backbone(image, training=False))
    return keras.Model(image, keras.layers.Activation("softmax", dtype="float32")(logits), name="tiny")


def tiny_gate(size: int = GATE_SIZE) -> keras.Model:
    """A stand-in 1000-way softmax model (the real gate is tested in test_gate.py)."""
    keras.utils.set_random_seed(1)
    image = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(4, 3, strides=4)(keras.layers.Rescaling(1 / 128.0)(image))
    x = keras.layers.Dense(1000)(keras.layers.GlobalAveragePooling2D()(x))
    return keras.Model(image, keras.layers.Activation("softmax")(x * 5.0), name="tiny_gate")


@pytest.fixture(scope="module")
def predictor():
    return Predictor("tiny", KIND_TRAINED, tiny_classifier(), tiny_gate(), CLASSES, DISPLAY)


@pytest.fixture(scope="module")
def photos(shared_data):
    paths = []
    for name in CAR_PHOTOS:
        path = shared_data / name
        paths.append(sorted(path.iterdir())[0] if path.is_dir() else path)
    return paths


def test_tta_prediction_is_one_model_call_and_batch_sizes_do_not_retrace(predictor, photos):
    predictor.predict(photos[0], tta=2)  # trace once
    calls, traces = predictor.inference.calls, predictor.inference.traces
    result = predictor.predict(photos[0], tta=8, top_k=2)
    assert predictor.inference.calls == calls + 1
    predictor.predict(photos[1], tta=5)
    predictor.predict_batch(photos, tta=3)
    assert predictor.inference.traces == traces
    assert len(result.views) == 8 and len(result.top_k) == 2
    # the classifier sees every view at its own size, the gate each photo alone at its own size
    assert (predictor.inference.input_size, predictor.inference.gate_size) == (CLF_SIZE, GATE_SIZE)
    views, _ = tta_views(photos[0], 8, CLF_SIZE)
    outputs = predictor.inference(views, tta_views(photos[0], 1, GATE_SIZE)[0])
    assert outputs["classes"].shape == (8, len(CLASSES)) and outputs["imagenet"].shape == (1, 1000)


def test_result_is_the_average_of_the_views(predictor, photos):
    result = predictor.predict(photos[0], tta=8, top_k=3)
    # the same photo through each model separately, outside the traced inference function: the classifier
    # on the views rendered at its own input size (as in training), the gate on the photo alone at its size
    views, names = tta_views(photos[0], 8, CLF_SIZE)
    expected = predictor.classifier.predict_on_batch(views.astype("float32"))
    np.testing.assert_allclose(result.probabilities, expected.mean(axis=0), atol=1e-5)
    original = tta_views(photos[0], 1, GATE_SIZE)[0].astype("float32")
    expected_score = car_score(predictor.gate_classifier.predict_on_batch(original))[0]
    assert result.car_score == pytest.approx(expected_score, abs=1e-5)  # the gate judges the unaltered view
    assert result.label == DISPLAY[int(np.argmax(expected.mean(axis=0)))]
    assert [v.name for v in result.views] == list(names)
    assert [v.label for v in result.views] == [DISPLAY[int(i)] for i in expected.argmax(axis=1)]
    assert result.tta_changed_answer == (result.views[0].label != result.label)
    assert [label for label, _ in result.top_k][0] == result.label
    assert [p for _, p in result.top_k] == sorted((p for _, p in result.top_k), reverse=True)
    assert result.is_car == (result.car_score >= predictor.gate_threshold)


def test_predict_batch_matches_single_predictions_and_reports_bad_files(predictor, photos, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(photos[0].read_bytes()[:300])  # a truncated JPEG
    seen = []
    images = [photos[0], broken, photos[1], photos[2]]
    results = predictor.predict_batch(images, tta=4, progress=lambda done, total: seen.append((done, total)))
    assert [r.ok for r in results] == [True, False, True, True]
    assert "broken.jpg" in results[1].error and results[1].label is None
    for result, path in zip([results[0], results[2], results[3]], photos):
        single = predictor.predict(path, tta=4)
        np.testing.assert_allclose(result.probabilities, single.probabilities, atol=1e-5)
        assert result.car_score == pytest.approx(single.car_score, abs=1e-5)
    assert seen and seen[-1] == (4, 4)


def test_predict_raises_image_error_for_an_unreadable_photo(predictor, tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("not a photo")
    with pytest.raises(ImageError, match="notes.jpg"):
        predictor.predict(text)


def test_predict_arrays_runs_the_classifier_on_a_prepared_batch(predictor, photos):
    batch = np.stack([tta_views(p, 1, CLF_SIZE)[0][0] for p in photos])
    probs = predictor.predict_arrays(batch)
    assert probs.shape == (3, len(CLASSES))
    np.testing.assert_allclose(probs, predictor.classifier.predict_on_batch(batch.astype("float32")), atol=1e-5)


# --- bundles and the default model (real EfficientNet-Lite0 gate) ----------------------------------------


@pytest.fixture()
def bundle_dir(tmp_path):
    clear_cache()
    meta = {"img_size": CLF_SIZE, "backbone": "tiny", "gate_threshold": 0.2}
    path = save_bundle(tiny_classifier(), tmp_path / "models" / "tiny", list(CLASSES), list(DISPLAY), meta)
    yield path
    clear_cache()


def test_load_model_reads_a_bundle_caches_it_and_reloads_when_it_changes(bundle_dir, photos):
    model = load_model(bundle_dir)
    assert (model.kind, model.name, model.class_names, model.display_names) == (KIND_TRAINED, "tiny", CLASSES, DISPLAY)
    assert model.gate_threshold == 0.2 and model.img_size == CLF_SIZE
    assert load_model(str(bundle_dir)) is model
    assert carclf.load_model(models_dir=bundle_dir.parent) is model  # the only bundle is the default
    result = model.predict(photos[0], tta=4)
    assert result.label in DISPLAY and result.notice is None
    stamp = os.stat(bundle_dir / MODEL_FILE).st_mtime + 10
    os.utime(bundle_dir / MODEL_FILE, (stamp, stamp))
    assert load_model(bundle_dir) is not model


def test_load_model_rejects_missing_and_partial_bundles(bundle_dir, tmp_path):
    with pytest.raises(BundleError, match="no such bundle"):
        load_model(tmp_path / "nowhere")
    partial = tmp_path / "partial"
    shutil.copytree(bundle_dir, partial)
    (partial / MODEL_FILE).unlink()
    with pytest.raises(BundleError, match="missing model.keras"):
        load_model(partial)
    damaged = tmp_path / "damaged"
    shutil.copytree(bundle_dir, damaged)
    (damaged / MODEL_FILE).write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(BundleError, match="cannot be loaded"):
        load_model(damaged)


def test_default_model_names_body_types_and_gates_non_cars(shared_data, photos, tmp_path):
    clear_cache()
    model = carclf.load_model(models_dir=tmp_path / "no-models-here")
    assert model.kind == KIND_DEFAULT and load_model("default") is model
    assert "sports car" in model.class_names and "train" in model.notice
    car = model.predict(photos[0], tta=4)
    assert car.is_car and car.label in model.class_names and car.notice == model.notice
    assert sum(car.probabilities) == pytest.approx(1.0, abs=1e-6)
    cat = model.predict(shared_data / CAT, tta=4)
    assert not cat.is_car and cat.car_score < 0.05


def test_tta_views_can_be_chosen_per_predictor(photos):
    model = Predictor("tiny", KIND_TRAINED, tiny_classifier(), tiny_gate(), CLASSES, DISPLAY,
                      meta={"tta_views": ["original", "darker", "flip"]})
    result = model.predict(photos[0], tta=3)
    assert [v.name for v in result.views] == ["original", "darker", "flip"]
    with pytest.raises(ConfigError, match="more views"):
        model.predict(photos[0], tta=4)
