"""carclf.pipeline: tf.data pipelines on real photos, determinism, broken files, schedule inside fit."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import albumentations as A
import keras
import numpy as np
import pytest
import tensorflow as tf

from carclf.augment import (PRE_RESIZE_INTERPOLATION, AugSchedule, Augmenter, build_compose, load_aug_config,
                            pre_resize_side)
from carclf.data import scan_dataset
from carclf.errors import ConfigError, DataError
from carclf.images import load_image, load_rgb_array
from carclf.pipeline import AugScheduleCallback, labelled_batches, make_dataset, make_predict_dataset

SIZE = 32  # tiny: 2 shared CPU cores
BATCH = 4
BRANDS = "cars/mfismail_car_brands_3"


@pytest.fixture(scope="module")
def photos(shared_data: Path) -> tuple[list[Path], list[int]]:
    """Four real photos per class (12), some of them PNGs named .jpg."""
    info = scan_dataset(shared_data / BRANDS)
    chosen = [item for label in range(info.num_classes) for item in
              [it for it in info.items if it.label == label][:4]]
    return [item.path for item in chosen], [item.label for item in chosen]


def _epoch(dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in dataset])
    return np.concatenate(images), np.concatenate(labels)


def test_validation_pipeline_yields_the_eval_preprocessing(photos) -> None:
    paths, labels = photos
    dataset = make_dataset(paths, labels, SIZE, BATCH, augment=None, shuffle=False)
    assert dataset.element_spec[0].shape.as_list() == [None, SIZE, SIZE, 3]
    assert dataset.element_spec[0].dtype == tf.float32 and dataset.element_spec[1].dtype == tf.int32
    first = next(iter(dataset))[0]
    assert first.shape == (BATCH, SIZE, SIZE, 3)
    images, got_labels = _epoch(dataset)
    assert got_labels.tolist() == labels
    expected = np.stack([load_rgb_array(p, SIZE) for p in paths]).astype(np.float32)
    assert np.array_equal(images, expected)  # raw 0..255, no normalisation, same as prediction time
    assert images.max() > 200 and images.min() >= 0


def test_one_hot_labels(photos) -> None:
    paths, labels = photos
    _, one_hot = _epoch(make_dataset(paths, labels, SIZE, BATCH, shuffle=False, num_classes=3))
    assert one_hot.dtype == np.float32 and one_hot.shape == (len(labels), 3)
    assert one_hot.argmax(axis=1).tolist() == labels


def test_seeded_training_pipeline_is_reproducible(photos) -> None:
    paths, labels = photos
    config = load_aug_config("default")

    def run(seed: int):
        dataset = make_dataset(paths, labels, SIZE, BATCH, augment=config, shuffle=True, seed=seed)
        return _epoch(dataset), _epoch(dataset)

    (a1, l1), (a2, l2) = run(3)
    (b1, m1), (b2, m2) = run(3)
    (c1, n1), _ = run(4)
    assert np.array_equal(a1, b1) and np.array_equal(l1, m1)
    assert np.array_equal(a2, b2) and np.array_equal(l2, m2)
    assert not np.array_equal(a1, a2)  # each epoch reshuffles and redraws
    assert not np.array_equal(a1, c1)
    assert sorted(l1.tolist()) == sorted(labels) == sorted(l2.tolist())  # every photo once per epoch
    assert l1.tolist() != labels  # shuffled


def test_augmentation_really_changes_images(photos) -> None:
    paths, labels = photos
    plain, _ = _epoch(make_dataset(paths, labels, SIZE, BATCH, augment=None, shuffle=False))
    augmented, _ = _epoch(make_dataset(paths, labels, SIZE, BATCH, augment=load_aug_config("strong"),
                                       shuffle=False, seed=0))
    assert augmented.shape == plain.shape
    assert np.abs(augmented - plain).mean() > 5


def _broken_files(shared_data: Path, tmp_path: Path) -> list[Path]:
    real = shared_data / "cars/sf_dl_car_classification_ostrebko/2/4176.jpg"
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(real.read_bytes()[:3000])
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    return [truncated, empty, tmp_path / "deleted.jpg"]


def test_unreadable_files_are_logged_once_and_replaced(
    photos, shared_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    paths, labels = photos
    broken = _broken_files(shared_data, tmp_path)
    all_paths = paths[:5] + broken + paths[5:]
    all_labels = labels[:5] + [0, 1, 2] + labels[5:]
    dataset = make_dataset(all_paths, all_labels, SIZE, BATCH, augment=load_aug_config("light"), seed=1)
    assert int(dataset.cardinality()) == -(-len(all_paths) // BATCH)  # Keras knows the epoch length
    with caplog.at_level(logging.WARNING, logger="carclf.pipeline"):
        _, first = _epoch(dataset)
        _, second = _epoch(dataset)
    assert len(first) == len(second) == len(all_paths)
    # the three broken files (after photo 5) were replaced by the next readable photo, paths[5]
    assert sorted(first.tolist()) == sorted(labels + [labels[5]] * 3) == sorted(second.tolist())
    assert set(dataset.decoder.failed) == {str(p) for p in broken}
    assert "damaged or truncated" in dataset.decoder.failed[str(broken[0])]
    messages = [r.getMessage() for r in caplog.records if "unreadable image" in r.getMessage()]
    assert len(messages) == 3  # once per file, not once per epoch
    assert any("truncated.jpg" in m for m in messages)


def test_validation_replacement_is_the_next_photo(photos, shared_data: Path, tmp_path: Path) -> None:
    paths, labels = photos
    broken = _broken_files(shared_data, tmp_path)[1]
    images, got = _epoch(make_dataset([paths[0], broken, paths[1]], [labels[0], 2, labels[1]], SIZE, BATCH,
                                      shuffle=False))
    assert got.tolist() == [labels[0], labels[1], labels[1]]
    assert np.array_equal(images[1], images[2])


def test_labelled_batches_match_the_validation_pipeline_with_replacements(photos, shared_data: Path,
                                                                          tmp_path: Path) -> None:
    """The producer-thread batches (cached-feature stage) = make_dataset(shuffle=False), broken files included."""
    paths, labels = photos
    broken = _broken_files(shared_data, tmp_path)
    all_paths, all_labels = paths[:5] + broken + paths[5:], labels[:5] + [0, 1, 2] + labels[5:]
    expected, expected_labels = _epoch(make_dataset(all_paths, all_labels, SIZE, BATCH, shuffle=False, num_classes=3))
    batches = list(labelled_batches(all_paths, all_labels, SIZE, BATCH, num_classes=3))
    assert [len(images) for images, _ in batches] == [BATCH] * 3 + [len(all_paths) - 3 * BATCH]
    assert batches[0][0].dtype == np.float32
    assert np.array_equal(np.concatenate([images for images, _ in batches]), expected)
    assert np.array_equal(np.concatenate([one_hot for _, one_hot in batches]), expected_labels)


def test_labelled_batches_augment_reproducibly_stop_early_and_raise_in_the_caller(photos, tmp_path: Path) -> None:
    paths, labels = photos
    config = load_aug_config("default")

    def draw(seed: int) -> np.ndarray:
        return np.concatenate([images for images, _ in labelled_batches(paths, labels, SIZE, BATCH, config, seed)])

    plain = np.concatenate([images for images, _ in labelled_batches(paths, labels, SIZE, BATCH)])
    assert np.array_equal(draw(1), draw(1)) and not np.array_equal(draw(1), draw(2))
    assert np.abs(draw(1) - plain).mean() > 5
    for _ in labelled_batches(paths * 20, labels * 20, SIZE, 1):  # the consumer stops early: the producer ends
        break
    deadline = time.monotonic() + 5
    while any(t.name == "carclf-batches" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(t.name == "carclf-batches" for t in threading.enumerate())
    missing = [tmp_path / "gone1.jpg", tmp_path / "gone2.jpg"]
    with pytest.raises(DataError, match="none of the 2 photos could be read"):
        list(labelled_batches(missing, [0, 1], SIZE, BATCH))


def test_predict_dataset_keeps_order_and_flags_bad_files(photos, shared_data: Path, tmp_path: Path) -> None:
    paths, _ = photos
    broken = _broken_files(shared_data, tmp_path)
    files = [paths[0], broken[0], paths[1], broken[1], paths[2], broken[2], paths[3]]
    dataset = make_predict_dataset(files, SIZE, batch_size=3)
    images, indices, oks = (np.concatenate(parts) for parts in zip(*[(x.numpy(), i.numpy(), o.numpy())
                                                                      for x, i, o in dataset]))
    assert indices.tolist() == list(range(len(files)))
    assert oks.tolist() == [True, False, True, False, True, False, True]
    for index, path in enumerate(files):
        if oks[index]:
            assert np.array_equal(images[index], load_rgb_array(path, SIZE).astype(np.float32))
        else:
            assert not images[index].any()


def test_schedule_callback_changes_strength_inside_fit(photos) -> None:
    """The pipeline is built once; the callback weakens augmentation for the last epoch of a real fit."""
    paths, labels = photos
    augmenter = Augmenter(load_aug_config("default"), SIZE)
    dataset = make_dataset(paths, labels, SIZE, BATCH, augment=augmenter, seed=0)
    seen: list[float] = []
    recorder = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(augmenter.strength))
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    schedule = AugSchedule(last_epochs=1, final_strength=0.0)
    history = model.fit(dataset, epochs=3, verbose=0, shuffle=False,
                        callbacks=[AugScheduleCallback(augmenter, schedule, total_epochs=3), recorder])
    assert seen == [1.0, 1.0, 0.0]
    assert len(history.history["loss"]) == 3
    # at strength 0 the same pipeline now yields plain resizes of the photos (as decoded once per run:
    # shrunk to the pre-resize side, see carclf.pipeline.MAX_CACHE_BYTES)
    images, got = _epoch(dataset)
    plain = build_compose(None, SIZE)
    shrink = A.SmallestMaxSize(max_size=pre_resize_side(SIZE), interpolation=PRE_RESIZE_INTERPOLATION)
    expected = {label: [] for label in set(labels)}
    for path, label in zip(paths, labels):
        photo = np.asarray(load_image(path, min_size=pre_resize_side(SIZE)))
        if min(photo.shape[:2]) > pre_resize_side(SIZE):
            photo = shrink(image=photo)["image"]
        expected[label].append(plain(image=photo)["image"].astype(np.float32))
    for image, label in zip(images, got):
        assert any(np.array_equal(image, e) for e in expected[int(label)])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"paths": ["a.jpg"], "labels": [0, 1]}, "1 paths but 2 labels"),
        ({"paths": [], "labels": []}, "no photos"),
        ({"paths": ["a.jpg"], "labels": [0], "img_size": 4}, "img_size"),
        ({"paths": ["a.jpg"], "labels": [0], "batch_size": 0}, "batch_size"),
        ({"paths": ["a.jpg"], "labels": [3], "num_classes": 3}, "labels must be in 0..2"),
        ({"paths": ["a.jpg"], "labels": [0], "augment": "default"}, "augment must be"),
    ],
)
def test_bad_arguments_raise_config_error(kwargs: dict, message: str) -> None:
    arguments = {"img_size": SIZE, "batch_size": BATCH, **kwargs}
    with pytest.raises(ConfigError, match=message):
        make_dataset(**arguments)
