"""``tf.data`` input pipelines: photos on disk -> batches of raw RGB float32 0..255 at img_size.

Decoding goes through ``carclf.images`` (EXIF, CMYK, alpha... handled once, everywhere) inside
``tf.numpy_function`` so it runs on parallel tf.data threads; albumentations runs there too when training.
Images reach the model already at ``img_size x img_size``: the model contains no resize and does its
own normalisation. A file that fails to decode is logged once and replaced by the next readable photo
(training/validation) or flagged (prediction), never fatal. ``labelled_batches`` yields the same batches
as numpy arrays from one producer thread, for a single inference pass (the cached-feature stage).
"""

from __future__ import annotations

import logging
import queue
import threading
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence, Union

import albumentations as A
import cv2
import keras
import numpy as np
import tensorflow as tf

from carclf.augment import PRE_RESIZE_INTERPOLATION, AugConfig, Augmenter, AugSchedule, pre_resize_side
from carclf.errors import ConfigError, DataError, ImageError
from carclf.images import load_image, load_rgb_array

LOG = logging.getLogger(__name__)

AUTOTUNE = tf.data.AUTOTUNE

# Shuffle buffer: the whole file list up to this many entries (a buffer of paths costs nothing; a
# larger one only delays the first batch).
MAX_SHUFFLE_BUFFER = 20_000

# Channels of every image the pipeline yields (RGB).
CHANNELS = 3

# Decoded photos a training/validation pipeline keeps in memory (bytes), so each photo is decoded and
# shrunk once per run, not once per epoch; photos past the limit are decoded every time. 200 photos at
# 288 px (pre-resized to a 374 px short side) take about 110 MB.
MAX_CACHE_BYTES = 512 * 1024 * 1024

ImageAugment = Callable[[np.ndarray, Optional[int]], np.ndarray]
"""A per-image augmentation ``f(uint8 HxWx3, seed) -> uint8 SxSx3``; ``Augmenter`` is one."""

PathLike = Union[str, Path]


class _Decoder:
    """Reads photos for tf.data; remembers (and logs once) every file that failed."""

    def __init__(self, paths: Sequence[PathLike], img_size: int, augment: Optional[ImageAugment],
                 labels: Optional[np.ndarray] = None, cache_bytes: int = 0):
        self.paths = [str(p) for p in paths]
        self.cache_bytes = cache_bytes  # 0 = decode every time
        self._cache: dict[str, np.ndarray] = {}  # path -> decoded photo (pre-resized, or final when not augmenting)
        self._cached_bytes = 0
        self.labels = labels
        self.img_size = img_size
        self.augment = augment
        self.failed: dict[str, str] = {}  # path -> reason: unreadable (replaced or flagged)
        self.augment_failed: dict[str, str] = {}  # path -> reason: used un-augmented
        self._lock = threading.Lock()

    def read(self, index: int, seed: int) -> np.ndarray:
        """The photo at ``index`` as uint8 SxSx3 (augmented when training), or ImageError."""
        name = self.paths[index]
        if name in self.failed:
            raise ImageError(self.failed[name])
        try:
            photo = self._cached(name)
            if photo is None:
                photo = self._decode(name)
                self._remember(name, photo)
            if self.augment is None:
                return photo
            image = self._augment(name, photo.copy(), seed)  # the cached photo stays as decoded
        except ImageError as error:
            self._record(name, str(error))
            raise
        if image.shape != (self.img_size, self.img_size, CHANNELS):
            raise ValueError(f"augmentation returned shape {image.shape} for {name}, "
                             f"expected {(self.img_size, self.img_size, CHANNELS)}")
        return image

    def _decode(self, name: str) -> np.ndarray:
        """The photo as validation sees it (final size), or shrunk to the augmentation's pre-resize side:
        exactly what the first transform (``SmallestMaxSize``) would make of it, so caching changes nothing."""
        if self.augment is None:
            return load_rgb_array(name, self.img_size)
        side = pre_resize_side(self.img_size)
        photo = np.asarray(load_image(name, min_size=side))
        if min(photo.shape[:2]) <= side:
            return photo
        shrink = A.SmallestMaxSize(max_size=side, interpolation=PRE_RESIZE_INTERPOLATION)  # once per photo and run
        return shrink(image=photo)["image"]

    def _cached(self, name: str) -> Optional[np.ndarray]:
        return self._cache.get(name)

    def _remember(self, name: str, photo: np.ndarray) -> None:
        with self._lock:
            if name not in self._cache and self._cached_bytes + photo.nbytes <= self.cache_bytes:
                photo.setflags(write=False)  # shared between epochs: transforms must copy, never modify
                self._cache[name] = photo
                self._cached_bytes += photo.nbytes

    def labelled(self, index: np.int64, seed: np.int64) -> tuple[np.ndarray, np.int32]:
        """(image, label) for training/validation. An unreadable photo is replaced by the next readable
        one in the list (with its label), so every epoch has the same number of batches and Keras knows
        the epoch length; the file is logged once."""
        count = len(self.paths)
        for step in range(count):
            candidate = (int(index) + step) % count
            try:
                return self.read(candidate, int(seed)), np.int32(self.labels[candidate])
            except ImageError:
                continue
        raise DataError(f"none of the {count} photos could be read; see the log for the reasons.")

    def flagged(self, index: np.int64) -> tuple[np.ndarray, np.bool_]:
        """(image, ok) for prediction: an unreadable photo is all zeros with ok=False."""
        try:
            return self.read(int(index), 0), np.bool_(True)
        except ImageError:
            return np.zeros((self.img_size, self.img_size, CHANNELS), np.uint8), np.bool_(False)

    def _augment(self, name: str, photo: np.ndarray, seed: int) -> np.ndarray:
        """Augment; a transform that cannot handle this photo (e.g. rain drops longer than a tiny image)
        is logged once and the photo is used un-augmented, rather than ending a long training run."""
        try:
            return np.ascontiguousarray(self.augment(photo, seed), dtype=np.uint8)
        except (ValueError, cv2.error) as error:
            with self._lock:
                first = name not in self.augment_failed
                self.augment_failed[name] = str(error)
            if first:
                LOG.warning("augmentation failed on %s (%s); using it un-augmented", name, error)
            return load_rgb_array(photo, self.img_size)

    def _record(self, name: str, reason: str) -> None:
        with self._lock:
            first = name not in self.failed
            self.failed[name] = reason
        if first:
            LOG.warning("unreadable image %s: %s", name, reason)


def _as_augment(augment: Union[None, AugConfig, ImageAugment], img_size: int) -> Optional[ImageAugment]:
    if augment is None or callable(augment):
        return augment
    if isinstance(augment, AugConfig):
        return Augmenter(augment, img_size)
    raise ConfigError(f"augment must be None, an AugConfig or an Augmenter, got {type(augment).__name__}.")


def _check_sizes(img_size: int, batch_size: int) -> None:
    if not isinstance(img_size, (int, np.integer)) or img_size < 8:
        raise ConfigError(f"img_size must be a whole number of pixels >= 8, got {img_size!r}.")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ConfigError(f"batch_size must be a whole number >= 1, got {batch_size!r}.")


def _to_float(images, *rest):
    """uint8 travels through the pipeline (4x less to copy); the model gets float32 0..255."""
    return (tf.cast(images, tf.float32), *rest)


def _labelled_decoder(paths, labels, img_size, batch_size, augment, num_classes) -> _Decoder:
    """The checked arguments of a labelled pipeline (``make_dataset``, ``labelled_batches``) as its decoder,
    which keeps each decoded photo for the run."""
    _check_sizes(img_size, batch_size)
    if len(paths) != len(labels):
        raise ConfigError(f"{len(paths)} paths but {len(labels)} labels: give one label per photo.")
    if not len(paths):
        raise ConfigError("no photos to build a dataset from.")
    label_array = np.asarray(labels, dtype=np.int32)
    if num_classes is not None and (label_array.min() < 0 or label_array.max() >= num_classes):
        raise ConfigError(f"labels must be in 0..{num_classes - 1}, found {label_array.min()}..{label_array.max()}.")
    return _Decoder(paths, int(img_size), _as_augment(augment, int(img_size)), labels=label_array,
                    cache_bytes=MAX_CACHE_BYTES)


def make_dataset(
    paths: Sequence[PathLike],
    labels: Sequence[int],
    img_size: int,
    batch_size: int,
    augment: Union[None, AugConfig, ImageAugment] = None,
    shuffle: bool = True,
    seed: Optional[int] = 0,
    num_classes: Optional[int] = None,
    drop_remainder: bool = False,
) -> tf.data.Dataset:
    """Batches of ``(images float32 (B,S,S,3) 0..255, labels)`` for ``model.fit``/``evaluate``.

    ``augment``: None for validation (the whole photo resized, as ``load_rgb_array`` does at prediction
    time), an ``AugConfig``, or an ``Augmenter`` (whose ``strength`` a callback may change between
    epochs). Labels are int32 class indices, or one-hot float32 when ``num_classes`` is given (for label
    smoothing). With a ``seed`` the order and the augmentation draws are the same on every run; each
    epoch still reshuffles and redraws. An unreadable file is logged once and replaced by the next
    readable photo in the list, so the number of batches per epoch is fixed (``dataset.cardinality()``).

    Training epochs keep tf.data's parallel map: with one map thread instead, quick on 2 cores was no faster
    (2026-12-03, split 0, four runs each, alternated: 131-156 s against 129-164 s; the occasional 9-10 s
    fine-tuning epochs instead of 5-6 s came in both, so they are the machine's, not the map's).
    """
    decoder = _labelled_decoder(paths, labels, img_size, batch_size, augment, num_classes)

    indices = tf.data.Dataset.range(len(paths))
    if shuffle:
        indices = indices.shuffle(min(len(paths), MAX_SHUFFLE_BUFFER), seed=seed, reshuffle_each_iteration=True)
    draws = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)

    def load(index, draw):
        image, label = tf.numpy_function(decoder.labelled, [index, draw], [tf.uint8, tf.int32], stateful=False)
        image.set_shape((img_size, img_size, CHANNELS))
        label.set_shape(())
        if num_classes is not None:
            label = tf.one_hot(label, num_classes, dtype=tf.float32)
        return image, label

    ordered = seed is not None or not shuffle  # an unshuffled list keeps its order, seed or not
    dataset = tf.data.Dataset.zip((indices, draws)).map(load, num_parallel_calls=AUTOTUNE, deterministic=ordered)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder).map(_to_float).prefetch(AUTOTUNE)
    dataset.decoder = decoder  # type: ignore[attr-defined]  # callers/tests can read decoder.failed
    return dataset


def labelled_batches(
    paths: Sequence[PathLike],
    labels: Sequence[int],
    img_size: int,
    batch_size: int,
    augment: Union[None, AugConfig, ImageAugment] = None,
    seed: int = 0,
    num_classes: Optional[int] = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(images float32 (B,S,S,3) 0..255, labels)`` numpy batches in list order, for one inference pass.

    The same photos, replacements of unreadable files and labels as ``make_dataset(shuffle=False)``, made
    by ONE background thread that keeps two batches ready. For the cached-feature stage's single pass over
    hundreds of augmented views: tf.data's parallel map runs the augmentation in several threads that
    fight the model over the GIL and the two cores; one producer measured 1-3 s faster over 890 views at
    288 px (17-20 s instead of 20-22 s) and never showed the occasional 2x slow pass (41 s) of tf.data.
    """
    decoder = _labelled_decoder(paths, labels, img_size, batch_size, augment, num_classes)
    draws = np.random.default_rng(seed).integers(0, 2**31 - 1, size=len(paths))
    ready: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()

    def hand(item) -> bool:
        """Queue ``item`` for the consumer; False once it has stopped (never block forever)."""
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for start in range(0, len(paths), batch_size):
                rows = [decoder.labelled(i, draws[i]) for i in range(start, min(len(paths), start + batch_size))]
                images = np.stack([image for image, _ in rows]).astype(np.float32)
                classes = np.asarray([label for _, label in rows], dtype=np.int32)
                if num_classes is not None:
                    classes = np.eye(num_classes, dtype=np.float32)[classes]
                if not hand((images, classes)):
                    return
            hand(None)
        except BaseException as error:  # raised in the consumer's thread
            hand(error)

    threading.Thread(target=produce, name="carclf-batches", daemon=True).start()
    try:
        while (item := ready.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def make_predict_dataset(paths: Sequence[PathLike], img_size: int, batch_size: int) -> tf.data.Dataset:
    """Batches of ``(images float32 (B,S,S,3), index int32 (B,), ok bool (B,))`` in file order.

    ``index`` is the position in ``paths``; ``ok`` is False for a file that could not be read (its image
    is all zeros): report those, do not predict a class for them.
    """
    _check_sizes(img_size, batch_size)
    decoder = _Decoder(paths, int(img_size), augment=None)

    def load(index):
        image, ok = tf.numpy_function(decoder.flagged, [index], [tf.uint8, tf.bool], stateful=False)
        image.set_shape((img_size, img_size, CHANNELS))
        ok.set_shape(())
        return image, tf.cast(index, tf.int32), ok

    dataset = tf.data.Dataset.range(len(paths)).map(load, num_parallel_calls=AUTOTUNE, deterministic=True)
    dataset = dataset.batch(batch_size).map(_to_float).prefetch(AUTOTUNE)
    dataset.decoder = decoder  # type: ignore[attr-defined]
    return dataset


class AugScheduleCallback(keras.callbacks.Callback):
    """Sets an ``Augmenter``'s strength at the start of each epoch from an ``AugSchedule``.

    The running tf.data pipeline reads the new strength on its next image: nothing is rebuilt.
    ``total_epochs`` counts all epochs of the run (``epoch`` from Keras is absolute when ``fit`` gets
    ``initial_epoch``).
    """

    def __init__(self, augmenter: Augmenter, schedule: AugSchedule, total_epochs: int):
        super().__init__()
        self.augmenter = augmenter
        self.schedule = schedule
        self.total_epochs = int(total_epochs)
        self.base_strength = augmenter.strength

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        strength = self.schedule.strength_at(epoch, self.total_epochs, self.base_strength)
        if strength != self.augmenter.strength:
            LOG.info("epoch %d: augmentation strength %.2f -> %.2f", epoch + 1, self.augmenter.strength, strength)
            self.augmenter.set_strength(strength)
