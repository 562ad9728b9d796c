"""run_summary: a run's state in words and its one headline score, from status.json as the trainer writes it."""

from __future__ import annotations

import json

import pytest

from carclf import runs
from carclf.config import load_config
from carclf.run_summary import describe_state, duration_text, headline_score, headline_text, progress_fraction


def _status(tmp_path, **fields) -> dict:
    """A real run folder (carclf.runs) whose status.json gets ``fields`` the way the trainer records them."""
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    paths = runs.create_run(load_config(preset="quick", overrides={"data": str(data), "name": "s"}), tmp_path / "runs")
    runs.update_status(paths, **fields)
    return json.loads(paths.status.read_text(encoding="utf-8"))


def test_a_run_stopped_early_says_so_and_counts_as_done(tmp_path):
    # stage 1 stopped early: the trainer lowered epochs_total to 44, the plan was 50
    status = _status(tmp_path, state="finished", epoch=44, epochs_total=44, epochs_planned=50)
    assert describe_state(status) == "finished (stopped early at epoch 44 of 50)"
    assert progress_fraction(status) == 1.0


def test_a_run_that_used_every_epoch_is_just_finished(tmp_path):
    status = _status(tmp_path, state="finished", epoch=50, epochs_total=50, epochs_planned=50)
    assert describe_state(status) == "finished" and progress_fraction(status) == 1.0


@pytest.mark.parametrize("fields, words, progress", [
    ({"state": "running", "epoch": 2, "epoch_in_progress": 3, "epochs_total": 50}, "running: epoch 3 of 50", 0.04),
    ({"state": "stopped", "epoch": 10, "epochs_total": 40, "epochs_planned": 50}, "stopped after epoch 10 of 50", 0.25),
    ({"state": "queued"}, "queued", 0.0),
])
def test_unfinished_states(tmp_path, fields, words, progress):
    status = _status(tmp_path, **fields)
    assert describe_state(status) == words
    assert progress_fraction(status) == pytest.approx(progress)


def test_headline_is_the_exported_models_score_with_tta_when_measured():
    with_tta = {"val_accuracy": 0.412, "val_accuracy_tta": 0.471, "tta": 4, "val_loss": 1.3}
    assert headline_score(with_tta) == (0.471, True)
    assert headline_text(with_tta) == "val acc 47.1% (TTA)"
    assert headline_score({"val_accuracy": 0.412}) == (0.412, False)
    assert headline_text({"val_accuracy": 0.412}) == "val acc 41.2%"
    assert headline_score(None) == (None, False) and headline_text({}) == ""


@pytest.mark.parametrize("status, expected", [
    ({"started_at": "2026-11-30T10:00:00+00:00", "finished_at": "2026-11-30T11:08:05+00:00"}, "68m 05s"),
    ({"created_at": "2026-11-30T10:00:00+00:00", "heartbeat_at": "2026-11-30T10:00:42+00:00"}, "0m 42s"),
    ({"started_at": "2026-11-30T10:00:00+00:00", "finished_at": "2026-11-30T10:01:00"}, "1m 00s"),  # no zone: UTC
    ({"started_at": "2026-11-30T10:00:00+00:00", "finished_at": "yesterday"}, ""),
    ({"started_at": 5, "finished_at": [1]}, ""),
    ({"started_at": "2026-11-30T10:00:00+00:00", "finished_at": "2026-11-30T09:00:00+00:00"}, ""),
    ({}, ""),
])
def test_duration_of_a_run_even_from_a_damaged_status(status, expected):
    assert duration_text(status) == expected
