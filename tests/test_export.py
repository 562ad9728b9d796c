"""Export: SavedModel and TFLite (float32, float16, int8) take raw RGB and agree with Keras on real photos."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import tensorflow as tf

from carclf.errors import ConfigError, DataError
from carclf.export import LABELS_FILE, PARITY_FILE, QUANTIZATIONS, export_model, parity_photo_paths
from carclf.images import load_rgb_array
from inference_helpers import COLOURS, PHOTOS, SIZE, copy_photos, expected_colour, save_colour_bundle, truncated_copy

# Measured on the colour model (see the report): float32 ~1e-7, float16 ~1e-4, int8 ~1e-2.
BOUNDS = {"none": 1e-5, "float16": 5e-3, "int8": 0.1}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return save_colour_bundle(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def parity_dir(tmp_path_factory, shared_data):
    folder = copy_photos(shared_data, {colour: PHOTOS[colour] for colour in COLOURS}, tmp_path_factory.mktemp("parity"))
    truncated_copy(shared_data, PHOTOS["red"][1], folder / "broken.jpg")  # skipped, not fatal
    return folder


def raw_batch(paths):
    return np.stack([load_rgb_array(p, size=SIZE) for p in paths]).astype(np.float32)


def test_savedmodel_takes_raw_rgb_and_matches_keras(bundle, parity_dir, tmp_path):
    result = export_model(bundle, "savedmodel", tmp_path / "sm", parity_images=parity_dir)
    assert result.parity.n_images == 9 and "broken.jpg" not in result.parity.images
    assert result.parity.max_abs_diff <= BOUNDS["none"] and result.parity.top1_agreement == 1.0
    assert result.parity.passed

    photos = sorted(parity_dir.rglob("*.*"))
    photos = [p for p in photos if p.name != "broken.jpg"]
    loaded = tf.saved_model.load(str(tmp_path / "sm"))  # keep a reference: its variables die with it
    served = loaded.serve(tf.constant(raw_batch(photos))).numpy()
    assert [COLOURS[i] for i in served.argmax(axis=1)] == [expected_colour(p) for p in photos]

    record = json.loads((tmp_path / "sm" / PARITY_FILE).read_text())
    assert record["parity"]["max_abs_diff"] == result.parity.max_abs_diff and record["parity"]["passed"]
    assert json.loads((tmp_path / "sm" / LABELS_FILE).read_text()) == list(COLOURS)


@pytest.mark.parametrize("quantize", ["none", "float16", "int8"])
def test_tflite_parity_within_bounds(bundle, parity_dir, tmp_path, quantize):
    out = tmp_path / "colour.tflite"
    result = export_model(bundle, "tflite", out, quantize=quantize, parity_images=parity_dir)
    parity = result.parity
    print(f"tflite {quantize}: max |dp| {parity.max_abs_diff:.3g}, mean {parity.mean_abs_diff:.3g}, "
          f"top-1 {parity.top1_agreement:.0%}, {result.size_bytes} bytes")
    assert result.path == out and out.stat().st_size == result.size_bytes
    assert parity.max_abs_diff <= BOUNDS[quantize] and parity.top1_agreement == 1.0 and parity.passed
    assert parity.tolerance == QUANTIZATIONS[quantize].tolerance
    assert json.loads((tmp_path / PARITY_FILE).read_text())["quantize"] == quantize

    # The artefact runs on its own in tf.lite.Interpreter, fed raw RGB straight from the loader.
    photo = parity_photo_paths(parity_dir)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_path=str(out))
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], raw_batch([photo]))
    interpreter.invoke()
    probs = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0]
    assert COLOURS[int(np.argmax(probs))] == expected_colour(photo)


def test_default_parity_photos_are_the_packaged_samples_and_overwrite_replaces_only_the_file(bundle, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "other.txt").write_text("kept")
    result = export_model(bundle, "tflite", tmp_path / "out", quantize="float16")
    assert result.path == tmp_path / "out" / "model.tflite"
    assert result.parity.n_images >= 5 and all(name.endswith(".jpg") for name in result.parity.images)
    again = export_model(bundle, "tflite", tmp_path / "out", overwrite=True)
    assert again.quantize == "none" and (tmp_path / "out" / "other.txt").read_text() == "kept"


def test_user_mistakes_are_typed_errors(bundle, tmp_path):
    with pytest.raises(ConfigError, match="TFLite only"):
        export_model(bundle, "savedmodel", tmp_path / "a", quantize="int8")
    with pytest.raises(ConfigError, match="choose from: savedmodel, tflite"):
        export_model(bundle, "onnx", tmp_path / "b")
    with pytest.raises(ConfigError, match="choose from: none, float16, int8"):
        export_model(bundle, "tflite", tmp_path / "c", quantize="int4")
    (tmp_path / "taken.tflite").write_bytes(b"x")
    with pytest.raises(ConfigError, match="--overwrite"):
        export_model(bundle, "tflite", tmp_path / "taken.tflite")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not a savedmodel export"):
        export_model(bundle, "savedmodel", tmp_path / "notes", overwrite=True)
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"  # a folder that is not an export survives
    (tmp_path / "data").mkdir()  # a dataset folder with its class-name file: the export's labels.json would replace it
    (tmp_path / "data" / "labels.json").write_text('{"red": "Red (mine)"}')
    with pytest.raises(ConfigError, match="already holds labels.json"):
        export_model(bundle, "tflite", tmp_path / "data" / "model.tflite")
    assert (tmp_path / "data" / "labels.json").read_text() == '{"red": "Red (mine)"}'
    assert not (tmp_path / "data" / "model.tflite").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="parity"):
        export_model(bundle, "tflite", tmp_path / "d.tflite", parity_images=tmp_path / "empty")


def test_parity_check_catches_an_export_that_changes_answers(bundle, parity_dir):
    from carclf.bundle import load_bundle
    from carclf.export import check_parity

    model = load_bundle(bundle).model
    batch = raw_batch(parity_photo_paths(parity_dir))
    faithful = check_parity(model, model.predict_on_batch, batch, QUANTIZATIONS["none"])
    swapped = check_parity(model, lambda b: model.predict_on_batch(b)[:, ::-1], batch, QUANTIZATIONS["int8"])
    assert faithful.passed and faithful.max_abs_diff == 0.0
    assert not swapped.passed and swapped.top1_agreement < 0.5 and swapped.max_abs_diff > 0.5
