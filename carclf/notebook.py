"""Helpers for notebooks (``notebooks/kaggle_sf_car_classification.ipynb``): find the data, run a carclf command
with its output streamed into the cell, and draw what a notebook shows.

The work itself is the CLI's (``python -m carclf ...`` in a child process): the notebook's kernel never loads
TensorFlow or holds GPU memory, and what a cell does is the command a terminal user would type. The figures
are matplotlib ``Figure`` objects built without pyplot (a notebook shows one when it is a cell's last value;
they are never shown twice); matplotlib is imported only here, and every notebook image has it.
"""

from __future__ import annotations

import codecs
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from carclf.data import KAGGLE_CSV, KAGGLE_IMAGE_DIR, natural_key
from carclf.errors import CarclfError

# Where Kaggle mounts a competition's data (read-only) and the folder whose files a notebook version keeps.
KAGGLE_INPUT = Path("/kaggle/input")
KAGGLE_WORKING = Path("/kaggle/working")
# Folders below /kaggle/input searched for train.csv + train/ (competition / dataset / a sub-folder).
SEARCH_DEPTH = 3
# Thumbnail side in the photo grids, pixels, and the grid cell size in inches.
THUMB_PX = 160
CELL_INCHES = 1.9
# Characters of a class name in a photo's caption (two names and a probability share ~30 px of title).
CAPTION_CHARS = 14
# Characters of a command's output kept to name the failure (its last line).
TAIL_CHARS = 4000


class StepFailed(CarclfError):
    """A carclf command run from a notebook exited with an error; the message is its last line."""


def find_data_dir(given: Union[str, Path, None] = "", search: Path = KAGGLE_INPUT) -> Path:
    """``given`` when set, else the first folder under ``search`` (Kaggle's inputs) with train.csv + train/."""
    if given:
        path = Path(given).expanduser()
        if not path.is_dir():
            raise CarclfError(f"DATA_DIR {path}: no such folder.")
        return path
    level = [search] if search.is_dir() else []
    for _ in range(SEARCH_DEPTH + 1):
        for folder in sorted(level, key=natural_key):
            if (folder / KAGGLE_CSV).is_file() and (folder / KAGGLE_IMAGE_DIR).is_dir():
                return folder
        level = [child for folder in level for child in _subfolders(folder)]
    raise CarclfError(f"no competition data found under {search}: add the sf-dl-car-classification data to the "
                      "notebook (Add Input), or set DATA_DIR / CARCLF_DATA_DIR to a folder with train.csv + train/.")


def _subfolders(folder: Path) -> list:
    try:
        return [child for child in folder.iterdir() if child.is_dir() and not child.name.startswith(".")]
    except OSError:
        return []


def default_out_dir() -> Path:
    """Kaggle's /kaggle/working (kept with the notebook version, offered for download), else ./carclf-out."""
    return KAGGLE_WORKING if KAGGLE_WORKING.is_dir() else Path("carclf-out")


def run(*args, ok_codes: Sequence[int] = (0,)) -> int:
    """Run ``python -m carclf ARGS`` with its output streamed into the cell; return the exit code.

    A code outside ``ok_codes`` raises ``StepFailed`` with the command's last line (its ``error: ...``).
    Interrupting the cell stops the command the way ``runs stop`` does (SIGTERM: a training run saves
    and can be resumed).
    """
    command = [sys.executable, "-m", "carclf", *map(str, args)]
    print("$ python -m carclf " + " ".join(shlex.quote(str(a)) for a in args), flush=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a chunk may end inside a character
    tail = ""
    try:
        for chunk in iter(lambda: process.stdout.read1(65536), b""):
            text = decoder.decode(chunk)
            sys.stdout.write(text)
            sys.stdout.flush()
            tail = (tail + text)[-TAIL_CHARS:]
        code = process.wait()
    except KeyboardInterrupt:
        process.terminate()
        process.wait()
        raise
    if code not in ok_codes:
        lines = [line.strip() for line in tail.replace("\r", "\n").splitlines() if line.strip()]
        raise StepFailed(f"python -m carclf {args[0]} failed (exit code {code}): "
                         f"{lines[-1] if lines else 'no output'}")
    return code


def environment() -> str:
    """Python, TensorFlow, Keras, memory and GPUs on a few lines, read without importing TensorFlow."""
    from carclf import machine
    from carclf.requirements_check import KERAS_DISTRIBUTIONS, TENSORFLOW_DISTRIBUTIONS, installed

    tf_name, tf_version = installed(TENSORFLOW_DISTRIBUTIONS)
    _, keras_version = installed(KERAS_DISTRIBUTIONS)
    lines = [f"Python {platform.python_version()}, {tf_name or 'TensorFlow'} {tf_version or 'not installed'}, "
             f"Keras {keras_version or 'not installed'}", machine.describe()]
    if shutil.which("nvidia-smi"):
        query = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                               capture_output=True, text=True, check=False)
        lines += [f"GPU: {line.strip()}" for line in query.stdout.splitlines() if line.strip()]
    return "\n".join(lines)


def tensorflow_gpus() -> list:
    """Names of the GPUs TensorFlow itself can use, asked in a child process (the kernel keeps no GPU memory)."""
    code = "import json; from carclf.devices import gpu_info; print(json.dumps([g['name'] for g in gpu_info()]))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines()
        raise StepFailed(f"TensorFlow could not start: {lines[-1] if lines else 'no output'}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _named(label: str, names: Optional[dict]) -> str:
    """'1 Ford Focus' for a class whose display name differs from its folder name, else the name alone."""
    name = (names or {}).get(label, label)
    return f"{label} {name}" if name != label else label


def plot_counts(counts: dict, names: Optional[dict] = None):
    """Photos per class as horizontal bars, labelled with the classes' display names."""
    labels = [_named(key, names) for key in counts]
    fig = _figure(7, 0.35 * len(counts) + 1)
    ax = fig.add_subplot()
    ax.barh(labels[::-1], list(counts.values())[::-1], color="tab:blue")
    for y, value in enumerate(list(counts.values())[::-1]):
        ax.text(value, y, f" {value}", va="center", fontsize=8)
    ax.set_xlabel("photos")
    ax.set_title("Photos per class")
    return fig


def sample_paths(info, per_class: int = 5, seed: int = 0) -> list:
    """``(class, [paths])`` with up to ``per_class`` photos of each class of a ``DatasetInfo``, seeded."""
    rng = np.random.default_rng(seed)
    chosen = []
    for index, name in enumerate(info.classes):
        paths = [item.path for item in info.items if item.label == index]
        picks = sorted(rng.permutation(len(paths))[:per_class])
        chosen.append((name, [paths[i] for i in picks]))
    return chosen


def plot_photo_grid(rows: Sequence, columns: int, row_titles: Sequence[str] = (), captions: Sequence = ()):
    """Photos in a grid: ``rows`` is a list of path lists; ``captions`` (same shape) go under each photo."""
    from carclf.images import load_image

    fig = _figure(CELL_INCHES * columns, CELL_INCHES * max(1, len(rows)))
    axes = fig.subplots(max(1, len(rows)), columns, squeeze=False)
    for r, axes_row in enumerate(axes):
        for c, ax in enumerate(axes_row):
            ax.set_axis_off()
            if r >= len(rows) or c >= len(rows[r]):
                continue
            try:
                image = load_image(rows[r][c])
                image.thumbnail((THUMB_PX, THUMB_PX))
                ax.imshow(np.asarray(image))
            except CarclfError as error:  # an unreadable photo is shown as its reason, never a crash
                ax.text(0.5, 0.5, str(error)[:60], ha="center", va="center", wrap=True, fontsize=6)
            if captions and r < len(captions) and c < len(captions[r]):
                ax.set_title(captions[r][c], fontsize=7)
        if r < len(row_titles):
            axes_row[0].text(-0.05, 0.5, row_titles[r], transform=axes_row[0].transAxes, ha="right", va="center",
                             fontsize=8)
    return fig


def plot_samples(info, per_class: int = 5, seed: int = 0):
    """A grid of ``per_class`` random photos of every class, one row per class named on the left."""
    chosen = sample_paths(info, per_class, seed)
    names = dict(zip(info.classes, info.display_names))
    titles = [_named(name, names) for name, _ in chosen]
    return plot_photo_grid([paths for _, paths in chosen], per_class, row_titles=titles)


def plot_history(history):
    """Loss and accuracy per epoch, train dashed and validation solid, a dotted line where each stage starts."""
    from matplotlib.ticker import MaxNLocator

    fig = _figure(11, 3.6)
    axes = fig.subplots(1, 2)
    for ax, (train_col, val_col, title) in zip(axes, (("loss", "val_loss", "Loss"),
                                                      ("accuracy", "val_accuracy", "Accuracy"))):
        for column, style in ((train_col, "--"), (val_col, "-")):
            if column in history and len(history):
                ax.plot(history["epoch"], history[column], style, marker="o", markersize=3, label=column)
        if "stage" in history and len(history):
            starts = history[history["stage"].ne(history["stage"].shift())].iloc[1:]
            for row in starts.itertuples():
                ax.axvline(row.epoch - 0.5, color="gray", linestyle=":")
                ax.text(row.epoch - 0.5, 1.0, f" stage {row.stage}", transform=ax.get_xaxis_transform(),
                        va="top", fontsize=7, color="gray")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8)
    return fig


def plot_confusion(report, names: Optional[dict] = None):
    """The confusion matrix of an ``EvalReport`` (rows true, columns predicted) with the count in each cell;
    ``names`` maps classes to display names for the axes."""
    matrix = np.asarray(report.confusion)
    labels = [_named(label, names) for label in report.labels]
    side = max(4.0, 0.55 * len(labels) + 2)
    fig = _figure(side + 1, side)
    ax = fig.add_subplot()
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax, shrink=0.8)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = matrix.max() / 2 if matrix.size else 0
    for (i, j), value in np.ndenumerate(matrix):
        if value:
            ax.text(j, i, int(value), ha="center", va="center", fontsize=8,
                    color="white" if value > threshold else "black")
    ax.set_title(f"Confusion matrix: accuracy {report.accuracy:.3f} on {report.n_images} photos, TTA {report.tta}")
    return fig


def plot_worst(report, count: int = 12, columns: int = 6, names: Optional[dict] = None):
    """The ``count`` most confident mistakes of an ``EvalReport``: photo, true -> predicted (probability),
    with display names from ``names`` when given."""
    worst = list(report.misclassified[:count])
    if not worst:
        fig = _figure(4, 0.6)
        fig.text(0.5, 0.5, "no misclassified photos", ha="center", va="center")
        return fig
    rows = [worst[i:i + columns] for i in range(0, len(worst), columns)]
    names = names or {}

    def caption(result) -> str:
        true, predicted = (names.get(label, label)[:CAPTION_CHARS] for label in (result.true, result.predicted))
        return f"{true} -> {predicted} ({result.probability:.2f})"

    captions = [[caption(result) for result in row] for row in rows]
    return plot_photo_grid([[f.path for f in row] for row in rows], columns, captions=captions)


__all__ = ["KAGGLE_INPUT", "KAGGLE_WORKING", "StepFailed", "default_out_dir", "environment", "find_data_dir",
           "plot_confusion", "plot_counts", "plot_history", "plot_photo_grid", "plot_samples", "plot_worst", "run",
           "sample_paths", "tensorflow_gpus"]
