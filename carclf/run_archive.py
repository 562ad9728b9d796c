"""Run archives: a run folder as one ``.zip`` to move a run (a Kaggle GPU run, say) to another carclf.

Why: a hosted app can then show the run that produced its model, curves and all. ``pack_run`` writes the
run's record (config, status, history, log, TensorBoard logs, an evaluation report; checkpoints only when
asked) with a ``carclf-run.json`` manifest (format version, each file's SHA-256). ``import_run`` applies
``carclf.archive``'s rules, accepts only the files a run folder holds (nothing else may be inside), checks
the checksums, status, history and config, and renames the run into the runs folder only when all is well:
a refused archive leaves nothing. An imported run is read-only (``runs.IMPORTED_KEY``): shown with its
curves in Runs and Compare, never resumed or stopped; it can be deleted. No TensorFlow here.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import re
import shutil
import zipfile
from pathlib import Path
from typing import Optional, Union

from carclf import runs
from carclf.archive import ArchiveLimits, ArchiveSource, member_parts, open_zip, safe_members, unpack_to_temp
from carclf.atomic import atomic_output, atomic_write_json, read_json_object
from carclf.bundle_file import checksum_mismatch, sha256_file
from carclf.clock import now_iso
from carclf.errors import ArchiveError, ConfigError, RunError
from carclf.runs import RunPaths

# The manifest inside every run archive, and its "format" value (tells a run archive from any other zip).
MANIFEST_FILE = "carclf-run.json"
MANIFEST_KIND = "carclf-run"
# Version of the archive layout this carclf writes and reads.
FORMAT_VERSION = 1
# Largest manifest read (bytes): a few hundred file entries.
MAX_MANIFEST_BYTES = 1024**2
# One component of a packed path: no hidden or temporary files (atomic writes leave ".name.tmp..." ones).
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")
# Deepest path under checkpoints/ (checkpoints/backup/stage_2/epoch_3.weights.h5).
MAX_CHECKPOINT_DEPTH = 4
# Folders of TensorBoard event files (carclf.tensorboard_log.TRAIN / VALIDATION).
TENSORBOARD_SUBDIRS = ("train", "validation")
# File types of an evaluation report (carclf.evaluation writes report.json and CSV files).
REPORT_SUFFIXES = (".json", ".csv")
# Where the run folder's own files are named: carclf.runs owns the layout.
_LAYOUT = RunPaths(Path("run"))
TOP_FILES = tuple(path.name for path in (_LAYOUT.config, _LAYOUT.status, _LAYOUT.history, _LAYOUT.log))
REQUIRED_FILES = tuple(path.name for path in (_LAYOUT.config, _LAYOUT.status, _LAYOUT.history))
# Mode of an imported run folder (as a bundle folder's: carclf.bundle.BUNDLE_DIR_MODE).
RUN_DIR_MODE = 0o755
# States an imported run keeps; anything else (a run packed by hand while it trained) is stored as stopped.
KEPT_STATES = frozenset({runs.FINISHED, runs.STOPPED, runs.FAILED})


def is_run_file(parts: tuple, checkpoints: bool) -> bool:
    """Whether a relative path (as parts) is one of the files a run archive may hold."""
    if not parts or not all(_SAFE_NAME.match(part) for part in parts):
        return False
    top = parts[0]
    if len(parts) == 1:
        return top in TOP_FILES
    if top == _LAYOUT.tensorboard.name:
        return len(parts) == 3 and parts[1] in TENSORBOARD_SUBDIRS and "tfevents" in parts[2]
    if top == _LAYOUT.report.name:
        return len(parts) == 2 and parts[1].endswith(REPORT_SUFFIXES)
    if top == _LAYOUT.checkpoints.name:
        return checkpoints and len(parts) <= MAX_CHECKPOINT_DEPTH
    return False


def run_files(paths: RunPaths, checkpoints: bool = False) -> list[str]:
    """The packable files of a run folder, as sorted posix paths relative to it (symlinks never)."""
    found = []
    for folder, subfolders, names in os.walk(paths.root):
        subfolders[:] = [name for name in subfolders if not Path(folder, name).is_symlink()]
        for name in names:
            path = Path(folder, name)
            relative = path.relative_to(paths.root)
            if path.is_file() and not path.is_symlink() and is_run_file(relative.parts, checkpoints):
                found.append(relative.as_posix())
    return sorted(found)


def find_run(run: str, runs_dir=runs.RUNS_DIR) -> RunPaths:
    """A run folder given as a path (holding status.json) or as a run id in ``runs_dir``."""
    folder = Path(run)
    if (folder / _LAYOUT.status.name).is_file():
        return RunPaths(folder)
    return runs.run_paths(run, runs_dir)


def pack_run(paths: RunPaths, out_path: Union[str, Path], checkpoints: bool = False) -> Path:
    """Write run folder ``paths`` as one zip at ``out_path`` (atomically); refuse a run that is training."""
    status = runs.read_status(paths.run_id, paths.root.parent)  # checks the id and that status.json exists
    if runs.is_active(status):
        raise RunError(f"run {paths.run_id} is {status['state']}: stop it or wait for it to finish, then pack it.")
    files = run_files(paths, checkpoints)
    missing = [name for name in REQUIRED_FILES if name not in files]
    if missing:
        raise RunError(f"run {paths.run_id} has no {', '.join(missing)}: it cannot be packed.")
    manifest = {"format": MANIFEST_KIND, "version": FORMAT_VERSION, "run_id": paths.run_id, "packed_at": now_iso(),
                "checkpoints": checkpoints, "files": {name: sha256_file(paths.root / name) for name in files}}
    with atomic_output(out_path) as temp:
        with zipfile.ZipFile(temp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(MANIFEST_FILE, json.dumps(manifest, indent=2) + "\n")
            for name in files:
                archive.write(paths.root / name, name)
    return Path(out_path)


def import_run(source: ArchiveSource, runs_dir=runs.RUNS_DIR, limits: Optional[ArchiveLimits] = None,
               quota=None) -> str:
    """Check and install a run archive into ``runs_dir`` as a read-only run; return its run id.

    Raises ``ArchiveError`` (unsafe, damaged or not a run archive) or ``QuotaError``; nothing is left behind.
    """
    runs_dir = Path(runs_dir)
    limits = limits or ArchiveLimits()
    with open_zip(source) as archive:
        manifest = _read_manifest(archive, safe_members(archive, limits))
    temp = unpack_to_temp(source, runs_dir, limits, quota=quota)
    try:
        damaged = checksum_mismatch(temp.path, manifest["files"])
        if damaged:
            raise ArchiveError(f"{damaged} in the run archive does not match its checksum: the file is damaged "
                               "or was modified; pack the run again.")
        (temp.path / MANIFEST_FILE).unlink()
        _check_run_files(RunPaths(temp.path))
        os.chmod(temp.path, RUN_DIR_MODE)  # mkdtemp made it owner-only
        return _install(temp.path, runs_dir, manifest["run_id"], _source_name(source))
    finally:
        shutil.rmtree(temp.path, ignore_errors=True)


def describe_origin(status: dict) -> str:
    """Where an imported run came from, in words ('' for a run trained here)."""
    origin = status.get(runs.IMPORTED_KEY)
    if not isinstance(origin, dict):
        return ""
    note = f"trained elsewhere, imported from {origin.get('archive')} on {str(origin.get('at'))[:10]}; read-only"
    return note + (f"; its model bundle was {origin['bundle']}" if origin.get("bundle") else "")


def _read_manifest(archive: zipfile.ZipFile, infos: list) -> dict:
    names = [info.filename for info in infos if not info.is_dir()]
    if len(set(names)) != len(names):
        raise ArchiveError("the run archive names a file twice: pack the run again.")
    if MANIFEST_FILE not in names:
        raise ArchiveError(f"this zip is not a carclf run archive (no {MANIFEST_FILE}): make one with "
                           "'python -m carclf runs pack RUN OUT.zip'.")
    info = archive.getinfo(MANIFEST_FILE)
    if info.file_size > MAX_MANIFEST_BYTES:
        raise ArchiveError(f"{MANIFEST_FILE} is too large: this is not a carclf run archive.")
    try:
        manifest = json.loads(archive.read(info).decode("utf-8"))
    except (ValueError, UnicodeDecodeError, zipfile.BadZipFile, OSError) as error:
        raise ArchiveError(f"{MANIFEST_FILE} cannot be read ({error}): pack the run again.") from error
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_KIND:
        raise ArchiveError(f"{MANIFEST_FILE} does not describe a carclf run archive: pack the run again.")
    version = manifest.get("version")
    if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise ArchiveError(f"run archive format version {version!r} is not supported by this carclf (it reads "
                           f"up to {FORMAT_VERSION}): update carclf.")
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(isinstance(v, str) and len(v) == 64 for v in files.values()):
        raise ArchiveError(f"{MANIFEST_FILE} has no valid file list: pack the run again.")
    for info in infos:
        if not info.is_dir() and info.filename != MANIFEST_FILE and not is_run_file(member_parts(info), True):
            raise ArchiveError(f"archive entry {info.filename!r} is not a file a run folder holds: refused, "
                               "nothing was kept.")
    if set(files) != set(names) - {MANIFEST_FILE}:
        raise ArchiveError("the run archive's files do not match its manifest: pack the run again.")
    missing = [name for name in REQUIRED_FILES if name not in files]
    if missing:
        raise ArchiveError(f"the run archive has no {', '.join(missing)}: pack the run again.")
    manifest["run_id"] = str(manifest.get("run_id") or "imported-run")
    return manifest


def _check_run_files(paths: RunPaths) -> None:
    """Status is a JSON object with a state, history is numeric per epoch, config is a valid carclf config."""
    from carclf.config import load_config

    status = read_json_object(paths.status)
    if not isinstance(status.get("state"), str):
        raise ArchiveError("status.json in the run archive is not a run status: pack the run again.")
    _check_history(paths.history)
    try:
        load_config(paths.config)
    except ConfigError as error:
        raise ArchiveError(f"config.yaml in the run archive is not a config this carclf reads: {error}") from error


def _check_history(path: Path) -> None:
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if "epoch" not in (reader.fieldnames or []):
                raise ArchiveError("history.csv in the run archive has no epoch column: pack the run again.")
            for row in reader:
                int(row["epoch"])
                for column in runs.HISTORY_COLUMNS:
                    if row.get(column):
                        float(row[column])
    except (ValueError, TypeError, UnicodeDecodeError, csv.Error) as error:
        raise ArchiveError(f"history.csv in the run archive is not a run history ({error}): pack the run "
                           "again.") from error


def _install(folder: Path, runs_dir: Path, wanted_id: str, archive_name: str) -> str:
    """Mark the unpacked run read-only and rename it into ``runs_dir`` under a free run id."""
    status = read_json_object(folder / _LAYOUT.status.name)
    bundle = status.pop("bundle", None)
    status.pop("pid", None)
    if status.get("state") not in KEPT_STATES:
        status["state"] = runs.STOPPED
    base = (wanted_id if _valid_run_id(wanted_id) else runs.slugify(wanted_id))[:72]
    for counter in range(1, 1000):
        run_id = base if counter == 1 else f"{base}-{counter}"
        if (runs_dir / run_id).exists():
            continue
        status.update(run_id=run_id, **{runs.IMPORTED_KEY: {
            "at": now_iso(), "archive": archive_name, "run_id": wanted_id,
            "bundle": Path(str(bundle)).name if bundle else None}})
        atomic_write_json(folder / _LAYOUT.status.name, status, default=str)
        try:
            os.rename(folder, runs_dir / run_id)
        except OSError as error:
            if error.errno in (errno.EEXIST, errno.ENOTEMPTY):
                continue  # taken meanwhile by another import or run
            raise
        return run_id
    raise RunError(f"no free run id for {base} in {runs_dir}: delete old imports first.")


def _valid_run_id(run_id: str) -> bool:
    try:
        runs.check_run_id(run_id)
    except RunError:
        return False
    return True


def _source_name(source) -> str:
    name = getattr(source, "name", None) if hasattr(source, "read") else source
    return Path(str(name)).name if name else "an uploaded archive"
