"""Widgets generated from carclf.augment's TRANSFORMS registry: one widget per parameter spec, no
hand-written slider ranges. A parameter goes into the config only when it differs from the library default
(or the starting config set it), so saved configs stay short and 1:1 with albumentations."""

from __future__ import annotations

from typing import Any, Callable

import streamlit as st

# Slider steps: fine enough for 0..1 probabilities, coarse enough to drag.
FLOAT_STEP = 0.01
PROBABILITY_STEP = 0.05


def _pair(value: Any, low: float) -> tuple:
    """A range parameter's value as a (low, high) pair: a scalar v means (-v, v) around 0, else (low, v)."""
    if isinstance(value, (list, tuple)):
        return tuple(value)
    if value is None:
        return (0.0, 0.0) if low < 0 else (low, low)
    return (-abs(value), abs(value)) if low < 0 else (low, value)


def _clip(value, low, high):
    return min(max(value, low), high)


def _range_widget(spec, value, key: str, label: str):
    integer = spec.integer
    cast: Callable = int if integer else float
    low, high = cast(spec.ui_low), cast(spec.ui_high)
    pair = _pair(value, low)
    start = (cast(_clip(pair[0], low, high)), cast(_clip(pair[1], low, high)))
    step = 1 if integer else FLOAT_STEP * (10 if high - low > 20 else 1)
    return st.slider(label, low, high, start, step=step, key=key, help=spec.help or None)


def _number_widget(spec, value, key: str, label: str):
    cast: Callable = int if spec.kind == "int" else float
    low, high = cast(spec.ui_low), cast(spec.ui_high)
    start = cast(_clip(value if value is not None else low, low, high))
    step = 1 if cast is int else FLOAT_STEP * (10 if high - low > 20 else 1)
    return st.slider(label, low, high, start, step=step, key=key, help=spec.help or None)


def _choice_widget(spec, value, key: str, label: str):
    choices = list(spec.choices)
    index = choices.index(value) if value in choices else 0
    return st.selectbox(label, choices, index=index, key=key, help=spec.help or None)


def _bool_widget(spec, value, key: str, label: str):
    return st.checkbox(label, value=bool(value), key=key, help=spec.help or None)


# Parameter kind (carclf.augment_registry.KINDS) -> widget builder; "other" has no widget (kept as is).
WIDGETS: dict[str, Callable] = {
    "range": _range_widget,
    "float": _number_widget,
    "int": _number_widget,
    "choice": _choice_widget,
    "bool": _bool_widget,
}


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def transform_ui(spec, entry, key: str) -> dict:
    """Widgets for one transform (probability + every parameter with a widget); returns a config entry."""
    start_params = dict(entry.params) if entry is not None else {}
    p = st.slider("probability p", 0.0, 1.0, float(entry.p if entry is not None else spec.default_p),
                  PROBABILITY_STEP, key=f"{key}_p")
    params: dict[str, Any] = {}
    for param in spec.params:
        widget = WIDGETS.get(param.kind)
        if widget is None:
            if param.name in start_params:
                params[param.name] = start_params[param.name]
            continue
        start = start_params.get(param.name, param.default)
        value = widget(param, start, f"{key}_{param.name}", param.name)
        default = _pair(param.default, param.ui_low) if param.kind == "range" else param.default
        if param.name in start_params or not _same(value, default):
            params[param.name] = list(value) if isinstance(value, tuple) else value
    return {"name": spec.name, "p": p, "params": params}
