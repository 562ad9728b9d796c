"""Run a loaded model over many image files: the shared engine of evaluation and Kaggle submission.

Thousands of photos must not go through the model one by one: without TTA they are decoded and resized
by the ``tf.data`` predict pipeline and fed to the model in batches; with TTA the predictor's own
``predict_batch`` renders the views (it needs the full photo to crop) and batches the views. Either
way a photo that cannot be read is recorded with its reason instead of stopping the run, and a progress
callback hears about every finished batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from carclf.errors import ConfigError, ImageError
from carclf.images import load_image

# Photos per model call. 32 keeps a 224 px batch at ~20 MB of float32 input and amortises the per-call
# overhead; bigger batches gain little on CPU.
DEFAULT_BATCH_SIZE = 32
# Most photos per model call accepted (--batch-size): more only exhausts memory (100,000,000 once did, inside
# TensorFlow, after a minute).
MAX_BATCH_SIZE = 1024

# progress(done, total): called after each batch with the number of files handled so far.
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class FilePredictions:
    """Model outputs for a list of files, row ``i`` for ``paths[i]``.

    Rows of unreadable files are NaN in ``probabilities``; ``errors`` maps their index to the reason.
    ``probabilities`` are calibrated with the model's temperature for the views averaged (``temperature``,
    None when it has none); ``raw_probabilities`` are the model's own (evaluation scores both).
    """

    paths: tuple[Path, ...]
    probabilities: np.ndarray  # (n_files, n_classes) float32
    errors: dict  # file index -> why it could not be read
    raw_probabilities: Optional[np.ndarray] = None  # (n_files, n_classes) float32, before calibration
    temperature: Optional[float] = None

    @property
    def ok(self) -> np.ndarray:
        """Boolean mask of the files that were read and predicted."""
        mask = np.ones(len(self.paths), dtype=bool)
        mask[list(self.errors)] = False
        return mask

    @property
    def predicted(self) -> np.ndarray:
        """Index of the most probable class per file (-1 for unreadable files)."""
        top = np.full(len(self.paths), -1, dtype=np.int64)
        ok = self.ok
        if ok.any():
            top[ok] = np.argmax(self.probabilities[ok], axis=1)
        return top


def predict_files(
    model,
    paths: Sequence,
    tta: Optional[int] = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Optional[Progress] = None,
) -> FilePredictions:
    """Predict every file in ``paths`` with ``model`` (a ``carclf.predict.Predictor``), in batches.

    ``tta`` is the number of deterministic views averaged per photo: 1 = one look (0 is read as 1), None =
    the model's own (``model.default_tta``, the views its validation score was measured with).
    """
    paths = tuple(Path(p) for p in paths)
    tta = model.views_for(tta)
    if (isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer))
            or not 1 <= batch_size <= MAX_BATCH_SIZE):
        raise ConfigError(f"batch size must be a whole number from 1 to {MAX_BATCH_SIZE}, got {batch_size!r}.")
    num_classes = len(model.class_names)
    probabilities = np.full((len(paths), num_classes), np.nan, dtype=np.float32)
    errors: dict[int, str] = {}
    if paths:
        run = _predict_with_tta if tta > 1 else _predict_plain
        run(model, paths, tta, int(batch_size), probabilities, errors, progress or _no_progress)
    temperature = model.temperature_for(tta) if hasattr(model, "temperature_for") else None
    calibrated = probabilities
    if temperature is not None and len(paths):
        calibrated = probabilities.copy()
        ok = ~np.isnan(probabilities).any(axis=1)
        calibrated[ok] = model.calibrate(probabilities[ok], tta).astype(np.float32)
    return FilePredictions(paths=paths, probabilities=calibrated, errors=errors, raw_probabilities=probabilities,
                           temperature=temperature)


def _predict_plain(model, paths, tta, batch_size, probabilities, errors, progress) -> None:
    """One view per photo: decode and resize in the tf.data pipeline, one model call per batch."""
    from carclf.pipeline import make_predict_dataset  # heavy: imports TensorFlow

    dataset = make_predict_dataset([str(p) for p in paths], model.img_size, batch_size)
    done = 0
    for images, index, ok in dataset:
        index = np.asarray(index).astype(np.int64)
        ok = np.asarray(ok).astype(bool)
        if ok.any():
            batch = np.asarray(images)[ok].astype(np.uint8)
            probabilities[index[ok]] = np.asarray(model.predict_arrays(batch), dtype=np.float32)
        for bad in index[~ok]:
            errors[int(bad)] = unreadable_reason(paths[bad])
        done += len(index)
        progress(done, len(paths))


def _predict_with_tta(model, paths, tta, batch_size, probabilities, errors, progress) -> None:
    """Several views per photo: the predictor renders them from the full photo and batches the views."""
    results = model.predict_batch(list(paths), tta=tta, progress=progress)
    for index, result in enumerate(results):
        if result.error is not None:
            errors[index] = str(result.error)
        else:
            probabilities[index] = np.asarray(result.raw_probabilities or result.probabilities, dtype=np.float32)


def unreadable_reason(path: Path) -> str:
    """Why the pipeline could not read ``path``, in the safe loader's words."""
    try:
        load_image(path)
    except ImageError as error:
        return str(error)
    return f"{Path(path).name}: could not be decoded by the input pipeline."


def _no_progress(done: int, total: int) -> None:
    """Default progress callback: silent."""
