"""build_classifier and set_trainable on a real EfficientNet-Lite0 (ImageNet weights, offline) at a tiny input."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from carclf.config import load_config
from carclf.errors import ConfigError
from carclf.model import BACKBONE_NAME, HEAD_NAME, POOLINGS, backbone_layers, build_classifier, set_trainable

# Tiny input: the Lite0 graph is complete but cheap on a shared 2-core machine.
IMG_SIZE = 32
NUM_CLASSES = 3


def tiny_config(**overrides):
    values = {"img_size": IMG_SIZE, "weights": "none", "head": {"dropout": 0.0}}
    values.update(overrides)
    return load_config(preset="quick", overrides=values)


@pytest.fixture(scope="module")
def model():
    # Pretrained, not random: a randomly initialised Lite0 with BatchNorm in inference mode has vanishing
    # activations, so no gradient would reach the layers these tests unfreeze.
    keras.utils.set_random_seed(0)
    return build_classifier(tiny_config(weights="imagenet"), NUM_CLASSES)


def images(count=4, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, IMG_SIZE, IMG_SIZE, 3)).astype("float32")


def test_structure_is_input_backbone_head(model):
    assert [layer.name for layer in model.layers] == ["image", BACKBONE_NAME, HEAD_NAME]
    assert tuple(model.inputs[0].shape) == (None, IMG_SIZE, IMG_SIZE, 3)
    head = model.get_layer(HEAD_NAME)
    assert len(head.inputs[0].shape) == 4, "the head takes the backbone's 4-D feature map (Grad-CAM needs it)"
    probs = model.predict_on_batch(images())
    assert probs.shape == (4, NUM_CLASSES) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_backbone_starts_frozen(model):
    set_trainable(model, "none")
    assert model.get_layer(BACKBONE_NAME).trainable_weights == []
    assert model.get_layer(HEAD_NAME).trainable_weights


def _trainable_names(model):
    return [layer.name for layer in model.get_layer(BACKBONE_NAME).layers if layer.trainable and layer.weights]


@pytest.mark.parametrize("unfreeze, expected", [("none", 0), ("3 layers", 3), ("all", None), ("50%", "half"),
                                                ("10000 layers", None), (0, 0), (1, 1), (1.0, None)])
def test_set_trainable_counts_layers_and_never_unfreezes_batchnorm(model, unfreeze, expected):
    units = backbone_layers(model)
    count = set_trainable(model, unfreeze)
    wanted = {None: len(units), "half": round(0.5 * len(units))}.get(expected, expected)
    assert count == wanted
    trainable = _trainable_names(model)
    assert trainable == [layer.name for layer in units[len(units) - wanted:]] if wanted else trainable == []
    batchnorms = [l for l in model.get_layer(BACKBONE_NAME).layers if isinstance(l, keras.layers.BatchNormalization)]
    assert batchnorms and not any(layer.trainable for layer in batchnorms)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "half", "0%"])
def test_set_trainable_rejects_bad_values(model, bad):
    with pytest.raises(ConfigError, match="unfreeze"):
        set_trainable(model, bad)


def test_fine_tune_step_changes_only_unfrozen_layers_and_keeps_bn_statistics(model):
    units = backbone_layers(model)
    set_trainable(model, "2 layers")
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1), loss="sparse_categorical_crossentropy")
    backbone = model.get_layer(BACKBONE_NAME)
    before = {layer.name: [w.copy() for w in layer.get_weights()] for layer in backbone.layers if layer.weights}
    model.train_on_batch(images(8, seed=1), np.array([0, 1, 2, 0, 1, 2, 0, 1]))
    changed = {name for name, weights in before.items()
               if any(not np.array_equal(a, b) for a, b in zip(weights, backbone.get_layer(name).get_weights()))}
    assert changed == {layer.name for layer in units[-2:]}, "only the unfrozen layers move; BN statistics stay"


def test_unfrozen_backbone_still_runs_batchnorm_in_inference_mode(model):
    set_trainable(model, "all")
    x = images(4, seed=2)
    training = np.asarray(model(x, training=True))  # head dropout is 0: only BN mode could differ
    inference = np.asarray(model(x, training=False))
    np.testing.assert_allclose(training, inference, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("pooling", sorted(POOLINGS))
def test_head_variants_build_and_load_in_safe_mode(tmp_path, pooling):
    config = tiny_config(head={"pooling": pooling, "batchnorm": True, "dropout": 0.2,
                               "dense": [{"units": 8, "activation": "swish", "batchnorm": True, "dropout": 0.1}]})
    built = build_classifier(config, NUM_CLASSES)
    path = tmp_path / "m.keras"
    built.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True, compile=False)
    x = images(2, seed=3)
    np.testing.assert_allclose(loaded.predict_on_batch(x), built.predict_on_batch(x), rtol=1e-5, atol=1e-6)


def test_fewer_than_two_classes_is_a_config_error():
    with pytest.raises(ConfigError, match="at least 2 classes"):
        build_classifier(tiny_config(), 1)


def test_softmax_stays_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        built = build_classifier(tiny_config(), NUM_CLASSES)
        assert built.get_layer(HEAD_NAME).layers[-1].compute_dtype == "float32"
        assert built.outputs[0].dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")
