"""Run archives: pack a real run, import it elsewhere as a read-only run; hostile archives are refused."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import zipfile

import pytest

from carclf import run_archive, runs
from carclf.archive import ArchiveLimits
from carclf.cli import main
from carclf.config import load_config
from carclf.errors import ArchiveError, RunError
from carclf.train import train
from train_helpers import tiny_config

pytestmark = pytest.mark.slow  # every test here uses the module's real training run (~40 s on 2 cores)

# Three real car models with 10-13 photos each (see ../shared/data/README.md).
REAL_CLASSES = ("bmw_x5", "land_cruiser", "qashqai")


@pytest.fixture(scope="module")
def real_run(tmp_path_factory, shared_data):
    """One finished tiny run (cached-feature head stage, then fine-tuning) on real photos, trained in-process."""
    root = tmp_path_factory.mktemp("archive")
    for name in REAL_CLASSES:
        shutil.copytree(shared_data / "cars" / "manzhura_ru_5models" / name, root / "data" / name)
    config = tiny_config(root / "data", root / "models", name="far away",
                         stages=[{"epochs": 2, "learning_rate": 1e-3, "unfreeze": "none", "cached_views": 2},
                                 {"epochs": 1, "learning_rate": 1e-4, "unfreeze": 2}])
    paths = runs.create_run(config, root / "runs")
    status = train(config, paths.root, verbose=0)
    assert status["state"] == runs.FINISHED, status.get("error")
    paths.log.write_text("in-process run: a detached one logs here\n", encoding="utf-8")
    (paths.report / "report.json").parent.mkdir()
    (paths.report / "report.json").write_text('{"accuracy": 0.5}\n', encoding="utf-8")
    return paths


@pytest.fixture(scope="module")
def archive(real_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("packed") / "run.zip"
    assert main(["runs", "pack", str(real_run.root), str(out)]) == 0
    return out


def test_cli_round_trip_installs_a_read_only_finished_run(real_run, archive, tmp_path, capsys):
    with zipfile.ZipFile(archive) as packed:
        names = set(packed.namelist())
    assert {"config.yaml", "status.json", "history.csv", "log.txt", "report/report.json",
            run_archive.MANIFEST_FILE} <= names
    assert any(name.startswith("tensorboard/train/") for name in names)
    assert any(name.startswith("tensorboard/validation/") for name in names)
    assert not any(name.startswith("checkpoints/") or name == runs.LOCK_FILE for name in names)

    elsewhere = tmp_path / "runs"
    assert main(["runs", "import", str(archive), "--runs-dir", str(elsewhere)]) == 0
    assert "read-only" in capsys.readouterr().out
    (listed,) = runs.list_runs(elsewhere)
    run_id = listed["run_id"]
    assert run_id == real_run.run_id and listed["state"] == runs.FINISHED and runs.is_imported(listed)
    assert not runs.is_active(listed) and not runs.is_resumable(listed)
    assert listed[runs.IMPORTED_KEY]["archive"] == "run.zip"
    assert listed[runs.IMPORTED_KEY]["bundle"] == run_id and "bundle" not in listed and "pid" not in listed
    assert listed["val_metrics"] == runs.read_status(real_run.run_id, real_run.root.parent)["val_metrics"]
    copy = runs.run_paths(run_id, elsewhere)
    for name in ("history.csv", "config.yaml", "log.txt", "report/report.json"):
        assert (copy.root / name).read_bytes() == (real_run.root / name).read_bytes(), name
    for events in real_run.tensorboard.rglob("*tfevents*"):
        assert (copy.tensorboard / events.relative_to(real_run.tensorboard)).read_bytes() == events.read_bytes()
    assert len(runs.read_history(run_id, elsewhere)) == 3

    with pytest.raises(RunError, match="read-only"):
        runs.resume_run(run_id, elsewhere)
    with pytest.raises(RunError, match="nothing to stop"):
        runs.stop_run(run_id, elsewhere)
    assert main(["runs", "show", run_id, "--runs-dir", str(elsewhere)]) == 0
    assert "imported: trained elsewhere" in capsys.readouterr().out
    assert main(["runs", "import", str(archive), "--runs-dir", str(elsewhere)]) == 0  # again: a new id
    assert sorted(r["run_id"] for r in runs.list_runs(elsewhere)) == [run_id, f"{run_id}-2"]
    runs.delete_run(run_id, elsewhere)
    assert [r["run_id"] for r in runs.list_runs(elsewhere)] == [f"{run_id}-2"]


def test_checkpoints_only_when_asked(real_run, tmp_path):
    out = tmp_path / "with.zip"
    assert main(["runs", "pack", real_run.run_id, str(out), "--checkpoints",
                 "--runs-dir", str(real_run.root.parent)]) == 0
    with zipfile.ZipFile(out) as packed:
        assert "checkpoints/stage_end.weights.h5" in packed.namelist()
    run_id = run_archive.import_run(out, tmp_path / "runs")
    assert (tmp_path / "runs" / run_id / "checkpoints" / "stage_end.weights.h5").is_file()


def test_pack_never_replaces_an_existing_file_unasked(real_run, tmp_path, capsys):
    status = real_run.status.read_bytes()
    assert main(["runs", "pack", str(real_run.root), str(real_run.status)]) == 2  # its own status.json
    assert "already exists" in capsys.readouterr().err and real_run.status.read_bytes() == status
    (tmp_path / "old.zip").write_bytes(b"an older pack")
    assert main(["runs", "pack", str(real_run.root), str(tmp_path / "old.zip"), "--overwrite"]) == 0
    assert zipfile.is_zipfile(tmp_path / "old.zip")


def test_a_running_run_is_not_packed(real_run, tmp_path, capsys):
    paths = runs.create_run(load_config(real_run.config), tmp_path / "runs")
    runs.update_status(paths, state=runs.RUNNING, pid=os.getpid())  # this very process, training it:
    with runs.trainer_lock(paths):
        assert main(["runs", "pack", str(paths.root), str(tmp_path / "x.zip")]) == 2
    assert "stop it or wait" in capsys.readouterr().err
    assert not (tmp_path / "x.zip").exists()


def _entries(archive) -> dict:
    with zipfile.ZipFile(archive) as packed:
        return {name: packed.read(name) for name in packed.namelist()}


def _rebuild(entries: dict, fix_manifest: bool = True, extra=None) -> bytes:
    """A zip of ``entries``; with ``fix_manifest`` the manifest lists exactly their checksums (so only the
    defect under test remains)."""
    entries = dict(entries)
    if fix_manifest:
        manifest = json.loads(entries[run_archive.MANIFEST_FILE])
        manifest["files"] = {name: hashlib.sha256(data).hexdigest() for name, data in entries.items()
                             if name != run_archive.MANIFEST_FILE}
        entries[run_archive.MANIFEST_FILE] = json.dumps(manifest).encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as out:
        for name, data in entries.items():
            out.writestr(name, data)
        if extra:
            extra(out)
    return buffer.getvalue()


def _symlink(out):
    info = zipfile.ZipInfo("log.txt.link")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    out.writestr(info, "/etc/passwd")


HOSTILE = {
    "dotdot": (lambda e: {**e, "../escape.txt": b"x"}, {}, "outside the archive"),
    "absolute": (lambda e: {**e, "/tmp/abs.txt": b"x"}, {}, "absolute path"),
    "symlink": (lambda e: e, {"extra": _symlink}, "symbolic link"),
    "foreign file": (lambda e: {**e, "evil.py": b"import os"}, {}, "not a file a run folder holds"),
    "hidden file": (lambda e: {**e, "tensorboard/train/.events.out.tfevents.x": b"x"}, {}, "not a file a run"),
    "no manifest": (lambda e: {k: v for k, v in e.items() if k != run_archive.MANIFEST_FILE},
                    {"fix_manifest": False}, "not a carclf run archive"),
    "changed file": (lambda e: {**e, "history.csv": e["history.csv"] + b"9,1,0.1,1,1,1,1,1\n"},
                     {"fix_manifest": False}, "does not match its checksum"),
    "unlisted file": (lambda e: {**e, "report/extra.csv": b"a\n"}, {"fix_manifest": False}, "do not match its manifest"),
    "newer format": (lambda e: {**e, run_archive.MANIFEST_FILE: json.dumps(
        {**json.loads(e[run_archive.MANIFEST_FILE]), "version": 99}).encode()}, {}, "update carclf"),
    "no history": (lambda e: {k: v for k, v in e.items() if k != "history.csv"}, {}, "has no history.csv"),
    "junk history": (lambda e: {**e, "history.csv": b"epoch,loss\n1,<script>\n"}, {}, "not a run history"),
    "status not an object": (lambda e: {**e, "status.json": b"[1, 2]"}, {}, "not a run status"),
    "bad config": (lambda e: {**e, "config.yaml": b"img_size: huge\n"}, {}, "not a config this carclf reads"),
    "bomb": (lambda e: {**e, "tensorboard/train/events.out.tfevents.bomb": b"\0" * 50_000_000}, {}, "compression"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_archives_are_refused_and_leave_nothing(archive, tmp_path, case):
    change, options, message = HOSTILE[case]
    bad = tmp_path / "bad.zip"
    bad.write_bytes(_rebuild(change(_entries(archive)), **options))
    target = tmp_path / "runs"
    with pytest.raises(ArchiveError, match=message):
        run_archive.import_run(bad, target)
    assert not target.exists() or not list(target.iterdir()), "nothing kept, no hidden temp folder either"


def test_archive_limits_apply_and_a_hostile_run_id_is_made_safe(archive, tmp_path):
    with pytest.raises(ArchiveError, match="more than the limit"):
        run_archive.import_run(archive, tmp_path / "runs", limits=ArchiveLimits(max_files=3))
    entries = _entries(archive)
    manifest = json.loads(entries[run_archive.MANIFEST_FILE])
    entries[run_archive.MANIFEST_FILE] = json.dumps({**manifest, "run_id": "../../etc/passwd"}).encode()
    bad = tmp_path / "renamed.zip"
    bad.write_bytes(_rebuild(entries))
    run_id = run_archive.import_run(bad, tmp_path / "runs")
    assert run_id == "etc-passwd" and (tmp_path / "runs" / run_id / "status.json").is_file()
