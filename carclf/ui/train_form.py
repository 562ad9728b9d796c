"""The Train page's form as plain data: preset -> form values -> overrides -> the run's TrainConfig.

Kept free of Streamlit so that "an untouched form launches exactly the preset" is a tested property:
every form value is taken from the preset in its own notation (native image size 0, unfreeze strings,
every head field), and the overrides are built back from the same values.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from carclf.config import DenseBlock, StageConfig, TrainConfig, load_config, with_total_epochs

# Image sizes offered besides the preset's own and native (0).
IMG_SIZES = (64, 96, 128, 160, 192, 224, 240, 260, 299, 320, 384)
# Unfreeze choices offered in the stage table's help (any value parse_unfreeze accepts is taken).
UNFREEZE_EXAMPLES = ("none", "all", "30%", "12 layers")
# Keys of the form that become top-level config overrides.
FORM_KEYS = ("backbone", "weights", "img_size", "batch_size", "micro_batch_size", "augmentation", "stages", "head")


def native_size(backbone: str) -> int:
    """The backbone's own input side in pixels (what img_size 0 means)."""
    from carclf.backbones import get_backbone

    return int(get_backbone(backbone).input_size)


def img_size_choices(config: TrainConfig) -> list[int]:
    """Image sizes to offer: 0 (native) first, then the usual sizes and the preset's own."""
    return [0] + sorted(set(IMG_SIZES) | {config.img_size} - {0})


def img_size_label(size: int, backbone: str) -> str:
    """'native (260 px)' for 0, else '224 px'."""
    return f"native ({native_size(backbone)} px)" if size == 0 else f"{size} px"


def form_values(config: TrainConfig) -> dict[str, Any]:
    """The form's initial values for a preset: plain data in the config's own notation."""
    data = config.to_dict()
    return {key: data[key] for key in FORM_KEYS}


def stages_from_rows(rows) -> list[dict]:
    """The stage table's rows (dicts; blank rows dropped) as config stages: every StageConfig field, each
    in its own type (unfreeze and lr_schedule kept as written); an empty cell takes the field's default."""
    default = StageConfig()
    stages = []
    for row in rows:
        row = {key: value for key, value in row.items() if not _blank(value)}
        if not row:
            continue
        stage = {}
        for field in dataclasses.fields(StageConfig):
            value = row.get(field.name, getattr(default, field.name))
            kind = type(getattr(default, field.name))
            stage[field.name] = _whole(value) if kind is int else float(value) if kind is float else str(value).strip()
        stages.append(stage)
    return stages


def dense_from_rows(rows) -> list[dict]:
    """The head's hidden-block table rows as DenseBlock dicts (every field kept; blank rows dropped)."""
    default = DenseBlock()
    blocks = []
    for row in rows:
        row = {key: value for key, value in row.items() if not _blank(value)}
        if "units" not in row:
            continue
        blocks.append({"units": _whole(row["units"]), "activation": str(row.get("activation", default.activation)),
                       "batchnorm": bool(row.get("batchnorm", default.batchnorm)),
                       "dropout": float(row.get("dropout", default.dropout))})
    return blocks


def build_config(preset: str, values: Mapping[str, Any], *, data: str, name: str, models_dir: str,
                 total_epochs: int = 0) -> TrainConfig:
    """The run's config: the preset with the form's ``values`` (keys of FORM_KEYS) applied, validated.

    ``total_epochs`` > 0 spreads that many epochs over the stages. Untouched values give the preset itself.
    """
    overrides = {key: values[key] for key in FORM_KEYS if key in values}
    config = load_config(preset=preset, overrides={**overrides, "data": data, "name": name, "models_dir": models_dir})
    if total_epochs:
        config = with_total_epochs(config, int(total_epochs))
    return config


def config_differences(a: TrainConfig, b: TrainConfig, ignore=("data", "name", "models_dir")) -> dict:
    """Field -> (a, b) for the top-level fields that differ (used by tests and the page's summary)."""
    return {f.name: (getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(TrainConfig)
            if f.name not in ignore and getattr(a, f.name) != getattr(b, f.name)}


def _blank(value) -> bool:
    """An empty data-editor cell: None, NaN or ''."""
    return value is None or value != value or (isinstance(value, str) and not value.strip())


def _whole(value) -> int:
    return int(round(float(value)))
