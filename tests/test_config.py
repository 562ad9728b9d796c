"""TrainConfig: presets, YAML round trip, layered overrides, and rejection of bad keys, types and values."""

from __future__ import annotations

import pytest
import yaml

from carclf.config import (
    PRESETS,
    HeadConfig,
    StageConfig,
    TrainConfig,
    config_from_dict,
    load_config,
    unfreeze_count,
    with_total_epochs,
)
from carclf.errors import ConfigError


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_loads_and_round_trips(tmp_path, name):
    config = load_config(preset=name)
    assert config.stages[0].unfreeze == "none", "stage 1 must train the head only"
    assert len(config.stages) >= 2 or name == "fast", "a preset fine-tunes after the head stage (fast: head only)"
    saved = config.save(tmp_path / "config.yaml")
    assert load_config(saved) == config


def test_quick_and_full_presets_differ_as_documented():
    quick, full = load_config(preset="quick"), load_config(preset="full")
    assert len(full.stages) > len(quick.stages)  # full unfreezes progressively; quick's epochs are caps on tiny data
    assert full.batch_size > quick.batch_size
    assert quick.backbone == "efficientnet_lite0"


def test_fast_preset_is_a_cheaper_plan_than_quick():
    """fast: smaller images, fewer cached views, no backbone epochs; both start on cached features."""
    quick, fast = load_config(preset="quick"), load_config(preset="fast")
    assert fast.img_size < quick.img_size
    assert 1 <= fast.stages[0].cached_views < quick.stages[0].cached_views
    assert all(stage.unfreeze == "none" and stage.cached_views for stage in fast.stages)
    assert any(stage.unfreeze != "none" for stage in quick.stages)


def test_default_is_the_quick_preset():
    assert load_config() == load_config(preset="quick")


def test_user_file_overrides_preset_and_merges_sections(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("img_size: 96\nhead:\n  dropout: 0.5\n", encoding="utf-8")
    quick = load_config(preset="quick")
    config = load_config(path, preset="quick", overrides={"batch_size": 4, "name": None})
    assert (config.img_size, config.batch_size, config.head.dropout) == (96, 4, 0.5)
    assert config.head.pooling == quick.head.pooling, "a partial head section keeps the preset's other keys"
    assert config.name == quick.name, "None overrides are ignored"
    assert config.stages == quick.stages


def test_nested_sections_become_dataclasses():
    config = config_from_dict({
        "head": {"dense": [{"units": 64, "activation": "gelu", "dropout": 0.1}]},
        "stages": [{"epochs": 2, "learning_rate": 0.01}, {"epochs": 1, "learning_rate": 1e-4, "unfreeze": 0.5}],
    })
    assert isinstance(config.head, HeadConfig) and config.head.dense[0].units == 64
    assert all(isinstance(stage, StageConfig) for stage in config.stages)
    assert config.stages[1].unfreeze == "50%" and config.stages[0].unfreeze == "none"


@pytest.mark.parametrize("data, key", [
    ({"epochz": 3}, "epochz"),
    ({"head": {"units": 3}}, "head.units"),
    ({"stages": [{"epochs": 1, "lr": 0.1}]}, "stages[0].lr"),
    ({"head": {"dense": [{"width": 4}]}}, "head.dense[0].width"),
])
def test_unknown_keys_are_rejected_by_name(data, key):
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        config_from_dict(data)


@pytest.mark.parametrize("data, key", [
    ({"batch_size": "16"}, "batch_size"),
    ({"batch_size": 16.5}, "batch_size"),
    ({"batch_size": True}, "batch_size"),
    ({"label_smoothing": "0.1"}, "label_smoothing"),
    ({"early_stopping": "yes"}, "early_stopping"),
    ({"weights": "random"}, "weights"),
    ({"mixed_precision": "yes"}, "mixed_precision"),
    ({"head": {"pooling": "mean"}}, "head.pooling"),
    ({"stages": {"epochs": 3}}, "stages"),
    ({"stages": [{"unfreeze": "half"}]}, "unfreeze"),
    ({"stages": [{"unfreeze": ["all"]}]}, "unfreeze"),
    ({"class_display_names": ["a", "b"]}, "class_display_names"),
])
def test_wrong_types_are_rejected(data, key):
    with pytest.raises(ConfigError, match=key):
        config_from_dict(data)


@pytest.mark.parametrize("data, key", [
    ({"val_fraction": 1.5}, "val_fraction"),
    ({"batch_size": 0}, "batch_size"),
    ({"img_size": 16}, "img_size"),
    ({"stages": []}, "stages"),
    ({"stages": [{"epochs": 0}]}, r"stages\[0\].epochs"),
    ({"stages": [{"unfreeze": 1.5}]}, "unfreeze"),
    ({"stages": [{"unfreeze": -2}]}, "unfreeze"),
    ({"stages": [{"learning_rate": 0}]}, "learning_rate"),
    ({"optimizer": "adagrad"}, "optimizer"),
    ({"head": {"dense": [{"activation": "softsign"}]}}, "activation"),
    ({"head": {"dropout": 1.0}}, "head.dropout"),
    ({"label_smoothing": 1.0}, "label_smoothing"),
])
def test_out_of_range_values_are_rejected(data, key):
    with pytest.raises(ConfigError, match=key):
        config_from_dict(data)


def test_bool_settings_accept_auto_and_booleans():
    assert config_from_dict({"mixed_precision": True, "xla": "auto"}).mixed_precision is True
    assert config_from_dict({"mixed_precision": False}).mixed_precision is False


def test_bad_files_raise_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("head: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(listing)
    with pytest.raises(ConfigError, match="unknown training preset"):
        load_config(preset="huge")


def test_saved_yaml_is_plain_and_complete(tmp_path):
    config = load_config(preset="full", overrides={"data": "/data/cars", "class_display_names": {"0": "Lada Priora"}})
    data = yaml.safe_load(config.save(tmp_path / "c.yaml").read_text(encoding="utf-8"))
    assert set(data) == {field for field in TrainConfig.__dataclass_fields__}
    assert data["data"] == "/data/cars" and data["class_display_names"] == {"0": "Lada Priora"}


@pytest.mark.parametrize("total", [2, 5, 16, 40])
def test_with_total_epochs_keeps_every_stage_and_the_total(total):
    config = with_total_epochs(load_config(preset="quick"), total)
    assert sum(stage.epochs for stage in config.stages) == total
    assert all(stage.epochs >= 1 for stage in config.stages)


def test_with_total_epochs_rejects_fewer_epochs_than_stages():
    with pytest.raises(ConfigError, match="epochs"):
        with_total_epochs(load_config(preset="full"), 2)


@pytest.mark.parametrize("batch, micro, steps", [(16, 8, 2), (12, 8, 2), (32, 8, 4), (4, 8, 1), (16, 0, 1), (13, 8, 13)])
def test_micro_batch_size_splits_each_batch_into_the_fewest_equal_slices(batch, micro, steps):
    config = load_config(overrides={"batch_size": batch, "micro_batch_size": micro})
    assert config.accumulation_steps == steps
    assert batch % steps == 0 and (micro == 0 or batch // steps <= micro)


def test_negative_micro_batch_size_is_refused():
    with pytest.raises(ConfigError, match="micro_batch_size"):
        load_config(overrides={"micro_batch_size": -1})


@pytest.mark.parametrize("old, new", [
    (0, "none"), (1, "1 layer"), (12, "12 layers"), (0.3, "30%"), (0.25, "25%"), (1.0, "all"),
    ("none", "none"), ("all", "all"), ("ALL", "all"), ("30%", "30%"), ("30 %", "30%"), ("12.5%", "12.5%"),
    ("12 layers", "12 layers"), ("1 layer", "1 layer"), ("0 layers", "none"),
])
def test_unfreeze_old_and_new_forms_load_as_the_new_notation(tmp_path, old, new):
    config = config_from_dict({"stages": [{"epochs": 1, "unfreeze": old}]})
    assert config.stages[0].unfreeze == new
    saved = yaml.safe_load(config.save(tmp_path / "config.yaml").read_text(encoding="utf-8"))
    assert saved["stages"][0]["unfreeze"] == new  # config.yaml always holds the new notation
    assert load_config(tmp_path / "config.yaml") == config


def test_an_old_style_config_file_keeps_its_meaning(tmp_path):
    """1 was the last layer and 1.0 the whole backbone: both survive, now written so they cannot be confused."""
    path = tmp_path / "old.yaml"
    path.write_text("stages:\n  - {epochs: 1, unfreeze: 0}\n  - {epochs: 1, unfreeze: 1}\n"
                    "  - {epochs: 1, unfreeze: 1.0}\n  - {epochs: 1, unfreeze: 0.3}\n", encoding="utf-8")
    assert [stage.unfreeze for stage in load_config(path).stages] == ["none", "1 layer", "all", "30%"]


@pytest.mark.parametrize("bad", ["half", "0%", "150%", "-3 layers", "layers", "", 1.5, -1, True, None])
def test_bad_unfreeze_values_are_refused_with_the_accepted_forms(bad):
    with pytest.raises(ConfigError, match=r'stages\[0\]\.unfreeze must be "none".*"all".*"30%".*"12 layers"'):
        config_from_dict({"stages": [{"epochs": 1, "unfreeze": bad}]})


@pytest.mark.parametrize("unfreeze, layers, count", [
    ("none", 50, 0), ("all", 50, 50), ("30%", 50, 15), ("1%", 50, 1), ("12 layers", 50, 12), ("80 layers", 50, 50),
])
def test_unfreeze_count(unfreeze, layers, count):
    assert unfreeze_count(unfreeze, layers) == count
