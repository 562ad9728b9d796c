"""Optimizer registry: config name -> how to build the Keras optimizer for one training stage.

A fresh optimizer is built for every stage (its learning rate is the stage's), because Keras must be
recompiled after trainable flags change and an optimizer's slots belong to one set of variables.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from carclf.errors import ConfigError


@dataclass(frozen=True)
class OptimizerSpec:
    """How to build one kind of optimizer from a learning rate and the config's weight decay."""

    name: str
    description: str
    build: Callable  # (learning_rate, weight_decay, **keras_options) -> keras.optimizers.Optimizer


def _adam(learning_rate: float, weight_decay: float, **options):
    import keras

    return keras.optimizers.Adam(learning_rate=learning_rate, **options)


def _adamw(learning_rate: float, weight_decay: float, **options):
    import keras

    return keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=weight_decay, **options)


def _sgd(learning_rate: float, weight_decay: float, **options):
    import keras

    # Nesterov momentum 0.9: the usual fine-tuning choice when SGD is asked for.
    return keras.optimizers.SGD(learning_rate=learning_rate, momentum=0.9, nesterov=True,
                                weight_decay=weight_decay or None, **options)


OPTIMIZERS = {
    spec.name: spec
    for spec in (
        OptimizerSpec("adam", "Adam, no weight decay (the keras.io transfer-learning default)", _adam),
        OptimizerSpec("adamw", "Adam with decoupled weight decay (config weight_decay)", _adamw),
        OptimizerSpec("sgd", "SGD, Nesterov momentum 0.9, optional weight decay", _sgd),
    )
}


def build_optimizer(name: str, learning_rate: float, weight_decay: float = 0.0, accumulation_steps: int = 1):
    """A new Keras optimizer of kind ``name``; unknown names raise ``ConfigError`` listing the valid ones.

    ``accumulation_steps`` > 1 makes it apply the average gradient of that many batches at once (Keras'
    ``gradient_accumulation_steps``): micro-batches of 8 with 2 steps update like batches of 16, exactly
    so without dropout and ragged last slices.
    """
    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {name!r}: choose one of {', '.join(OPTIMIZERS)}.")
    options = {"gradient_accumulation_steps": int(accumulation_steps)} if accumulation_steps > 1 else {}
    return OPTIMIZERS[name].build(learning_rate, weight_decay, **options)
