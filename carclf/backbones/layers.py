"""Small preprocessing layers that Keras lacks, registered so ``.keras`` files load in safe mode.

``keras.layers.Lambda`` would do the job but cannot be loaded with ``safe_mode=True``; a registered layer can.
Import ``carclf.backbones`` (which imports this module) before ``keras.saving.load_model``.
"""

from __future__ import annotations

import keras

# Per-channel ImageNet means in BGR order, subtracted by the original Caffe ResNet-50 (keras "caffe" mode).
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="carclf")
class CaffePreprocessing(keras.layers.Layer):
    """RGB 0..255 -> BGR with the ImageNet channel means subtracted (what ResNet-50's weights expect)."""

    def __init__(self, mean=CAFFE_BGR_MEAN, **kwargs):
        super().__init__(**kwargs)
        self.mean = tuple(float(value) for value in mean)

    def call(self, inputs):
        bgr = keras.ops.flip(inputs, axis=-1)
        return bgr - keras.ops.convert_to_tensor(self.mean, dtype=bgr.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mean": list(self.mean)}
