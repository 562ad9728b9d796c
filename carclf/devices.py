"""Hardware setup for training: GPU discovery, memory growth, mixed precision, XLA, distribution strategy.

The same training code runs on a laptop CPU and on one or several GPUs; everything that differs lives
here. ``configure_devices`` must run before any model is built (mixed precision is a global Keras policy,
memory growth must be set before a GPU is first used).

Batch size: the config's ``batch_size`` is the GLOBAL batch, the photos of one optimizer step over all
replicas. With N GPUs, ``tf.distribute.MirroredStrategy`` hands each GPU ``batch_size / N`` of them and
combines their gradients into the whole batch's, so a config takes the same steps (its learning rate means
the same) on 1 or N GPUs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from carclf.errors import ConfigError

# Keras dtype policies: float16 compute on GPU roughly doubles throughput; float32 everywhere else.
MIXED_POLICY = "mixed_float16"
FLOAT_POLICY = "float32"
# Why XLA is off under MirroredStrategy: Keras compiles the whole replicated step as one XLA cluster on the
# first device, which then cannot read the other replicas' variables ("Trying to access resource
# .../replica_1 located in device ...:1 from device ...:0"); Keras' own jit_compile="auto" turns XLA off
# under tf.distribute for this reason (keras-team/keras#19005). Seen with Keras 3.15 on two logical CPUs.
MULTI_DEVICE_XLA = "Keras cannot XLA-compile a step replicated over several devices"


@dataclass(frozen=True)
class DeviceSetup:
    """What ``configure_devices`` decided, recorded in the run log and status."""

    devices: tuple  # accelerator devices training replicates over ("/device:GPU:0", ...); empty on CPU
    mixed_precision: bool
    xla: bool
    strategy: Any  # tf.distribute.Strategy
    replicas: int
    previous_policy: str = FLOAT_POLICY  # the global Keras dtype policy before configure_devices

    def describe(self) -> str:
        where = ", ".join(name.replace("/device:", "") for name in self.devices) or "CPU"
        return (f"{where}, {self.replicas} replica(s), mixed precision {'on' if self.mixed_precision else 'off'}, "
                f"XLA {'on' if self.xla else 'off'}")

    def per_replica_batch(self, global_batch: int) -> int:
        """Photos each replica computes per step (the last replica may get fewer in a ragged batch)."""
        return -(-global_batch // self.replicas)

    def restore(self) -> None:
        """Put back the global Keras dtype policy that was in force before ``configure_devices``."""
        import keras

        keras.mixed_precision.set_global_policy(self.previous_policy)


def gpu_info() -> list[dict]:
    """Visible GPUs as ``[{"name": ..., "device": ...}]`` (empty on CPU-only machines)."""
    import tensorflow as tf

    found = []
    for device in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(device)
        found.append({"device": device.name, "name": details.get("device_name", device.name)})
    return found


def accelerator_devices() -> list[str]:
    """Names of the logical GPU devices to train on (call after memory growth is set: this initialises TF)."""
    import tensorflow as tf

    return [device.name for device in tf.config.list_logical_devices("GPU")]


def choose_strategy(devices: Sequence[str]):
    """``MirroredStrategy`` over ``devices`` when there are several, else the default (one-device) strategy."""
    import tensorflow as tf

    if len(devices) > 1:
        return tf.distribute.MirroredStrategy(devices=list(devices))
    return tf.distribute.get_strategy()


def _resolve(setting, auto: bool) -> bool:
    """A config value ``"auto" | True | False``; ``auto`` is what "auto" means on this machine."""
    return auto if setting == "auto" else bool(setting)


def configure_devices(config) -> DeviceSetup:
    """Apply the config's hardware settings and return the strategy to build and train the model under.

    Sets the global Keras dtype policy: call ``DeviceSetup.restore()`` when training is over.
    """
    import keras
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)  # share the card; do not grab it all
        except RuntimeError:
            pass  # already initialised (a second run in one process): the earlier setting stands
    devices = tuple(accelerator_devices())
    mixed = _resolve(config.mixed_precision, bool(devices))  # auto: on with any GPU
    xla = _resolve(config.xla, len(devices) == 1)  # auto: one GPU only (see MULTI_DEVICE_XLA)
    if xla and len(devices) > 1:
        raise ConfigError(f"config xla: true cannot train on {len(devices)} GPUs ({MULTI_DEVICE_XLA}); "
                          "set xla: auto (off with several GPUs) or false, or use one GPU (CUDA_VISIBLE_DEVICES=0).")
    if len(devices) > 1 and config.slice_size < len(devices):
        what = f"batch_size {config.batch_size}"
        if config.accumulation_steps > 1:
            what += f" in slices of {config.slice_size} (micro_batch_size {config.micro_batch_size})"
        raise ConfigError(f"config {what} is split across {len(devices)} GPUs: each slice needs at least "
                          f"{len(devices)} photos, one per GPU (batch_size is the global batch).")
    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(MIXED_POLICY if mixed else FLOAT_POLICY)
    strategy = choose_strategy(devices)
    return DeviceSetup(
        devices=devices,
        mixed_precision=mixed,
        xla=xla,
        strategy=strategy,
        replicas=int(strategy.num_replicas_in_sync),
        previous_policy=previous,
    )
