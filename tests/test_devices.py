"""The GPU code paths, exercised for real on CPU: mixed precision + XLA, and MirroredStrategy over two replicas.

No GPU is needed: TensorFlow runs float16 and XLA on CPU (slowly), and splits the CPU into two logical
devices that ``MirroredStrategy`` replicates over exactly as over two GPUs. The runs below are the real
``carclf.train.train`` on real photos; spies only record what the training code did.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from carclf import runs
from carclf.bundle import inference_model, load_bundle, save_bundle
from carclf.devices import FLOAT_POLICY, MIXED_POLICY, DeviceSetup, choose_strategy, configure_devices
from carclf.errors import ConfigError
from carclf.images import load_rgb_array
from carclf.train import prepare_data
from inference_helpers import colour_classifier, copy_photos
from train_helpers import tiny_config

REPO_ROOT = Path(__file__).resolve().parents[1]
BRANDS = "cars/vidhyagupta_car_brands_5"
PHOTOS_PER_CLASS = 5  # x 2 classes; val_fraction 0.4 -> 6 train / 4 val photos
BATCH = 4  # the global batch: 6 train photos make 2 steps per epoch (1 if it were multiplied by the replicas)
IMG_SIZE = 64  # the smallest size where the pretrained Lite0 features are not nearly constant
# Stage 1 trains the head, stage 2 unfreezes 2 backbone layers: the model is recompiled between them.
STAGES = [{"epochs": 2, "learning_rate": 1e-2, "unfreeze": 0}, {"epochs": 1, "learning_rate": 1e-4, "unfreeze": 2}]
# Largest |p_float16-compute - p_float32-compute| expected from float16 rounding on these photos.
FLOAT16_TOLERANCE = 2e-2
# A tiny two-replica run (TensorFlow start, ImageNet gate calibration included) on 2 shared cores.
SUBPROCESS_TIMEOUT_S = 240


@pytest.fixture(scope="module")
def photos(shared_data, tmp_path_factory):
    """Two classes of five real car photos each."""
    layout = {brand: [str(p.relative_to(shared_data))
                      for p in sorted((shared_data / BRANDS / brand).iterdir())[:PHOTOS_PER_CLASS]]
              for brand in ("audi", "bmw")}
    return copy_photos(shared_data, layout, tmp_path_factory.mktemp("devices") / "brands")


def _config(photos: Path, root: Path, name: str, **overrides):
    # ImageNet weights: a random-init Lite0 gives features ~1e-14 that float16 flushes to zero (nothing learns).
    return tiny_config(photos, root / "models", name=name, img_size=IMG_SIZE, weights="imagenet", batch_size=BATCH,
                       val_fraction=0.4, stages=STAGES, **overrides)


def _val_images(config) -> np.ndarray:
    return np.stack([load_rgb_array(item.path, IMG_SIZE) for item in prepare_data(config).val]).astype("float32")


def _policies(model) -> set:
    return {layer.dtype_policy.name for layer in model._flatten_layers(include_self=False)}


def _assert_float32_bundle(bundle_dir, images: np.ndarray) -> np.ndarray:
    """The bundle loads, computes in float32 everywhere and returns float32 probabilities summing to 1."""
    model = load_bundle(bundle_dir).model
    assert _policies(model) == {FLOAT_POLICY}, "a bundle must not compute in float16 on a CPU server"
    assert {w.dtype for w in model.weights} == {"float32"}
    probs = model.predict_on_batch(images)
    assert probs.dtype == np.float32 and probs.shape == (len(images), 2)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert np.all(probs >= 0)
    return probs


# --- mixed precision + XLA, forced on this CPU ----------------------------------------------------------

@pytest.fixture(scope="module")
def mixed_run(photos, tmp_path_factory):
    """A real two-stage run with mixed_precision and xla forced on; a spy records each compiled stage."""
    import carclf.train as train_module

    root = tmp_path_factory.mktemp("mixed")
    config = _config(photos, root, "mixed", mixed_precision=True, xla=True)
    compiled = []  # per stage: model, optimizer, jit_compile, output-layer kernel before the stage trains
    original = train_module.compile_stage

    def spy(model, stage, config, setup):
        original(model, stage, config, setup)
        kernel = np.array(model.get_layer("head").get_layer("predictions").kernel.numpy())
        compiled.append({"model": model, "optimizer": model.optimizer, "jit": model.jit_compile, "kernel": kernel})

    before = keras.mixed_precision.global_policy().name
    paths = runs.create_run(config, root / "runs")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train_module, "compile_stage", spy)
        try:
            status = train_module.train(config, paths.root, verbose=0)
            after = keras.mixed_precision.global_policy().name
        finally:
            keras.mixed_precision.set_global_policy(before)  # never leak float16 into other tests
    return config, paths, status, compiled, before, after


@pytest.mark.slow
def test_mixed_precision_and_xla_train_on_cpu(mixed_run):
    config, paths, status, compiled, before, after = mixed_run
    assert status["state"] == runs.FINISHED, status.get("error")
    assert status["devices"] == "CPU, 1 replica(s), mixed precision on, XLA on"
    history = runs.read_history(paths.run_id, paths.root.parent)
    assert history["stage"].tolist() == [1, 1, 2]
    assert np.isfinite(history[["loss", "val_loss"]].to_numpy()).all(), "float16 overflowed"
    assert len(compiled) == 2, "one compile per stage"
    for stage in compiled:
        model, optimizer = stage["model"], stage["optimizer"]
        # float16 compute, float32 variables, float32 softmax; Keras wraps the optimizer for loss scaling
        assert model.get_layer("backbone").dtype_policy.name == MIXED_POLICY
        assert model.get_layer("backbone").compute_dtype == "float16"
        assert model.get_layer("head").get_layer("predictions").compute_dtype == "float32"
        assert {w.dtype for w in model.weights} == {"float32"}
        assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer) and stage["jit"] is True
    assert compiled[0]["optimizer"] is not compiled[1]["optimizer"], "every stage gets a fresh optimizer"
    # steps were applied, not all skipped by the loss scaler for float16 overflow
    assert int(compiled[1]["optimizer"].inner_optimizer.iterations.numpy()) >= 1
    trained = compiled[1]["model"].get_layer("head").get_layer("predictions").kernel.numpy()
    assert not np.allclose(trained, compiled[0]["kernel"]), "the head learned nothing"
    # the process-wide policy is back to what it was; the gate was built for the export in float32
    assert (before, after) == (FLOAT_POLICY, FLOAT_POLICY)
    from carclf.predict import gate_classifier

    assert _policies(gate_classifier()) == {FLOAT_POLICY}


@pytest.mark.slow
def test_mixed_precision_run_exports_a_float32_bundle(mixed_run):
    config, paths, status, compiled, _, _ = mixed_run
    images = _val_images(config)
    probs = _assert_float32_bundle(status["bundle"], images)
    # the best checkpoint is the float16-compute model itself: the bundle holds its exact weights
    checkpoint = keras.saving.load_model(paths.best_model, compile=False)
    assert MIXED_POLICY in _policies(checkpoint.get_layer("backbone"))
    bundle_model = load_bundle(status["bundle"]).model
    for ours, theirs in zip(bundle_model.weights, checkpoint.weights, strict=True):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy(), err_msg=ours.path)
    float16_probs = np.asarray(checkpoint.predict_on_batch(images), dtype=np.float32)
    np.testing.assert_allclose(probs, float16_probs, atol=FLOAT16_TOLERANCE)
    assert status["val_metrics"]["val_images"] == len(images)


def test_bundle_of_a_mixed_precision_model_is_float32(tmp_path):
    """save_bundle on its own: a model built under mixed_float16 is saved computing in float32."""
    images = np.stack([np.full((32, 32, 3), value, np.float32) for value in (30.0, 120.0, 250.0)])
    reference = colour_classifier()
    keras.mixed_precision.set_global_policy(MIXED_POLICY)
    try:
        mixed = colour_classifier()
    finally:
        keras.mixed_precision.set_global_policy(FLOAT_POLICY)
    assert mixed.get_layer("backbone").compute_dtype == "float16"
    mixed.set_weights(reference.get_weights())
    assert _policies(inference_model(reference)) == {FLOAT_POLICY}  # float32 models are kept as they are
    bundle = save_bundle(mixed, tmp_path / "colour", ["red", "green", "blue"], meta={"backbone": "colour-test"})
    model = load_bundle(bundle).model
    assert _policies(model) == {FLOAT_POLICY}
    np.testing.assert_allclose(model.predict_on_batch(images), reference.predict_on_batch(images), atol=1e-6)
    assert _policies(mixed) != {FLOAT_POLICY}, "the trained model itself is left as it was"


# --- strategy choice and settings on this machine ---------------------------------------------------------

@pytest.mark.parametrize("devices", [[], ["/device:CPU:0"]])
def test_one_device_or_none_uses_the_default_strategy(devices):
    import tensorflow as tf

    strategy = choose_strategy(devices)
    assert not isinstance(strategy, tf.distribute.MirroredStrategy)
    assert strategy.num_replicas_in_sync == 1


@pytest.mark.parametrize("settings, mixed, xla", [
    ({}, False, False),  # auto on a CPU-only machine: both off
    ({"mixed_precision": True}, True, False),
    ({"mixed_precision": True, "xla": True}, True, True),
])
def test_configure_devices_on_cpu_sets_and_restores_the_policy(tmp_path, settings, mixed, xla):
    setup = configure_devices(tiny_config(tmp_path, tmp_path, **settings))
    try:
        assert (setup.devices, setup.replicas, setup.mixed_precision, setup.xla) == ((), 1, mixed, xla)
        assert keras.mixed_precision.global_policy().name == (MIXED_POLICY if mixed else FLOAT_POLICY)
    finally:
        setup.restore()
    assert keras.mixed_precision.global_policy().name == FLOAT_POLICY


@pytest.mark.parametrize("replicas, global_batch, per_replica", [(1, 16, 16), (2, 16, 8), (2, 5, 3), (4, 2, 1)])
def test_per_replica_batch(replicas, global_batch, per_replica):
    setup = DeviceSetup(devices=(), mixed_precision=False, xla=False, strategy=None, replicas=replicas)
    assert setup.per_replica_batch(global_batch) == per_replica


# --- MirroredStrategy over two logical CPU devices (a subprocess: TensorFlow must not be initialised yet) --

# Runs the real training with the two halves of the CPU standing in for two GPUs and prints one JSON line.
MIRRORED_SCRIPT = r"""
import builtins, json, sys, tomllib, warnings
for spec in tomllib.load(open("pyproject.toml", "rb"))["tool"]["pytest"]["ini_options"]["filterwarnings"]:
    action, message, category, module = (spec.split(":") + [""] * 4)[:4]  # the pytest warning filters
    warnings.filterwarnings(action, message, getattr(builtins, category or "Warning"), module)
import keras
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import carclf.devices
import carclf.train
from carclf.config import config_from_dict
from carclf.errors import ConfigError

logical = [device.name for device in tf.config.list_logical_devices("CPU")]
carclf.devices.accelerator_devices = lambda: logical  # what configure_devices replicates over

config = config_from_dict(json.loads(sys.argv[1]))
stages = []  # per compiled stage: what the model and its optimizer live on
original_compile, original_callbacks = carclf.train.compile_stage, carclf.train.stage_callbacks
def compile_spy(model, stage, config, setup):
    original_compile(model, stage, config, setup)
    in_scope = setup.strategy.extended.variable_created_in_scope
    stages.append({"model": model, "optimizer": model.optimizer, "in_scope": in_scope})

class CountSteps(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        steps.append(0)
    def on_train_batch_end(self, batch, logs=None):
        steps[-1] += 1
steps = []
def callbacks_spy(*args, **kwargs):
    return [CountSteps()] + original_callbacks(*args, **kwargs)
carclf.train.compile_stage, carclf.train.stage_callbacks = compile_spy, callbacks_spy

status = carclf.train.train(config, sys.argv[2], verbose=2)

def kinds(variables):
    return sorted({type(getattr(v, "value", v)).__name__ for v in variables})
def config_error(**overrides):
    try:
        carclf.devices.configure_devices(config.replace(**overrides))
    except ConfigError as error:
        return str(error)
report = {
    "status": status, "steps": steps, "policy_after": keras.mixed_precision.global_policy().name,
    "strategy": type(carclf.devices.choose_strategy(logical)).__name__,
    "xla_error": config_error(xla=True), "batch_error": config_error(batch_size=1),
    "micro_batch_error": config_error(batch_size=4, micro_batch_size=1),
    "stages": [{
        "strategy": type(s["model"].distribute_strategy).__name__,
        "replicas": s["model"].distribute_strategy.num_replicas_in_sync,
        "model_variables": kinds(s["model"].weights),
        "optimizer_variables": kinds(s["optimizer"].variables),
        "optimizer_in_scope": all(s["in_scope"](getattr(v, "value", v)) for v in s["optimizer"].variables),
        "optimizer_id": id(s["optimizer"]),
    } for s in stages],
}
print("REPORT " + json.dumps(report))
"""


@pytest.fixture(scope="module")
def mirrored_run(photos, tmp_path_factory):
    root = tmp_path_factory.mktemp("mirrored")
    # mixed_precision and xla "auto": what a two-GPU machine gets (float16 on, XLA off under MirroredStrategy)
    config = _config(photos, root, "mirrored", mixed_precision="auto", xla="auto")
    paths = runs.create_run(config, root / "runs")
    done = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT, json.dumps(config.to_dict()), str(paths.root)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S)
    reports = [line for line in done.stdout.splitlines() if line.startswith("REPORT ")]
    assert done.returncode == 0 and reports, f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return config, paths, json.loads(reports[-1][len("REPORT "):]), done.stdout


@pytest.mark.slow
def test_mirrored_strategy_trains_two_replicas_in_sync(mirrored_run):
    config, paths, report, log = mirrored_run
    status = report["status"]
    assert status["state"] == runs.FINISHED, status.get("error")
    assert status["devices"] == "CPU:0, CPU:1, 2 replica(s), mixed precision on, XLA off"
    assert report["strategy"] == "MirroredStrategy"
    assert len(report["stages"]) == 2
    for stage in report["stages"]:
        assert (stage["strategy"], stage["replicas"]) == ("MirroredStrategy", 2)
        assert stage["model_variables"] == ["MirroredVariable"], "model built outside strategy.scope()"
        assert stage["optimizer_variables"] and stage["optimizer_in_scope"], "optimizer built outside the scope"
    assert report["stages"][0]["optimizer_id"] != report["stages"][1]["optimizer_id"], "a fresh optimizer per stage"
    assert report["policy_after"] == FLOAT_POLICY


@pytest.mark.slow
def test_batch_size_is_the_global_batch(mirrored_run):
    config, paths, report, log = mirrored_run
    train_photos = len(prepare_data(config).train)
    assert report["steps"] == [math.ceil(train_photos / BATCH)] * 3, "one step takes batch_size photos in all"
    assert f"batch: {BATCH} photos per step, {BATCH // 2} per replica" in log


@pytest.mark.slow
def test_mirrored_run_writes_checkpoints_history_and_a_bundle(mirrored_run):
    config, paths, report, log = mirrored_run
    history = runs.read_history(paths.run_id, paths.root.parent)
    assert history["epoch"].tolist() == [1, 2, 3] and history["stage"].tolist() == [1, 1, 2]
    assert np.isfinite(history[["loss", "accuracy", "val_loss", "val_accuracy"]].to_numpy()).all()
    progress = json.loads(paths.progress.read_text())
    assert (progress["stages_done"], progress["stage_epochs"]) == (2, [2, 1])
    assert paths.best_model.is_file() and (paths.checkpoints / "stage_end.weights.h5").is_file()
    assert not list(paths.backup.glob("stage_*"))
    checkpoint = keras.saving.load_model(paths.best_model, compile=False)
    bundle = load_bundle(report["status"]["bundle"])
    assert bundle.meta["run_id"] == paths.run_id and bundle.class_names == ["audi", "bmw"]
    for ours, theirs in zip(bundle.model.weights, checkpoint.weights, strict=True):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy(), err_msg=ours.path)
    _assert_float32_bundle(bundle.path, _val_images(config))


@pytest.mark.slow
def test_settings_two_replicas_cannot_honour_are_config_errors(mirrored_run):
    """Keras cannot XLA-compile a replicated step, and each replica needs a photo: both fail before any data is read."""
    _, _, report, _ = mirrored_run
    assert "xla: true cannot train on 2 GPUs" in (report["xla_error"] or "")
    assert "batch_size 1 is split across 2 GPUs" in (report["batch_error"] or "")
    sliced = "batch_size 4 in slices of 1 (micro_batch_size 1) is split across 2 GPUs"
    assert sliced in (report["micro_batch_error"] or "")

