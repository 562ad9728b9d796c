"""The Train page imports a run archive: the run shows read-only with its curves in Runs and Compare;
in public mode only the owner may upload one, and a hostile one is refused in one line."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from app_helpers import app_env, open_page, texts  # noqa: F401  (app_env is a fixture)
from carclf import runs
from run_archive_helpers import EPOCHS, packed_run

PASSWORD = "correct horse battery staple"
UPLOAD_KEY = "run_archive_upload"


def _upload(at, name: str, data: bytes):
    at.file_uploader(key=UPLOAD_KEY).set_value((name, data, "application/zip")).run()
    assert not at.exception, at.exception
    return at


def _traces(at) -> dict:
    """Every plotly trace on the page: name -> y values (plotly may encode them as base64 typed arrays)."""
    found = {}
    for chart in at.get("plotly_chart"):
        for trace in json.loads(chart.proto.spec)["data"]:
            y = trace.get("y")
            if isinstance(y, dict) and "bdata" in y:
                y = np.frombuffer(base64.b64decode(y["bdata"]), dtype=y["dtype"])
            found[trace.get("name")] = [float(value) for value in y]
    return found


def test_an_uploaded_run_archive_shows_read_only_with_its_curves(app_env, tmp_path):
    run_id, archive = packed_run(tmp_path / "kaggle")
    local = runs.create_run(_local_config(), app_env["runs"])
    at = _upload(open_page("train.py"), "kaggle-run.zip", archive.read_bytes())
    assert any(f"Run {run_id} imported" in text for text in texts(at.success)), texts(at.success)
    assert at.selectbox(key="train_run").value == run_id
    table = next(df.value for df in at.dataframe if "status" in df.value.columns)
    row = table[table["run"] == run_id].iloc[0]
    assert row["status"] == "finished · imported" and row["model val acc"] == pytest.approx(0.83)
    assert at.button(key="train_resume").disabled and at.button(key="train_stop").disabled
    assert any("Trained elsewhere, imported from kaggle-run.zip" in text for text in texts(at.info)), texts(at.info)
    assert not any("/kaggle/" in text for text in texts(at.success) + texts(at.info)), "no foreign path shown"
    traces = _traces(at)
    assert traces["val_accuracy"] == pytest.approx([epoch[5] for epoch in EPOCHS]), "its curves"
    assert traces["loss"] == pytest.approx([epoch[2] for epoch in EPOCHS])

    at.multiselect(key="train_compare").set_value([run_id, local.run_id]).run()
    assert not at.exception, at.exception
    assert _traces(at)[run_id] == pytest.approx([epoch[5] for epoch in EPOCHS]), "in Compare too"
    at.run()  # the file is still in the uploader: imported once, not on every rerun
    assert not at.exception and not at.error, texts(at.error)
    assert sorted(r["run_id"] for r in runs.list_runs(app_env["runs"])) == sorted([run_id, local.run_id])


def _local_config():
    from carclf.config import load_config

    return load_config(preset="quick", overrides={"name": "here", "data": "/data"})


def test_public_mode_only_the_owner_imports_and_hostile_archives_leave_nothing(app_env, tmp_path, monkeypatch):
    monkeypatch.setenv("CARCLF_MODE", "public")
    monkeypatch.setenv("CARCLF_OWNER_PASSWORD", PASSWORD)
    monkeypatch.setenv("CARCLF_DATASETS_DIR", str(tmp_path / "datasets"))
    run_id, archive = packed_run(tmp_path / "kaggle")
    at = open_page("train.py")
    assert UPLOAD_KEY not in [u.key for u in at.get("file_uploader")], "a visitor cannot upload a run"
    at.text_input(key="owner_password").input(PASSWORD)
    next(b for b in at.button if b.label == "Log in").click().run()
    hostile = archive.read_bytes().replace(b"history.csv", b"../tory.csv")
    _upload(at, "evil.zip", hostile)
    assert len(at.error) == 1 and "outside the archive" in at.error[0].value, texts(at.error)
    assert list(app_env["runs"].iterdir()) == []
    _upload(at, "good.zip", archive.read_bytes())
    assert [r["run_id"] for r in runs.list_runs(app_env["runs"])] == [run_id]
