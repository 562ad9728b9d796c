"""One traced inference function returning class probabilities AND the gate's ImageNet probabilities.

On a 2-core CPU an eager Keras call is several times slower than a traced one and a TTA prediction that ran
the classifier and the gate separately, view by view, would pay that price 16 times. So the classifier and
the gate's ImageNet classifier (Resizing layers adapt the input to each) run inside ONE ``tf.function``
with a fixed signature: eight TTA views or thirty-two photos are one call and one graph, traced once.
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


def build_branches(classifier: keras.Model | None, gate_classifier: keras.Model | None) -> dict[str, keras.Model]:
    """One small model per output, all taking the same (S, S, 3) input, S the larger of the input sizes.

    Either member may be None: the default model has no classifier (it reads the ImageNet output) and
    evaluation without the gate has no gate classifier. A member built for a smaller size gets an
    antialiased Resizing layer, so a 96-px classifier and the 224-px gate both see a properly scaled photo.
    """
    pairs = ((CLASSES_OUTPUT, classifier), (IMAGENET_OUTPUT, gate_classifier))
    members = [(name, model) for name, model in pairs if model is not None]
    if not members:
        raise ValueError("build_branches needs a classifier, a gate classifier or both.")
    size = max(model_input_size(model) for _, model in members)
    branches = {}
    for output_name, model in members:
        image = keras.Input((size, size, 3), name="image")
        own = model_input_size(model)
        sized = image
        if own != size:
            sized = keras.layers.Resizing(own, own, antialias=True, name=f"resize_for_{output_name}")(image)
        output = model(sized, training=False)
        # a model rebuilt as keras.Model(inputs, outputs_list) (e.g. by save_bundle) returns a 1-item list
        output = output[0] if isinstance(output, (list, tuple)) else output
        branches[output_name] = keras.Model(image, output, name=f"{output_name}_branch")
    return branches


class InferenceFunction:
    """``fn(uint8 batch, gate_rows=None) -> {"classes": (N, C), "imagenet": (M, 1000)}``, ONE traced call.

    The classifier sees every row; the gate's ImageNet classifier only the rows in ``gate_rows`` (default:
    all), so a TTA prediction can ask the gate about the unaltered view alone and save seven of its passes.
    ``calls`` counts calls and ``traces`` graph tracings, so tests and benchmarks can check that a TTA
    prediction is one call and that new batch sizes do not retrace.
    """

    def __init__(self, classifier: keras.Model | None, gate_classifier: keras.Model | None):
        self.branches = build_branches(classifier, gate_classifier)
        self.input_size = model_input_size(next(iter(self.branches.values())))
        self.calls = 0
        self.traces = 0
        size = self.input_size
        self._traced = tf.function(
            self._forward,
            input_signature=[
                tf.TensorSpec([None, size, size, 3], tf.uint8, name="images"),
                tf.TensorSpec([None], tf.int32, name="gate_rows"),
            ],
        )

    def _forward(self, images, gate_rows):
        self.traces += 1  # Python side effect: runs only while tracing
        pixels = tf.cast(images, tf.float32)
        outputs = {}
        if CLASSES_OUTPUT in self.branches:
            outputs[CLASSES_OUTPUT] = self.branches[CLASSES_OUTPUT](pixels, training=False)
        if IMAGENET_OUTPUT in self.branches:
            outputs[IMAGENET_OUTPUT] = self.branches[IMAGENET_OUTPUT](tf.gather(pixels, gate_rows), training=False)
        return outputs

    def _fit(self, batch: np.ndarray) -> np.ndarray:
        """Resize a batch of another size to the input size (antialiased). Done outside the traced graph:
        inside it, an always-on resize cost a quarter of the model's time even when sizes matched."""
        if batch.shape[1:3] == (self.input_size, self.input_size):
            return batch
        resized = tf.image.resize(tf.cast(batch, tf.float32), (self.input_size, self.input_size), antialias=True)
        return np.clip(np.rint(resized.numpy()), 0, 255).astype(np.uint8)

    def __call__(self, images: np.ndarray, gate_rows=None) -> dict[str, np.ndarray]:
        batch = np.asarray(images)
        if batch.ndim != 4 or batch.shape[-1] != 3 or batch.dtype != np.uint8:
            raise ValueError(f"expected an (N, H, W, 3) uint8 batch, got {batch.dtype} {batch.shape}.")
        rows = np.arange(len(batch)) if gate_rows is None else np.asarray(gate_rows)
        self.calls += 1
        outputs = self._traced(tf.constant(self._fit(batch)), tf.constant(rows, dtype=tf.int32))
        return {name: value.numpy() for name, value in outputs.items()}
