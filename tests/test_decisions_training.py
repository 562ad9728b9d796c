"""Training and evaluation honour the decisions file through scan_dataset (a tiny real run)."""

from __future__ import annotations

import shutil

import pytest

from carclf import runs
from carclf.decisions import set_decision
from carclf.evaluation import evaluate
from carclf.train import prepare_data, train

from train_helpers import make_pattern_dataset, tiny_config

PER_CLASS = 8


@pytest.mark.slow
def test_training_and_evaluation_skip_exclusions_and_apply_relabels(shared_data, tmp_path):
    data = make_pattern_dataset(tmp_path / "data", per_class=PER_CLASS)
    # Three real car photos filed among the stripes (excluded), three vertical photos filed as horizontal
    # (relabelled back): on disk "horizontal" holds 14 photos, for training it holds 8.
    cars = sorted((shared_data / "cars/manzhura_ru_5models/qashqai").iterdir())[:3]
    for photo in cars:
        shutil.copy(photo, data / "horizontal" / photo.name)
        set_decision(data, data / "horizontal" / photo.name, "exclude", reason="not_a_car")
    for photo in sorted((data / "vertical").iterdir())[:3]:
        moved = data / "horizontal" / photo.name
        shutil.move(photo, moved)
        set_decision(data, moved, "relabel", "vertical", reason="suspected_label")

    config = tiny_config(data, tmp_path / "models", name="decided",
                         stages=[{"epochs": 1, "learning_rate": 1e-3, "unfreeze": 0}])
    split = prepare_data(config)
    used = {item.path.name: split.info.classes[item.label] for item in split.train + split.val}
    assert len(used) == 3 * PER_CLASS
    assert not {photo.name for photo in cars} & set(used)
    assert sum(1 for name, label in used.items() if name.startswith("vertical")) == PER_CLASS
    assert all(label == name.split("_")[0] for name, label in used.items())  # every photo under its true class

    paths = runs.create_run(config, tmp_path / "runs")
    status = train(config, paths.root, verbose=0)
    assert status["state"] == "finished", status.get("error")
    summary = runs.read_status(paths.run_id, tmp_path / "runs")["data_summary"]
    assert (summary["excluded"], summary["relabelled"], summary["num_images"]) == (3, 3, 3 * PER_CLASS)
    assert summary["counts"] == {"checker": PER_CLASS, "horizontal": PER_CLASS, "vertical": PER_CLASS}

    report = evaluate(status["bundle"], data, tta=1)
    assert report.n_images == 3 * PER_CLASS
