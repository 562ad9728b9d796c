"""Training: stage 1 trains the head on a frozen backbone, later stages unfreeze more of it at lower rates.

The stages are plain functions in plain sight (keras.io's transfer-learning recipe): ``set_trainable``,
``compile_stage`` with a fresh optimizer, ``fit``; repeat. Everything a run writes goes through
``carclf.runs`` (status, history, checkpoints) and ``carclf.bundle`` (the exported model).

Resuming: each stage keeps an ``EpochBackup`` folder (weights, optimizer, epoch) and each finished stage
leaves its weights and a ``progress.json``; a killed or stopped run started again on the same folder skips
finished stages and continues the current one from its last finished epoch (``fit(initial_epoch=...)``).
The per-stage early-stopping counter starts afresh after a resume. A cached-feature stage recomputes its
features on resume (same seed, same views) and continues its head from the backup.

Time to accuracy on a CPU (``quick``/``fast`` presets, ``bench/bench_time_to_accuracy.py``): a head stage
can train on cached backbone features (``cached_views``), a stage can train at its own ``img_size``
(progressive resizing) and follow a warm-up + cosine schedule (``lr_schedule``); every dataset decodes
each photo once per run.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import keras
import numpy as np

from carclf import runs
from carclf.atomic import atomic_output, atomic_write_json, read_json_object
from carclf.augment import AugSchedule, Augmenter, load_aug_config
from carclf.bundle import save_bundle
from carclf.callbacks import (CosineSchedule, EpochBackup, HistoryCSV, SignalFlag, StatusHeartbeat, StopOnSignal,
                              StopRequested, backup_best, restore_backup)
from carclf.clock import now_iso
from carclf.config import StageConfig, TrainConfig
from carclf.data import DatasetInfo, Item, cap_per_class, scan_dataset, stratified_split
from carclf.devices import DeviceSetup, configure_devices
from carclf.errors import ConfigError, DataError
from carclf.gate import GATE_META_KEY, calibrate_threshold, car_score
from carclf.model import build_classifier, head_tail, pooled_features_model, resolve_img_size, set_trainable
from carclf.optimizers import build_optimizer
from carclf.runs import RunPaths
from carclf.tta import view_count
from carclf.tensorboard_log import (TensorBoardEpochs, close_run_board, confusion_matrix, log_confusion,
                                     log_training_batch)

# Metric early stopping, LR reduction and the best checkpoint follow: smoother than accuracy on small sets.
MONITOR = "val_loss"
warnings.filterwarnings("ignore", message="`shuffle=True` was passed", category=UserWarning)


@dataclass
class Progress:
    """What is finished, persisted in ``checkpoints/progress.json`` after every stage."""

    stages_done: int = 0  # stages completely finished (their weights are in stage_weights)
    epochs_done: int = 0  # epochs run in those stages (early stopping may cut a stage short)
    best_monitor: Optional[float] = None  # best val_loss so far: the best checkpoint's threshold
    stage_epochs: list = field(default_factory=list)  # epochs actually run per finished stage


@dataclass(frozen=True)
class TrainData:
    """The dataset of a run, split once (same seed -> same split on resume)."""

    info: DatasetInfo
    train: list
    val: list

    @property
    def num_classes(self) -> int:
        return self.info.num_classes


def prepare_data(config: TrainConfig) -> TrainData:
    """Scan ``config.data``, cap classes if asked, and split stratified into train/val by ``config.seed``."""
    if not config.data:
        raise ConfigError("config data is empty: give the dataset folder (--data DIR).")
    info = scan_dataset(config.data, class_names=config.class_display_names or None)
    items = list(info.items)
    if config.max_images_per_class:
        items = cap_per_class(items, config.max_images_per_class, config.seed)
    if config.val_data:
        train_items, val_items = items, _explicit_val_items(config, info)
    else:
        train_items, val_items = stratified_split(items, config.val_fraction, config.seed)
    if not val_items:
        raise DataError(f"{config.data}: too few photos for a validation split; add photos (2+ per class).")
    return TrainData(info=info, train=train_items, val=val_items)


def _explicit_val_items(config: TrainConfig, info: DatasetInfo) -> list:
    """The photos of ``config.val_data``, labelled in the training set's class order.

    A fixed validation folder lets runs (and benchmarks) compare on the same photos instead of each
    cutting its own share out of the training photos.
    """
    val_info = scan_dataset(config.val_data)
    unknown = sorted(set(val_info.classes) - set(info.classes))
    if unknown:
        raise DataError(f"{config.val_data}: classes {', '.join(unknown)} are not in the training data "
                        f"{config.data}; use a validation folder with the training classes only.")
    label_of = {name: index for index, name in enumerate(info.classes)}
    return [Item(item.path, label_of[val_info.classes[item.label]]) for item in val_info.items]


def make_datasets(config: TrainConfig, data: TrainData, img_size: int, batch_size: int, augmenter):
    """(train, val) ``tf.data`` datasets: one-hot labels (label smoothing), augmentation on train only."""
    from carclf.pipeline import make_dataset

    def split(items, augment, shuffle):
        return make_dataset(
            [item.path for item in items], [item.label for item in items], img_size, batch_size,
            augment=augment, shuffle=shuffle, seed=config.seed, num_classes=data.num_classes,
        )

    return split(data.train, augmenter, True), split(data.val, None, False)


def compile_stage(model: keras.Model, stage: StageConfig, config: TrainConfig, setup: DeviceSetup) -> None:
    """Compile with a fresh optimizer at the stage's learning rate (needed after every trainable change)."""
    with setup.strategy.scope():
        model.compile(
            optimizer=build_optimizer(config.optimizer, stage.learning_rate, config.weight_decay,
                                      config.accumulation_steps),
            loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
            metrics=["accuracy"],
            jit_compile=setup.xla,
        )


def stage_callbacks(config, stage, number, paths, flag, progress, epochs_total, augmenter, last_stage,
                    saved_model=None, steps_per_epoch=1, checkpoint=None):
    """The callbacks of one stage, in the order their epoch-end hooks must run (backup last).

    ``saved_model``: the classifier the best checkpoint saves when it is not the model being fitted (a
    stage at its own image size fits a resized copy); ``checkpoint`` replaces the best checkpoint (a
    cached-feature stage keeps only the head's weights while it runs).
    """
    callbacks = [
        StopOnSignal(flag),
        HistoryCSV(paths, stage=number, epoch_offset=progress.epochs_done),
        StatusHeartbeat(paths, number, len(config.stages), progress.epochs_done, epochs_total),
    ]
    if stage.lr_schedule == "cosine":
        callbacks.append(CosineSchedule(stage.learning_rate, stage.epochs, steps_per_epoch, stage.warmup_epochs))
    if config.early_stopping:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor=MONITOR, patience=stage.patience, restore_best_weights=True, verbose=1))
    backups = stage_backup_dir(paths, number)
    checkpoint = checkpoint or CheckpointOf(
        saved_model, paths.best_model, monitor=MONITOR, save_best_only=True,
        initial_value_threshold=_lowest(progress.best_monitor, backup_best(backups)))
    callbacks.append(checkpoint)
    if config.reduce_lr_factor < 1.0 and stage.lr_schedule == "plateau":
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            monitor=MONITOR, factor=config.reduce_lr_factor, patience=config.reduce_lr_patience,
            min_lr=config.min_learning_rate, verbose=1))
    if last_stage and config.aug_weaken_last and augmenter is not None and not stage.cached_views:
        from carclf.pipeline import AugScheduleCallback

        callbacks.append(AugScheduleCallback(augmenter, AugSchedule(last_epochs=config.aug_weaken_last), stage.epochs))
    callbacks.append(EpochBackup(backups, checkpoint))
    callbacks.append(TensorBoardEpochs(paths))  # after the backup: an epoch is logged once it can be resumed from
    return callbacks


def _lowest(*values: Optional[float]) -> Optional[float]:
    known = [value for value in values if value is not None]
    return min(known) if known else None


class CheckpointOf(keras.callbacks.ModelCheckpoint):
    """``ModelCheckpoint`` that saves ``saved_model`` (when given) instead of the model being fitted."""

    def __init__(self, saved_model, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.saved_model = saved_model

    def set_model(self, model) -> None:
        super().set_model(self.saved_model if self.saved_model is not None else model)


class StageInputs:
    """The run's photos as each stage needs them, built on first use: ``(train, val)`` datasets and an
    augmenter per image size (every dataset decodes each photo once per run, see ``carclf.pipeline``)."""

    def __init__(self, config: TrainConfig, data: "TrainData", aug_config):
        self.config, self.data, self.aug_config = config, data, aug_config
        self._augmenters: dict = {}
        self._datasets: dict = {}

    def augmenter(self, img_size: int):
        if img_size not in self._augmenters:
            self._augmenters[img_size] = Augmenter(self.aug_config, img_size) if self.aug_config.transforms else None
        return self._augmenters[img_size]

    def datasets(self, img_size: int):
        if img_size not in self._datasets:
            self._datasets[img_size] = make_datasets(self.config, self.data, img_size, self.config.slice_size,
                                                     self.augmenter(img_size))
        return self._datasets[img_size]


def stage_img_size(stage: StageConfig, run_img_size: int) -> int:
    return stage.img_size or run_img_size


def run_stage(model, number: int, config, setup, inputs: StageInputs, paths, flag, progress, verbose,
              img_size: int) -> int:
    """Train stage ``number`` (1-based) to its end or early stop; return the epochs it ran in total.

    A stage with its own ``img_size`` trains a copy of the classifier built at that size (same weights:
    the backbones are fully convolutional) and copies the weights back at the end.
    """
    stage = config.stages[number - 1]
    size = stage_img_size(stage, img_size)
    fitted = model if size == img_size else _resized_copy(model, config, size, setup, inputs.data.num_classes)
    trainable = set_trainable(fitted, stage.unfreeze)
    augmenter = inputs.augmenter(size)
    if augmenter is not None:
        augmenter.set_strength(augmenter.config.strength)  # a previous stage may have weakened it
    epochs_total = progress.epochs_done + sum(s.epochs for s in config.stages[number - 1:])
    how = f", cached features of {stage.cached_views} view(s) per photo" if stage.cached_views else ""
    print(f"stage {number}/{len(config.stages)}: {trainable} backbone layers trainable, {size} px, "
          f"lr {stage.learning_rate:g} ({stage.lr_schedule}), up to {stage.epochs} epochs{how}", flush=True)
    last = number == len(config.stages)
    if stage.cached_views:
        history, checkpoint = _fit_cached(fitted, number, stage, config, setup, inputs, size, paths, flag,
                                          progress, epochs_total, last, verbose)
    else:
        train_ds, val_ds = inputs.datasets(size)
        steps = -(-len(inputs.data.train) // config.slice_size)
        callbacks = stage_callbacks(config, stage, number, paths, flag, progress, epochs_total, augmenter, last,
                                    saved_model=fitted, steps_per_epoch=steps)
        compile_stage(fitted, stage, config, setup)
        initial_epoch = restore_backup(fitted, stage_backup_dir(paths, number))
        # shuffle=False: the tf.data pipeline already shuffles (seeded); Keras would only warn that it ignores it.
        history = fitted.fit(train_ds, validation_data=val_ds, epochs=stage.epochs, callbacks=callbacks,
                             verbose=verbose, shuffle=False, initial_epoch=initial_epoch)
        checkpoint = next(cb for cb in callbacks if isinstance(cb, CheckpointOf))
    if fitted is not model:
        model.set_weights(fitted.get_weights())
    if np.isfinite(checkpoint.best):
        progress.best_monitor = float(checkpoint.best)
    return history.epoch[-1] + 1 if history.epoch else stage.epochs


def _resized_copy(model, config: TrainConfig, img_size: int, setup: DeviceSetup, num_classes: int):
    with setup.strategy.scope():
        copy = build_classifier(config.replace(img_size=img_size), num_classes, weights=None)
    copy.set_weights(model.get_weights())
    return copy


def _fit_cached(model, number, stage, config, setup, inputs: StageInputs, img_size, paths, flag, progress,
                epochs_total, last, verbose):
    """A head stage on cached backbone features (see ``carclf.feature_cache``); returns (history, checkpoint)."""
    from carclf.feature_cache import BestHeadCheckpoint, cache_features

    beat = StatusHeartbeat(paths, number, len(config.stages), progress.epochs_done, epochs_total)

    def between_batches(done: int) -> None:
        if flag.raised:
            raise StopRequested(f"stopped by {flag.signal_name}")
        beat.on_train_batch_end(0)  # rewrites the heartbeat at most every few seconds

    x_train, y_train, x_val, y_val, seconds = cache_features(
        pooled_features_model(model), inputs.data.train, inputs.data.val, stage.cached_views, img_size,
        inputs.augmenter(img_size), config.seed + number, inputs.data.num_classes, between_batches)
    print(f"stage {number}: features of {len(x_train)} training views and {len(x_val)} validation photos "
          f"in {seconds:.1f} s", flush=True)
    tail = head_tail(model)
    compile_stage(tail, stage, config, setup)
    steps = -(-len(x_train) // config.batch_size)
    checkpoint = BestHeadCheckpoint(stage_backup_dir(paths, number), progress.best_monitor, MONITOR)
    callbacks = stage_callbacks(config, stage, number, paths, flag, progress, epochs_total, None, last,
                                steps_per_epoch=steps, checkpoint=checkpoint)
    initial_epoch = restore_backup(tail, stage_backup_dir(paths, number))
    history = tail.fit(x_train, y_train, batch_size=config.batch_size, epochs=stage.epochs, shuffle=True,
                       validation_data=(x_val, y_val), callbacks=callbacks, verbose=verbose,
                       initial_epoch=initial_epoch)
    checkpoint.write_best_model(tail, model, paths.best_model)
    return history, checkpoint


def stage_backup_dir(paths: RunPaths, number: int) -> Path:
    return paths.backup / f"stage_{number}"


def stage_weights_path(paths: RunPaths) -> Path:
    return paths.checkpoints / "stage_end.weights.h5"


def read_progress(paths: RunPaths) -> Progress:
    if not paths.progress.is_file():
        return Progress()
    return Progress(**json.loads(paths.progress.read_text(encoding="utf-8")))


def finish_stage(model, paths: RunPaths, progress: Progress, number: int, epochs_run: int) -> None:
    """Persist the finished stage (weights, then progress.json) and drop its mid-stage backup."""
    with atomic_output(stage_weights_path(paths)) as temp:
        _weights_only(model).save_weights(temp)
    progress.stages_done = number
    progress.epochs_done += epochs_run
    progress.stage_epochs.append(epochs_run)
    atomic_write_json(paths.progress, progress.__dict__)
    shutil.rmtree(stage_backup_dir(paths, number), ignore_errors=True)


def _weights_only(model: keras.Model) -> keras.Model:
    """The same layers without an optimizer: weight files that load into any stage's compiled model."""
    return keras.Model(model.inputs, model.outputs, name=model.name)


def score_views(model, items: list, img_size: int, views: int) -> tuple[list, list]:
    """``(per-view probabilities (views, C) per readable photo, their labels)``: ``views`` deterministic TTA
    views per photo scored by ``carclf.tta.score_photos``, like the exported bundle's Predictor (unreadable
    photos are left out of both). The TTA score and the calibration fit share this one pass."""
    from carclf.fixed_batch import predict_padded
    from carclf.tta import VIEWS_PER_CALL, score_photos

    def classify(batch):  # the last, ragged call padded to a full one: the model is traced once
        views = batch.views.astype("float32")
        return predict_padded(model, views, max(len(views), VIEWS_PER_CALL)), None

    scored = score_photos(classify, [item.path for item in items], views, img_size)
    answers = [(photo.view_probabilities, item.label) for photo, item in zip(scored, items) if photo.ok]
    return [probs for probs, _ in answers], [label for _, label in answers]


def _mean_view_accuracy(view_probabilities: list, labels: list) -> float:
    right = [int(np.argmax(np.asarray(p, dtype=np.float64).mean(axis=0))) == label
             for p, label in zip(view_probabilities, labels)]
    return sum(right) / max(1, len(right))


def evaluate_tta(model, items: list, img_size: int, views: int) -> float:
    """Validation accuracy over ``views`` deterministic TTA views per photo (see ``score_views``), so
    ``evaluate --tta N`` on the bundle reproduces it."""
    return _mean_view_accuracy(*score_views(model, items, img_size, views))


def final_metrics(config, data: TrainData, val_views) -> dict:
    """Loss and accuracy of the exported weights on the validation photos, plus TTA accuracy when configured,
    all from ``val_views`` (``score_views``' pass with the run's TTA; its first view is the photo as
    validation saw it in training), so the end of a run makes one pass over them, not two."""
    view_probabilities, labels = val_views
    first = [np.asarray(p, dtype=np.float64)[:1] for p in view_probabilities]
    metrics = {"val_loss": smoothed_cross_entropy(first, labels, config.label_smoothing),
               "val_accuracy": _mean_view_accuracy(first, labels), "val_images": len(data.val)}
    if config.tta > 1:
        metrics["val_accuracy_tta"] = _mean_view_accuracy(view_probabilities, labels)
        metrics["tta"] = config.tta
    return metrics


def smoothed_cross_entropy(view_probabilities: list, labels: list, label_smoothing: float) -> float:
    """Mean categorical cross-entropy of the photos' (view-averaged) probabilities against label-smoothed
    targets: the training loss Keras reports as ``val_loss`` (same clipping), from probabilities at hand."""
    if not labels:
        return float("nan")
    probs = np.stack([np.asarray(p, dtype=np.float64).mean(axis=0) for p in view_probabilities])
    classes = probs.shape[1]
    targets = np.eye(classes)[np.asarray(labels)] * (1.0 - label_smoothing) + label_smoothing / classes
    return float(-(targets * np.log(np.clip(probs, 1e-7, 1.0 - 1e-7))).sum(axis=1).mean())


def fit_calibration(val_views, tta: int):
    """Temperatures (no TTA, and the run's TTA) fitted on the validation photos' views; logged in one line
    per fit (a skipped fit on too few photos says why)."""
    from carclf.calibration import fit_views, log_line

    calibration = fit_views(*val_views, view_count(tta))
    print(log_line(calibration), flush=True)
    return calibration


def export(model, config: TrainConfig, data: TrainData, paths: RunPaths, metrics: dict, img_size: int,
           calibration=None) -> Path:
    """Write the inference bundle ``<models_dir>/<run_id>`` from the final weights (with the fitted
    ``calibration`` and the "not sure" threshold, when given)."""
    from carclf.calibration import META_KEY, UNCERTAIN_BELOW, UNCERTAIN_KEY

    extra = {} if calibration is None else {META_KEY: calibration.to_meta(), UNCERTAIN_KEY: UNCERTAIN_BELOW}
    return save_bundle(
        model,
        Path(config.models_dir) / paths.run_id,
        class_names=data.info.classes,
        display_names=data.info.display_names,
        meta={
            "backbone": config.backbone,
            "img_size": img_size,
            "val_metrics": metrics,
            "run_id": paths.run_id,
            "data_summary": {**data.info.summary(), "train_images": len(data.train), "val_images": len(data.val)},
            "tta": config.tta,
            GATE_META_KEY: gate_threshold_for(data.val, config.batch_size),
            **extra,
        },
        overwrite=True,
    )


def gate_threshold_for(val_items, batch_size: int) -> float:
    """The "not a car" threshold stored in the bundle, chosen on the run's validation photos (all cars)."""
    from carclf.fixed_batch import predict_padded
    from carclf.pipeline import make_predict_dataset
    from carclf.predict import gate_classifier

    gate = gate_classifier()
    size = int(gate.inputs[0].shape[1])
    scores = []
    for images, _, ok in make_predict_dataset([item.path for item in val_items], size, batch_size):
        probs = predict_padded(gate, images, batch_size)  # one shape: one trace of the gate
        scores.extend(car_score(probs)[ok.numpy()])
    return calibrate_threshold(scores)


# The run's train/validation split, written when it first starts (checkpoints/split.json).
SPLIT_FILE = "split.json"


def keep_split(paths: RunPaths, data: TrainData) -> TrainData:
    """The split the run started with, whatever the folder holds now. Re-splitting on resume after a photo
    was added reshuffled every class (seeded, but over other photos): photos trained on became validation
    photos. Photos added since are left out, photos gone are dropped, each said in the log."""
    split_file = paths.checkpoints / SPLIT_FILE
    stored = read_json_object(split_file)
    if not isinstance(stored.get("train"), list) or not isinstance(stored.get("val"), list):
        atomic_write_json(split_file, {part: [str(item.path) for item in items]
                                       for part, items in (("train", data.train), ("val", data.val))})
        return data
    now = {str(item.path): item for item in [*data.train, *data.val]}
    kept = {part: [now[path] for path in stored[part] if path in now] for part in ("train", "val")}
    gone = len(stored["train"]) + len(stored["val"]) - len(kept["train"]) - len(kept["val"])
    added = len(now) - len(kept["train"]) - len(kept["val"])
    if added:
        print(f"data: {added} photos added since the run started are left out (start a new run to use them)",
              flush=True)
    if gone:
        print(f"data: {gone} photos of the run's split are gone from the folder; training goes on without them",
              flush=True)
    if not kept["val"] or not kept["train"]:
        raise DataError("the photos this run started with are gone from its dataset folder: start a new run.")
    return TrainData(info=data.info, train=kept["train"], val=kept["val"])


def check_same_classes(paths: RunPaths, classes) -> None:
    """A resumed run trains the classes it started with: its output layer, checkpoints and history are
    theirs (a removed class failed deep inside Keras; a renamed one silently inherited another's weights)."""
    before = read_json_object(paths.status).get("data_summary")
    started = before.get("classes") if isinstance(before, dict) else None
    if isinstance(started, list) and [str(c) for c in started] != [str(c) for c in classes]:
        raise DataError(f"the dataset's classes changed since this run started ({', '.join(map(str, started))} "
                        f"-> {', '.join(map(str, classes))}): start a new run on it.")


def train(config: TrainConfig, run_dir, verbose: Optional[int] = None) -> dict:
    """Train ``config`` in the run folder ``run_dir`` (new or to be resumed); return the final status.

    SIGTERM stops cleanly (state "stopped", resumable); any error marks the run "failed" with a one-line
    message and is re-raised; checkpoints and history already written are kept either way.
    """
    paths = RunPaths(Path(run_dir))
    paths.checkpoints.mkdir(parents=True, exist_ok=True)
    if not paths.config.is_file():
        config.save(paths.config)
    flag = SignalFlag().install()
    with runs.trainer_lock(paths):  # held already when the CLI trains; taken here for the Python API
        runs.update_status(paths, state=runs.RUNNING, pid=os.getpid(), run_id=paths.run_id, name=config.name,
                           started_at=now_iso(), heartbeat_at=now_iso(), finished_at=None, error=None)
        return _train_and_record(config, paths, flag, verbose)


def _train_and_record(config, paths: RunPaths, flag, verbose) -> dict:
    """``_train`` with its outcome written to status.json (stopped, failed or finished)."""
    try:
        bundle, metrics = _train(config, paths, flag, _verbosity(verbose))
    except StopRequested as stop:
        print(f"run stopped ({stop}); resume it with: python -m carclf runs resume {paths.run_id}", flush=True)
        return runs.update_status(paths, state=runs.STOPPED, stopped_at=now_iso(), heartbeat_at=now_iso())
    except KeyboardInterrupt:
        runs.update_status(paths, state=runs.STOPPED, stopped_at=now_iso(), heartbeat_at=now_iso())
        raise
    except BaseException as error:  # record why, keep every file already written, and re-raise
        runs.update_status(paths, state=runs.FAILED, error=_one_line(error), finished_at=now_iso())
        raise
    finally:
        close_run_board(paths)
    return runs.update_status(paths, state=runs.FINISHED, finished_at=now_iso(), heartbeat_at=now_iso(),
                              bundle=str(bundle), val_metrics=metrics,
                              final_val_accuracy=metrics.get("val_accuracy_tta", metrics["val_accuracy"]))


def _train(config: TrainConfig, paths: RunPaths, flag: SignalFlag, verbose: int):
    setup = configure_devices(config)
    try:
        model, data, datasets, img_size = fit_stages(setup, config, paths, flag, verbose)
    finally:
        # The dtype policy is process-global: put it back before the export builds the gate classifier in
        # this process, and for whatever runs in it next.
        setup.restore()
    val_views = score_views(model, data.val, img_size, view_count(config.tta))
    metrics = final_metrics(config, data, val_views)
    print("final: " + ", ".join(f"{key} {value:.4g}" for key, value in metrics.items()), flush=True)
    calibration = fit_calibration(val_views, config.tta)
    log_confusion(paths, confusion_matrix(*val_views, data.num_classes), data.info.display_names,
                  read_progress(paths).epochs_done)
    bundle = export(model, config, data, paths, metrics, img_size, calibration)
    print(f"bundle: {bundle}", flush=True)
    return bundle, metrics


def fit_stages(setup: DeviceSetup, config: TrainConfig, paths: RunPaths, flag: SignalFlag, verbose: int):
    """Build the model under ``setup``'s strategy and run the stages not yet done; return
    ``(model, data, (train, val) datasets, img_size)`` with the best checkpoint's weights loaded."""
    print(f"devices: {setup.describe()}", flush=True)
    keras.utils.set_random_seed(config.seed)
    data = prepare_data(config)
    check_same_classes(paths, data.info.classes)
    data = keep_split(paths, data)
    img_size = resolve_img_size(config)
    print(f"data: {len(data.train)} train / {len(data.val)} val photos, {data.num_classes} classes, "
          f"{img_size} px", flush=True)
    inputs = StageInputs(config, data, load_aug_config(config.augmentation))
    # batch_size is the global batch (see carclf.devices): the strategy splits each batch between the replicas.
    # micro_batch_size: the pipeline yields slices of the batch; the optimizer averages their gradients.
    slices = f" in {config.accumulation_steps} slices of {config.slice_size}" if config.accumulation_steps > 1 else ""
    print(f"batch: {config.batch_size} photos per step{slices}, {setup.per_replica_batch(config.slice_size)} "
          "per replica", flush=True)
    with setup.strategy.scope():
        model = build_classifier(config, data.num_classes)
    progress = read_progress(paths)
    if progress.stages_done:
        _weights_only(model).load_weights(stage_weights_path(paths))
        print(f"resuming after stage {progress.stages_done} ({progress.epochs_done} epochs done)", flush=True)
    runs.update_status(paths, img_size=img_size, devices=setup.describe(), epochs_total=config.epochs_total,
                       epochs_planned=config.epochs_total,  # epochs_total shrinks when a stage stops early
                       stages_total=len(config.stages), data_summary=data.info.summary())
    if progress.stages_done < len(config.stages):  # once per run (skipped when already logged)
        first = stage_img_size(config.stages[progress.stages_done], img_size)
        log_training_batch(paths, data.train, first, inputs.augmenter(first), config.seed, data.info.display_names,
                           progress.epochs_done)
    for number in range(progress.stages_done + 1, len(config.stages) + 1):
        epochs_run = run_stage(model, number, config, setup, inputs, paths, flag, progress, verbose, img_size)
        finish_stage(model, paths, progress, number, epochs_run)
    if paths.best_model.is_file():
        _weights_only(model).load_weights(paths.best_model)  # the best epoch by val_loss over all stages
    if not model.compiled:  # every stage trained a part or a resized copy (or all were done before a resume)
        compile_stage(model, config.stages[-1], config, setup)  # the final evaluation needs the loss and metrics
    return model, data, inputs.datasets(img_size), img_size


def _verbosity(verbose: Optional[int]) -> int:
    """Keras progress bar on a terminal, one line per epoch in a log file."""
    if verbose is not None:
        return verbose
    return 1 if sys.stdout.isatty() else 2


def _one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else ""
    return f"{type(error).__name__}: {text}"[:300]


