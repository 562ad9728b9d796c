"""One trainer per run folder (trainer_lock with real processes) and no zombie training processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from carclf import runs
from carclf.config import TrainConfig
from carclf.errors import RunError

ROOT = Path(__file__).resolve().parents[1]
# A real second process that takes a run's trainer lock and holds it until killed.
HOLDER = """
import sys, time
from carclf import runs
with runs.trainer_lock(runs.RunPaths(__import__("pathlib").Path(sys.argv[1]))):
    print("locked", flush=True)
    time.sleep(120)
"""


def _holder(paths) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(paths.root)], stdout=subprocess.PIPE, text=True, env=env)
    assert process.stdout.readline().strip() == "locked"
    return process


def _state(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rfind(")") + 2]


def test_a_live_trainer_blocks_a_second_one_and_a_dead_ones_lock_does_not(tmp_path):
    paths = runs.create_run(TrainConfig(data=str(tmp_path), name="locked"), tmp_path / "runs")
    runs.update_status(paths, state=runs.STOPPED)
    holder = _holder(paths)
    try:
        assert runs.lock_holder(paths) == holder.pid
        with pytest.raises(RunError, match=f"already being trained by pid {holder.pid}"):
            with runs.trainer_lock(paths):
                pass
        with pytest.raises(RunError, match="already being trained"):  # a double-clicked Resume: refused before launch
            runs.resume_run(paths.run_id, tmp_path / "runs")
        # the CLI path a resume launches is refused too, with a one-line error (exit 2)
        cli = subprocess.run([sys.executable, "-m", "carclf", "train", "--run-dir", str(paths.root)], cwd=ROOT,
                             capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=300)
        assert cli.returncode == 2 and f"already being trained by pid {holder.pid}" in cli.stderr
        assert "Traceback" not in cli.stderr
    finally:
        holder.send_signal(signal.SIGKILL)  # a crash: nobody releases the lock but the kernel
        holder.wait()
    assert runs.lock_holder(paths) is None
    with runs.trainer_lock(paths):  # the stale lock file does not block a later trainer
        assert (paths.root / runs.LOCK_FILE).read_text() == str(os.getpid())


def test_finished_training_processes_are_reaped(tmp_path):
    # a real run that fails fast: its data folder does not exist
    paths = runs.create_run(TrainConfig(data=str(tmp_path / "gone"), name="fails"), tmp_path / "runs")
    os.environ["CARCLF_OWNER_PASSWORD"] = "hunter2"  # as Streamlit puts a root-level secret there
    try:
        pid = runs.launch(paths)
        child_env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    finally:
        del os.environ["CARCLF_OWNER_PASSWORD"]
    # the trainer does not inherit the owner password
    assert not any(var.startswith(b"CARCLF_OWNER_PASSWORD=") for var in child_env)
    assert b"PYTHONUNBUFFERED=1" in child_env
    deadline = time.monotonic() + 300
    # wait until it has ended without collecting it (WNOWAIT): then it is a <defunct> zombie under this process
    while os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        assert time.monotonic() < deadline, "the training process did not end"
        time.sleep(0.2)
    assert _state(pid) == "Z"
    listed = runs.list_runs(tmp_path / "runs")
    assert listed[0]["state"] == runs.FAILED
    assert not Path(f"/proc/{pid}").exists()
