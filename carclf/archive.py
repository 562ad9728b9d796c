"""Safe reading of user-supplied zip files (dataset uploads, bundle files).

A zip from a visitor may be hostile: paths that escape the destination, symlinks, millions of entries, a
small file that inflates to terabytes, encrypted or truncated data. ``safe_members`` checks the central
directory before anything is written; ``extract_safely`` also counts the real bytes while inflating (headers
can lie), unpacks into a hidden temporary folder beside the destination and renames it into place only on
success, so a refused archive leaves nothing behind.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import time
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Callable, Optional, Union

from carclf.errors import ArchiveError

# Hidden temporary folders live beside the destination and start with this prefix.
TEMP_PREFIX = ".tmp-unpack-"
# A temporary unpack folder older than this was left by a process killed mid-unpack (no unpack takes an
# hour): the next unpack into the same folder removes it, so it stops counting against the disk quota.
STALE_TEMP_S = 3600
# Bytes copied per read while extracting.
CHUNK_BYTES = 1 << 20

# While extracting with a quota, the workspace is measured again after this many entries (and at the end).
QUOTA_RECHECK_EVERY = 64

ArchiveSource = Union[str, Path, BinaryIO]
ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class ArchiveLimits:
    """What an archive may hold before it is refused."""

    max_files: int = 20_000  # entries (files and folders)
    max_total_bytes: int = 2 * 1024**3  # unpacked bytes, all entries together
    max_ratio: float = 200.0  # unpacked / compressed bytes of one entry (zip-bomb guard)
    max_member_bytes: int = 512 * 1024**2  # unpacked bytes of one entry


# Entries this small are not ratio-checked (a few KB of zeros compresses extremely well and is harmless).
RATIO_MIN_BYTES = 1024 * 1024


def open_zip(source: ArchiveSource) -> zipfile.ZipFile:
    """Open ``source`` (a path or a binary file-like) as a zip, or raise ``ArchiveError``."""
    if hasattr(source, "seek"):
        source.seek(0)
    name = _source_name(source)
    try:
        return zipfile.ZipFile(source if hasattr(source, "read") else Path(source))
    except FileNotFoundError as error:
        raise ArchiveError(f"{name}: no such file.") from error
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as error:
        raise ArchiveError(f"{name} is not a readable zip file (damaged or truncated?): "
                           "zip the folder again.") from error


def member_parts(info: zipfile.ZipInfo) -> tuple[str, ...]:
    """The entry's path as parts, or ``ArchiveError`` if it is absolute or climbs out with '..'."""
    raw = info.filename
    text = raw.replace("\\", "/")
    if text.startswith("/") or (len(text) >= 2 and text[1] == ":") or "\x00" in text:
        raise ArchiveError(f"archive entry {raw!r} has an absolute path: refused, nothing was kept.")
    parts = tuple(part for part in PurePosixPath(text).parts if part not in ("", "."))
    if ".." in parts:
        raise ArchiveError(f"archive entry {raw!r} points outside the archive ('..'): refused, nothing was kept.")
    return parts


def is_symlink(info: zipfile.ZipInfo) -> bool:
    """Whether a zip entry is a symbolic link (Unix mode in the high bits of external_attr)."""
    return stat.S_ISLNK(info.external_attr >> 16)


def safe_members(archive: zipfile.ZipFile, limits: ArchiveLimits = ArchiveLimits()) -> list[zipfile.ZipInfo]:
    """All entries, checked against ``limits`` from the central directory; raises ``ArchiveError``."""
    infos = archive.infolist()
    if len(infos) > limits.max_files:
        raise ArchiveError(f"the archive has {len(infos)} entries, more than the limit of {limits.max_files}: "
                           "split it or remove files.")
    total = 0
    for info in infos:
        member_parts(info)
        if is_symlink(info):
            raise ArchiveError(f"archive entry {info.filename!r} is a symbolic link: refused, nothing was kept.")
        if info.flag_bits & 0x1:
            raise ArchiveError(f"archive entry {info.filename!r} is encrypted: zip it again without a password.")
        if info.file_size > limits.max_member_bytes:
            raise ArchiveError(f"archive entry {info.filename!r} unpacks to {_mb(info.file_size)}, more than the "
                               f"limit of {_mb(limits.max_member_bytes)} per file.")
        if info.file_size >= RATIO_MIN_BYTES and info.file_size > limits.max_ratio * max(info.compress_size, 1):
            raise ArchiveError(f"archive entry {info.filename!r} has an extreme compression ratio "
                               f"({info.file_size // max(info.compress_size, 1)}:1, a zip bomb?): refused.")
        total += info.file_size
    if total > limits.max_total_bytes:
        raise ArchiveError(f"the archive unpacks to {_mb(total)}, more than the limit of "
                           f"{_mb(limits.max_total_bytes)}: upload a smaller one.")
    return infos


def extract_safely(
    source: ArchiveSource,
    dest_dir: Union[str, Path],
    limits: ArchiveLimits = ArchiveLimits(),
    keep: Optional[Callable[[zipfile.ZipInfo], bool]] = None,
    progress: Optional[ProgressCallback] = None,
    quota=None,
) -> list[zipfile.ZipInfo]:
    """Unpack the files of ``source`` for which ``keep(info)`` is true into ``dest_dir`` (must not exist).

    The archive is checked with ``safe_members``; real bytes are counted while inflating. Everything goes
    into a hidden temporary folder beside ``dest_dir`` that is renamed into place only when all went well;
    on any failure it is removed and ``ArchiveError`` (or ``QuotaError``) is raised. Returns the entries
    written. ``progress(done, total)`` is called after each entry; ``quota`` (a ``carclf.quota.Quota``) is
    checked before writing and while writing.
    """
    dest_dir = Path(dest_dir)
    if dest_dir.exists():
        raise ArchiveError(f"{dest_dir} already exists: choose another name.")
    temp = unpack_to_temp(source, dest_dir.parent, limits, keep=keep, progress=progress, quota=quota)
    try:
        os.rename(temp.path, dest_dir)
    except OSError:
        shutil.rmtree(temp.path, ignore_errors=True)
        raise
    return temp.members


@dataclass
class Unpacked:
    """A hidden temporary folder holding an archive's kept entries (the caller renames or removes it)."""

    path: Path
    members: list


def unpack_to_temp(
    source: ArchiveSource,
    parent: Union[str, Path],
    limits: ArchiveLimits = ArchiveLimits(),
    keep: Optional[Callable[[zipfile.ZipInfo], bool]] = None,
    progress: Optional[ProgressCallback] = None,
    quota=None,
) -> Unpacked:
    """Unpack into a new hidden folder inside ``parent``; on failure nothing is left and the error is raised."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(parent)
    with open_zip(source) as archive:
        infos = safe_members(archive, limits)
        chosen = [info for info in infos if not info.is_dir() and (keep is None or keep(info))]
        if quota is not None:
            quota.check(sum(info.file_size for info in chosen))
        temp = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=parent))
        try:
            _extract_members(archive, chosen, temp, limits, progress, quota)
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
    return Unpacked(temp, chosen)


def remove_stale_temps(parent: Path, older_than_s: float = STALE_TEMP_S) -> list[Path]:
    """Remove the temporary unpack folders in ``parent`` older than ``older_than_s``; returns them."""
    now = time.time()
    removed = []
    for child in parent.glob(TEMP_PREFIX + "*"):
        try:
            stale = child.is_dir() and not child.is_symlink() and now - child.stat().st_mtime > older_than_s
        except OSError:
            continue  # removed meanwhile by another unpack
        if stale:
            shutil.rmtree(child, ignore_errors=True)
            removed.append(child)
    return removed


def _extract_members(archive, chosen, temp: Path, limits: ArchiveLimits, progress, quota) -> None:
    total_written = 0
    used_before = None if quota is None else quota.used()
    for done, info in enumerate(chosen, start=1):
        target = temp.joinpath(*member_parts(info))
        written = 0
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as reader, open(target, "wb") as writer:
                while chunk := reader.read(CHUNK_BYTES):
                    written += len(chunk)
                    total_written += len(chunk)
                    if written > max(info.file_size, 0) or written > limits.max_member_bytes:
                        raise ArchiveError(f"archive entry {info.filename!r} unpacks to more bytes than its header "
                                           "says: refused, nothing was kept.")
                    if total_written > limits.max_total_bytes:
                        raise ArchiveError(f"the archive unpacks to more than {_mb(limits.max_total_bytes)}: "
                                           "upload a smaller one.")
                    if used_before is not None and used_before + total_written > quota.limit_bytes:
                        raise quota.full_error(used_before, total_written)
                    writer.write(chunk)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError, NotImplementedError) as error:
            raise ArchiveError(f"archive entry {info.filename!r} cannot be unpacked, damaged or clashing "
                               f"({_first_line(error)}): zip the folder again.") from error
        if quota is not None and (done % QUOTA_RECHECK_EVERY == 0 or done == len(chosen)):
            quota.check(0)  # others (a training run) may have written meanwhile: measure again
        if progress is not None:
            progress(done, len(chosen))


def _source_name(source) -> str:
    name = getattr(source, "name", None) if hasattr(source, "read") else source
    return Path(str(name)).name if name else "the uploaded file"


def _mb(n_bytes: int) -> str:
    return f"{n_bytes / 1e6:.1f} MB"


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
