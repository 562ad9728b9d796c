"""carclf.ui.train_form: the Train form's values turn back into exactly the preset, edits and all."""

from __future__ import annotations

import dataclasses

import pytest

from carclf.config import PRESETS, load_config
from carclf.errors import ConfigError
from carclf.ui import train_form


def _table(rows):
    """Rows as a Streamlit data editor returns them (pandas floats; NaN in empty cells)."""
    import pandas as pd

    return pd.DataFrame(rows).to_dict("records")


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_untouched_form_values_give_the_preset(preset):
    base = load_config(preset=preset)
    values = train_form.form_values(base)
    values["stages"] = train_form.stages_from_rows(_table([dataclasses.asdict(s) for s in base.stages]))
    values["head"]["dense"] = train_form.dense_from_rows(
        _table([dataclasses.asdict(b) for b in base.head.dense] or [{"units": None}]))
    config = train_form.build_config(preset, values, data="d", name="n", models_dir="m")
    assert train_form.config_differences(config, base) == {}
    assert train_form.img_size_choices(base)[0] == 0 and base.img_size in train_form.img_size_choices(base)


def test_added_rows_take_defaults_and_blank_rows_are_dropped():
    stages = train_form.stages_from_rows(_table([
        {"epochs": 2, "learning_rate": 1e-3, "unfreeze": "all", "patience": 3},
        {"epochs": None, "learning_rate": None, "unfreeze": None, "patience": None},
        {"epochs": 4, "learning_rate": None, "unfreeze": "12 layers", "patience": None},
    ]))
    defaults = {"cached_views": 0, "lr_schedule": "plateau", "warmup_epochs": 0.0, "img_size": 0}
    assert stages == [{"epochs": 2, "learning_rate": 1e-3, "unfreeze": "all", "patience": 3, **defaults},
                      {"epochs": 4, "learning_rate": 1e-3, "unfreeze": "12 layers", "patience": 3, **defaults}]
    assert all(type(stages[0][key]) is type(value) for key, value in defaults.items())
    dense = train_form.dense_from_rows(_table([{"units": 32, "activation": None, "batchnorm": None, "dropout": None}]))
    assert dense == [{"units": 32, "activation": "relu", "batchnorm": False, "dropout": 0.0}]


def test_a_bad_unfreeze_in_the_table_is_refused_with_the_accepted_forms():
    base = load_config(preset="quick")
    values = train_form.form_values(base)
    values["stages"][1]["unfreeze"] = "half"
    with pytest.raises(ConfigError, match=r'"none".*"all".*"30%".*"12 layers"'):
        train_form.build_config("quick", values, data="d", name="n", models_dir="m")


def test_native_image_size_is_labelled_with_its_pixels():
    assert train_form.img_size_label(0, "efficientnet_lite2") == "native (260 px)"
    assert train_form.img_size_label(224, "efficientnet_lite2") == "224 px"
