"""Grad-CAM: which part of the photo made the model say what it said.

A heat map over the photo lets a user see whether the classifier looked at the car or at the background
(a watermark, a showroom). Grad-CAM weights the last convolutional feature map by the gradient of the
chosen class score; it needs the model split at that feature map: for a carclf classifier that is the
``"backbone"`` / ``"head"`` boundary of the contract, for a plain ImageNet classifier its last 4-D layer.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

# How strongly the coloured heat map covers the photo in the overlay (0 = photo only, 1 = heat map only).
OVERLAY_ALPHA = 0.45

# Colour map stops (value, RGB) for the overlay: dark blue (cold) -> cyan -> yellow -> red (hot), like "jet".
COLORMAP_STOPS = (
    (0.00, (0, 0, 128)),
    (0.25, (0, 128, 255)),
    (0.50, (0, 255, 200)),
    (0.75, (255, 230, 0)),
    (1.00, (200, 0, 0)),
)

# The name the classifier contract gives the feature extractor.
BACKBONE_LAYER = "backbone"


def _features_and_output(model: keras.Model):
    """A function ``x -> (4-D feature map, softmax output)`` differentiable between the two."""
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    if any(layer.name == BACKBONE_LAYER for layer in layers):
        # A nested backbone's output tensor is not reachable from the outer graph, so the contract's
        # chain (... -> backbone -> head -> ...) is replayed layer by layer, keeping the backbone's output.
        def run(x):
            features = None
            for layer in layers:
                x = layer(x, training=False)
                if layer.name == BACKBONE_LAYER:
                    features = x
            return features, x

        return run
    conv = [layer for layer in model.layers if len(_output_shape(layer)) == 4]
    if not conv:
        raise ValueError(f"model {model.name!r} has no 4-D feature map to explain.")
    split = keras.Model(model.inputs, [conv[-1].output, model.output])
    return lambda x: split(x, training=False)


def _output_shape(layer) -> tuple:
    try:
        return tuple(layer.output.shape)
    except (AttributeError, ValueError):
        return ()


def grad_cam_map(model: keras.Model, pixels: np.ndarray, class_index: int) -> np.ndarray:
    """Grad-CAM of ``class_index`` for one (S, S, 3) raw-RGB image: a (h, w) map in 0..1 at feature size."""
    batch = tf.constant(np.asarray(pixels, dtype=np.float32)[None])
    run = _features_and_output(model)
    with tf.GradientTape() as tape:
        features, output = run(batch)
        tape.watch(features)
        score = output[:, class_index]
    grads = tape.gradient(score, features)
    if grads is None:
        raise ValueError("the class score does not depend on the feature map; cannot compute Grad-CAM.")
    weights = tf.reduce_mean(grads, axis=(1, 2))  # one weight per channel
    cam = tf.nn.relu(tf.reduce_sum(features * weights[:, None, None, :], axis=-1))[0].numpy()
    peak = cam.max()
    return cam / peak if peak > 0 else cam


def upsample(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a small map to ``size`` = (width, height) smoothly, keeping values in 0..1."""
    image = Image.fromarray(cam.astype(np.float32), mode="F").resize(size, Image.Resampling.BICUBIC)
    return np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)


def colorize(heatmap: np.ndarray) -> np.ndarray:
    """HxW 0..1 -> HxWx3 uint8 with the COLORMAP_STOPS colours."""
    values = [stop for stop, _ in COLORMAP_STOPS]
    channels = [np.interp(heatmap, values, [rgb[c] for _, rgb in COLORMAP_STOPS]) for c in range(3)]
    return np.stack(channels, axis=-1).astype(np.uint8)


def overlay_heatmap(photo: Image.Image, heatmap: np.ndarray, alpha: float = OVERLAY_ALPHA) -> Image.Image:
    """The photo with the coloured heat map blended on top (hot areas are more opaque than cold ones)."""
    base = np.asarray(photo.convert("RGB"), dtype=np.float32)
    weight = (alpha * (0.35 + 0.65 * heatmap))[..., None]
    blended = base * (1 - weight) + colorize(heatmap).astype(np.float32) * weight
    return Image.fromarray(np.clip(blended, 0, 255).astype(np.uint8), mode="RGB")


def grad_cam(model: keras.Model, image: Image.Image, class_index: int) -> tuple[np.ndarray, Image.Image]:
    """``(heatmap, overlay)`` for ``class_index``: heat map HxW float32 0..1 at the photo's own size."""
    size = int(model.input_shape[1])
    pixels = np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR))
    heatmap = upsample(grad_cam_map(model, pixels, class_index), image.size)
    return heatmap, overlay_heatmap(image, heatmap)
