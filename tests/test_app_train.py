"""The Train page: the data folder is validated before launch, Launch starts a real background run whose
config follows the form, and the runs table, curves, log and stop button follow the run on disk."""

from __future__ import annotations

import dataclasses
import os
import time

import pytest
import yaml

from app_helpers import app_env, copy_photos, open_page, texts  # noqa: F401  (app_env is a fixture)

BRANDS = "cars/vidhyagupta_car_brands_5"
# Seconds a 2-epoch run on 6 photos at 64 px may take on 2 shared cores (TensorFlow start included).
RUN_DEADLINE_S = 240
# A memory limit no test config comes near (CARCLF_MEMORY_LIMIT): the fit leaves the launched config alone.
ROOMY_LIMIT = "500G"


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
    at.selectbox(key="train_preset").set_value("quick").run()  # two stages: the curves span a fine-tuning
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
    assert table["progress"][0] == 1.0 and table["status"][0].startswith("finished")
    assert 0.0 <= table["model val acc"][0] <= 1.0 and 0.0 <= table["best epoch val acc"][0] <= 1.0
    # the run launched here finished: its bundle is now the sidebar's model, and the page says so
    bundle = yaml.safe_load((run_dir / "status.json").read_text())["bundle"]
    assert at.session_state["carclf_model"] == bundle
    assert at.selectbox(key="carclf_model_picker").value == bundle
    assert any("now selected in the sidebar" in s for s in texts(at.success)), texts(at.success)
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


def test_damaged_run_files_cost_only_what_they_hold(app_env, data):
    """A hand-edited status.json (text pid, list metrics, a time without its zone) and a garbled history.csv: the Runs tab lists the run
    and shows its log, the curves give way to one red line."""
    from carclf import runs
    from carclf.config import load_config

    paths = runs.create_run(load_config(preset="quick", overrides={"data": str(data), "name": "edited"}),
                            app_env["runs"])
    runs.update_status(paths, state=runs.RUNNING, pid="abc", val_metrics=[1, 2], epoch="3",
                       started_at="2026-12-04T17:00:00+00:00", heartbeat_at="2026-12-04T17:25:56")  # no zone
    paths.history.write_bytes(b'\xfb"epoch,stage\n1,"unterminated')
    paths.log.write_text("epoch 1 done\n")
    at = open_page("train.py")
    assert not at.exception
    assert len(_runs_table(at)) == 1
    assert any("history.csv is damaged" in e for e in texts(at.error)), texts(at.error)
    assert any("epoch 1 done" in c.value for c in at.code)


def _launched_config(at, runs_dir, preset: str, folder):
    """Click Launch, stop the background run at once (config.yaml is written before training) and read its config."""
    from carclf import runs
    from carclf.config import load_config

    at.button[[b.label for b in at.button].index("Launch training")].click().run()
    assert not at.exception and not at.error, texts(at.error)
    (run_dir,) = list(runs_dir.iterdir())
    status = runs.read_status(run_dir.name, runs_dir)
    if runs.is_active(status):
        runs.stop_run(run_dir.name, runs_dir, timeout=120)
    pid = status.get("pid")
    if pid:
        try:
            os.waitpid(int(pid), 0)  # reap the child so no zombie is left behind
        except ChildProcessError:
            pass
    assert not runs._pid_alive(pid), "the launched training process is still running"
    return load_config(run_dir / "config.yaml")


def _open_form(folder, preset: str):
    at = open_page("train.py")
    at.text_input(key="train_data").set_value(str(folder)).run()
    if at.selectbox(key="train_preset").value != preset:
        at.selectbox(key="train_preset").set_value(preset).run()
    assert not at.exception
    return at


def test_a_small_dataset_on_a_cpu_suggests_fast_and_says_what_each_preset_buys(app_env, data):
    from carclf import preset_guide

    at = open_page("train.py")
    at.text_input(key="train_data").set_value(str(data)).run()
    assert at.selectbox(key="train_preset").value == "fast"  # no GPU here, a handful of photos
    captions = [c.value for c in at.caption if "Suggested for" in c.value]
    assert len(captions) == 1 and "no GPU" in captions[0] and "Measured:" in captions[0], captions
    assert all(name in at.selectbox(key="train_preset").help for name in ("fast", "quick", "full"))
    assert preset_guide.suggest_preset(200, gpu=False) == "fast"
    assert preset_guide.suggest_preset(5000, gpu=False) == "quick"
    assert preset_guide.suggest_preset(200, gpu=True) == "quick"
    assert preset_guide.suggest_preset(15000, gpu=True) == "full"


def _differences(launched, expected):
    from carclf.ui.train_form import config_differences

    return config_differences(launched, expected)


@pytest.mark.parametrize("preset", ["fast", "quick", "full"])
def test_an_untouched_form_launches_exactly_the_preset(app_env, data, preset, monkeypatch):
    """Native image size, unfreeze "all"/"30%" and every head field reach the run as the preset wrote them."""
    from carclf.config import load_config

    monkeypatch.setenv("CARCLF_MEMORY_LIMIT", ROOMY_LIMIT)  # the memory fit has nothing to change

    launched = _launched_config(_open_form(data, preset), app_env["runs"], preset, data)
    expected = load_config(preset=preset)
    assert _differences(launched, expected) == {}
    assert launched.data == str(data) and launched.models_dir == str(app_env["models"])


@pytest.mark.parametrize("preset", ["quick", "full"])
def test_form_edits_reach_the_run_and_nothing_else_changes(app_env, data, preset, monkeypatch):
    from carclf.config import load_config

    monkeypatch.setenv("CARCLF_MEMORY_LIMIT", ROOMY_LIMIT)

    at = _open_form(data, preset)
    base = load_config(preset=preset)
    key = f"train_{preset}"
    at.session_state[f"{key}_stages"] = {"edited_rows": {1: {"unfreeze": "12 layers", "epochs": 3}},
                                         "added_rows": [], "deleted_rows": []}
    at.session_state[f"{key}_head_dense"] = {"edited_rows": {}, "added_rows": [{"units": 32, "activation": "gelu",
                                             "batchnorm": True, "dropout": 0.25}], "deleted_rows": []}
    at.slider(key=f"{key}_head_dropout").set_value(0.45)
    at.number_input(key=f"{key}_micro_batch").set_value(4)  # form values: submitted with the Launch click
    stages = [dataclasses.asdict(stage) for stage in base.stages]
    stages[1].update(unfreeze="12 layers", epochs=3)
    head = dataclasses.asdict(base.head)
    head["dense"].append({"units": 32, "activation": "gelu", "batchnorm": True, "dropout": 0.25})
    head["dropout"] = 0.45
    expected = load_config(preset=preset, overrides={"stages": stages, "head": head, "micro_batch_size": 4})
    launched = _launched_config(at, app_env["runs"], preset, data)
    assert _differences(launched, expected) == {}
    assert launched.stages[1].unfreeze == "12 layers" and launched.head.dense[-1].activation == "gelu"


def test_a_bad_unfreeze_is_refused_on_the_page_and_launches_nothing(app_env, data):
    at = _open_form(data, "quick")
    at.session_state["train_quick_stages"] = {"edited_rows": {1: {"unfreeze": "1.0"}}, "added_rows": [],
                                              "deleted_rows": []}
    at.button[[b.label for b in at.button].index("Launch training")].click().run()
    assert not at.exception
    assert any('"all" (whole backbone)' in e and "12 layers" in e for e in texts(at.error)), texts(at.error)
    assert not list(app_env["runs"].iterdir())


def test_a_launch_that_would_not_fit_is_micro_batched_and_says_so(app_env, data, monkeypatch):
    """The estimate uses this process's real memory: the limit leaves ~2.3 GB for training, which the
    whole-batch quick preset (about 2.7 GB estimated) exceeds and a micro-batched one fits."""
    from carclf import machine, memory_fit
    from carclf.config import load_config

    at = _open_form(data, "quick")
    base = load_config(preset="quick")
    budget = (memory_fit.estimate_peak_bytes(base) + memory_fit.estimate_peak_bytes(
        dataclasses.replace(base, micro_batch_size=base.batch_size // 2))) / 2
    monkeypatch.setenv("CARCLF_MEMORY_LIMIT", str(int(machine.process_tree_rss() + budget / 0.9)))
    launched = _launched_config(at, app_env["runs"], "quick", data)
    assert 0 < launched.micro_batch_size < base.batch_size
    assert any("micro_batch_size off ->" in s for s in texts(at.success)), texts(at.success)
    assert _differences(launched, base) == {"micro_batch_size": (launched.micro_batch_size, 0)}
