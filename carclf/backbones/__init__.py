"""Backbones: the registry of ImageNet feature extractors, the offline EfficientNet-Lite port, the .pth reader.

Importing this package also registers carclf's custom Keras layers, which ``keras.saving.load_model``
needs (safe mode) for models built on these backbones.
"""

from carclf.backbones.efficientnet_lite import LITE_VARIANTS, build_efficientnet_lite, load_lite_weights
from carclf.backbones.layers import CaffePreprocessing
from carclf.backbones.pth_reader import read_pth
from carclf.backbones.registry import (
    BACKBONE_MODEL_NAME,
    BACKBONES,
    DEFAULT_BACKBONE,
    PREPROCESSING,
    BackboneSpec,
    build_backbone,
    build_imagenet_classifier,
    get_backbone,
    list_backbones,
)

__all__ = [
    "BACKBONE_MODEL_NAME",
    "BACKBONES",
    "DEFAULT_BACKBONE",
    "LITE_VARIANTS",
    "PREPROCESSING",
    "BackboneSpec",
    "CaffePreprocessing",
    "build_backbone",
    "build_efficientnet_lite",
    "build_imagenet_classifier",
    "get_backbone",
    "list_backbones",
    "load_lite_weights",
    "read_pth",
]
