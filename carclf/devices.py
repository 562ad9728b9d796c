"""Hardware setup for training: GPU discovery, memory growth, mixed precision, XLA, distribution strategy.

The same training code runs on a laptop CPU and on one or several GPUs; everything that differs lives
here. ``configure_devices`` must run before any model is built (mixed precision is a global Keras policy,
memory growth must be set before a GPU is first used).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Keras dtype policies: float16 compute on GPU roughly doubles throughput; float32 everywhere else.
MIXED_POLICY = "mixed_float16"
FLOAT_POLICY = "float32"


@dataclass(frozen=True)
class DeviceSetup:
    """What ``configure_devices`` decided, recorded in the run log and status."""

    gpus: tuple  # names of the visible GPUs
    mixed_precision: bool
    xla: bool
    strategy: Any  # tf.distribute.Strategy
    replicas: int

    def describe(self) -> str:
        where = f"{len(self.gpus)} GPU(s)" if self.gpus else "CPU"
        return (f"{where}, {self.replicas} replica(s), mixed precision {'on' if self.mixed_precision else 'off'}, "
                f"XLA {'on' if self.xla else 'off'}")


def gpu_info() -> list[dict]:
    """Visible GPUs as ``[{"name": ..., "device": ...}]`` (empty on CPU-only machines)."""
    import tensorflow as tf

    found = []
    for device in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(device)
        found.append({"device": device.name, "name": details.get("device_name", device.name)})
    return found


def _resolve(setting, has_gpu: bool) -> bool:
    """A config value ``"auto" | True | False``: auto means on exactly when a GPU is present."""
    return has_gpu if setting == "auto" else bool(setting)


def configure_devices(config) -> DeviceSetup:
    """Apply the config's hardware settings and return the strategy to build and train the model under."""
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)  # share the card; do not grab it all
        except RuntimeError:
            pass  # already initialised (a second run in one process): the earlier setting stands
    has_gpu = bool(gpus)
    mixed = _resolve(config.mixed_precision, has_gpu)
    keras.mixed_precision.set_global_policy(MIXED_POLICY if mixed else FLOAT_POLICY)
    xla = _resolve(config.xla, has_gpu)
    strategy = tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    return DeviceSetup(
        gpus=tuple(gpu.name for gpu in gpus),
        mixed_precision=mixed,
        xla=xla,
        strategy=strategy,
        replicas=int(strategy.num_replicas_in_sync),
    )
