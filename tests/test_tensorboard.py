"""TensorBoard logs of a run, read back with TensorBoard's own reader: scalars, images, resume without repeats."""

from __future__ import annotations

import io
import os
import shutil
import signal

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing import event_accumulator

from carclf import runs, tensorboard_log
from carclf.runs import HISTORY_COLUMNS, RunPaths
from train_helpers import finished, tiny_config, wait_for

# Three real car models with 10-13 photos each (see ../shared/data/README.md).
REAL_CLASSES = ("bmw_x5", "land_cruiser", "qashqai")


def read_board(root):
    """``{(sub-folder, tag): [(step, value), ...]}`` of ``root``/tensorboard, as TensorBoard loads it."""
    found = {}
    for sub in (tensorboard_log.TRAIN, tensorboard_log.VALIDATION):
        accumulator = event_accumulator.EventAccumulator(
            str(root / "tensorboard" / sub), size_guidance={event_accumulator.TENSORS: 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["tensors"]:
            found[(sub, tag)] = [(event.step, _value(event.tensor_proto)) for event in accumulator.Tensors(tag)]
    return found


def _value(proto):
    import tensorflow as tf

    array = tf.make_ndarray(proto)
    if array.dtype == object:  # an image summary: [width, height, png, png...]
        return [np.asarray(Image.open(io.BytesIO(png))) for png in array[2:]]
    return float(array)


def write_history(paths: RunPaths, rows) -> None:
    paths.root.mkdir(parents=True, exist_ok=True)
    lines = [",".join(HISTORY_COLUMNS)] + [",".join(str(row.get(column, "")) for column in HISTORY_COLUMNS)
                                           for row in rows]
    paths.history.write_text("\n".join(lines) + "\n", encoding="utf-8")


def row(epoch, stage=1):
    return {"epoch": epoch, "stage": stage, "lr": 1e-3 / epoch, "loss": 2.0 / epoch, "accuracy": 0.1 * epoch,
            "val_loss": 2.5 / epoch, "val_accuracy": 0.09 * epoch, "time": 1.5}


def test_sync_appends_each_epoch_once_across_processes(tmp_path):
    """An epoch a kill left out (backup saved, not yet logged) is filled in by the next process, once."""
    paths = RunPaths(tmp_path / "run-1")
    write_history(paths, [row(1), row(2)])
    tensorboard_log.sync_history(paths)
    tensorboard_log.sync_history(paths)  # the same process again: nothing new
    tensorboard_log.close_run_board(paths)  # "killed": the next process reads what is on disk
    write_history(paths, [row(1), row(2), row(3, stage=2)])
    tensorboard_log.sync_history(paths)
    tensorboard_log.close_run_board(paths)
    board = read_board(paths.root)
    assert [step for step, _ in board[("train", "epoch_loss")]] == [1, 2, 3]
    assert [step for step, _ in board[("validation", "epoch_accuracy")]] == [1, 2, 3]
    assert [value for _, value in board[("train", "epoch_stage")]] == [1, 1, 2]
    assert board[("validation", "epoch_loss")][2][1] == pytest.approx(2.5 / 3)
    assert board[("train", "epoch_learning_rate")][1][1] == pytest.approx(5e-4)
    assert len(list(paths.tensorboard.glob("train/*tfevents*"))) == 2, "one event file per process"


def test_a_record_cut_by_a_kill_is_written_again(tmp_path):
    paths = RunPaths(tmp_path / "run-1")
    write_history(paths, [row(1), row(2)])
    tensorboard_log.sync_history(paths)
    tensorboard_log.close_run_board(paths)
    (events,) = paths.tensorboard.glob("validation/*tfevents*")
    events.write_bytes(events.read_bytes()[:-7])  # the last record (epoch 2's val_accuracy) cut short
    tensorboard_log.sync_history(paths)
    tensorboard_log.close_run_board(paths)
    board = read_board(paths.root)
    assert [step for step, _ in board[("validation", "epoch_accuracy")]] == [1, 2]
    assert [step for step, _ in board[("validation", "epoch_loss")]] == [1, 2]


def test_confusion_image_shows_every_class():
    confusion = np.array([[5, 1, 0], [0, 3, 2], [0, 0, 4]])
    image = tensorboard_log.render_confusion(confusion, ["Lada Priora", "Ford Focus", "VAZ-2110"])
    assert image.dtype == np.uint8 and image.shape[2] == 3
    n, quarter = 3 * tensorboard_log.CELL_PX, tensorboard_log.CELL_PX // 4
    assert image.shape[0] > n and image.shape[1] > n
    bottom_right = image[-8 - quarter, -8 - quarter]  # true VAZ-2110 -> predicted VAZ-2110: 4 of 4
    top_right = image[-8 - n + quarter, -8 - quarter]  # true Lada Priora -> predicted VAZ-2110: 0 of 6
    assert bottom_right.sum() < 3 * 128 and top_right.tolist() == [255, 255, 255]


@pytest.mark.slow
def test_a_real_run_killed_and_resumed_logs_every_epoch_once(tmp_path, shared_data):
    """Cached-feature head stage + fine-tuning on real photos; kill -9 in stage 2, resume, finish."""
    data = tmp_path / "data"
    for name in REAL_CLASSES:
        shutil.copytree(shared_data / "cars" / "manzhura_ru_5models" / name, data / name)
    config = tiny_config(data, tmp_path / "models", name="board",
                         stages=[{"epochs": 3, "learning_rate": 1e-3, "unfreeze": "none", "cached_views": 2},
                                 {"epochs": 4, "learning_rate": 1e-4, "unfreeze": 2}])
    runs_dir = tmp_path / "runs"
    run_id = runs.start_run(config, runs_dir)
    status, _ = wait_for(run_id, runs_dir, lambda s, h: len(h) >= 4, what="an epoch of stage 2")
    os.kill(status["pid"], signal.SIGKILL)
    wait_for(run_id, runs_dir, lambda s, h: s["state"] == runs.INTERRUPTED, what="interrupted")
    runs.resume_run(run_id, runs_dir)
    status, history = wait_for(run_id, runs_dir, finished, what="finish")
    assert status["state"] == runs.FINISHED, status.get("error")

    root = runs_dir / run_id
    board = read_board(root)
    epochs = list(range(1, 8))
    for sub, tag in tensorboard_log.SCALARS.values():
        assert [step for step, _ in board[(sub, tag)]] == epochs, f"{sub}/{tag}: each epoch exactly once"
    assert [value for _, value in board[("train", "epoch_stage")]] == [1, 1, 1, 2, 2, 2, 2]
    assert [value for _, value in board[("validation", "epoch_accuracy")]] == pytest.approx(
        history["val_accuracy"].tolist(), abs=1e-6), "the same numbers as history.csv"
    assert [value for _, value in board[("train", "epoch_learning_rate")]] == pytest.approx(
        history["lr"].tolist(), rel=1e-5)

    ((step, batch),) = board[("train", tensorboard_log.AUGMENTED_TAG)]  # once, not again on resume
    assert step == 0 and len(batch) == tensorboard_log.MAX_IMAGES and batch[0].shape == (48, 48, 3)
    assert len({image.tobytes() for image in batch}) == len(batch), "distinct photos"
    ((step, (confusion,)),) = board[("validation", tensorboard_log.CONFUSION_TAG)]
    assert step == 7 and confusion.shape[0] > 3 * tensorboard_log.CELL_PX
    assert len(list((root / "tensorboard" / "train").glob("*tfevents*"))) == 2, "the resumed process's own file"
