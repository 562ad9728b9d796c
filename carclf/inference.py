"""One traced inference function returning class probabilities AND the gate's ImageNet probabilities.

On a 2-core CPU an eager Keras call is several times slower than a traced one and a TTA prediction that ran
the classifier and the gate separately, view by view, would pay that price 16 times. So the classifier and
the gate's ImageNet classifier run inside ONE ``tf.function`` with a fixed signature: eight TTA views or
thirty-two photos are one call and one graph, traced once. Each model gets its input at its own size, rendered
by the caller: a 64-px classifier sees exactly the pixels its validation photos had in training.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

# Output names of the inference function.
CLASSES_OUTPUT = "classes"
IMAGENET_OUTPUT = "imagenet"


def model_input_size(model: keras.Model) -> int:
    """The square input size a model was built for (its input shape must be fixed and square)."""
    shape = model.input_shape
    if isinstance(shape, list):
        shape = shape[0]
    height, width = shape[1], shape[2]
    if height is None or height != width:
        raise ValueError(f"model {model.name!r} needs a fixed square input, has input shape {shape}.")
    return int(height)


class InferenceFunction:
    """``fn(images, gate_images=None) -> {"classes": (N, C), "imagenet": (M, 1000)}``, ONE traced call.

    ``images`` are at ``input_size`` (the classifier's own; the gate's for the default model, which has no
    classifier), ``gate_images`` at ``gate_size``: a TTA prediction passes every view as ``images`` and each
    photo alone as ``gate_images``, so the gate runs once per photo. Without ``gate_images`` the gate sees
    ``images``. Either model may be None (evaluation runs the classifier alone). ``calls`` counts calls and
    ``traces`` graph tracings, so tests and benchmarks can check that a TTA prediction is one call and that
    new batch sizes do not retrace.
    """

    def __init__(self, classifier: keras.Model | None, gate_classifier: keras.Model | None):
        pairs = ((CLASSES_OUTPUT, classifier), (IMAGENET_OUTPUT, gate_classifier))
        self.branches = {name: model for name, model in pairs if model is not None}
        if not self.branches:
            raise ValueError("InferenceFunction needs a classifier, a gate classifier or both.")
        self.sizes = {name: model_input_size(model) for name, model in self.branches.items()}
        self.input_size = self.sizes.get(CLASSES_OUTPUT) or self.sizes[IMAGENET_OUTPUT]
        self.gate_size = self.sizes.get(IMAGENET_OUTPUT)
        self.calls = 0
        self.traces = 0
        signature = {name: tf.TensorSpec([None, size, size, 3], tf.uint8, name=name)
                     for name, size in self.sizes.items()}
        self._traced = tf.function(self._forward, input_signature=[signature])

    def _forward(self, feeds):
        self.traces += 1  # Python side effect: runs only while tracing
        outputs = {}
        for name, model in self.branches.items():
            output = model(tf.cast(feeds[name], tf.float32), training=False)
            # a model rebuilt as keras.Model(inputs, outputs_list) (e.g. by save_bundle) returns a 1-item list
            outputs[name] = output[0] if isinstance(output, (list, tuple)) else output
        return outputs

    @staticmethod
    def _fit(batch: np.ndarray, size: int) -> np.ndarray:
        """Resize a batch of another size to ``size`` (antialiased). Done outside the traced graph: inside
        it, an always-on resize cost a quarter of the model's time even when sizes matched."""
        if batch.ndim != 4 or batch.shape[-1] != 3 or batch.dtype != np.uint8:
            raise ValueError(f"expected an (N, H, W, 3) uint8 batch, got {batch.dtype} {batch.shape}.")
        if batch.shape[1:3] == (size, size):
            return batch
        resized = tf.image.resize(tf.cast(batch, tf.float32), (size, size), antialias=True)
        return np.clip(np.rint(resized.numpy()), 0, 255).astype(np.uint8)

    def __call__(self, images: np.ndarray, gate_images: np.ndarray | None = None) -> dict[str, np.ndarray]:
        batch = np.asarray(images)
        gate_batch = batch if gate_images is None else np.asarray(gate_images)
        feeds = {name: batch if name == CLASSES_OUTPUT else gate_batch for name in self.branches}
        self.calls += 1
        outputs = self._traced({name: tf.constant(self._fit(feed, self.sizes[name])) for name, feed in feeds.items()})
        return {name: value.numpy() for name, value in outputs.items()}
