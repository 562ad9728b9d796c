"""carclf.data: dataset layouts on real photos, reporting of broken files, splits and unlabelled folders."""

from __future__ import annotations

import csv
import json
import logging
import shutil
from pathlib import Path

import pytest

from carclf.data import (
    COMPETITION_CLASS_NAMES,
    DatasetInfo,
    Item,
    list_images,
    natural_key,
    scan_dataset,
    stratified_split,
    tqdm_progress,
)
from carclf.errors import ConfigError, DataError

BRANDS = "cars/mfismail_car_brands_3"  # audi / lamborghini / mercedes, some PNGs named .jpg
COMPETITION = "cars/sf_dl_car_classification_ostrebko"  # one genuine photo per class 0..9
THUMBNAILS = "cars/vidhyagupta_car_brands_5"


def _copy_classes(shared_data: Path, source: str, target: Path, per_class: int) -> dict[str, int]:
    """Copy up to ``per_class`` real photos of each class folder of ``source`` into ``target/<class>``."""
    counts = {}
    for folder in sorted(p for p in (shared_data / source).iterdir() if p.is_dir()):
        (target / folder.name).mkdir(parents=True)
        photos = sorted(folder.iterdir())[:per_class]
        for photo in photos:
            shutil.copy(photo, target / folder.name / photo.name)
        counts[folder.name] = len(photos)
    return counts


def test_folder_layout_on_real_photos(shared_data: Path) -> None:
    info = scan_dataset(shared_data / BRANDS)
    assert info.layout == "folders"
    assert info.classes == ("audi", "lamborghini", "mercedes")
    assert info.display_names == info.classes
    for index, name in enumerate(info.classes):
        on_disk = [p.resolve() for p in (shared_data / BRANDS / name).iterdir()]  # .jpg, .jpeg, PNGs named .jpg
        assert info.counts[name] == len(on_disk)
        assert {item.path for item in info.items if item.label == index} == set(on_disk)
    assert not any(item.path.name == "MANIFEST.md" for item in info.items)
    assert info.unreadable == ()
    assert info.summary()["num_images"] == len(info.items) == sum(info.counts.values())
    json.dumps(info.summary())  # fit for meta.json


def test_competition_folders_get_the_competition_names(shared_data: Path) -> None:
    info = scan_dataset(shared_data / COMPETITION)
    assert info.classes == tuple(str(i) for i in range(10))
    assert info.display_names[0] == "Lada Priora" and info.display_names[9] == "VAZ-21099"
    assert info.display_names == tuple(COMPETITION_CLASS_NAMES[c] for c in info.classes)


def test_classes_sort_naturally(shared_data: Path, tmp_path: Path) -> None:
    photo = next((shared_data / COMPETITION / "0").glob("*.jpg"))
    for name in ("10", "9", "2", "img10", "img2"):
        (tmp_path / name).mkdir()
        shutil.copy(photo, tmp_path / name / "a.jpg")
    info = scan_dataset(tmp_path)
    assert info.classes == ("2", "9", "10", "img2", "img10")
    assert sorted(["f10.jpg", "f9.jpg", "f1.jpg"], key=natural_key) == ["f1.jpg", "f9.jpg", "f10.jpg"]


def test_display_names_from_labels_json_and_argument(shared_data: Path, tmp_path: Path) -> None:
    _copy_classes(shared_data, BRANDS, tmp_path, per_class=2)
    (tmp_path / "labels.json").write_text(json.dumps({"audi": "Audi", "mercedes": "Mercedes-Benz"}))
    assert scan_dataset(tmp_path).display_names == ("Audi", "lamborghini", "Mercedes-Benz")
    assert scan_dataset(tmp_path, class_names=["A", "L", "M"]).display_names == ("A", "L", "M")
    assert scan_dataset(tmp_path, class_names={"audi": "Audi AG"}).display_names[0] == "Audi AG"
    with pytest.raises(DataError, match="2 class names given for 3 classes"):
        scan_dataset(tmp_path, class_names=["A", "L"])
    (tmp_path / "labels.json").write_text("{not json")
    with pytest.raises(DataError, match="labels.json"):
        scan_dataset(tmp_path)


def test_unreadable_files_are_reported_once_and_skipped(
    shared_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    counts = _copy_classes(shared_data, BRANDS, tmp_path, per_class=3)
    (tmp_path / "audi" / "empty.jpg").write_bytes(b"")
    (tmp_path / "audi" / "notes.jpg").write_text("not a photo")
    (tmp_path / "mercedes" / "readme.txt").write_text("ignored: not an image extension")
    (tmp_path / ".hidden").mkdir()  # hidden folders are not classes
    with caplog.at_level(logging.WARNING, logger="carclf.data"):
        info = scan_dataset(tmp_path)
    assert info.classes == ("audi", "lamborghini", "mercedes")
    assert info.counts == counts
    reasons = {path.name: reason for path, reason in info.unreadable}
    assert set(reasons) == {"empty.jpg", "notes.jpg"}
    assert "empty" in reasons["empty.jpg"] and "not an image" in reasons["notes.jpg"]
    warnings = [r for r in caplog.records if "unreadable" in r.getMessage()]
    assert len(warnings) == 1 and "2 unreadable" in warnings[0].getMessage()


def test_progress_callback_sees_every_file(shared_data: Path) -> None:
    calls: list[tuple[int, int]] = []
    info = scan_dataset(shared_data / BRANDS, progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (len(info.items), len(info.items))
    assert [done for done, _ in calls] == list(range(1, len(info.items) + 1))


def _kaggle_folder(shared_data: Path, root: Path) -> tuple[list[str], list[str]]:
    """train.csv with real ids (2 rows per category from the competition's own CSV) and real photos for
    all but one row per category; returns (ids with a file, ids without)."""
    rows: dict[str, list[str]] = {}
    with open(shared_data / "sf_meta" / "train.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            rows.setdefault(row["Category"], [])
            if len(rows[row["Category"]]) < 3:
                rows[row["Category"]].append(row["Id"])
    root.mkdir()
    present, missing = [], []
    with open(root / "train.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Id", "Category"])
        for category, ids in sorted(rows.items()):
            photo = next((shared_data / COMPETITION / category).glob("*.jpg"))
            (root / "train" / category).mkdir(parents=True)
            for image_id in ids:
                writer.writerow([image_id, category])
            for image_id in ids[:2]:
                shutil.copy(photo, root / "train" / category / image_id)
                present.append(image_id)
            missing.append(ids[2])
    return present, missing


def test_kaggle_layout_reports_missing_and_unlisted(
    shared_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "sf"
    present, missing = _kaggle_folder(shared_data, root)
    stray = root / "train" / "3" / "not_in_csv.jpg"
    shutil.copy(next((shared_data / COMPETITION / "3").glob("*.jpg")), stray)
    with caplog.at_level(logging.WARNING, logger="carclf.data"):
        info = scan_dataset(root)
    assert info.layout == "kaggle"
    assert info.classes == tuple(str(i) for i in range(10))
    assert info.display_names[1] == "Ford Focus"
    assert sorted(p.name for p in info.paths) == sorted(present)
    assert all(item.path.parent.name == info.classes[item.label] for item in info.items)
    assert sorted(info.missing) == sorted(missing)
    assert info.unlisted == (stray,)
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "10 id(s) in train.csv have no file" in messages and "not listed in train.csv" in messages


def test_kaggle_layout_with_the_real_competition_csv(shared_data: Path, tmp_path: Path) -> None:
    """The real 15,561-row train.csv with only a few photos present: every class must have a file."""
    root = tmp_path / "sf"
    (root / "train").mkdir(parents=True)
    shutil.copy(shared_data / "sf_meta" / "train.csv", root / "train.csv")
    with pytest.raises(DataError, match="no images"):
        scan_dataset(root)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda root: None, "no such folder"),
        (lambda root: root.mkdir(), "no classes found"),
        (lambda root: (root.mkdir(), (root / "x.jpg").write_bytes(b"x")), "no classes found"),
        (lambda root: (root / "train").mkdir(parents=True) or (root / "train.csv").write_text("a,b\n1,2\n"),
         "expected the columns Id,Category"),
        (lambda root: root.mkdir() or (root / "train.csv").write_text("Id,Category\n"), "no train/ folder"),
    ],
    ids=["missing", "empty", "files-only", "csv-columns", "csv-no-train-dir"],
)
def test_unusable_folders_raise_data_error(tmp_path: Path, make, message: str) -> None:
    root = tmp_path / "data"
    make(root)
    with pytest.raises(DataError, match=message):
        scan_dataset(root)


def test_class_without_images_and_single_class(shared_data: Path, tmp_path: Path) -> None:
    _copy_classes(shared_data, BRANDS, tmp_path, per_class=1)
    (tmp_path / "ferrari").mkdir()
    (tmp_path / "ferrari" / "notes.txt").write_text("no photos yet")
    with pytest.raises(DataError, match="ferrari"):
        scan_dataset(tmp_path)
    (tmp_path / "ferrari" / "broken.jpg").write_bytes(b"")
    with pytest.raises(DataError, match="no readable images for class\\(es\\) ferrari"):
        scan_dataset(tmp_path)
    single = tmp_path / "single"
    (single / "audi").mkdir(parents=True)
    shutil.copy(next((shared_data / BRANDS / "audi").glob("*.jpg")), single / "audi")
    with pytest.raises(DataError, match="only one class"):
        scan_dataset(single)


def test_stratified_split_is_deterministic_and_stratified(shared_data: Path) -> None:
    info = scan_dataset(shared_data / THUMBNAILS)
    train, val = stratified_split(info, val_fraction=0.25, seed=7)
    again_train, again_val = stratified_split(info, val_fraction=0.25, seed=7)
    assert (train, val) == (again_train, again_val)
    assert stratified_split(info, val_fraction=0.25, seed=8)[1] != val
    assert set(train).isdisjoint(val) and set(train) | set(val) == set(info.items)
    for index, name in enumerate(info.classes):
        in_val = sum(1 for item in val if item.label == index)
        assert in_val == round(info.counts[name] * 0.25), name
    assert stratified_split(list(reversed(info.items)), 0.25, seed=7) == (train, val)  # input order irrelevant


def test_split_edge_cases() -> None:
    items = [Item(Path(f"/x/{c}{i}.jpg"), label) for label, c in enumerate("ab") for i in range(3)]
    items.append(Item(Path("/x/c0.jpg"), 2))  # a class with one photo keeps it for training
    train, val = stratified_split(items, val_fraction=0.01, seed=0)
    assert sorted(item.label for item in val) == [0, 1]
    assert Item(Path("/x/c0.jpg"), 2) in train
    assert stratified_split(items, val_fraction=0.0)[1] == []
    with pytest.raises(ConfigError, match="val_fraction"):
        stratified_split(items, val_fraction=1.0)


def test_list_images_natural_order(shared_data: Path, tmp_path: Path) -> None:
    photo = next((shared_data / COMPETITION / "0").glob("*.jpg"))
    for name in ("10.jpg", "9.jpg", "100.JPG", "1.png"):
        shutil.copy(photo, tmp_path / name)
    (tmp_path / "sample-submission.csv").write_text("Id,Category\n")
    assert [p.name for p in list_images(tmp_path)] == ["1.png", "9.jpg", "10.jpg", "100.JPG"]
    with pytest.raises(DataError, match="no such folder"):
        list_images(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image files") as empty:
        list_images(tmp_path / "empty")
    assert "sub-folders" not in str(empty.value)
    (tmp_path / "nested" / "cars").mkdir(parents=True)
    shutil.copy(photo, tmp_path / "nested" / "cars" / "1.jpg")
    with pytest.raises(DataError, match="its sub-folders hold some .predict reads them with --recursive"):
        list_images(tmp_path / "nested")  # photos one level down: the message says how to reach them
    assert [p.name for p in list_images(tmp_path / "nested", recursive=True)] == ["1.jpg"]


def test_dataset_info_is_immutable(shared_data: Path) -> None:
    info = scan_dataset(shared_data / COMPETITION)
    assert isinstance(info, DatasetInfo)
    with pytest.raises(AttributeError):
        info.classes = ()  # type: ignore[misc]


def test_tqdm_progress_draws_a_bar(shared_data: Path, capsys: pytest.CaptureFixture) -> None:
    info = scan_dataset(shared_data / COMPETITION, progress=tqdm_progress("scanning"))
    err = capsys.readouterr().err
    assert "scanning" in err and f"{len(info.items)}/{len(info.items)}" in err
