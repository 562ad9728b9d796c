"""Training end to end in-process: a real pretrained backbone really learns; failures are recorded."""

from __future__ import annotations

import json
import shutil

import numpy as np

from carclf.gate import MIN_THRESHOLD
import pytest

from carclf import runs
from carclf.run_summary import describe_state, headline_score
from carclf.bundle import load_bundle
from carclf.data import scan_dataset, stratified_split
from carclf.errors import DataError
from carclf.images import load_rgb_array
from carclf.train import prepare_data, train
from train_helpers import make_pattern_dataset, tiny_config

CHANCE = 1 / 3


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    """One real two-stage run: ImageNet Lite0 at 64 px on a separable 3-class photo set."""
    root = tmp_path_factory.mktemp("learn")
    data = make_pattern_dataset(root / "data", per_class=12)
    config = tiny_config(
        data, root / "models", name="learns", img_size=64, weights="imagenet", tta=2, early_stopping=True,
        stages=[{"epochs": 6, "learning_rate": 1e-2, "unfreeze": 0, "patience": 3},
                {"epochs": 2, "learning_rate": 1e-4, "unfreeze": 4, "patience": 2}],
    )
    paths = runs.create_run(config, root / "runs")
    status = train(config, paths.root, verbose=0)
    return config, paths, status


@pytest.mark.slow
def test_tiny_model_really_learns_a_separable_task(learned):
    config, paths, status = learned
    assert status["state"] == runs.FINISHED, status.get("error")
    metrics = status["val_metrics"]
    assert metrics["val_accuracy"] >= 0.8 > CHANCE + 0.4, metrics
    assert metrics["val_accuracy_tta"] >= 0.7 and metrics["tta"] == 2
    history = runs.read_history(paths.run_id, paths.root.parent)
    assert history["loss"].iloc[-1] < history["loss"].iloc[0], "training loss goes down"
    assert set(history["stage"]) == {1, 2}
    assert history["epoch"].tolist() == list(range(1, len(history) + 1))
    assert (history.loc[history["stage"] == 2, "lr"] <= 1e-4 + 1e-12).all()
    # the final val_loss (computed from the end-of-run views) is Keras' val_loss of the exported epoch
    assert (history["val_loss"] - metrics["val_loss"]).abs().min() < 0.01, (metrics, history["val_loss"].tolist())


@pytest.mark.slow
def test_exported_bundle_predicts_the_validation_photos(learned):
    config, paths, status = learned
    bundle = load_bundle(status["bundle"])
    assert bundle.meta["run_id"] == paths.run_id and bundle.img_size == 64
    assert bundle.meta["data_summary"]["num_images"] == 36
    # the gate threshold was chosen on the validation photos (synthetic patterns, not cars: the floor)
    assert bundle.meta["gate_threshold"] == MIN_THRESHOLD
    _, val = stratified_split(scan_dataset(config.data), config.val_fraction, config.seed)
    images = np.stack([load_rgb_array(item.path, 64) for item in val]).astype("float32")
    predicted = bundle.model.predict_on_batch(images).argmax(axis=1)
    accuracy = float(np.mean(predicted == [item.label for item in val]))
    assert accuracy == pytest.approx(status["val_metrics"]["val_accuracy"], abs=1 / len(val) + 1e-9)


@pytest.mark.slow
def test_run_folder_has_status_history_and_checkpoints(learned):
    _, paths, status = learned
    stored = json.loads(paths.status.read_text())
    for key in ("pid", "started_at", "heartbeat_at", "finished_at", "best_val_accuracy", "bundle", "epochs_total"):
        assert stored.get(key) is not None, key
    assert stored["stage"] == 2 and stored["stages_total"] == 2
    # one headline: the exported model's score, TTA here (tta=2), the same number as final_val_accuracy
    assert headline_score(stored["val_metrics"]) == (stored["final_val_accuracy"], True)
    epochs_done = len(runs.read_history(paths.run_id, paths.root.parent))
    assert stored["epochs_planned"] == 8 and stored["epoch"] == epochs_done
    assert describe_state(stored) == ("finished" if epochs_done == 8
                                      else f"finished (stopped early at epoch {epochs_done} of 8)")
    assert paths.best_model.is_file() and paths.progress.is_file()
    assert not list(paths.backup.glob("stage_*")), "finished stages leave no mid-stage backup behind"


def test_data_problem_marks_the_run_failed_and_keeps_its_files(tmp_path):
    data = make_pattern_dataset(tmp_path / "data", per_class=3)
    for extra in ("vertical", "checker"):
        for photo in (data / extra).iterdir():
            photo.unlink()
        (data / extra).rmdir()
    config = tiny_config(data, tmp_path / "models")
    paths = runs.create_run(config, tmp_path / "runs")
    with pytest.raises(DataError):
        train(config, paths.root, verbose=0)
    status = runs.read_status(paths.run_id, tmp_path / "runs")
    assert status["state"] == runs.FAILED
    assert status["error"].startswith("DataError:") and "\n" not in status["error"]
    assert paths.config.is_file()


def test_prepare_data_caps_classes_and_splits_reproducibly(tmp_path):
    data = make_pattern_dataset(tmp_path / "data", per_class=10)
    config = tiny_config(data, tmp_path / "models", max_images_per_class=6)
    first, second = prepare_data(config), prepare_data(config)
    assert len(first.train) + len(first.val) == 18
    assert [item.path for item in first.val] == [item.path for item in second.val]
    assert {item.label for item in first.val} == {0, 1, 2}


def test_prepare_data_uses_an_explicit_validation_folder(tmp_path):
    data = make_pattern_dataset(tmp_path / "data", per_class=6)
    val = make_pattern_dataset(tmp_path / "val", per_class=2, seed=1)
    shutil.rmtree(val / "horizontal")  # a class missing from validation: labels must follow the training classes
    config = tiny_config(data, tmp_path / "models", val_data=str(val))
    split = prepare_data(config)
    assert len(split.train) == 18  # every training photo trains: nothing is cut out for validation
    assert sorted(item.path.name for item in split.val) == sorted(p.name for p in val.rglob("*.jpg"))
    classes = split.info.classes
    assert {classes[item.label] for item in split.val} == {"checker", "vertical"}
    assert all(classes[item.label] == item.path.parent.name for item in split.val)


def test_explicit_validation_folder_with_an_unknown_class_is_refused(tmp_path):
    data = make_pattern_dataset(tmp_path / "data", per_class=4)
    val = make_pattern_dataset(tmp_path / "val", per_class=2, seed=1)
    (val / "checker").rename(val / "diagonal")
    with pytest.raises(DataError, match="diagonal"):
        prepare_data(tiny_config(data, tmp_path / "models", val_data=str(val)))


def _final_weights(tmp_path, capsys, name: str, **overrides) -> tuple[list, str]:
    """Train a tiny whole-backbone run on 24 pattern photos; return its exported weights and its log."""
    data = make_pattern_dataset(tmp_path / "train", per_class=8)  # 24 photos: 3 whole batches of 8
    val = make_pattern_dataset(tmp_path / "val", per_class=2, seed=1)
    config = tiny_config(data, tmp_path / "models", name=name, val_data=str(val), augmentation="none",
                         weights="imagenet",  # random-init Lite features are ~1e-14: nothing would move
                         head={"dropout": 0.0}, reduce_lr_factor=1.0,
                         # SGD: an update linear in the gradient. Adam's m/sqrt(v) turns the float rounding
                         # of near-zero gradients (summed in another order per slice) into full-size steps.
                         optimizer="sgd",
                         stages=[{"epochs": 2, "learning_rate": 1e-2, "unfreeze": 0},
                                 {"epochs": 2, "learning_rate": 1e-2, "unfreeze": 1.0}], **overrides)
    paths = runs.create_run(config, tmp_path / "runs")
    status = train(config, paths.root, verbose=0)
    assert status["state"] == runs.FINISHED, status.get("error")
    return load_bundle(status["bundle"]).model.get_weights(), capsys.readouterr().out


def test_micro_batches_train_exactly_like_whole_batches(tmp_path, capsys):
    """micro_batch_size only saves memory: slices of 4 whose gradients are averaged update like batches of 8."""
    whole, _ = _final_weights(tmp_path / "whole", capsys, "whole", batch_size=8, micro_batch_size=0)
    sliced, log = _final_weights(tmp_path / "sliced", capsys, "sliced", batch_size=8, micro_batch_size=4)
    smaller, _ = _final_weights(tmp_path / "small", capsys, "small", batch_size=4, micro_batch_size=0)
    assert "8 photos per step in 2 slices of 4" in log

    def largest_difference(first, second):
        return max(float(np.abs(a - b).max()) for a, b in zip(first, second))

    # equal up to float rounding (the slices sum their gradients in another order)
    assert largest_difference(whole, sliced) < 1e-4
    # and the comparison can tell runs apart: true batches of 4 take twice the steps and end far elsewhere
    assert largest_difference(whole, smaller) > 100 * largest_difference(whole, sliced)


def test_a_resumed_stage_keeps_its_best_epoch_before_the_kill(tmp_path):
    """Each epoch's backup keeps the stage's best val_loss so far, and a resumed stage's checkpoint starts from
    it: from the stage before's best, the first epoch after a kill was saved as the run's best model even
    when it was worse than an epoch before the kill (the bundle then exported it)."""
    import keras
    from types import SimpleNamespace

    from carclf.callbacks import EpochBackup, SignalFlag, backup_best
    from carclf.train import CheckpointOf, Progress, stage_backup_dir, stage_callbacks

    config = tiny_config(make_pattern_dataset(tmp_path / "data", per_class=2), tmp_path / "models")
    paths = runs.create_run(config, tmp_path / "runs")
    folder = stage_backup_dir(paths, 2)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    backup = EpochBackup(folder, SimpleNamespace(best=0.42))  # epoch 6 of the stage scored 0.42
    backup.set_model(model)
    backup.on_epoch_end(6)
    assert backup_best(folder) == 0.42 and json.loads((folder / "backup.json").read_text())["epoch"] == 7
    progress = Progress(stages_done=1, epochs_done=1, best_monitor=0.9)  # stage 1's best
    callbacks = stage_callbacks(config, config.stages[1], 2, paths, SignalFlag(), progress, 3, None, True,
                                saved_model=model)
    assert next(cb for cb in callbacks if isinstance(cb, CheckpointOf)).best == 0.42
    unsaved = EpochBackup(folder, SimpleNamespace(best=float("inf")))  # no epoch has improved yet
    unsaved.set_model(model)
    unsaved.on_epoch_end(7)
    assert backup_best(folder) is None
    callbacks = stage_callbacks(config, config.stages[1], 2, paths, SignalFlag(), progress, 3, None, True,
                                saved_model=model)
    assert next(cb for cb in callbacks if isinstance(cb, CheckpointOf)).best == 0.9
