"""Padded model calls: the same answers as plain calls, and one trace for ragged batches."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from carclf.fixed_batch import predict_padded


class CountTraces(keras.layers.Layer):
    """Identity whose Python body runs only while Keras traces the predict function: it counts traces."""

    traces = 0

    def call(self, inputs):
        CountTraces.traces += 1
        return inputs


def tiny_model():
    inputs = keras.Input((8, 8, 3))
    x = CountTraces()(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, {"a": keras.layers.Dense(2, name="a")(x), "b": x})


def test_ragged_batches_trace_once_and_answer_like_plain_calls():
    model = tiny_model()
    rng = np.random.default_rng(0)
    batches = [rng.random((n, 8, 8, 3), dtype=np.float32) for n in (4, 3, 1, 4)]
    CountTraces.traces = 0
    padded = [predict_padded(model, batch, 4) for batch in batches]
    assert CountTraces.traces == 1
    for batch, got in zip(batches, padded):
        plain = model.predict_on_batch(batch)
        assert got["a"].shape == (len(batch), 2)
        np.testing.assert_allclose(got["a"], plain["a"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got["b"], plain["b"], rtol=1e-5, atol=1e-6)
    assert CountTraces.traces > 1  # the plain calls of other shapes did trace again


def test_a_batch_larger_than_the_fixed_size_is_refused():
    with pytest.raises(ValueError, match="larger than the fixed batch size 2"):
        predict_padded(tiny_model(), np.zeros((3, 8, 8, 3), np.float32), 2)
