"""carclf.atomic: a reader sees the old file or the new one; a failed write leaves the old one and no litter."""

from __future__ import annotations

import json

import keras
import pytest

from carclf.atomic import atomic_output, atomic_write_json, atomic_write_text


def test_text_and_json_replace_the_file_and_leave_no_temporary(tmp_path):
    path = tmp_path / "deep" / "status.json"
    atomic_write_json(path, {"state": "running"})
    atomic_write_json(path, {"state": "finished", "name": "caf\u00e9"})
    assert json.loads(path.read_text(encoding="utf-8")) == {"state": "finished", "name": "caf\u00e9"}
    assert [p.name for p in path.parent.iterdir()] == ["status.json"]
    plain = tmp_path / "plain.json"
    plain.write_text("{}")
    assert path.stat().st_mode == plain.stat().st_mode  # readable like any file, not owner-only
    # a file name that is not UTF-8 (a surrogate escape) is written escaped, never an exception
    atomic_write_text(tmp_path / "names.csv", "photo_\udcff.jpg\n")
    assert (tmp_path / "names.csv").read_text(encoding="utf-8") == "photo_\\udcff.jpg\n"


def test_a_failed_write_keeps_the_old_content(tmp_path):
    path = tmp_path / "report.json"
    path.write_text("old", encoding="utf-8")
    with pytest.raises(RuntimeError):
        with atomic_output(path) as temp:
            temp.write_text("half", encoding="utf-8")
            raise RuntimeError("disk full")
    assert path.read_text(encoding="utf-8") == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_keras_writes_weights_through_it(tmp_path):
    """Keras insists on the .weights.h5 suffix: the temporary path keeps it."""
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    target = tmp_path / "stage_end.weights.h5"
    with atomic_output(target) as temp:
        assert temp.name.endswith(".weights.h5") and temp.parent == tmp_path
        model.save_weights(temp)
    other = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    other.load_weights(target)
    assert all((a == b).all() for a, b in zip(model.get_weights(), other.get_weights()))
    assert [p.name for p in tmp_path.iterdir()] == ["stage_end.weights.h5"]
