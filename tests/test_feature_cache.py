"""Cached-feature head stages, cosine schedules and per-stage image sizes: real tiny trainings, stop and resume."""

from __future__ import annotations

import os
import signal

import keras
import pytest

from carclf import runs
from carclf.config import PRESETS, load_config
from carclf.errors import ConfigError
from carclf.model import build_classifier, head_tail, pooled_features_model
from train_helpers import make_pattern_dataset, tiny_config

CHANCE = 1 / 3


def test_head_tail_shares_the_heads_weights_and_matches_the_whole_model(tmp_path):
    """Pooled features -> tail gives the same probabilities as the whole classifier, with the same weights."""
    import numpy as np

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (2, 48, 48, 3)).astype("float32")
    # avgmax: the pooling layer is the concatenation, not the avg/max layers feeding it
    config = tiny_config(tmp_path, tmp_path, head={"pooling": "avgmax", "batchnorm": True,
                                                    "dense": [{"units": 8, "batchnorm": True, "dropout": 0.2}]})
    model = build_classifier(config, 3)
    tail = head_tail(model)
    pooled = pooled_features_model(model).predict_on_batch(images)
    assert pooled.shape == (2, 2 * model.get_layer("backbone").output.shape[-1])
    np.testing.assert_allclose(tail.predict_on_batch(pooled), model.predict_on_batch(images), atol=1e-5)
    assert {id(w) for w in tail.weights} <= {id(w) for w in model.weights}


@pytest.mark.slow
def test_a_cached_feature_head_stage_really_learns_and_reports_epochs(tmp_path, capsys):
    data = make_pattern_dataset(tmp_path / "data", per_class=12)
    config = tiny_config(data, tmp_path / "models", img_size=64, weights="imagenet", early_stopping=True,
                         stages=[{"epochs": 12, "learning_rate": 1e-2, "unfreeze": "none", "patience": 4,
                                  "cached_views": 3}])
    paths = runs.create_run(config, tmp_path / "runs")
    from carclf.train import train

    status = train(config, paths.root, verbose=0)
    assert status["state"] == runs.FINISHED, status.get("error")
    assert status["val_metrics"]["val_accuracy"] >= 0.8 > CHANCE + 0.4, status["val_metrics"]
    history = runs.read_history(paths.run_id, tmp_path / "runs")
    assert history["epoch"].tolist() == list(range(1, len(history) + 1)) and len(history) >= 5
    assert history[["loss", "accuracy", "val_loss", "val_accuracy"]].notna().all().all()
    assert history["loss"].iloc[-1] < history["loss"].iloc[0]
    # 27 training photos x 3 views, 9 validation photos
    assert "features of 81 training views and 9 validation photos" in capsys.readouterr().out


def _stop_at(monkeypatch, stage: int, epoch: int):
    """Send this process SIGTERM at the end of ``epoch`` (1-based, within the stage) of ``stage``."""
    import carclf.train as train_module

    original = train_module.stage_callbacks

    class Stopper(keras.callbacks.Callback):
        def on_epoch_end(self, index, logs=None):
            if index + 1 == epoch:
                os.kill(os.getpid(), signal.SIGTERM)

    def with_stopper(config, stage_config, number, *args, **kwargs):
        callbacks = original(config, stage_config, number, *args, **kwargs)
        return callbacks + [Stopper()] if number == stage else callbacks

    monkeypatch.setattr(train_module, "stage_callbacks", with_stopper)


def _tiny_preset(name: str, data, models):
    """Preset ``name``'s stage plan (cached views, schedules, per-stage sizes) shrunk to a tiny model."""
    preset = load_config(preset=name)
    stages = []
    for stage in preset.stages:
        stages.append({"epochs": 3 if stage.cached_views else 2, "learning_rate": stage.learning_rate,
                       "unfreeze": "none" if stage.unfreeze == "none" else "4 layers",
                       "cached_views": min(stage.cached_views, 2), "lr_schedule": stage.lr_schedule,
                       "warmup_epochs": min(stage.warmup_epochs, 1.0), "img_size": 40 if stage.img_size else 0,
                       "patience": 3})
    return tiny_config(data, models, stages=stages, tta=1)


@pytest.mark.slow
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_presets_plan_stops_and_resumes(tmp_path, monkeypatch, preset):
    """Stopped after epoch 2 of a cached stage 1 (else 1), then after epoch 1 of the last stage: each resume
    continues where it stopped, and the finished history has every epoch exactly once."""
    from carclf.train import train

    data = make_pattern_dataset(tmp_path / "data", per_class=6)
    config = _tiny_preset(preset, data, tmp_path / "models")
    paths = runs.create_run(config, tmp_path / "runs")
    last = len(config.stages)
    stops = [(1, 2 if config.stages[0].cached_views else 1)] + ([(last, 1)] if last > 1 else [])
    for stage, epoch in stops:
        with monkeypatch.context() as patch:
            _stop_at(patch, stage, epoch)
            status = train(config, paths.root, verbose=0)
        assert status["state"] == runs.STOPPED, status.get("error")
        history = runs.read_history(paths.run_id, tmp_path / "runs")
        assert history["epoch"].tolist() == list(range(1, len(history) + 1))  # nothing repeated, nothing lost
        assert history["stage"].iloc[-1] == stage
    status = train(config, paths.root, verbose=0)
    assert status["state"] == runs.FINISHED, status.get("error")
    history = runs.read_history(paths.run_id, tmp_path / "runs")
    assert history["epoch"].tolist() == list(range(1, len(history) + 1))
    assert history["stage"].tolist() == sorted(history["stage"]) and set(history["stage"]) == set(range(1, last + 1))
    assert len(history) == config.epochs_total  # early stopping is off in tiny configs: every epoch ran once


def test_cosine_stage_anneals_the_learning_rate(tmp_path):
    from carclf.callbacks import CosineSchedule

    schedule = CosineSchedule(1e-3, epochs=4, steps_per_epoch=10, warmup_epochs=1)
    rates = [schedule.rate_at(epoch + step / 10) for epoch in range(4) for step in range(10)]
    assert rates[0] > 0 and rates[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(rates[9:], rates[10:])) and rates[-1] < 1e-4


@pytest.mark.parametrize("stage, message", [
    ({"unfreeze": "all", "cached_views": 4}, "cached_views needs unfreeze: none"),
    ({"cached_views": -1}, "cached_views must be 0"),
    ({"epochs": 3, "lr_schedule": "cosine", "warmup_epochs": 3}, "warmup_epochs must be"),
    ({"img_size": 16}, "img_size must be 0"),
    ({"lr_schedule": "linear"}, "lr_schedule must be one of"),
])
def test_bad_stage_settings_are_refused_with_the_key(stage, message):
    with pytest.raises(ConfigError, match=message):
        load_config(preset="quick", overrides={"stages": [stage]})


@pytest.mark.parametrize("augment", [None, "light"])
def test_each_photo_is_decoded_once_per_run_and_batches_are_unchanged(tmp_path, monkeypatch, augment):
    """Two epochs decode each photo once; the images equal those of a pipeline without the cache."""
    import numpy as np

    import carclf.pipeline as pipeline
    from carclf.augment import load_aug_config

    data = make_pattern_dataset(tmp_path, per_class=3)
    paths = sorted(str(p) for p in data.rglob("*.jpg"))
    config = load_aug_config(augment) if augment else None

    def epochs(dataset, count=2):
        return [np.concatenate([images.numpy() for images, _ in dataset]) for _ in range(count)]

    monkeypatch.setattr(pipeline, "MAX_CACHE_BYTES", 0)
    uncached = epochs(pipeline.make_dataset(paths, [0] * len(paths), 40, 4, augment=config, shuffle=False, seed=3))
    monkeypatch.undo()
    decoded = []
    for name in ("load_image", "load_rgb_array"):
        original = getattr(pipeline, name)
        monkeypatch.setattr(pipeline, name, lambda source, *a, _f=original, **k: decoded.append(source) or _f(source, *a, **k))
    cached = epochs(pipeline.make_dataset(paths, [0] * len(paths), 40, 4, augment=config, shuffle=False, seed=3))
    assert sorted(decoded) == paths, "each photo decoded exactly once over two epochs"
    for ours, theirs in zip(cached, uncached):
        np.testing.assert_array_equal(ours, theirs)
    if augment:
        assert not np.array_equal(cached[0], cached[1]), "the second epoch still draws new augmentations"
