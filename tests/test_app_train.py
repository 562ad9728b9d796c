"""The Train page: the data folder is validated before launch, Launch starts a real background run whose
config follows the form, and the runs table, curves, log and stop button follow the run on disk."""

from __future__ import annotations

import time

import pytest
import yaml

from app_helpers import app_env, copy_photos, open_page, texts  # noqa: F401  (app_env is a fixture)

BRANDS = "cars/vidhyagupta_car_brands_5"
# Seconds a 2-epoch run on 6 photos at 64 px may take on 2 shared cores (TensorFlow start included).
RUN_DEADLINE_S = 240


@pytest.fixture
def data(shared_data, tmp_path):
    """Two classes of three real photos each."""
    layout = {brand: [str(p.relative_to(shared_data)) for p in sorted((shared_data / BRANDS / brand).iterdir())[:3]]
              for brand in ("audi", "bmw")}
    return copy_photos(shared_data, layout, tmp_path / "brands")


def _runs_table(at):
    (table,) = [df.value for df in at.dataframe if "state" in df.value.columns]
    return table


def _launch(at, folder, total_epochs: int):
    at.text_input(key="train_data").set_value(str(folder)).run()
    assert "2 classes, 6 photos (audi: 3, bmw: 3)" in at.success[0].value
    at.text_input(key="train_quick_name").set_value("ui test")
    at.selectbox(key="train_quick_img_size").set_value(64)
    at.selectbox(key="train_quick_aug").set_value("none")
    at.number_input(key="train_quick_total_epochs").set_value(total_epochs)
    at.button[[b.label for b in at.button].index("Launch training")].click().run()
    assert not at.exception and not at.error, texts(at.error)
    return at


def test_bad_data_folder_blocks_launch(app_env, tmp_path):
    at = open_page("train.py")
    at.text_input(key="train_data").set_value(str(tmp_path / "missing")).run()
    assert "not a folder" in at.error[0].value
    at.button[[b.label for b in at.button].index("Launch training")].click().run()
    assert not at.exception
    assert any("valid training data folder" in e for e in texts(at.error))
    assert not list(app_env["runs"].iterdir())


@pytest.mark.slow
def test_launch_runs_in_background_and_shows_curves(app_env, data):
    at = _launch(open_page("train.py"), data, total_epochs=2)
    (run_dir,) = list(app_env["runs"].iterdir())
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["img_size"] == 64 and config["augmentation"] == "none" and config["data"] == str(data)
    assert [s["epochs"] for s in config["stages"]] == [1, 1]
    assert config["models_dir"] == str(app_env["models"])
    assert run_dir.name in at.success[-1].value
    deadline = time.monotonic() + RUN_DEADLINE_S
    while time.monotonic() < deadline:
        at.run()
        table = _runs_table(at)
        if table["state"][0] not in ("queued", "running"):
            break
        time.sleep(3)
    assert not at.exception
    assert table["state"][0] == "finished", at.code[0].value
    assert table["progress"][0] == 1.0 and 0.0 <= table["best val acc"][0] <= 1.0
    chart = at.get("plotly_chart")
    assert chart, "the training curves appear once epochs are done"
    assert any("Model bundle" in s for s in texts(at.success))
    assert any((app_env["models"]).iterdir())  # the bundle landed in the app's models folder
    assert "epoch" in at.code[-1].value.lower()  # the log tail


@pytest.mark.slow
def test_stop_button_stops_a_run(app_env, data):
    at = _launch(open_page("train.py"), data, total_epochs=200)
    stop = at.button(key="train_stop")
    assert not stop.disabled and at.button(key="train_resume").disabled
    stop.click().run()
    assert not at.exception, at.exception
    state = _runs_table(at)["state"][0]
    assert state in ("stopped", "interrupted"), state
    assert not at.button(key="train_resume").disabled


def test_compare_tab_lists_config_differences(app_env, data):
    from carclf.config import load_config
    from carclf.runs import create_run

    for size in (64, 96):  # two run folders written by carclf.runs itself (not launched)
        create_run(load_config(preset="quick", overrides={"data": str(data), "img_size": size, "name": f"px{size}"}),
                   app_env["runs"])
    at = open_page("train.py")
    assert len(at.multiselect(key="train_compare").value) == 2
    (diff,) = [df.value for df in at.dataframe if "img_size" in df.value.index]
    assert sorted(diff.loc["img_size"]) == ["64", "96"]
    assert "backbone" not in diff.index  # equal values are left out
    assert len(_runs_table(at)) == 2
