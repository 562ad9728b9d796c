"""Keras callbacks that connect a training process to its run folder.

``HistoryCSV`` and ``StatusHeartbeat`` are what the dashboard reads; ``StopOnSignal`` turns SIGTERM
(``carclf.runs.stop_run``) into a clean stop between batches, so a stopped run never records a half
epoch as finished and can resume from its last complete one.
"""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import threading
import time
from pathlib import Path

import keras

from carclf import runs
from carclf.atomic import atomic_output, atomic_write_json
from carclf.clock import now_iso
from carclf.runs import HISTORY_COLUMNS, RunPaths

# The heartbeat is rewritten at most this often between epoch ends (seconds): often enough for a live
# dashboard, rare enough to cost nothing.
HEARTBEAT_SECONDS = 5.0


class StopRequested(Exception):
    """Raised inside ``fit`` when SIGTERM/SIGINT arrived: the run is stopped by the user, not failed."""


class SignalFlag:
    """Remembers that SIGTERM arrived; installed once per training process."""

    def __init__(self):
        self.signal_name = None

    def install(self, signals=(signal.SIGTERM,)) -> "SignalFlag":
        """Catch ``signals`` (only possible in the main thread; elsewhere they keep their default action)."""
        if threading.current_thread() is threading.main_thread():
            for number in signals:
                signal.signal(number, self._handle)
        return self

    def _handle(self, number, frame) -> None:
        self.signal_name = signal.Signals(number).name

    @property
    def raised(self) -> bool:
        return self.signal_name is not None


class StopOnSignal(keras.callbacks.Callback):
    """Aborts ``fit`` at the next batch boundary after a signal (the epoch in progress is discarded)."""

    def __init__(self, flag: SignalFlag):
        super().__init__()
        self.flag = flag

    def _check(self, *args, **kwargs) -> None:
        if self.flag.raised:
            raise StopRequested(f"stopped by {self.flag.signal_name}")

    on_epoch_begin = on_train_batch_end = on_test_batch_end = _check


def current_lr(model) -> float:
    """The optimizer's learning rate now, as a float."""
    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


class HistoryCSV(keras.callbacks.Callback):
    """Appends one row per finished epoch to history.csv: global epoch (1-based), stage, lr, metrics, time.

    On start it drops rows at or after the epoch the run (re)starts from, so a resumed run never repeats
    an epoch in its history.
    """

    def __init__(self, paths: RunPaths, stage: int, epoch_offset: int):
        super().__init__()
        self.paths = paths
        self.stage = stage
        self.epoch_offset = epoch_offset
        self._started = 0.0
        self._truncated = False

    def on_epoch_begin(self, epoch, logs=None) -> None:
        if not self._truncated:  # first epoch of this fit: BackupAndRestore has already set the start epoch
            truncate_history(self.paths, self.epoch_offset + epoch + 1)
            self._truncated = True
            if epoch:
                print(f"stage {self.stage}: continuing from its epoch {epoch + 1} (run epoch "
                      f"{self.epoch_offset + epoch + 1})", flush=True)
        self._started = time.monotonic()

    def on_epoch_end(self, epoch, logs=None) -> None:
        logs = logs or {}
        row = {
            "epoch": self.epoch_offset + epoch + 1,
            "stage": self.stage,
            "lr": current_lr(self.model),
            "time": round(time.monotonic() - self._started, 3),
        }
        row.update({key: float(logs[key]) for key in HISTORY_COLUMNS if key in logs})
        new_file = not self.paths.history.is_file() or self.paths.history.stat().st_size == 0
        with open(self.paths.history, "a", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=HISTORY_COLUMNS, extrasaction="ignore")
            if new_file:
                writer.writeheader()
            writer.writerow(row)
            handle.flush()
            os.fsync(handle.fileno())


def truncate_history(paths: RunPaths, first_epoch: int) -> None:
    """Keep only history rows with epoch < ``first_epoch`` (rewritten atomically)."""
    if not paths.history.is_file():
        return
    with open(paths.history, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    kept = [row for row in rows if row.get("epoch") and int(row["epoch"]) < first_epoch]
    if len(kept) == len(rows):
        return
    with atomic_output(paths.history) as temp, open(temp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=HISTORY_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(kept)


class StatusHeartbeat(keras.callbacks.Callback):
    """Keeps status.json current: state running, stage, epoch, planned total, latest metrics, heartbeat."""

    def __init__(self, paths: RunPaths, stage: int, stages_total: int, epoch_offset: int, epochs_total: int):
        super().__init__()
        self.paths = paths
        self.stage = stage
        self.stages_total = stages_total
        self.epoch_offset = epoch_offset
        self.epochs_total = epochs_total
        self._last_beat = 0.0
        self._epoch = 0

    def _beat(self, **fields) -> None:
        self._last_beat = time.monotonic()
        runs.update_status(
            self.paths, state=runs.RUNNING, pid=os.getpid(), stage=self.stage, stages_total=self.stages_total,
            epochs_total=self.epochs_total, heartbeat_at=now_iso(), **fields,
        )

    def on_epoch_begin(self, epoch, logs=None) -> None:
        self._epoch = self.epoch_offset + epoch + 1
        self._beat(epoch=self._epoch - 1, epoch_in_progress=self._epoch, batch=0)

    def on_train_batch_end(self, batch, logs=None) -> None:
        if time.monotonic() - self._last_beat >= HEARTBEAT_SECONDS:
            self._beat(batch=batch + 1)

    def on_epoch_end(self, epoch, logs=None) -> None:
        metrics = {key: round(float(value), 6) for key, value in (logs or {}).items() if _is_number(value)}
        status = runs.update_status(self.paths)  # re-read: keep best_val_accuracy monotone
        best = status.get("best_val_accuracy")
        val_accuracy = metrics.get("val_accuracy")
        if val_accuracy is not None and (best is None or val_accuracy > best):
            best = val_accuracy
        self._beat(epoch=self._epoch, epoch_in_progress=None, metrics=metrics, best_val_accuracy=best)


def _is_number(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True



class EpochBackup(keras.callbacks.Callback):
    """Saves weights and optimizer state after every epoch, so a killed or stopped stage resumes there.

    ``restore_backup`` reads it back and returns the epoch to pass as ``fit(initial_epoch=...)``: the
    resume goes through Keras' public API. Each epoch's weights get their own file and ``backup.json``
    (written last, atomically) names the newest complete one, so a kill mid-save leaves the previous
    epoch's backup usable.
    """

    def __init__(self, folder, checkpoint=None):
        super().__init__()
        self.folder = Path(folder)
        self.checkpoint = checkpoint  # the stage's best checkpoint: its best value so far is kept with the backup

    def on_epoch_end(self, epoch, logs=None) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"epoch_{epoch + 1}.weights.h5"
        with atomic_output(self.folder / name) as temp:
            self.model.save_weights(temp)
        index = {"epoch": epoch + 1, "weights": name}
        best = getattr(self.checkpoint, "best", None)
        if isinstance(best, (int, float)) and math.isfinite(best):
            index["best"] = float(best)
        atomic_write_json(self.folder / BACKUP_INDEX, index)
        for old in self.folder.glob("epoch_*.weights.h5"):
            if old.name != name:
                old.unlink(missing_ok=True)


# The file in a stage's backup folder naming its newest complete epoch backup.
BACKUP_INDEX = "backup.json"


def backup_best(folder) -> float | None:
    """The best checkpoint's value when the stage's newest backup was made (None: no backup, or none kept).

    A resumed stage's checkpoint starts from it: starting from the stage before's best, the first epoch
    after a resume was saved as "best" even when it was worse than an epoch before the kill."""
    index = Path(folder) / BACKUP_INDEX
    if not index.is_file():
        return None
    best = json.loads(index.read_text(encoding="utf-8")).get("best")
    return float(best) if isinstance(best, (int, float)) and math.isfinite(best) else None


def restore_backup(model, folder) -> int:
    """Load the newest ``EpochBackup`` in ``folder`` into the compiled ``model``; return its epoch (0 = none)."""
    index = Path(folder) / BACKUP_INDEX
    if not index.is_file():
        return 0
    saved = json.loads(index.read_text(encoding="utf-8"))
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)  # its variables must exist to be loaded into
    model.load_weights(Path(folder) / saved["weights"])
    return int(saved["epoch"])


class CosineSchedule(keras.callbacks.Callback):
    """Linear warm-up from 0 over ``warmup_epochs``, then cosine decay to 0 at the end of ``epochs``.

    Set per batch on the optimizer's learning rate (a plain variable, so ``HistoryCSV`` reads it and
    resuming at any epoch continues the same curve: ``fit`` passes absolute epochs).
    """

    def __init__(self, base_lr: float, epochs: int, steps_per_epoch: int, warmup_epochs: float = 0.0):
        super().__init__()
        self.base_lr = float(base_lr)
        self.epochs = int(epochs)
        self.steps = max(1, int(steps_per_epoch))
        self.warmup = float(warmup_epochs)
        self._epoch = 0

    def rate_at(self, progress: float) -> float:
        """The learning rate ``progress`` epochs into the stage (fractions within an epoch)."""
        if progress < self.warmup:
            return self.base_lr * (progress + 1 / self.steps) / self.warmup  # never exactly 0 on the first step
        span = max(self.epochs - self.warmup, 1e-9)
        return self.base_lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (progress - self.warmup) / span)))

    def on_epoch_begin(self, epoch, logs=None) -> None:
        self._epoch = epoch

    def on_train_batch_begin(self, batch, logs=None) -> None:
        self.model.optimizer.learning_rate = self.rate_at(self._epoch + batch / self.steps)
