"""The classifier: a pretrained backbone plus a small head, and progressive unfreezing.

``Input(S, S, 3) raw RGB 0..255 -> "backbone" (called with training=False) -> "head" -> softmax``.
The backbone is always called in inference mode, so its BatchNormalization layers keep their ImageNet
statistics even when their neighbours are fine-tuned (keras.io's transfer-learning rule); Grad-CAM splits
the model at the ``"backbone"`` / ``"head"`` boundary. Every layer is a stock Keras layer, so the saved
``model.keras`` loads with ``safe_mode=True``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import keras

from carclf.config import HeadConfig, TrainConfig
from carclf.errors import ConfigError

# Layer names other modules rely on (Grad-CAM, the predictor, set_trainable).
BACKBONE_NAME = "backbone"
HEAD_NAME = "head"
INPUT_NAME = "image"
OUTPUT_NAME = "predictions"
# Passed as ``weights`` to mean "whatever the config says".
FROM_CONFIG = "config"


@dataclass(frozen=True)
class PoolingSpec:
    """A global pooling of the 4-D feature map into one vector per image."""

    name: str
    description: str
    build: Callable  # (features tensor) -> pooled tensor


def _avg(x):
    return keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)


def _max(x):
    return keras.layers.GlobalMaxPooling2D(name="max_pool")(x)


def _avgmax(x):
    return keras.layers.Concatenate(name="avgmax_pool")([_avg(x), _max(x)])


POOLINGS = {
    spec.name: spec
    for spec in (
        PoolingSpec("avg", "global average pooling (the usual choice)", _avg),
        PoolingSpec("max", "global max pooling (strongest response per channel)", _max),
        PoolingSpec("avgmax", "average and max pooling concatenated (twice the features)", _avgmax),
    )
}


def resolve_img_size(config: TrainConfig) -> int:
    """The input side the run uses: the config's ``img_size``, or the backbone's native size when 0."""
    if config.img_size:
        return int(config.img_size)
    from carclf.backbones import get_backbone

    return int(get_backbone(config.backbone).input_size)


def resolve_weights(config: TrainConfig, weights=FROM_CONFIG):
    """``"imagenet"``, ``None`` or a weights file path, from the explicit argument or the config."""
    if weights == FROM_CONFIG:
        return None if config.weights == "none" else config.weights
    return weights


def build_head(feature_shape, num_classes: int, head: HeadConfig) -> keras.Model:
    """The sub-model ``"head"``: pooling, optional BN, dense blocks, dropout, float32 softmax."""
    if head.pooling not in POOLINGS:
        raise ConfigError(f"unknown head pooling {head.pooling!r}: choose one of {', '.join(POOLINGS)}.")
    features = keras.Input(shape=tuple(feature_shape), name="features")
    x = POOLINGS[head.pooling].build(features)
    if head.batchnorm:
        x = keras.layers.BatchNormalization(name="pool_bn")(x)
    for index, block in enumerate(head.dense):
        x = keras.layers.Dense(block.units, use_bias=not block.batchnorm, name=f"dense_{index}")(x)
        if block.batchnorm:
            x = keras.layers.BatchNormalization(name=f"dense_{index}_bn")(x)
        x = keras.layers.Activation(block.activation, name=f"dense_{index}_{block.activation}")(x)
        if block.dropout:
            x = keras.layers.Dropout(block.dropout, name=f"dense_{index}_dropout")(x)
    if head.dropout:
        x = keras.layers.Dropout(head.dropout, name="top_dropout")(x)
    # float32 even under mixed precision: a float16 softmax loses small probabilities and NaNs the loss.
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name=OUTPUT_NAME)(x)
    return keras.Model(features, outputs, name=HEAD_NAME)


def build_classifier(config: TrainConfig, num_classes: int, weights=FROM_CONFIG) -> keras.Model:
    """Backbone (frozen) + head as one functional model taking raw RGB 0..255 at ``resolve_img_size``."""
    from carclf.backbones import build_backbone

    if num_classes < 2:
        raise ConfigError(f"a classifier needs at least 2 classes, got {num_classes}.")
    img_size = resolve_img_size(config)
    backbone = build_backbone(config.backbone, resolve_weights(config, weights), img_size)
    backbone.trainable = False
    inputs = keras.Input(shape=(img_size, img_size, 3), name=INPUT_NAME)
    features = backbone(inputs, training=False)  # BN in inference mode, even when layers are unfrozen
    head = build_head(features.shape[1:], num_classes, config.head)
    outputs = head(features)
    return keras.Model(inputs, outputs, name=f"carclf_{config.backbone}")


def backbone_layers(model: keras.Model) -> list:
    """The backbone's unfreezable layers (with weights, not BatchNorm), input to output: what ``unfreeze`` counts."""
    return [layer for layer in model.get_layer(BACKBONE_NAME).layers if layer.weights and not _is_batchnorm(layer)]


def _is_batchnorm(layer) -> bool:
    return isinstance(layer, keras.layers.BatchNormalization)


def set_trainable(model: keras.Model, unfreeze: str) -> int:
    """Make the backbone layers that ``unfreeze`` names trainable ("none", "all", "30%", "12 layers").

    "none" freezes the whole backbone (head-only training); a percentage unfreezes at least one layer;
    old-style ints and fractions are accepted too (see ``carclf.config.parse_unfreeze``). BatchNormalization
    layers always stay frozen and are not counted. Returns how many backbone layers are now trainable.
    Recompile the model afterwards.
    """
    from carclf.config import unfreeze_count

    backbone = model.get_layer(BACKBONE_NAME)
    model.get_layer(HEAD_NAME).trainable = True
    layers = backbone_layers(model)
    count = unfreeze_count(unfreeze, len(layers))  # raises ConfigError listing the accepted forms
    if count == 0:
        backbone.trainable = False
        return 0
    backbone.trainable = True
    chosen = {id(layer) for layer in layers[len(layers) - count:]}
    for layer in backbone.layers:
        layer.trainable = id(layer) in chosen  # BatchNorm and weightless layers: never trainable here
    return count


# The head layer whose output is the pooled feature vector, per pooling (see build_head).
POOL_LAYER = {"avg": "avg_pool", "max": "max_pool", "avgmax": "avgmax_pool"}


def pooled_features_model(model: keras.Model) -> keras.Model:
    """Photo -> the head's pooled feature vector, through the (frozen, inference-mode) backbone.

    What a cached-feature head stage computes once per photo view: everything before the head's first
    trainable layer. Shares its layers (and weights) with ``model``.
    """
    head = model.get_layer(HEAD_NAME)
    pooling = keras.Model(head.inputs, head.get_layer(_pool_layer_name(head)).output, name="head_pooling")
    inputs = keras.Input(shape=model.inputs[0].shape[1:], name=INPUT_NAME)
    return keras.Model(inputs, pooling(model.get_layer(BACKBONE_NAME)(inputs, training=False)), name="pooled_features")


def head_tail(model: keras.Model) -> keras.Model:
    """Pooled features -> class probabilities: the head's layers after pooling, shared with ``model``.

    Training this model trains ``model``'s head (same layer objects, same weights).
    """
    head = model.get_layer(HEAD_NAME)
    names = [layer.name for layer in head.layers]
    pool_index = names.index(_pool_layer_name(head))
    pool_width = head.get_layer(names[pool_index]).output.shape[-1]
    inputs = keras.Input(shape=(pool_width,), name="pooled")
    x = inputs
    for layer in head.layers[pool_index + 1:]:  # a plain chain after pooling (BN, dense blocks, dropout, softmax)
        x = layer(x)
    return keras.Model(inputs, x, name="head_tail")


def _pool_layer_name(head: keras.Model) -> str:
    for name in (POOL_LAYER["avgmax"], POOL_LAYER["avg"], POOL_LAYER["max"]):  # avgmax holds the other two
        if any(layer.name == name for layer in head.layers):
            return name
    raise ConfigError(f"head {head.name!r} has no pooling layer ({', '.join(POOL_LAYER.values())}).")
