"""carclf.data against hostile or broken Kaggle-layout folders, and the dataset's default run name."""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

import pytest

from carclf.data import dataset_name, scan_dataset
from carclf.errors import DataError

PHOTO = "cars/sf_dl_car_classification_ostrebko/{}"  # one genuine competition photo per class folder


def _photo(shared_data: Path, category: str) -> Path:
    return next((shared_data / PHOTO.format(category)).glob("*.jpg"))


def _kaggle(shared_data: Path, root: Path, extra_rows: list[str]) -> Path:
    """train.csv + train/<0,1>/<id>.jpg with two real photos per class, plus ``extra_rows``."""
    rows = []
    for category in "01":
        for n in range(2):
            target = root / "train" / category / f"{category}{n}.jpg"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(_photo(shared_data, category), target)
            rows.append(f"{target.name},{category}")
    (root / "train.csv").write_text("Id,Category\n" + "\n".join(rows + extra_rows) + "\n")
    return root


def test_rows_escaping_train_are_rejected_and_never_read(shared_data, tmp_path, caplog, monkeypatch):
    outside = tmp_path / "outside.jpg"  # a real, readable photo outside the dataset
    shutil.copy(_photo(shared_data, "2"), outside)
    (tmp_path / "secret").mkdir()
    shutil.copy(_photo(shared_data, "3"), tmp_path / "secret" / "x.jpg")
    root = tmp_path / "sf"
    (root / "train" / "0").mkdir(parents=True)
    (root / "train" / "0" / "link.jpg").symlink_to(outside)  # a symlink out of train/
    hostile = [
        "../../outside.jpg,0",  # train/0/../../outside.jpg -> tmp_path/outside.jpg
        f"{outside},1",  # absolute Id
        "x.jpg,../../secret",  # Category climbing out
        "x.jpg,/etc",  # absolute Category
        "../../../../../../../../etc/passwd,0",
        "link.jpg,0",
    ]
    _kaggle(shared_data, root, hostile)
    opened: list[str] = []
    import carclf.data as data_module

    real_probe = data_module.probe_image
    monkeypatch.setattr(data_module, "probe_image", lambda p: (opened.append(str(p)), real_probe(p))[1])
    with caplog.at_level(logging.WARNING, logger="carclf.data"):
        info = scan_dataset(root)
    assert sorted(p.name for p in info.paths) == ["00.jpg", "01.jpg", "10.jpg", "11.jpg"]
    assert all(p.resolve().is_relative_to((root / "train").resolve()) for p in info.paths)
    assert [row for row, _ in info.rejected] == hostile
    assert all("outside train/" in reason or "symlink" in reason for _, reason in info.rejected)
    assert not any("outside" in p or "secret" in p or "passwd" in p or "link" in p for p in opened)
    assert info.summary()["rejected"] == len(hostile) and info.missing == ()
    assert any("6 row(s) of train.csv that point outside train/" in r.getMessage() for r in caplog.records)


def test_only_hostile_rows_is_a_clear_error(tmp_path):
    root = tmp_path / "sf"
    (root / "train").mkdir(parents=True)
    (root / "train.csv").write_text("Id,Category\n../../../../etc/passwd,0\n")
    with pytest.raises(DataError, match="every row points outside train/"):
        scan_dataset(root)


@pytest.mark.parametrize(
    "content, message",
    [
        ("Id,Category\n1.jpg,0\n".encode("utf-8") + "машина.jpg,0\n".encode("cp1251"), "not UTF-8"),
        (bytes(range(256)) * 4, "not UTF-8"),
        (b"", "expected the columns Id,Category, found nothing"),
        (b"Name,Class\n1.jpg,0\n", "found Name,Class"),
        (b"Id,Category\n\"1.jpg,0\n", "no class folders found"),  # an open quote swallows the rest
        (b"Id,Category\x00\n1.jpg,0\n", "Id,Category"),
    ],
    ids=["cp1251", "binary", "empty", "wrong-header", "open-quote", "nul"],
)
def test_broken_train_csv_is_a_data_error(shared_data, tmp_path, content, message):
    root = tmp_path / "sf"
    (root / "train" / "0").mkdir(parents=True)
    shutil.copy(_photo(shared_data, "0"), root / "train" / "0" / "1.jpg")
    (root / "train.csv").write_bytes(content)
    with pytest.raises(DataError, match=message):
        scan_dataset(root)


def test_single_class_is_allowed_only_when_asked(shared_data, tmp_path):
    shutil.copy(_photo(shared_data, "0"), (tmp_path / "0").mkdir() or tmp_path / "0" / "a.jpg")
    with pytest.raises(DataError, match="only one class"):
        scan_dataset(tmp_path)
    assert scan_dataset(tmp_path, min_classes=1).classes == ("0",)


@pytest.mark.parametrize(
    "relative, expected",
    [("cars/train", "cars"), ("cars/Images", "cars"), ("brands/photos", "brands"), ("my_cars", "my_cars"),
     ("sf", "sf"), ("x/dataset", "x")],
)
def test_dataset_name(tmp_path, relative, expected):
    (tmp_path / relative).mkdir(parents=True)
    assert dataset_name(tmp_path / relative) == expected
    assert dataset_name(str(tmp_path / relative) + "/") == expected


def test_cli_train_default_name_is_the_dataset_name(shared_data, tmp_path):
    from carclf.commands.train import add_arguments, build_config

    data = tmp_path / "brands" / "train"
    for category in "01":
        (data / category).mkdir(parents=True)
        shutil.copy(_photo(shared_data, category), data / category / "a.jpg")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert build_config(parser.parse_args(["--data", str(data)])).name == "brands"
    assert build_config(parser.parse_args(["--data", str(data), "--name", "mine"])).name == "mine"
