"""carclf.archive: hostile zips are refused with a one-line message and leave the destination untouched."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from archive_helpers import (
    BRAND_PHOTOS,
    folder_zip,
    set_encrypted_flag,
    shrink_declared_size,
    snapshot,
    symlink_info,
    zip_bytes,
)
from carclf.archive import ArchiveLimits, extract_safely, open_zip, safe_members
from carclf.errors import ArchiveError, QuotaError
from carclf.quota import Quota, folder_bytes

PHOTO = BRAND_PHOTOS["ferrari"][0]


@pytest.fixture
def photo_bytes(shared_data: Path) -> bytes:
    return (shared_data / PHOTO).read_bytes()


def _hostile(photo: bytes) -> dict:
    """name -> (zip bytes, limits, expected message fragment)."""
    good = zip_bytes({"cars/a.jpg": photo, "cars/b.jpg": photo})
    stored = zip_bytes({"cars/a.jpg": photo}, compression=zipfile.ZIP_STORED)
    middle = len(stored) // 2
    corrupt = stored[:middle] + bytes([stored[middle] ^ 0xFF]) + stored[middle + 1:]
    small = ArchiveLimits(max_files=3, max_total_bytes=len(photo) + 10, max_member_bytes=len(photo) + 10)
    return {
        "absolute": (zip_bytes({"/etc/a.jpg": photo}), ArchiveLimits(), "absolute path"),
        "dotdot": (zip_bytes({"cars/../../a.jpg": photo}), ArchiveLimits(), "outside the archive"),
        "backslash-dotdot": (zip_bytes({"cars\\..\\..\\a.jpg": photo}), ArchiveLimits(), "outside the archive"),
        "drive-letter": (zip_bytes({"C:\\Windows\\a.jpg": photo}), ArchiveLimits(), "absolute path"),
        "symlink": (zip_bytes({symlink_info("cars/link.jpg"): b"/etc/passwd"}), ArchiveLimits(), "symbolic link"),
        "too-many-files": (zip_bytes({f"cars/{i}.jpg": photo for i in range(4)}), small, "more than the limit of 3"),
        "too-many-bytes": (good, small, "unpacks to"),
        "member-too-big": (zip_bytes({"cars/a.jpg": photo}),
                           ArchiveLimits(max_member_bytes=len(photo) - 1), "per file"),
        "zip-bomb": (zip_bytes({"cars/bomb.jpg": bytes(8 * 1024 * 1024)}), ArchiveLimits(), "compression ratio"),
        "encrypted": (set_encrypted_flag(good), ArchiveLimits(), "encrypted"),
        "truncated": (good[: len(good) // 2], ArchiveLimits(), "not a readable zip"),
        "bad-crc": (corrupt, ArchiveLimits(), "damaged"),
        "file-and-folder": (zip_bytes({"cars": photo, "cars/a.jpg": photo}), ArchiveLimits(), "clashing"),
        "lying-header": (shrink_declared_size(stored, 100), ArchiveLimits(), "archive entry 'cars/a.jpg'"),
        "not-a-zip": (photo, ArchiveLimits(), "not a readable zip"),
    }


@pytest.mark.parametrize("case", ["absolute", "dotdot", "backslash-dotdot", "drive-letter", "symlink",
                                  "too-many-files", "too-many-bytes", "member-too-big", "zip-bomb", "encrypted",
                                  "truncated", "bad-crc", "file-and-folder", "lying-header",
                                  "not-a-zip"])
def test_hostile_archive_is_refused_and_leaves_nothing(case: str, photo_bytes: bytes, tmp_path: Path) -> None:
    data, limits, message = _hostile(photo_bytes)[case]
    workspace = tmp_path / "workspace"
    (workspace / "existing").mkdir(parents=True)
    (workspace / "existing" / "keep.txt").write_text("untouched")
    source = tmp_path / f"{case}.zip"
    source.write_bytes(data)
    before = snapshot(workspace)
    with pytest.raises(ArchiveError, match=message) as caught:
        extract_safely(source, workspace / "new", limits)
    assert "\n" not in str(caught.value)
    assert snapshot(workspace) == before
    assert not (tmp_path / "etc").exists() and not (tmp_path / "a.jpg").exists()


def test_good_archive_unpacks_byte_for_byte_with_progress(shared_data: Path, tmp_path: Path) -> None:
    source = folder_zip(shared_data, tmp_path / "brands.zip", top="brands")
    calls = []
    written = extract_safely(source, tmp_path / "out", progress=lambda done, total: calls.append((done, total)))
    n_files = sum(len(photos) for photos in BRAND_PHOTOS.values())
    assert len(written) == n_files
    assert calls == [(i, n_files) for i in range(1, n_files + 1)]
    for brand, photos in BRAND_PHOTOS.items():
        for relative in photos:
            assert (tmp_path / "out" / "brands" / brand / Path(relative).name).read_bytes() == \
                (shared_data / relative).read_bytes()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_killed_unpacks_leftover_is_removed_by_the_next_unpack(shared_data: Path, tmp_path: Path) -> None:
    import os
    import time

    from carclf.archive import STALE_TEMP_S, TEMP_PREFIX

    source = folder_zip(shared_data, tmp_path / "brands.zip", top="brands")
    parent = tmp_path / "datasets"
    left, fresh = parent / f"{TEMP_PREFIX}killed", parent / f"{TEMP_PREFIX}running"
    for folder in (left, fresh):
        (folder / "brands").mkdir(parents=True)
        (folder / "brands" / "half.jpg").write_bytes(b"\xff\xd8" * 1000)
    hour_ago = time.time() - STALE_TEMP_S - 60
    os.utime(left, (hour_ago, hour_ago))
    extract_safely(source, parent / "brands")
    assert not left.exists()  # left by a process killed an hour ago: it no longer eats the quota
    assert fresh.exists()  # another visitor's unpack may be writing into this one right now
    assert (parent / "brands" / "brands").is_dir()


def test_file_like_source_and_keep_predicate(shared_data: Path, tmp_path: Path) -> None:
    data = folder_zip(shared_data, tmp_path / "brands.zip", extra={"notes.txt": b"hello"}).read_bytes()
    written = extract_safely(io.BytesIO(data), tmp_path / "out", keep=lambda info: info.filename.endswith(".jpg"))
    assert all(info.filename.endswith(".jpg") for info in written)
    assert not (tmp_path / "out" / "notes.txt").exists()
    assert (tmp_path / "out" / "ferrari" / "train_3.jpg").is_file()


def test_existing_destination_is_refused(shared_data: Path, tmp_path: Path) -> None:
    source = folder_zip(shared_data, tmp_path / "brands.zip")
    (tmp_path / "out").mkdir()
    with pytest.raises(ArchiveError, match="already exists"):
        extract_safely(source, tmp_path / "out")


def test_safe_members_lists_a_clean_archive(shared_data: Path, tmp_path: Path) -> None:
    with open_zip(folder_zip(shared_data, tmp_path / "brands.zip")) as archive:
        names = [info.filename for info in safe_members(archive, ArchiveLimits())]
    assert names == [f"{brand}/{Path(p).name}" for brand, photos in BRAND_PHOTOS.items() for p in photos]


def test_quota_refuses_before_writing(shared_data: Path, tmp_path: Path) -> None:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    (workspace / "old.bin").write_bytes(bytes(1000))
    source = folder_zip(shared_data, tmp_path / "brands.zip")
    quota = Quota(limit_bytes=folder_bytes(workspace) + 5000, folders=[workspace])
    before = snapshot(workspace)
    with pytest.raises(QuotaError, match="workspace is full: .* delete a dataset, run or model"):
        extract_safely(source, workspace / "new", quota=quota)
    assert snapshot(workspace) == before


def test_quota_exceeded_while_writing_removes_the_partial_output(shared_data: Path, tmp_path: Path) -> None:
    """Another writer (a training run) fills the workspace during the unpack: the unpack gives up cleanly."""
    workspace, runs = tmp_path / "workspace", tmp_path / "runs"
    workspace.mkdir()
    runs.mkdir()
    source = folder_zip(shared_data, tmp_path / "brands.zip")
    with zipfile.ZipFile(source) as archive:
        needed = sum(info.file_size for info in archive.infolist())
    quota = Quota(limit_bytes=needed + 10_000, folders=[workspace, runs])

    def other_writer(done: int, total: int) -> None:
        (runs / f"checkpoint-{done}.bin").write_bytes(bytes(20_000))

    import carclf.archive as archive_module

    assert archive_module.QUOTA_RECHECK_EVERY > 1  # checked again at the end at the latest
    with pytest.raises(QuotaError, match="workspace is full"):
        extract_safely(source, workspace / "new", quota=quota, progress=other_writer)
    assert list(workspace.iterdir()) == []
