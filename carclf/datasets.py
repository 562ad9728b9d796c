"""Named datasets in a folder the app owns (the public app's only way in for training photos).

A visitor uploads a ``.zip`` (folder-per-class, or Kaggle's ``train.csv`` + ``train/<cat>/<id>.jpg``, with or
without one top folder). It is unpacked with ``carclf.archive``'s rules into a hidden temporary folder,
non-images and unreadable photos are dropped and listed, the result must pass ``carclf.data.scan_dataset``,
and only then is it renamed to ``<datasets_dir>/<name>``: a refused upload leaves nothing behind.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from carclf.archive import ArchiveLimits, ArchiveSource, member_parts, open_zip, safe_members, unpack_to_temp
from carclf.atomic import read_json_object
from carclf.data import KAGGLE_CSV, KAGGLE_IMAGE_DIR, scan_dataset
from carclf.clock import now_iso
from carclf.errors import ArchiveError, DataError, ImageError
from carclf.images import is_image_file, probe_image
from carclf.names import check_id, safe_id

# Where the dashboard keeps uploaded datasets unless configured otherwise.
DATASETS_DIR = "workspace/datasets"
# A small JSON file in each dataset folder: when and from what it was imported (dotfile: not a photo).
MARKER_FILE = ".carclf-dataset.json"
# Folders macOS's Finder adds to zips; never data.
IGNORED_TOP = "__MACOSX"


@dataclass(frozen=True)
class DatasetEntry:
    """One named dataset in the workspace."""

    name: str
    path: Path
    created_at: str
    n_photos: int


@dataclass
class ImportReport:
    """What ``import_archive`` made of an archive."""

    name: str
    path: Path
    layout: str
    counts: dict  # class -> usable photos
    skipped: list = field(default_factory=list)  # (archive member, reason)
    warnings: list = field(default_factory=list)  # one-line messages


def check_dataset_name(name: str) -> str:
    """Return ``name`` if it is a plain safe folder name (carclf.names), else raise ``DataError``."""
    return check_id(name, "dataset", DataError)


def dataset_path(name: str, datasets_dir=DATASETS_DIR) -> Path:
    """The folder of dataset ``name`` (checked name; the folder may not exist)."""
    return Path(datasets_dir) / check_dataset_name(name)


def list_datasets(datasets_dir=DATASETS_DIR) -> list[DatasetEntry]:
    """The workspace's datasets, newest first (hidden temporary folders are not datasets)."""
    root = Path(datasets_dir)
    if not root.is_dir():
        return []
    entries = []
    for folder in root.iterdir():
        if folder.name.startswith(".") or not folder.is_dir():
            continue
        marker = read_json_object(folder / MARKER_FILE)
        created = marker.get("created_at") or datetime.fromtimestamp(folder.stat().st_mtime, timezone.utc).isoformat()
        n_photos = marker.get("n_photos")
        if not isinstance(n_photos, int):
            n_photos = sum(1 for path in folder.rglob("*") if is_image_file(path))
        entries.append(DatasetEntry(folder.name, folder, str(created), n_photos))
    return sorted(entries, key=lambda entry: (entry.created_at, entry.name), reverse=True)


def delete_dataset(name: str, datasets_dir=DATASETS_DIR) -> None:
    """Delete dataset ``name`` (``DataError`` if there is no such dataset)."""
    path = dataset_path(name, datasets_dir)
    if not path.is_dir():
        raise DataError(f"no dataset named {name!r}: pick one from the list.")
    shutil.rmtree(path)


def import_archive(
    source: ArchiveSource,
    datasets_dir=DATASETS_DIR,
    name: Optional[str] = None,
    limits: ArchiveLimits = ArchiveLimits(),
    quota=None,
    progress=None,
) -> ImportReport:
    """Unpack a dataset zip into ``datasets_dir/<name>``; raises ``ArchiveError``/``QuotaError``, leaving nothing.

    ``source`` is a path or a binary file-like (a Streamlit ``UploadedFile``). ``name`` defaults to the
    archive's top folder or file stem; a clash gets a numeric suffix. ``progress(done, total)`` is called
    while unpacking.
    """
    datasets_dir = Path(datasets_dir)
    if name is not None:
        check_dataset_name(name)
    with open_zip(source) as archive:
        infos = safe_members(archive, limits)
    plan = _plan(infos)
    skipped = list(plan.skipped)
    wanted = {info.filename for info in plan.keep}
    temp = unpack_to_temp(source, datasets_dir, limits, keep=lambda info: info.filename in wanted,
                          progress=progress, quota=quota)
    try:
        root = temp.path.joinpath(*plan.top) if plan.top else temp.path
        for info in plan.keep:
            path = temp.path.joinpath(*member_parts(info))
            if path.name == KAGGLE_CSV:
                continue
            try:
                probe_image(path)
            except ImageError as error:
                skipped.append((info.filename, f"unreadable image ({error})"))
                path.unlink()
        try:
            info = scan_dataset(root)
        except (DataError, UnicodeDecodeError, csv.Error) as error:
            # the message names the temporary unpack folder: say "the archive" instead, leaking no server path
            message = _first_line(error).replace(f"{temp.path}{os.sep}", "").replace(str(temp.path), "the archive")
            raise ArchiveError(f"the archive holds no usable dataset: {message}") from None
        if not info.items:
            raise ArchiveError("the archive holds no usable photos: zip a folder with one sub-folder per class.")
        counts = dict(info.counts)
        warnings = [f"class {cls} has {n} photo{'s' if n != 1 else ''}: it gets no validation photos"
                    for cls, n in counts.items() if n < 2]
        final_name = _unique_name(datasets_dir, name or _default_name(source, plan.top))
        _write_marker(root, {"created_at": now_iso(),
                             "n_photos": len(info.items), "layout": info.layout, "source": _source_label(source)})
        target = datasets_dir / final_name
        root.rename(target)
    finally:
        shutil.rmtree(temp.path, ignore_errors=True)
    return ImportReport(final_name, target, info.layout, counts, skipped, warnings)


@dataclass
class _Plan:
    top: tuple  # the single top folder to strip ((), or one part)
    keep: list  # zip entries to unpack
    skipped: list  # (member, reason)


def _plan(infos: list[zipfile.ZipInfo]) -> _Plan:
    """Decide the top folder, the layout and which entries are data."""
    files = []
    for info in infos:
        if info.is_dir():
            continue
        parts = member_parts(info)
        if not parts or parts[0] == IGNORED_TOP or any(part.startswith(".") for part in parts):
            continue  # macOS resource forks, .DS_Store, hidden files: never data, not worth listing
        files.append((info, parts))
    if not files:
        raise ArchiveError("the archive holds no files: zip a folder with one sub-folder per class.")
    top: tuple = ()
    firsts = {parts[0] for _info, parts in files}
    if len(firsts) == 1 and all(len(parts) >= 2 for _info, parts in files):
        inner = [parts[1:] for _info, parts in files]
        if any(len(parts) >= 2 for parts in inner) or any(parts == (KAGGLE_CSV,) for parts in inner):
            top = (next(iter(firsts)),)
    kaggle = any(parts[len(top):] == (KAGGLE_CSV,) for _info, parts in files)
    keep, skipped = [], []
    for info, parts in files:
        rel = parts[len(top):]
        if kaggle and rel == (KAGGLE_CSV,):
            keep.append(info)
        elif not is_image_file(Path(rel[-1])):
            skipped.append((info.filename, "not an image file"))
        elif kaggle and (len(rel) != 3 or rel[0] != KAGGLE_IMAGE_DIR):
            skipped.append((info.filename, f"not under {KAGGLE_IMAGE_DIR}/<category>/"))
        elif not kaggle and len(rel) < 2:
            skipped.append((info.filename, "not inside a class folder"))
        else:
            keep.append(info)
    return _Plan(top, keep, skipped)


def _default_name(source, top: tuple) -> str:
    if top:
        return safe_id(top[0], fallback="dataset")
    return safe_id(Path(_source_label(source)).stem, fallback="dataset")


def _unique_name(datasets_dir: Path, name: str) -> str:
    name = check_dataset_name(safe_id(name, fallback="dataset"))
    candidate, number = name, 2
    while (datasets_dir / candidate).exists():
        candidate = f"{name}-{number}"
        number += 1
    return candidate


def _source_label(source) -> str:
    name = getattr(source, "name", None) if hasattr(source, "read") else source
    return Path(str(name)).name if name else "upload"


def _write_marker(folder: Path, data: dict) -> None:
    (folder / MARKER_FILE).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
