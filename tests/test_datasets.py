"""carclf.datasets: zips of real photos become named datasets that scan_dataset accepts; bad ones leave nothing."""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

import pytest

from archive_helpers import BRAND_PHOTOS, folder_zip, snapshot, zip_bytes
from carclf.archive import ArchiveLimits
from carclf.data import scan_dataset
from carclf.datasets import (
    check_dataset_name,
    dataset_path,
    delete_dataset,
    import_archive,
    list_datasets,
)
from carclf.errors import ArchiveError, DataError, QuotaError
from carclf.quota import Quota

N_PHOTOS = sum(len(photos) for photos in BRAND_PHOTOS.values())


def _truncated_jpeg(shared_data: Path) -> bytes:
    """A real JPEG cut inside its header: the header check (probe_image) cannot read it."""
    return (shared_data / BRAND_PHOTOS["audi"][0]).read_bytes()[:40]


def test_folder_zip_with_top_folder_and_junk(shared_data: Path, tmp_path: Path) -> None:
    extra = {"README.txt": b"my brands", "ferrari/notes.pdf": b"%PDF-1.4", "__MACOSX/ferrari/._train_3.jpg": b"x",
             "ferrari/.DS_Store": b"x", "audi/broken.jpg": _truncated_jpeg(shared_data)}
    source = folder_zip(shared_data, tmp_path / "upload.zip", top="My Brands", extra=extra)
    calls = []
    report = import_archive(source, tmp_path / "datasets", progress=lambda done, total: calls.append((done, total)))
    assert report.name == "My-Brands" and report.path == tmp_path / "datasets" / "My-Brands"
    assert report.layout == "folders"
    assert report.counts == {brand: len(photos) for brand, photos in sorted(BRAND_PHOTOS.items())}
    reasons = dict(report.skipped)
    assert reasons["My Brands/README.txt"] == "not an image file"
    assert reasons["My Brands/ferrari/notes.pdf"] == "not an image file"
    assert reasons["My Brands/audi/broken.jpg"].startswith("unreadable image")
    assert not any("MACOSX" in member or "DS_Store" in member for member in reasons)
    assert report.warnings == []
    assert calls and calls[-1][0] == calls[-1][1] == N_PHOTOS + 1  # the photos and broken.jpg were unpacked
    info = scan_dataset(report.path)
    assert sorted(info.classes) == sorted(BRAND_PHOTOS) and len(info.items) == N_PHOTOS
    original = (shared_data / BRAND_PHOTOS["ferrari"][0]).read_bytes()
    assert (report.path / "ferrari" / "train_3.jpg").read_bytes() == original
    assert not (report.path / "audi" / "broken.jpg").exists()
    assert [p.name for p in (tmp_path / "datasets").iterdir()] == ["My-Brands"]
    [entry] = list_datasets(tmp_path / "datasets")
    assert (entry.name, entry.path, entry.n_photos) == ("My-Brands", report.path, N_PHOTOS)


def test_folder_zip_without_top_folder_one_photo_class_and_name_clash(shared_data: Path, tmp_path: Path) -> None:
    layout = {"ferrari": BRAND_PHOTOS["ferrari"], "mercedes": BRAND_PHOTOS["mercedes"][:1]}
    source = folder_zip(shared_data, tmp_path / "cars.zip", layout=layout)
    first = import_archive(source, tmp_path / "datasets")
    second = import_archive(io.BytesIO(source.read_bytes()), tmp_path / "datasets", name="cars")
    assert (first.name, second.name) == ("cars", "cars-2")
    assert first.counts == {"ferrari": 2, "mercedes": 1}
    assert first.warnings == ["class mercedes has 1 photo: it gets no validation photos"]
    assert scan_dataset(second.path).counts == {"ferrari": 2, "mercedes": 1}
    assert {entry.name for entry in list_datasets(tmp_path / "datasets")} == {"cars", "cars-2"}
    delete_dataset("cars", tmp_path / "datasets")
    assert [entry.name for entry in list_datasets(tmp_path / "datasets")] == ["cars-2"]


@pytest.mark.parametrize("top", ["", "competition"])
def test_kaggle_layout(shared_data: Path, tmp_path: Path, top: str) -> None:
    rows = [("100155.jpg", "0", BRAND_PHOTOS["ferrari"][0]), ("100306.jpg", "0", BRAND_PHOTOS["ferrari"][1]),
            ("200001.jpg", "3", BRAND_PHOTOS["mercedes"][0]), ("200002.jpg", "3", BRAND_PHOTOS["mercedes"][1])]
    table = io.StringIO()
    writer = csv.writer(table)
    writer.writerow(["Id", "Category"])
    writer.writerows((image_id, category) for image_id, category, _ in rows)
    prefix = f"{top}/" if top else ""
    source = tmp_path / "kaggle.zip"
    with zipfile.ZipFile(source, "w") as archive:
        archive.writestr(f"{prefix}train.csv", table.getvalue())
        for image_id, category, relative in rows:
            archive.write(shared_data / relative, f"{prefix}train/{category}/{image_id}")
        archive.writestr(f"{prefix}sample_submission.csv", "Id,Category\n")
    report = import_archive(source, tmp_path / "datasets")
    assert report.name == (top or "kaggle")
    assert report.layout == "kaggle" and report.counts == {"0": 2, "3": 2}
    assert (f"{prefix}sample_submission.csv", "not an image file") in report.skipped
    info = scan_dataset(report.path)
    assert info.layout == "kaggle" and len(info.items) == 4 and not info.missing


@pytest.mark.parametrize("entries, message", [
    ({"notes/readme.txt": b"no photos here"}, "no usable"),
    ({"__MACOSX/._x.jpg": b"x", ".hidden.jpg": b"x"}, "holds no files"),
])
def test_no_usable_photos_is_refused_and_leaves_nothing(tmp_path: Path, entries: dict, message: str) -> None:
    datasets = tmp_path / "datasets"
    (datasets / "old").mkdir(parents=True)
    before = snapshot(datasets)
    source = tmp_path / "empty.zip"
    source.write_bytes(zip_bytes(entries))
    with pytest.raises(ArchiveError, match=message):
        import_archive(source, datasets)
    assert snapshot(datasets) == before


def test_only_unreadable_photos_is_refused_and_leaves_nothing(shared_data: Path, tmp_path: Path) -> None:
    source = tmp_path / "broken.zip"
    source.write_bytes(zip_bytes({"a/x.jpg": _truncated_jpeg(shared_data), "b/y.jpg": b"not a jpeg"}))
    with pytest.raises(ArchiveError, match="no usable"):
        import_archive(source, tmp_path / "datasets")
    assert snapshot(tmp_path / "datasets") == {}


def test_one_class_archive_is_refused_without_naming_a_server_path(shared_data: Path, tmp_path: Path) -> None:
    photos = BRAND_PHOTOS["audi"]
    source = tmp_path / "one.zip"
    source.write_bytes(zip_bytes({f"brands/audi/{Path(p).name}": (shared_data / p).read_bytes() for p in photos}))
    with pytest.raises(ArchiveError, match=r"only one class \(audi\)") as caught:
        import_archive(source, tmp_path / "datasets")
    assert str(tmp_path) not in str(caught.value) and "/tmp" not in str(caught.value)
    assert snapshot(tmp_path / "datasets") == {}


def test_hostile_dataset_zip_and_quota_leave_nothing(shared_data: Path, tmp_path: Path) -> None:
    datasets = tmp_path / "datasets"
    photo = (shared_data / BRAND_PHOTOS["ferrari"][0]).read_bytes()
    source = tmp_path / "evil.zip"
    source.write_bytes(zip_bytes({"ferrari/a.jpg": photo, "../../outside.jpg": photo}))
    with pytest.raises(ArchiveError, match="outside the archive"):
        import_archive(source, datasets)
    with pytest.raises(ArchiveError, match="more than the limit of 3"):
        import_archive(folder_zip(shared_data, tmp_path / "many.zip"), datasets, limits=ArchiveLimits(max_files=3))
    with pytest.raises(QuotaError, match="workspace is full"):
        import_archive(folder_zip(shared_data, tmp_path / "ok.zip"), datasets, quota=Quota(10_000, [datasets]))
    assert snapshot(datasets) == {}
    assert not (tmp_path / "outside.jpg").exists()


@pytest.mark.parametrize("name", ["../etc", "a/b", "/abs", "..", ".hidden", "", "x" * 200])
def test_unsafe_dataset_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(DataError, match="invalid dataset name"):
        dataset_path(name, tmp_path)
    with pytest.raises(DataError, match="invalid dataset name"):
        delete_dataset(name, tmp_path)
    with pytest.raises(DataError, match="invalid dataset name"):
        import_archive(tmp_path / "missing.zip", tmp_path, name=name)


def test_dataset_path_and_missing_dataset(tmp_path: Path) -> None:
    assert check_dataset_name("brands-2") == "brands-2"
    assert dataset_path("brands-2", tmp_path) == tmp_path / "brands-2"
    with pytest.raises(DataError, match="no dataset named 'nope'"):
        delete_dataset("nope", tmp_path)
    assert list_datasets(tmp_path / "absent") == []
