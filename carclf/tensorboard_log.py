"""TensorBoard logs of a run, in ``RUN/tensorboard/{train,validation}`` (Keras' own layout and tag names).

Why: ``tensorboard --logdir runs`` is what every Keras user already watches, and it then works alike for
CLI, dashboard and notebook runs. Written with ``tf.summary``, whose implementation is TensorBoard's package
(a dependency since TensorFlow 2.21 stopped installing it).

- Scalars per finished epoch (step = the run's 1-based epoch, as in history.csv): loss, accuracy, their
  ``val_`` twins in ``validation/``, the stage, the learning rate and the epoch's seconds. They are copied
  from history.csv by ``TensorBoardEpochs``, which runs after ``EpochBackup``: an epoch reaches TensorBoard
  only once its backup is saved, so a resumed run (even after kill -9) continues after it. The copy is
  idempotent: each (folder, tag, step) already in the event files is skipped, so a resume appends and
  never repeats a step, and an epoch a kill left out (between its backup and its copy) is filled in later.
- Images: one augmented training batch when the run starts, and the final confusion matrix on the
  validation photos.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from carclf.runs import RunPaths

# Sub-folders: TensorBoard overlays a tag of both in one chart (training vs validation), as for Keras' callback.
TRAIN, VALIDATION = "train", "validation"
# history.csv column -> (sub-folder, tag). Keras' TensorBoard callback names its epoch scalars the same way.
SCALARS = {
    "loss": (TRAIN, "epoch_loss"),
    "accuracy": (TRAIN, "epoch_accuracy"),
    "val_loss": (VALIDATION, "epoch_loss"),
    "val_accuracy": (VALIDATION, "epoch_accuracy"),
    "lr": (TRAIN, "epoch_learning_rate"),
    "stage": (TRAIN, "epoch_stage"),
    "time": (TRAIN, "epoch_seconds"),
}
AUGMENTED_TAG = "augmented_batch"  # in train/: the photos as the model sees them, once per run
CONFUSION_TAG = "confusion_matrix"  # in validation/: rows true, columns predicted, at the last epoch
# Photos shown from the augmented batch: enough to judge the augmentation, few enough to load fast.
MAX_IMAGES = 16
# Confusion image: pixels per cell and the largest class name drawn (longer ones are cut).
CELL_PX, MAX_LABEL_CHARS = 44, 24


class RunBoard:
    """The event writers of one run folder in this process, and every (folder, tag, step) on disk."""

    def __init__(self, paths: RunPaths):
        self.root = paths.tensorboard
        self._writers: dict = {}
        self.written = set(read_event_keys(self.root))

    def has(self, sub: str, tag: str, step: Optional[int] = None) -> bool:
        return any(key[:2] == (sub, tag) and (step is None or key[2] == step) for key in self.written)

    def writer(self, sub: str):
        if sub not in self._writers:
            self._writers[sub] = tf.summary.create_file_writer(str(self.root / sub))
        return self._writers[sub]

    def scalars(self, values: dict, step: int) -> None:
        """Write ``{(sub, tag): value}`` at ``step``, skipping what is already there; flush at once."""
        touched = set()
        for (sub, tag), value in values.items():
            if (sub, tag, step) in self.written:
                continue
            with self.writer(sub).as_default():
                tf.summary.scalar(tag, float(value), step=step)
            self.written.add((sub, tag, step))
            touched.add(sub)
        for sub in touched:
            self.writer(sub).flush()  # a kill -9 must not lose a step the next process then skips

    def images(self, sub: str, tag: str, images: np.ndarray, step: int, description: str = "") -> None:
        """Write ``images`` (uint8 N x H x W x 3) as one image summary and flush."""
        with self.writer(sub).as_default():
            tf.summary.image(tag, images, step=step, max_outputs=len(images), description=description or None)
        self.writer(sub).flush()
        self.written.add((sub, tag, step))

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()


# One board per run folder in this process: one event file per folder and process, not one per stage.
_BOARDS: dict[Path, RunBoard] = {}


def run_board(paths: RunPaths) -> RunBoard:
    key = paths.root.resolve()
    if key not in _BOARDS:
        _BOARDS[key] = RunBoard(paths)
    return _BOARDS[key]


def close_run_board(paths: RunPaths) -> None:
    """Close the run's event files (end of training); a later call opens new ones."""
    board = _BOARDS.pop(paths.root.resolve(), None)
    if board is not None:
        board.close()


def read_event_keys(root: Path):
    """Yield ``(sub-folder, tag, step)`` of every summary in the event files under ``root``.

    A record cut short by a kill ends that file's reading; it is then written again if still needed.
    """
    for sub in (TRAIN, VALIDATION):
        for path in sorted((root / sub).glob("*tfevents*")):
            try:
                for record in tf.data.TFRecordDataset(str(path)):
                    event = tf.compat.v1.Event.FromString(record.numpy())
                    for value in event.summary.value:
                        yield sub, value.tag, int(event.step)
            except tf.errors.DataLossError:
                continue


def sync_history(paths: RunPaths) -> None:
    """Copy every history.csv epoch not yet in the event files (history holds only finished epochs)."""
    if not paths.history.is_file():
        return
    with open(paths.history, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    board = run_board(paths)
    for row in rows:
        if not row.get("epoch"):
            continue
        values = {SCALARS[column]: float(text) for column, text in row.items()
                  if column in SCALARS and text not in (None, "")}
        board.scalars(values, int(row["epoch"]))


class TensorBoardEpochs(keras.callbacks.Callback):
    """Copies finished epochs into TensorBoard. Put it after ``EpochBackup`` (see the module docstring)."""

    def __init__(self, paths: RunPaths):
        super().__init__()
        self.paths = paths

    def on_epoch_end(self, epoch, logs=None) -> None:
        sync_history(self.paths)

    def on_train_end(self, logs=None) -> None:
        sync_history(self.paths)  # a resumed stage whose last epoch was already done runs no epoch at all


def log_training_batch(paths: RunPaths, items: Sequence, img_size: int, augmenter, seed: int,
                       class_names: Sequence[str], step: int) -> None:
    """Once per run: ``MAX_IMAGES`` training photos as the first stage augments them.

    Built from its own seeded dataset, so the training dataset's shuffle and augmentation draws are
    untouched (a run logs the same way with or without this image).
    """
    board = run_board(paths)
    if not items or board.has(TRAIN, AUGMENTED_TAG):
        return
    from carclf.pipeline import make_dataset

    dataset = make_dataset([item.path for item in items], [item.label for item in items], img_size,
                           min(MAX_IMAGES, len(items)), augment=augmenter, shuffle=True, seed=seed)
    images, labels = next(iter(dataset))
    names = [class_names[int(label)] for label in labels.numpy()]
    description = "Augmented training photos, in order: " + ", ".join(names)
    board.images(TRAIN, AUGMENTED_TAG, np.clip(images.numpy(), 0, 255).astype(np.uint8), step, description)


def confusion_matrix(view_probabilities: Sequence, labels: Sequence[int], num_classes: int) -> np.ndarray:
    """Counts (rows true, columns predicted) of the photos' answers: the mean of each photo's views, as the
    bundle answers (``carclf.train.score_views``' result, so no extra pass over the validation photos)."""
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    for probabilities, label in zip(view_probabilities, labels):
        predicted = int(np.argmax(np.asarray(probabilities, dtype=np.float64).mean(axis=0)))
        confusion[int(label), predicted] += 1
    return confusion


def log_confusion(paths: RunPaths, confusion: np.ndarray, class_names: Sequence[str], step: int) -> None:
    """The final confusion matrix as an image in ``validation/`` at the run's last epoch."""
    image = render_confusion(confusion, class_names)
    accuracy = np.trace(confusion) / max(1, confusion.sum())
    run_board(paths).images(VALIDATION, CONFUSION_TAG, image[None], step,
                            f"Validation photos: {int(confusion.sum())}, accuracy {accuracy:.3f}. "
                            "Rows: true class; columns: predicted class.")


def render_confusion(confusion: np.ndarray, class_names: Sequence[str]) -> np.ndarray:
    """A heat map with counts, shaded by each row's share (uint8 H x W x 3); PIL only, no plotting library."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=13)
    names = [str(name)[:MAX_LABEL_CHARS] for name in class_names]
    n = len(names)
    label_w = int(max(font.getlength(name) for name in names)) + 12
    header_h = label_w  # column names are drawn rotated, as tall as the longest name
    size = (label_w + n * CELL_PX + 8, header_h + n * CELL_PX + 8)
    canvas = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(canvas)
    shares = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    for row in range(n):
        top = header_h + row * CELL_PX
        draw.text((label_w - 6, top + CELL_PX / 2), names[row], fill="black", font=font, anchor="rm")
        for column in range(n):
            left = label_w + column * CELL_PX
            share = float(shares[row, column])
            shade = tuple(int(255 - share * (255 - c)) for c in (31, 84, 160))  # white -> dark blue
            draw.rectangle((left, top, left + CELL_PX - 1, top + CELL_PX - 1), fill=shade, outline=(210, 210, 210))
            draw.text((left + CELL_PX / 2, top + CELL_PX / 2), str(int(confusion[row, column])),
                      fill="white" if share > 0.5 else "black", font=font, anchor="mm")
    for column, name in enumerate(names):
        text = Image.new("RGB", (header_h, CELL_PX), "white")
        ImageDraw.Draw(text).text((6, CELL_PX / 2), name, fill="black", font=font, anchor="lm")
        canvas.paste(text.rotate(90, expand=True), (label_w + column * CELL_PX, 0))
    return np.asarray(canvas, dtype=np.uint8)
