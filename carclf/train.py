"""Training: stage 1 trains the head on a frozen backbone, later stages unfreeze more of it at lower rates.

The stages are plain functions in plain sight (keras.io's transfer-learning recipe): ``set_trainable``,
``compile_stage`` with a fresh optimizer, ``fit``; repeat. Everything a run writes goes through
``carclf.runs`` (status, history, checkpoints) and ``carclf.bundle`` (the exported model).

Resuming: each stage keeps a Keras ``BackupAndRestore`` folder (weights, optimizer, epoch) and each
finished stage leaves its weights and a ``progress.json``; a killed or stopped run started again on the
same folder skips finished stages and continues the current one from its last finished epoch. The
per-stage early-stopping counter starts afresh after a resume.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import keras
import numpy as np

from carclf import runs
from carclf.augment import AugSchedule, Augmenter, load_aug_config
from carclf.bundle import save_bundle
from carclf.callbacks import HistoryCSV, SignalFlag, StatusHeartbeat, StopOnSignal, StopRequested
from carclf.config import StageConfig, TrainConfig
from carclf.data import DatasetInfo, Item, scan_dataset, stratified_split
from carclf.devices import DeviceSetup, configure_devices
from carclf.errors import ConfigError, DataError
from carclf.gate import GATE_META_KEY, calibrate_threshold, car_score
from carclf.model import build_classifier, resolve_img_size, set_trainable
from carclf.optimizers import build_optimizer
from carclf.runs import RunPaths

# Metric early stopping, LR reduction and the best checkpoint follow: smoother than accuracy on small sets.
MONITOR = "val_loss"
# Keras warns every epoch that a tf.data input "ran out of data": the pipeline drops unreadable photos,
# so its length is unknown and the warning is expected. It is silenced, nothing else.
warnings.filterwarnings("ignore", message="Your input ran out of data", category=UserWarning)
warnings.filterwarnings("ignore", message="`shuffle=True` was passed", category=UserWarning)
# Images (photos x views) per predict call in the final TTA evaluation: 32 photos x 4 views at 288 px in one
# call added 0.7 GB to a run's peak memory.
EVAL_BATCH = 32


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
        items = _cap_per_class(items, config.max_images_per_class, config.seed)
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


def _cap_per_class(items: list, limit: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    by_label: dict[int, list] = {}
    for item in items:
        by_label.setdefault(item.label, []).append(item)
    kept = []
    for label in sorted(by_label):
        members = by_label[label]
        kept += [members[i] for i in sorted(rng.permutation(len(members))[:limit])]
    return kept


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


def stage_callbacks(config, stage, number, paths, flag, progress, epochs_total, augmenter, last_stage):
    """The callbacks of one stage, in the order their epoch-end hooks must run (backup last)."""
    callbacks = [
        StopOnSignal(flag),
        HistoryCSV(paths, stage=number, epoch_offset=progress.epochs_done),
        StatusHeartbeat(paths, number, len(config.stages), progress.epochs_done, epochs_total),
    ]
    if config.early_stopping:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor=MONITOR, patience=stage.patience, restore_best_weights=True, verbose=1))
    callbacks.append(keras.callbacks.ModelCheckpoint(
        paths.best_model, monitor=MONITOR, save_best_only=True, initial_value_threshold=progress.best_monitor))
    if config.reduce_lr_factor < 1.0:
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            monitor=MONITOR, factor=config.reduce_lr_factor, patience=config.reduce_lr_patience,
            min_lr=config.min_learning_rate, verbose=1))
    if last_stage and config.aug_weaken_last and augmenter is not None:
        from carclf.pipeline import AugScheduleCallback

        callbacks.append(AugScheduleCallback(augmenter, AugSchedule(last_epochs=config.aug_weaken_last), stage.epochs))
    callbacks.append(keras.callbacks.BackupAndRestore(str(stage_backup_dir(paths, number)), delete_checkpoint=False))
    return callbacks


def run_stage(model, number: int, config, setup, datasets, paths, flag, progress, augmenter, verbose) -> int:
    """Train stage ``number`` (1-based) to its end or early stop; return the epochs it ran in total."""
    stage = config.stages[number - 1]
    trainable = set_trainable(model, stage.unfreeze)
    compile_stage(model, stage, config, setup)
    if augmenter is not None:
        augmenter.set_strength(augmenter.config.strength)  # a previous stage may have weakened it
    epochs_total = progress.epochs_done + sum(s.epochs for s in config.stages[number - 1:])
    print(f"stage {number}/{len(config.stages)}: {trainable} backbone layers trainable, "
          f"lr {stage.learning_rate:g}, up to {stage.epochs} epochs", flush=True)
    callbacks = stage_callbacks(config, stage, number, paths, flag, progress, epochs_total, augmenter,
                                last_stage=number == len(config.stages))
    train_ds, val_ds = datasets
    # BackupAndRestore resumes by setting model._initial_epoch, which Keras keeps after fit returns: left
    # over from a resumed earlier stage it would make this stage start at that epoch (or skip it).
    model._initial_epoch = None
    # shuffle=False: the tf.data pipeline already shuffles (seeded); Keras would only warn that it ignores it.
    history = model.fit(train_ds, validation_data=val_ds, epochs=stage.epochs, callbacks=callbacks,
                        verbose=verbose, shuffle=False)
    checkpoint = next(cb for cb in callbacks if isinstance(cb, keras.callbacks.ModelCheckpoint))
    if np.isfinite(checkpoint.best):
        progress.best_monitor = float(checkpoint.best)
    return history.epoch[-1] + 1 if history.epoch else stage.epochs


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
    target = stage_weights_path(paths)
    temp = target.with_name("stage_end.tmp.weights.h5")
    _weights_only(model).save_weights(temp)
    os.replace(temp, target)
    progress.stages_done = number
    progress.epochs_done += epochs_run
    progress.stage_epochs.append(epochs_run)
    temp_json = paths.progress.with_name(".progress.json.tmp")
    temp_json.write_text(json.dumps(progress.__dict__), encoding="utf-8")
    os.replace(temp_json, paths.progress)
    shutil.rmtree(stage_backup_dir(paths, number), ignore_errors=True)


def _weights_only(model: keras.Model) -> keras.Model:
    """The same layers without an optimizer: weight files that load into any stage's compiled model."""
    return keras.Model(model.inputs, model.outputs, name=model.name)


def evaluate_tta(model, items: list, img_size: int, views: int) -> float:
    """Validation accuracy with ``views`` deterministic TTA views per photo (mean of their probabilities)."""
    from carclf.tta import tta_views

    correct = 0
    predict = model.predict_on_batch
    photos_per_call = max(1, EVAL_BATCH // max(1, views))  # all views of a photo stay in one call
    for start in range(0, len(items), photos_per_call):
        chunk = items[start:start + photos_per_call]
        batches = [tta_views(item.path, views, img_size)[0] for item in chunk]
        probs = np.asarray(predict(np.concatenate(batches).astype("float32")))
        probs = probs.reshape(len(chunk), -1, probs.shape[-1]).mean(axis=1)
        correct += int(np.sum(probs.argmax(axis=1) == np.array([item.label for item in chunk])))
    return correct / len(items)


def final_metrics(model, config, data: TrainData, val_ds, img_size: int) -> dict:
    """Loss and accuracy of the exported weights on validation, plus TTA accuracy when configured."""
    loss, accuracy = model.evaluate(val_ds, verbose=0)
    metrics = {"val_loss": float(loss), "val_accuracy": float(accuracy), "val_images": len(data.val)}
    if config.tta > 1:
        metrics["val_accuracy_tta"] = evaluate_tta(model, data.val, img_size, config.tta)
        metrics["tta"] = config.tta
    return metrics


def export(model, config: TrainConfig, data: TrainData, paths: RunPaths, metrics: dict, img_size: int) -> Path:
    """Write the inference bundle ``<models_dir>/<run_id>`` from the final weights."""
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
        },
        overwrite=True,
    )


def gate_threshold_for(val_items, batch_size: int) -> float:
    """The "not a car" threshold stored in the bundle, chosen on the run's validation photos (all cars)."""
    from carclf.pipeline import make_predict_dataset
    from carclf.predict import gate_classifier

    gate = gate_classifier()
    size = int(gate.inputs[0].shape[1])
    scores = []
    for images, _, ok in make_predict_dataset([item.path for item in val_items], size, batch_size):
        probs = gate.predict_on_batch(images)
        scores.extend(car_score(probs)[ok.numpy()])
    return calibrate_threshold(scores)


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
    runs.update_status(paths, state=runs.RUNNING, pid=os.getpid(), run_id=paths.run_id, name=config.name,
                       started_at=_now(), heartbeat_at=_now(), finished_at=None, error=None)
    try:
        bundle, metrics = _train(config, paths, flag, _verbosity(verbose))
    except StopRequested as stop:
        print(f"run stopped ({stop}); resume it with: python -m carclf runs resume {paths.run_id}", flush=True)
        return runs.update_status(paths, state=runs.STOPPED, stopped_at=_now(), heartbeat_at=_now())
    except KeyboardInterrupt:
        runs.update_status(paths, state=runs.STOPPED, stopped_at=_now(), heartbeat_at=_now())
        raise
    except BaseException as error:  # record why, keep every file already written, and re-raise
        runs.update_status(paths, state=runs.FAILED, error=_one_line(error), finished_at=_now())
        raise
    return runs.update_status(paths, state=runs.FINISHED, finished_at=_now(), heartbeat_at=_now(),
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
    metrics = final_metrics(model, config, data, datasets[1], img_size)
    print("final: " + ", ".join(f"{key} {value:.4g}" for key, value in metrics.items()), flush=True)
    bundle = export(model, config, data, paths, metrics, img_size)
    print(f"bundle: {bundle}", flush=True)
    return bundle, metrics


def fit_stages(setup: DeviceSetup, config: TrainConfig, paths: RunPaths, flag: SignalFlag, verbose: int):
    """Build the model under ``setup``'s strategy and run the stages not yet done; return
    ``(model, data, (train, val) datasets, img_size)`` with the best checkpoint's weights loaded."""
    print(f"devices: {setup.describe()}", flush=True)
    keras.utils.set_random_seed(config.seed)
    data = prepare_data(config)
    img_size = resolve_img_size(config)
    print(f"data: {len(data.train)} train / {len(data.val)} val photos, {data.num_classes} classes, "
          f"{img_size} px", flush=True)
    aug_config = load_aug_config(config.augmentation)
    augmenter = Augmenter(aug_config, img_size) if aug_config.transforms else None
    # batch_size is the global batch (see carclf.devices): the strategy splits each batch between the replicas.
    # micro_batch_size: the pipeline yields slices of the batch; the optimizer averages their gradients.
    slices = f" in {config.accumulation_steps} slices of {config.slice_size}" if config.accumulation_steps > 1 else ""
    print(f"batch: {config.batch_size} photos per step{slices}, {setup.per_replica_batch(config.slice_size)} "
          "per replica", flush=True)
    datasets = make_datasets(config, data, img_size, config.slice_size, augmenter)
    with setup.strategy.scope():
        model = build_classifier(config, data.num_classes)
    progress = read_progress(paths)
    if progress.stages_done:
        _weights_only(model).load_weights(stage_weights_path(paths))
        print(f"resuming after stage {progress.stages_done} ({progress.epochs_done} epochs done)", flush=True)
    runs.update_status(paths, img_size=img_size, devices=setup.describe(), epochs_total=config.epochs_total,
                       epochs_planned=config.epochs_total,  # epochs_total shrinks when a stage stops early
                       stages_total=len(config.stages), data_summary=data.info.summary())
    for number in range(progress.stages_done + 1, len(config.stages) + 1):
        epochs_run = run_stage(model, number, config, setup, datasets, paths, flag, progress, augmenter, verbose)
        finish_stage(model, paths, progress, number, epochs_run)
    if paths.best_model.is_file():
        _weights_only(model).load_weights(paths.best_model)  # the best epoch by val_loss over all stages
    return model, data, datasets, img_size


def _verbosity(verbose: Optional[int]) -> int:
    """Keras progress bar on a terminal, one line per epoch in a log file."""
    if verbose is not None:
        return verbose
    return 1 if sys.stdout.isatty() else 2


def _one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else ""
    return f"{type(error).__name__}: {text}"[:300]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
