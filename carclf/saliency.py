"""Grad-CAM: which part of the photo made the model say what it said.

A heat map over the photo lets a user see whether the classifier looked at the car or at the background
(a watermark, a showroom). Grad-CAM weights the last convolutional feature map by the gradient of the
chosen class score; it needs the model split at that feature map: for a carclf classifier that is the
``"backbone"`` / ``"head"`` boundary of the contract, for a plain ImageNet classifier its last 4-D layer.
"""

from __future__ import annotations

import collections
import threading

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

# Longest side, px, of the heat map and overlay: a larger photo is explained on a smaller copy. Wider than any
# column the dashboard shows; at full size a 12-megapixel phone photo's overlay raised the process peak by
# 1.0 GB (float arrays of the photo's size), which a 2.7 GB host serving several visitors cannot spare.
MAX_OVERLAY_SIDE = 1280

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


# One traced Grad-CAM function per model, kept while the model lives. Eager, the layer-by-layer replay and
# its tape cost about 1 s per photo on 2 cores and ran in the caller's thread, so every dashboard visitor's
# thread kept its own malloc arena of freed activations; traced, it is one graph call (bench/bench_load.py).
# Keyed by id(model): each function holds its model, so an id cannot be reused while its entry lives.
_TRACED: "collections.OrderedDict[int, object]" = collections.OrderedDict()
_TRACED_LOCK = threading.Lock()
# Traced functions kept (least recently used dropped first): the dashboard keeps 2 models plus the gate.
MAX_TRACED_MODELS = 4


def _traced_cam(model: keras.Model):
    """``cam(batch (1, S, S, 3) float32, class_index int32) -> (h, w)`` unnormalised map, traced once."""
    with _TRACED_LOCK:
        function = _TRACED.get(id(model))
        if function is not None:
            _TRACED.move_to_end(id(model))
        else:
            run = _features_and_output(model)

            def cam(batch, class_index):
                with tf.GradientTape() as tape:
                    features, output = run(batch)
                    tape.watch(features)
                    score = tf.gather(output, class_index, axis=1)
                grads = tape.gradient(score, features)
                if grads is None:  # decided while tracing
                    raise ValueError("the class score does not depend on the feature map; cannot compute Grad-CAM.")
                weights = tf.reduce_mean(grads, axis=(1, 2))  # one weight per channel
                return tf.nn.relu(tf.reduce_sum(features * weights[:, None, None, :], axis=-1))[0]

            height, width = model.input_shape[1:3]
            function = tf.function(cam, input_signature=[
                tf.TensorSpec([1, height, width, 3], tf.float32), tf.TensorSpec([], tf.int32)])
            _TRACED[id(model)] = function
            while len(_TRACED) > MAX_TRACED_MODELS:
                _TRACED.popitem(last=False)
        return function


def grad_cam_map(model: keras.Model, pixels: np.ndarray, class_index: int) -> np.ndarray:
    """Grad-CAM of ``class_index`` for one (S, S, 3) raw-RGB image: a (h, w) map in 0..1 at feature size."""
    batch = tf.constant(np.asarray(pixels, dtype=np.float32)[None])
    cam = _traced_cam(model)(batch, tf.constant(int(class_index), dtype=tf.int32)).numpy()
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
    """``(heatmap, overlay)`` for ``class_index``: heat map HxW float32 0..1 at the photo's own size, or at
    most MAX_OVERLAY_SIDE px on the longer side (same aspect ratio) for a larger photo."""
    size = int(model.input_shape[1])
    pixels = np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR))
    if max(image.size) > MAX_OVERLAY_SIDE:
        image = image.copy()
        image.thumbnail((MAX_OVERLAY_SIDE, MAX_OVERLAY_SIDE), Image.Resampling.BILINEAR)
    heatmap = upsample(grad_cam_map(model, pixels, class_index), image.size)
    return heatmap, overlay_heatmap(image, heatmap)
