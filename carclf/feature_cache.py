"""Cached-feature head stage: run the frozen backbone once, then train the head on the feature arrays.

A head stage on a frozen backbone spends nearly all its time recomputing the same backbone features
every epoch. With ``cached_views: K`` the backbone runs once over K views of each training photo (view 1
is the photo as validation sees it, views 2..K are augmented with the run's augmentation) and once over the
validation photos; the head's layers after pooling (``carclf.model.head_tail``, the same layer objects
as the model's head) then train on the pooled vectors in milliseconds per epoch. One epoch = one pass
over all K views. The stage keeps the usual callbacks: history rows, heartbeat, early stopping, the best
checkpoint (of the whole model) and a per-epoch backup to resume from.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Optional

import keras
import numpy as np

from carclf.fixed_batch import predict_padded

# Photos per backbone call while caching features (inference only: no gradients, so larger than a
# training batch is cheap).
EXTRACT_BATCH = 32


def extract_features(extractor, batches, on_batch: Optional[Callable[[int], None]] = None):
    """``(features, labels)`` arrays of every ``(images, labels)`` batch passed through ``extractor``.

    Every call has ``EXTRACT_BATCH`` rows (ragged batches padded), so the extractor is traced once per run.

    ``on_batch(photos_done)`` runs after each batch: a stop request raises there, a heartbeat beats.
    """
    features, labels, done = [], [], 0
    for images, batch_labels in batches:
        features.append(np.asarray(predict_padded(extractor, images, EXTRACT_BATCH), dtype=np.float32))
        labels.append(np.asarray(batch_labels, dtype=np.float32))
        done += len(features[-1])
        if on_batch is not None:
            on_batch(done)
    return np.concatenate(features), np.concatenate(labels)


def view_batches(items, views: int, img_size: int, augmenter, seed: int, num_classes: int):
    """The training photos' views in a fixed order, plain once, then ``views - 1`` augmented passes,
    as numpy batches (``carclf.pipeline.labelled_batches``: one producer thread, see why there)."""
    from carclf.pipeline import labelled_batches

    paths = [item.path for item in items]
    labels = [item.label for item in items]
    yield from labelled_batches(paths, labels, img_size, EXTRACT_BATCH, seed=seed, num_classes=num_classes)
    if views <= 1 or augmenter is None:  # without augmentation every view would be the photo itself
        return
    yield from labelled_batches(paths * (views - 1), labels * (views - 1), img_size, EXTRACT_BATCH,
                                augment=augmenter, seed=seed, num_classes=num_classes)


def cache_features(extractor, train_items, val_items, views: int, img_size: int, augmenter, seed: int,
                   num_classes: int, on_batch: Optional[Callable[[int], None]] = None):
    """``(x_train, y_train, x_val, y_val, seconds)``: pooled features of the training views and validation photos."""
    from carclf.pipeline import labelled_batches

    started = time.monotonic()
    x_train, y_train = extract_features(
        extractor, view_batches(train_items, views, img_size, augmenter, seed, num_classes), on_batch)
    val = labelled_batches([item.path for item in val_items], [item.label for item in val_items], img_size,
                           EXTRACT_BATCH, seed=seed, num_classes=num_classes)
    x_val, y_val = extract_features(extractor, val, on_batch)
    return x_train, y_train, x_val, y_val, time.monotonic() - started


class BestHeadCheckpoint(keras.callbacks.Callback):
    """The best checkpoint of a cached-feature stage: the head's weights only, while the stage runs.

    Saving the whole classifier (``best.keras``) takes seconds on a small CPU, far longer than a head
    epoch; the head's weights take milliseconds. ``write_best_model`` turns the best head into the run's
    ``best.keras`` once, at the end of the stage. Kept in the stage's backup folder (with its val_loss), so
    a resumed stage still knows its best epoch from before the stop.
    """

    def __init__(self, folder, threshold: Optional[float], monitor: str = "val_loss"):
        super().__init__()
        self.folder = Path(folder)
        self.monitor = monitor
        self.best = np.inf if threshold is None else float(threshold)
        self.improved = False
        if self.index.is_file():  # resumed: the best from before the stop still counts
            saved = float(json.loads(self.index.read_text(encoding="utf-8"))[monitor])
            self.improved = saved < self.best
            self.best = min(self.best, saved)

    @property
    def weights(self) -> Path:
        return self.folder / "best_head.weights.h5"

    @property
    def index(self) -> Path:
        return self.folder / "best_head.json"

    def on_epoch_end(self, epoch, logs=None) -> None:
        value = (logs or {}).get(self.monitor)
        if value is None or not value < self.best:
            return
        from carclf.atomic import atomic_output, atomic_write_json

        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_output(self.weights) as temp:
            self.model.save_weights(temp)
        atomic_write_json(self.index, {self.monitor: float(value), "epoch": epoch + 1})
        self.best, self.improved = float(value), True

    def write_best_model(self, tail, model, target) -> None:
        """Save ``model`` with the best head (if this stage improved on the threshold) as ``target``."""
        if not self.improved:
            return
        from carclf.atomic import atomic_output

        current = tail.get_weights()
        tail.load_weights(self.weights)
        with atomic_output(target) as temp:
            model.save(temp)
        tail.set_weights(current)
