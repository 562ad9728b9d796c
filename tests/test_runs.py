"""Run folders: ids, status files, listing, and real detached training processes (kill -9, stop, resume)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from datetime import datetime

import pytest

from carclf import runs
from carclf.bundle import load_bundle
from carclf.config import load_config
from carclf.errors import RunError
from train_helpers import finished, make_pattern_dataset, tiny_config, wait_for


@pytest.mark.parametrize("name, slug", [
    ("My run #2", "my-run-2"),
    ("../../etc/passwd", "etc-passwd"),
    ("   ", "run"),
    ("Лада Приора", "run"),
    ("a" * 100, "a" * runs.MAX_NAME_CHARS),
])
def test_run_ids_are_safe_folder_names(tmp_path, name, slug):
    run_id = runs.new_run_id(name, tmp_path, now=datetime(2026, 1, 2, 3, 4, 5))
    assert run_id == f"{slug}-20260102-030405"
    assert runs.check_run_id(run_id) == run_id


def test_run_id_gets_a_suffix_when_taken(tmp_path):
    now = datetime(2026, 1, 2, 3, 4, 5)
    (tmp_path / runs.new_run_id("x", tmp_path, now)).mkdir()
    assert runs.new_run_id("x", tmp_path, now) == "x-20260102-030405-2"


@pytest.mark.parametrize("bad", ["../x", "a/b", "", ".hidden", "UPPER", "x" * 90])
def test_bad_run_ids_are_refused(tmp_path, bad):
    with pytest.raises(RunError, match="invalid run id"):
        runs.read_status(bad, tmp_path)


def test_create_run_writes_config_and_queued_status(tmp_path):
    config = load_config(overrides={"name": "First try", "data": "/data"})
    paths = runs.create_run(config, tmp_path / "runs")
    assert paths.root.parent == tmp_path / "runs" and paths.run_id.startswith("first-try-")
    saved = load_config(paths.config)
    assert saved.data == "/data" and saved.name == config.name and saved.stages == config.stages
    status = json.loads(paths.status.read_text())
    assert status["state"] == runs.QUEUED and status["name"] == "First try"
    assert paths.checkpoints.is_dir()
    assert runs.read_history(paths.run_id, tmp_path / "runs").columns.tolist() == list(runs.HISTORY_COLUMNS)
    assert runs.read_log_tail(paths.run_id, tmp_path / "runs") == ""


def test_relative_paths_are_stored_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    paths = runs.create_run(load_config(overrides={"data": "photos", "models_dir": "models"}), "runs")
    saved = load_config(paths.config)
    assert (saved.data, saved.models_dir) == (str(tmp_path / "photos"), str(tmp_path / "models"))


def test_status_updates_are_atomic_merges(tmp_path):
    paths = runs.create_run(load_config(), tmp_path)
    runs.update_status(paths, state=runs.RUNNING, epoch=3)
    runs.update_status(paths, epoch=4)
    status = json.loads(paths.status.read_text())
    assert (status["state"], status["epoch"]) == (runs.RUNNING, 4)
    assert [p.name for p in paths.root.iterdir() if p.name.startswith(".")] == []


def test_running_run_with_dead_process_is_reported_interrupted(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    paths = runs.create_run(load_config(overrides={"name": "ghost"}), tmp_path)
    runs.update_status(paths, state=runs.RUNNING, pid=dead.pid)
    assert runs.read_status(paths.run_id, tmp_path)["state"] == runs.INTERRUPTED
    assert json.loads(paths.status.read_text())["state"] == runs.RUNNING, "the stored state is not rewritten"
    with pytest.raises(RunError, match="not running"):
        runs.stop_run(paths.run_id, tmp_path)
    live = runs.create_run(load_config(overrides={"name": "alive"}), tmp_path)
    runs.update_status(live, state=runs.RUNNING, pid=os.getpid())
    with runs.trainer_lock(live):  # a trainer holds its run's lock
        assert runs.read_status(live.run_id, tmp_path)["state"] == runs.RUNNING
        with pytest.raises(RunError, match="still running"):
            runs.delete_run(live.run_id, tmp_path)
        with pytest.raises(RunError, match="only stopped, failed or interrupted"):
            runs.resume_run(live.run_id, tmp_path)


def test_a_live_process_that_is_not_the_runs_trainer_is_never_taken_for_it(tmp_path):
    """After a restart the stored pid may belong to anything; a copied run folder carries the original's."""
    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        reused = runs.create_run(load_config(overrides={"name": "reused"}), tmp_path)
        runs.update_status(reused, state=runs.RUNNING, pid=stranger.pid)
        queued = runs.create_run(load_config(overrides={"name": "queued"}), tmp_path)
        runs.update_status(queued, state=runs.QUEUED, pid=stranger.pid)  # not started with this folder
        for paths in (reused, queued):
            assert runs.read_status(paths.run_id, tmp_path)["state"] == runs.INTERRUPTED
            with pytest.raises(RunError, match="not running"):
                runs.stop_run(paths.run_id, tmp_path)  # the stranger is not signalled
        runs.delete_run(reused.run_id, tmp_path)
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()
    original = runs.create_run(load_config(overrides={"name": "original"}), tmp_path)
    runs.update_status(original, state=runs.RUNNING, pid=os.getpid())
    copy = runs.RunPaths(tmp_path / "copy-of-original")
    with runs.trainer_lock(original):
        shutil.copytree(original.root, copy.root)
        assert runs.read_status(original.run_id, tmp_path)["state"] == runs.RUNNING
        assert runs.read_status(copy.run_id, tmp_path)["state"] == runs.INTERRUPTED


def test_list_runs_newest_first_and_delete(tmp_path):
    first = runs.create_run(load_config(overrides={"name": "one"}), tmp_path)
    runs.update_status(first, created_at="2026-01-01T00:00:00+00:00", state=runs.FINISHED)
    second = runs.create_run(load_config(overrides={"name": "two"}), tmp_path)
    runs.update_status(second, created_at="2026-02-01T00:00:00+00:00", state=runs.FAILED)
    (tmp_path / "not-a-run").mkdir()
    listed = runs.list_runs(tmp_path)
    assert [status["run_id"] for status in listed] == [second.run_id, first.run_id]
    runs.delete_run(first.run_id, tmp_path)
    assert [status["run_id"] for status in runs.list_runs(tmp_path)] == [second.run_id]
    with pytest.raises(RunError, match="no run"):
        runs.read_status(first.run_id, tmp_path)
    assert runs.list_runs(tmp_path / "absent") == []


def test_log_tail_collapses_progress_bar_redraws(tmp_path):
    paths = runs.create_run(load_config(), tmp_path)
    paths.log.write_text("start\n1/6 [==>   ]\r3/6 [====> ]\r6/6 [======] done\nlast line\n", encoding="utf-8")
    assert runs.read_log_tail(paths.run_id, tmp_path, lines=3) == "6/6 [======] done\nlast line\n"


@pytest.mark.slow
def test_killed_run_resumes_and_a_stopped_run_resumes_to_completion(tmp_path):
    """kill -9 mid-stage, resume (epochs continue, no history row twice), SIGTERM stop, resume to the end."""
    data = make_pattern_dataset(tmp_path / "data", per_class=8)
    config = tiny_config(data, tmp_path / "models", name="kill me",
                         stages=[{"epochs": 4, "learning_rate": 1e-3, "unfreeze": 0},
                                 {"epochs": 3, "learning_rate": 1e-4, "unfreeze": 2}])
    runs_dir = tmp_path / "runs"
    run_id = runs.start_run(config, runs_dir)

    status, _ = wait_for(run_id, runs_dir, lambda s, h: len(h) >= 2, what="2 epochs")
    os.kill(status["pid"], signal.SIGKILL)
    status, history = wait_for(run_id, runs_dir, lambda s, h: s["state"] == runs.INTERRUPTED, what="interrupted")
    done_before_kill = len(history)
    assert done_before_kill < config.epochs_total

    runs.resume_run(run_id, runs_dir)
    wait_for(run_id, runs_dir, lambda s, h: len(h) >= done_before_kill + 1, what="an epoch after resume")
    status = runs.stop_run(run_id, runs_dir, timeout=120)
    assert status["state"] == runs.STOPPED, status

    runs.resume_run(run_id, runs_dir)
    status, history = wait_for(run_id, runs_dir, finished, what="finish")
    assert status["state"] == runs.FINISHED, status.get("error")
    assert history["epoch"].tolist() == list(range(1, config.epochs_total + 1)), "each epoch exactly once"
    assert history["stage"].tolist() == [1] * 4 + [2] * 3
    log = runs.read_log_tail(run_id, runs_dir, lines=400)
    assert "continuing from its epoch" in log or "resuming after stage" in log
    assert log.count("Epoch 1/4") == 1, "stage 1 was continued, not restarted, after kill -9"
    bundle = load_bundle(status["bundle"])
    assert bundle.class_names == ["checker", "horizontal", "vertical"]


@pytest.mark.slow
def test_two_concurrent_runs_finish_with_separate_valid_outputs(tmp_path):
    data = make_pattern_dataset(tmp_path / "data", per_class=6)
    runs_dir = tmp_path / "runs"
    ids = [runs.start_run(tiny_config(data, tmp_path / "models", name=name, seed=seed), runs_dir)
           for name, seed in (("left", 1), ("right", 2))]
    assert ids[0] != ids[1]
    results = [wait_for(run_id, runs_dir, finished, what="finish") for run_id in ids]
    bundles = set()
    for run_id, (status, history) in zip(ids, results):
        assert status["state"] == runs.FINISHED, status.get("error")
        assert history["epoch"].tolist() == [1, 2, 3]
        assert status["run_id"] == run_id and run_id in status["bundle"]
        assert load_bundle(status["bundle"]).class_names == ["checker", "horizontal", "vertical"]
        bundles.add(status["bundle"])
    assert len(bundles) == 2
    assert {s["run_id"] for s in runs.list_runs(runs_dir)} == set(ids)


@pytest.mark.parametrize("damage", [
    {"state": "running", "pid": "abc"},
    {"state": "running", "pid": [1]},
    {"state": "running", "pid": 10**20},
    {"state": "finished", "val_metrics": [1, 2], "epoch": "7", "epochs_planned": {"x": 1}},
])
def test_a_hand_damaged_status_never_gives_a_traceback(tmp_path, capsys, damage):
    """Found by a CLI fuzz: a status.json edited by hand (or half-synced) made list/show/stop raise."""
    from carclf.cli import main

    paths = runs.create_run(load_config(overrides={"name": "edited"}), tmp_path)
    runs.update_status(paths, **damage)
    assert main(["runs", "--runs-dir", str(tmp_path), "list"]) == 0
    assert main(["runs", "--runs-dir", str(tmp_path), "show", paths.run_id]) == 0
    code = main(["runs", "--runs-dir", str(tmp_path), "stop", paths.run_id])
    captured = capsys.readouterr()
    assert code == 2 and "nothing to stop" in captured.err and "Traceback" not in captured.err


def test_a_damaged_history_is_one_line(tmp_path, capsys):
    from carclf.cli import main

    paths = runs.create_run(load_config(overrides={"name": "history"}), tmp_path)
    runs.update_status(paths, state=runs.FINISHED)
    paths.history.write_bytes(b'\xfb\xfa"epoch,stage\n1,"unterminated')
    with pytest.raises(RunError, match="history.csv is damaged"):
        runs.read_history(paths.run_id, tmp_path)
    assert main(["runs", "--runs-dir", str(tmp_path), "show", paths.run_id]) == 2
    assert "history.csv is damaged" in capsys.readouterr().err


def test_a_finished_run_is_not_trained_again_by_run_dir(tmp_path, capsys):
    """`train --run-dir` (how the launcher starts a run) once retrained a finished run over its model."""
    from carclf.cli import main

    paths = runs.create_run(load_config(overrides={"name": "done"}), tmp_path)
    runs.update_status(paths, state=runs.FINISHED)
    assert main(["train", "--run-dir", str(paths.root)]) == 2
    assert "finished or imported run" in capsys.readouterr().err
    assert json.loads(paths.status.read_text())["state"] == runs.FINISHED


def test_resume_refuses_a_hand_broken_config_in_one_line_and_launches_nothing(tmp_path):
    from carclf.errors import ConfigError

    paths = runs.create_run(load_config(overrides={"name": "edited"}), tmp_path)
    runs.update_status(paths, state=runs.STOPPED)
    paths.config.write_text(paths.config.read_text().replace("img_size:", "img_sise:"))
    with pytest.raises(ConfigError, match="img_sise"):
        runs.resume_run(paths.run_id, tmp_path)
    assert runs.read_status(paths.run_id, tmp_path)["state"] == runs.STOPPED  # not queued: nothing started


def test_a_resumed_run_must_train_the_classes_it_started_with(tmp_path):
    from carclf.errors import DataError
    from carclf.train import check_same_classes

    paths = runs.create_run(load_config(overrides={"name": "brands"}), tmp_path)
    check_same_classes(paths, ["audi", "bmw"])  # a new run: nothing to compare with
    runs.update_status(paths, data_summary={"classes": ["audi", "bmw", "mercedes"]})
    check_same_classes(paths, ["audi", "bmw", "mercedes"])
    for changed in (["audi", "bmw"], ["audi", "bmw", "ferrari"]):
        with pytest.raises(DataError, match="classes changed"):
            check_same_classes(paths, changed)


def test_a_relative_augmentation_file_is_saved_absolute(tmp_path, monkeypatch):
    """The training child starts in another folder, and a run may be resumed from anywhere."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "myaug.yaml").write_text("strength: 0.5\ntransforms: []\n")
    paths = runs.create_run(load_config(overrides={"name": "aug", "augmentation": "myaug.yaml"}), tmp_path / "runs")
    assert load_config(paths.config).augmentation == str(tmp_path / "myaug.yaml")
    preset = runs.create_run(load_config(overrides={"name": "preset"}), tmp_path / "runs")
    assert load_config(preset.config).augmentation == load_config().augmentation  # a preset's name stays a name


def test_a_run_stopped_while_still_starting_says_stopped(tmp_path):
    """SIGTERM before train() sets its handler ends the process at once: stop_run records what happened."""
    data = make_pattern_dataset(tmp_path / "data", per_class=2)
    run_id = runs.start_run(tiny_config(data, tmp_path / "models", name="early"), tmp_path / "runs")
    status = runs.stop_run(run_id, tmp_path / "runs", timeout=30)  # at once: the child is importing TensorFlow
    assert status["state"] == runs.STOPPED, status
    assert runs.is_resumable(status)


def test_a_resumed_run_keeps_its_split_when_photos_come_and_go(tmp_path, capsys):
    """Re-splitting after a photo was added reshuffled every class: trained-on photos became validation ones."""
    from carclf.train import keep_split, prepare_data

    data = make_pattern_dataset(tmp_path / "data", per_class=6)
    config = tiny_config(data, tmp_path / "models", name="split")
    paths = runs.create_run(config, tmp_path / "runs")
    paths.checkpoints.mkdir(parents=True, exist_ok=True)
    first = keep_split(paths, prepare_data(config))  # the first start writes the split
    shutil.copy(first.train[0].path, data / "checker" / "added_later.jpg")
    removed = first.train[1].path
    removed.unlink()
    resumed = keep_split(paths, prepare_data(config))
    assert [item.path for item in resumed.val] == [item.path for item in first.val]
    assert [item.path for item in resumed.train] == [item.path for item in first.train if item.path != removed]
    log = capsys.readouterr().out
    assert "1 photos added since the run started are left out" in log and "1 photos of the run's split are gone" in log
