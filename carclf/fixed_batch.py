"""Model calls on batches padded to one shape, so a traced predict function is traced once.

Keras traces ``predict_on_batch`` anew for every input shape it has not seen, and tracing a backbone costs
seconds on a small CPU, more than running it over a batch. A dataset's ragged last batch (and a
validation set smaller than a batch) would each pay one more trace: padding them with zeros to the full
batch costs a few wasted photos instead. The ``fast`` preset's feature cache and the gate threshold run
through here (see bench/bench_time_to_accuracy.py).
"""

from __future__ import annotations

import numpy as np


def predict_padded(model, images, batch_size: int):
    """``model.predict_on_batch`` of ``images`` (at most ``batch_size`` rows) padded to ``batch_size`` rows;
    the outputs (an array, or a dict/list of arrays) are cut back to the real rows."""
    images = np.asarray(images)
    rows = len(images)
    if rows > batch_size:
        raise ValueError(f"a batch of {rows} images is larger than the fixed batch size {batch_size}")
    if rows < batch_size:
        padding = np.zeros((batch_size - rows, *images.shape[1:]), dtype=images.dtype)
        images = np.concatenate([images, padding])
    outputs = model.predict_on_batch(images)
    if isinstance(outputs, dict):
        return {key: np.asarray(value)[:rows] for key, value in outputs.items()}
    if isinstance(outputs, (list, tuple)):
        return [np.asarray(value)[:rows] for value in outputs]
    return np.asarray(outputs)[:rows]
