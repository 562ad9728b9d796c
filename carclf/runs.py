"""Training runs on disk: the layout of ``runs/<run_id>/`` and the lifecycle of a run's process.

This is the only module that knows which files a run folder holds. The dashboard starts a run with
``start_run`` (a detached ``python -m carclf train --run-dir ...`` process in its own session, so a page
reload or a closed browser does not kill it) and then only reads files: ``list_runs``, ``read_status``,
``read_history``, ``read_log_tail``. ``stop_run`` sends SIGTERM (the trainer saves and marks the run
"stopped"); ``resume_run`` starts the process again on the same folder, and the trainer continues from the
backup of its last finished epoch. TensorFlow is never imported here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Optional

from carclf.atomic import atomic_write_json, read_json_object
from carclf.clock import now_iso, run_stamp
from carclf.errors import RunError
from carclf.names import safe_id

# Default folder holding one sub-folder per run.
RUNS_DIR = "runs"
# States stored in status.json.
QUEUED, RUNNING, FINISHED, FAILED, STOPPED = "queued", "running", "finished", "failed", "stopped"
# Reported (never stored) when status.json says queued/running but the process is gone (killed, crashed).
INTERRUPTED = "interrupted"
# States whose process should be alive.
ACTIVE_STATES = frozenset({QUEUED, RUNNING})
# States a run can be resumed from.
RESUMABLE_STATES = frozenset({STOPPED, FAILED, INTERRUPTED})
# Columns of history.csv, in order (the trainer appends one row per finished epoch).
HISTORY_COLUMNS = ("epoch", "stage", "lr", "loss", "accuracy", "val_loss", "val_accuracy", "time")
# Longest slug taken from the user's run name.
MAX_NAME_CHARS = 40
# File in a run folder locked (flock) by the one process training it; the kernel drops the lock when it dies.
LOCK_FILE = "trainer.lock"
# Seconds a dead (zombie) lock holder is given for the kernel to release its lock.
LOCK_RELEASE_WAIT_S = 10.0
# Training processes this process launched, by pid: polled (reaped) so finished ones leave no zombie behind.
_CHILDREN: dict[int, subprocess.Popen] = {}
# Run folders (resolved) whose trainer lock this process holds (trainer_lock is re-entrant).
_HELD_LOCKS: set[str] = set()
# Run ids are folder names: a slug and a timestamp, nothing that could climb out of runs/.
_RUN_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,80}$")
# status.json key of a run imported from an archive (carclf.run_archive): read-only, never resumed or stopped.
IMPORTED_KEY = "imported"


@dataclass(frozen=True)
class RunPaths:
    """Every path inside one run folder."""

    root: Path

    @property
    def run_id(self) -> str:
        return self.root.name

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def status(self) -> Path:
        return self.root / "status.json"

    @property
    def history(self) -> Path:
        return self.root / "history.csv"

    @property
    def log(self) -> Path:
        return self.root / "log.txt"

    @property
    def tensorboard(self) -> Path:
        """TensorBoard event files (``train/`` and ``validation/``): ``tensorboard --logdir runs`` shows every run."""
        return self.root / "tensorboard"

    @property
    def report(self) -> Path:
        """An evaluation report of the run's model (``evaluate --out RUN/report``), packed with the run."""
        return self.root / "report"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def best_model(self) -> Path:
        return self.checkpoints / "best.keras"

    @property
    def backup(self) -> Path:
        """BackupAndRestore state: lets a killed run continue from its last finished epoch."""
        return self.checkpoints / "backup"

    @property
    def progress(self) -> Path:
        """Which stage/epoch the last finished epoch belonged to (written with the backup)."""
        return self.checkpoints / "progress.json"


def run_paths(run_id: str, runs_dir=RUNS_DIR) -> RunPaths:
    """Paths of run ``run_id`` in ``runs_dir`` (the id is checked, the folder need not exist)."""
    return RunPaths(Path(runs_dir) / check_run_id(run_id))


def check_run_id(run_id: str) -> str:
    """Return ``run_id`` if it is a valid run folder name, else raise ``RunError``."""
    if not isinstance(run_id, str) or not _RUN_ID.match(run_id):
        raise RunError(f"invalid run id {run_id!r}: run ids look like 'my-run-20260101-120000'.")
    return run_id


def slugify(name: str) -> str:
    """A user's run name as a safe lower-case slug ('My run #2' -> 'my-run-2'; carclf.names' rule)."""
    return safe_id(str(name).lower(), fallback="run", max_chars=MAX_NAME_CHARS)


def new_run_id(name: str, runs_dir=RUNS_DIR, now: Optional[datetime] = None) -> str:
    """``<slug>-<YYYYmmdd-HHMMSS>``, with a numeric suffix if that folder already exists."""
    stamp = run_stamp(now)
    base = f"{slugify(name)}-{stamp}"
    run_id, counter = base, 1
    while (Path(runs_dir) / run_id).exists():
        counter += 1
        run_id = f"{base}-{counter}"
    return run_id


def create_run(config, runs_dir=RUNS_DIR) -> RunPaths:
    """Make a new run folder holding ``config.yaml`` and a queued status; return its paths."""
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    for _ in range(100):  # two processes may race for the same id: mkdir decides
        paths = RunPaths(runs_dir / new_run_id(config.name, runs_dir))
        try:
            paths.root.mkdir()
            break
        except FileExistsError:
            continue
    else:
        raise RunError(f"cannot create a new run folder in {runs_dir}.")
    paths.checkpoints.mkdir()
    config = _with_absolute_paths(config)
    config.save(paths.config)
    write_status(paths, state=QUEUED, run_id=paths.run_id, name=config.name, created_at=now_iso())
    return paths


def _with_absolute_paths(config):
    """The config with its data and models folders, and an augmentation file, absolute: a run is trained in
    a child process started elsewhere (``launch``) and may be resumed from another folder."""
    augmentation = config.augmentation
    if isinstance(augmentation, str) and Path(augmentation).expanduser().is_file():  # else a preset's name
        augmentation = str(Path(augmentation).expanduser().resolve())
    return dataclasses.replace(
        config,
        data=_absolute_or_empty(config.data),
        val_data=_absolute_or_empty(config.val_data),
        models_dir=str(Path(config.models_dir).expanduser().resolve()),
        augmentation=augmentation,
    )


def _absolute_or_empty(folder: str) -> str:
    return str(Path(folder).expanduser().resolve()) if folder else folder


# Environment variables a training child must not inherit.
SECRET_ENV_VARS = frozenset({"CARCLF_OWNER_PASSWORD"})


def start_run(config, runs_dir=RUNS_DIR) -> str:
    """Create a run for ``config`` and train it in a detached background process; return the run id at once."""
    paths = create_run(config, runs_dir)
    launch(paths)
    return paths.run_id


def trainer_env(package_parent: str, environ=None) -> dict:
    """The training child's environment: the app's, minus its secrets (Streamlit copies st.secrets into it)."""
    env = {k: v for k, v in (os.environ if environ is None else environ).items() if k not in SECRET_ENV_VARS}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")]))
    env.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    env["PYTHONUNBUFFERED"] = "1"  # log.txt should follow the run live
    return env


def launch(paths: RunPaths) -> int:
    """Start ``python -m carclf train --run-dir`` for an existing run folder, detached; return its pid."""
    package_parent = str(Path(__file__).resolve().parents[1])
    env = trainer_env(package_parent)
    command = [sys.executable, "-m", "carclf", "train", "--run-dir", str(paths.root.resolve())]
    with open(paths.log, "ab") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env=env, cwd=package_parent,
        )
    _CHILDREN[process.pid] = process
    update_status(paths, state=QUEUED, pid=process.pid, error=None, launched_at=now_iso())
    return process.pid


def reap_children() -> None:
    """Collect the exit status of finished training processes launched from here (no <defunct> zombies)."""
    for pid, process in list(_CHILDREN.items()):
        if process.poll() is not None:
            del _CHILDREN[pid]


@contextlib.contextmanager
def trainer_lock(paths: RunPaths):
    """Hold the run folder's trainer lock for the block; ``RunError`` when another live process holds it.

    ``flock`` is released by the kernel when its holder exits, so a crashed run's lock never blocks a resume.
    Re-entrant within a process (``train()`` takes it too, for callers of the Python API): a running run's
    process is always its lock's holder, which is how ``_effective_status`` tells it from an unrelated
    process that got the same pid.
    """
    key = str(paths.root.resolve())
    if key in _HELD_LOCKS:
        yield
        return
    handle = open(paths.root / LOCK_FILE, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunError(f"run {paths.run_id} is already being trained by pid {_lock_pid(handle)}: "
                           "wait for it to finish or stop it first.") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        _HELD_LOCKS.add(key)
        try:
            yield
        finally:
            _HELD_LOCKS.discard(key)
    finally:
        handle.close()  # closing the file releases the lock


def lock_holder(paths: RunPaths, dying_wait_s: float = LOCK_RELEASE_WAIT_S) -> Optional[int]:
    """Pid of the live process training this run folder (holding its lock), or None.

    A killed trainer shows as a zombie while its other threads still tear down, and only then does the kernel
    release its lock: a holder that is no longer alive is given ``dying_wait_s`` seconds to let go.
    """
    lock = paths.root / LOCK_FILE
    if not lock.is_file():
        return None
    deadline = time.monotonic() + dying_wait_s
    with open(lock, "a+") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
                return None
            except BlockingIOError:
                holder = _lock_pid(handle) or -1
            if holder < 0 or _pid_alive(holder) or time.monotonic() >= deadline:
                return holder
            time.sleep(0.1)


def _lock_pid(handle) -> Optional[int]:
    handle.seek(0)
    text = handle.read().strip()
    return int(text) if text.isdigit() else None


def write_status(paths: RunPaths, **fields) -> dict:
    """Replace status.json with ``fields`` atomically (temp file + os.replace)."""
    atomic_write_json(paths.status, fields, default=str)
    return fields


def update_status(paths: RunPaths, **fields) -> dict:
    """Merge ``fields`` into status.json atomically and return the new content."""
    status = read_json_object(paths.status)
    status.update(fields)
    return write_status(paths, **status)


def read_status(run_id: str, runs_dir=RUNS_DIR) -> dict:
    """The run's status.json, with state 'interrupted' when it claims to run but its process is gone."""
    paths = _existing(run_id, runs_dir)
    return _effective_status(paths)


def list_runs(runs_dir=RUNS_DIR) -> list[dict]:
    """Status of every run in ``runs_dir``, newest first; each dict also has ``run_id`` and ``path``."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    runs = []
    for child in runs_dir.iterdir():
        if child.is_dir() and _RUN_ID.match(child.name) and (child / "status.json").is_file():
            status = _effective_status(RunPaths(child))
            status["run_id"], status["path"] = child.name, str(child)
            runs.append(status)
    runs.sort(key=lambda status: (str(status.get("created_at") or ""), status["run_id"]), reverse=True)
    return runs


def read_history(run_id: str, runs_dir=RUNS_DIR):
    """history.csv as a pandas DataFrame (empty, with the standard columns, before the first epoch)."""
    import pandas as pd

    paths = _existing(run_id, runs_dir)
    if not paths.history.is_file() or paths.history.stat().st_size == 0:
        return pd.DataFrame(columns=list(HISTORY_COLUMNS))
    try:
        return pd.read_csv(paths.history)
    except ValueError as error:  # pandas' parser errors and undecodable bytes are ValueErrors
        raise RunError(f"run {run_id}: history.csv is damaged ({str(error).splitlines()[0]}); its curves cannot "
                       "be drawn. The model and status are unaffected.") from error


def read_log_tail(run_id: str, runs_dir=RUNS_DIR, lines: int = 40) -> str:
    """The last ``lines`` lines of the run's log (progress-bar carriage returns collapsed)."""
    paths = _existing(run_id, runs_dir)
    if not paths.log.is_file():
        return ""
    with open(paths.log, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - 64 * 1024))
        text = handle.read().decode("utf-8", errors="replace")
    cleaned = [line.rsplit("\r", 1)[-1] for line in text.replace("\r\n", "\n").split("\n")]
    return "\n".join(cleaned[-lines:])


def stop_run(run_id: str, runs_dir=RUNS_DIR, timeout: float = 0.0) -> dict:
    """Ask a running run to stop (SIGTERM); wait up to ``timeout`` s for it to write state 'stopped'."""
    paths = _existing(run_id, runs_dir)
    status = _effective_status(paths)
    if status.get("state") not in ACTIVE_STATES or is_imported(status):
        raise RunError(f"run {run_id} is {status.get('state')}, not running: nothing to stop.")
    pid = int(status["pid"])
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGTERM)  # a launched run leads its own session: its workers get it too
        else:  # a foreground `train` in someone's shell or script: its group is theirs (a `| tee`, the shell)
            os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    except PermissionError as error:
        raise RunError(f"not allowed to stop run {run_id} (pid {pid}): {error}.") from error
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _pid_alive(pid):
        time.sleep(0.2)
    if status["state"] == QUEUED and not _pid_alive(pid) and read_json_object(paths.status).get("state") == QUEUED:
        # stopped while still starting (before train() set its SIGTERM handler): it could not say so itself
        update_status(paths, state=STOPPED, stopped_at=now_iso())
    return _effective_status(paths)


def resume_run(run_id: str, runs_dir=RUNS_DIR) -> int:
    """Start a stopped, failed or interrupted run again; it continues from its last finished epoch."""
    paths = _existing(run_id, runs_dir)
    status = _effective_status(paths)
    if is_imported(status):
        raise RunError(f"run {run_id} was imported from elsewhere: it is read-only and cannot be resumed here.")
    state = status.get("state")
    if state not in RESUMABLE_STATES:
        raise RunError(f"run {run_id} is {state}: only stopped, failed or interrupted runs can be resumed.")
    if not paths.config.is_file():
        raise RunError(f"run {run_id} has no config.yaml: it cannot be resumed; start a new run.")
    from carclf.config import load_config

    load_config(paths.config)  # a config.yaml edited by hand is refused here, in one line, not in the log
    holder = lock_holder(paths)
    if holder:
        raise RunError(f"run {run_id} is already being trained by pid {holder}: wait for it to finish or stop it first.")
    return launch(paths)


def delete_run(run_id: str, runs_dir=RUNS_DIR) -> None:
    """Delete a run folder; refuses while the run's process is alive (stop it first)."""
    paths = _existing(run_id, runs_dir)
    if _effective_status(paths).get("state") in ACTIVE_STATES:
        raise RunError(f"run {run_id} is still running: stop it before deleting it.")
    shutil.rmtree(paths.root)


def is_active(status: dict) -> bool:
    """True when a status (from read_status/list_runs) belongs to a live process."""
    return status.get("state") in ACTIVE_STATES and not is_imported(status)


def is_imported(status: dict) -> bool:
    """True for a run imported from an archive: trained elsewhere, shown read-only here."""
    return bool(status.get(IMPORTED_KEY))


def is_resumable(status: dict) -> bool:
    """True when ``resume_run`` may continue this run (stopped, failed or interrupted, and trained here)."""
    return status.get("state") in RESUMABLE_STATES and not is_imported(status)


def _existing(run_id: str, runs_dir) -> RunPaths:
    paths = run_paths(run_id, runs_dir)
    if not paths.status.is_file():
        raise RunError(f"no run {run_id!r} in {runs_dir}: list runs with 'python -m carclf runs list'.")
    return paths


def _effective_status(paths: RunPaths) -> dict:
    """status.json as stored, except a queued/running run whose process is gone is reported as interrupted.

    "Its process" is checked, not just "a process with that pid": after a restart the pid may belong to
    anything, and a copied run folder carries the original's pid. A running trainer holds the folder's lock;
    a queued one (still importing TensorFlow) was started with this folder on its command line.
    """
    reap_children()
    status = read_json_object(paths.status)
    status.setdefault("state", FAILED if not status else QUEUED)
    if status["state"] in ACTIVE_STATES and not _is_trainer_of(paths, status):
        status["state"] = INTERRUPTED
        status["error"] = status.get("error") or "the training process ended without saying why (killed?); resume it."
    return status


def _is_trainer_of(paths: RunPaths, status: dict) -> bool:
    pid = status.get("pid")
    if not _pid_alive(pid):
        return False
    if status["state"] == RUNNING:
        return lock_holder(paths, dying_wait_s=0) == pid
    try:  # queued
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc to ask: the pid alone
    return os.fsencode(str(paths.root.resolve())) in command


def _pid_alive(pid) -> bool:
    """True when ``pid`` is a live (not zombie) process."""
    if isinstance(pid, bool) or not isinstance(pid, int) or not 0 < pid < 2**31:
        return False  # none, or a damaged status.json ("abc", [1], 10**20): no process to probe
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)  # our own dead child: reap it so it is not a zombie
        if reaped == pid:
            return False
    except ChildProcessError:
        pass  # not our child: fall through to the signal probe
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    stat = Path(f"/proc/{pid}/stat")
    if stat.is_file():
        try:
            return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            return True
    return True


