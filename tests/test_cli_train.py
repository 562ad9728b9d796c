"""``python -m carclf train`` and ``runs``: help, one-line errors with exit code 2, a real foreground run."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from carclf import runs
from carclf.cli import main
from carclf.config import load_config
from train_helpers import make_pattern_dataset


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("argv", [["train", "--help"], ["runs", "--help"], ["runs", "list", "--help"],
                                  ["runs", "resume", "--help"]])
def test_help_everywhere(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_command_modules_do_not_import_tensorflow():
    code = ("import sys, argparse\nimport carclf.commands.train as t, carclf.commands.runs as r\n"
            "for m in (t, r): m.add_arguments(argparse.ArgumentParser())\n"
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def _bad_config(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("epochz: 3\n", encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("make_argv, message", [
    (lambda tmp: ["train"], "no dataset given"),
    (lambda tmp: ["train", "--data", str(tmp / "missing")], "no such folder"),
    (lambda tmp: ["train", "--data", str(tmp), "--config", _bad_config(tmp)], "unknown config key config.epochz"),
    (lambda tmp: ["train", "--data", str(tmp), "--config", str(tmp / "nope.yaml")], "does not exist"),
    (lambda tmp: ["train", "--data", str(tmp), "--val-data", str(tmp / "missing")], "--val-data"),
    (lambda tmp: ["train", "--data", str(tmp), "--epochs", "1"], "epochs must be"),
    (lambda tmp: ["train", "--data", str(tmp), "--batch-size", "0"], "batch_size"),
    (lambda tmp: ["train", "--data", str(tmp), "--img-size", "8"], "img_size"),
    # Typos with extra zeros once ran out of memory inside TensorFlow (or waited forever) instead.
    (lambda tmp: ["train", "--data", str(tmp), "--img-size", "1000000000"], "img_size must be 0 (native) or from"),
    (lambda tmp: ["train", "--data", str(tmp), "--batch-size", "1000000000"], "batch_size must be from 1 to"),
    (lambda tmp: ["train", "--data", str(tmp), "--backbone", "resnet9000"], "resnet9000"),
    (lambda tmp: ["train", "--run-dir", str(tmp), "--data", str(tmp)], "drop --data"),
    (lambda tmp: ["train", "--run-dir", str(tmp)], "not a run folder"),
    (lambda tmp: ["runs", "--runs-dir", str(tmp), "show", "nope-20260101-000000"], "no run"),
    (lambda tmp: ["runs", "show", "../etc", "--runs-dir", str(tmp)], "invalid run id"),
])
def test_user_mistakes_are_one_line_errors(tmp_path, capsys, make_argv, message):
    code, out, err = run_cli(capsys, *make_argv(tmp_path))
    assert code == 2
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err


def test_finished_runs_cannot_be_stopped_or_resumed(tmp_path, capsys):
    paths = runs.create_run(load_config(overrides={"name": "done"}), tmp_path)
    runs.update_status(paths, state=runs.FINISHED)
    for action, message in (("stop", "nothing to stop"), ("resume", "only stopped")):
        code, _, err = run_cli(capsys, "runs", "--runs-dir", str(tmp_path), action, paths.run_id)
        assert code == 2 and message in err


def test_runs_list_on_an_empty_folder(tmp_path, capsys):
    code, out, _ = run_cli(capsys, "runs", "list", "--runs-dir", str(tmp_path / "none"))
    assert code == 0 and "no runs" in out


@pytest.mark.slow
def test_foreground_train_then_runs_list_and_show(tmp_path, capsys):
    data = make_pattern_dataset(tmp_path / "data", per_class=5)
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(yaml.safe_dump({
        "weights": "none", "augmentation": "none", "tta": 0, "val_fraction": 0.4, "batch_size": 8,
        "stages": [{"epochs": 2, "learning_rate": 1e-3}, {"epochs": 2, "learning_rate": 1e-4, "unfreeze": 3}],
    }), encoding="utf-8")
    runs_dir, models_dir = tmp_path / "runs", tmp_path / "models"
    code, out, err = run_cli(capsys, "train", "--data", str(data), "--config", str(config_file), "--img-size", "48",
                             "--epochs", "3", "--name", "cli run", "--runs-dir", str(runs_dir),
                             "--models-dir", str(models_dir))
    assert code == 0, err
    assert "finished: bundle" in out
    (run,) = runs.list_runs(runs_dir)
    assert run["state"] == runs.FINISHED and run["run_id"].startswith("cli-run-")
    assert runs.read_history(run["run_id"], runs_dir)["epoch"].tolist() == [1, 2, 3], "--epochs is the total"
    assert (models_dir / run["run_id"] / "model.keras").is_file()
    log = runs.read_log_tail(run["run_id"], runs_dir, lines=200)  # what the terminal showed is kept with the run
    assert log.startswith(f"run {run['run_id']} in ") and "stage 2/2" in log and "Epoch 2/2" in log
    assert out.rstrip().endswith(log.rstrip())  # all of it, up to the "finished" line

    code, out, _ = run_cli(capsys, "runs", "list", "--runs-dir", str(runs_dir))
    assert code == 0 and run["run_id"] in out and "finished" in out and "MODEL VAL ACC" in out
    code, out, _ = run_cli(capsys, "runs", "show", run["run_id"], "--runs-dir", str(runs_dir))
    assert code == 0 and "val_accuracy" in out and "bundle" in out
