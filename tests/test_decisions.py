"""The decisions file: round trip, path and label checks, and scan_dataset honouring it in both layouts."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from carclf.data import scan_dataset
from carclf.decisions import (DECISIONS_FILE, Decision, clear_decision, clear_decisions, load_decisions,
                              set_decision, set_decisions)
from carclf.errors import DataError

SOURCE = "cars/manzhura_ru_5models"
CLASSES = ("bmw_x5", "qashqai", "solyaris")


@pytest.fixture
def folders(shared_data, tmp_path) -> Path:
    """Three real classes of car photos, folder per class."""
    root = tmp_path / "cars"
    for name in CLASSES:
        shutil.copytree(shared_data / SOURCE / name, root / name)
    return root


@pytest.fixture
def kaggle(shared_data, tmp_path) -> Path:
    """The same photos in the competition layout: train.csv + train/<Category>/<Id>."""
    root = tmp_path / "kaggle"
    rows = []
    for category, name in enumerate(CLASSES):
        folder = root / "train" / str(category)
        folder.mkdir(parents=True)
        for photo in sorted((shared_data / SOURCE / name).iterdir()):
            shutil.copy(photo, folder / photo.name)
            rows.append((photo.name, str(category)))
    with open(root / "train.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([("Id", "Category"), *rows])
    return root


def first_photo(folder: Path) -> Path:
    return sorted(folder.iterdir())[0]


def test_round_trip_set_load_clear(folders):
    bmw, qashqai = first_photo(folders / "bmw_x5"), first_photo(folders / "qashqai")
    set_decision(folders, bmw, "exclude", reason="near_duplicate of bmw_x5/x2.jpg", classes=CLASSES)
    set_decision(folders, f"qashqai/{qashqai.name}", "relabel", "bmw_x5", "suspected_label", classes=CLASSES)
    set_decision(folders, "solyaris/" + first_photo(folders / "solyaris").name, "keep")

    loaded = load_decisions(folders, CLASSES)
    assert [d.action for d in loaded.values()] == ["exclude", "relabel", "keep"]  # sorted by path
    assert loaded[f"bmw_x5/{bmw.name}"].reason == "near_duplicate of bmw_x5/x2.jpg"
    assert loaded[f"qashqai/{qashqai.name}"].label == "bmw_x5"
    assert all(d.decided_at.endswith("+00:00") for d in loaded.values())
    text = (folders / DECISIONS_FILE).read_text()
    assert text.splitlines()[0] == "path,action,label,reason,decided_at"

    # Deciding again replaces; clearing one keeps the rest; clearing all removes the file.
    set_decision(folders, bmw, "keep")
    assert load_decisions(folders)[f"bmw_x5/{bmw.name}"].action == "keep"
    assert clear_decision(folders, bmw) is True
    assert clear_decision(folders, bmw) is False
    assert len(load_decisions(folders)) == 2
    assert clear_decisions(folders) == 2
    assert not (folders / DECISIONS_FILE).exists()
    assert load_decisions(folders) == {}
    assert all(p.is_file() for p in (bmw, qashqai))  # the photos themselves are never touched


@pytest.mark.parametrize("path", ["../outside.jpg", "bmw_x5/../../outside.jpg", "/etc/passwd"])
def test_paths_outside_the_dataset_are_refused(folders, path):
    with pytest.raises(DataError, match="inside the dataset folder"):
        set_decision(folders, path, "exclude")
    assert not (folders / DECISIONS_FILE).exists()


def test_unknown_label_and_action_are_refused_with_the_classes_listed(folders):
    photo = first_photo(folders / "bmw_x5")
    with pytest.raises(DataError, match=r"no such class; classes are bmw_x5, qashqai, solyaris"):
        set_decision(folders, photo, "relabel", "ferrari", classes=CLASSES)
    with pytest.raises(DataError, match="unknown decision 'delete'"):
        set_decision(folders, photo, "delete")


def test_a_hand_edited_bad_row_stops_the_scan_with_its_line(folders):
    (folders / DECISIONS_FILE).write_text("path,action,label,reason,decided_at\n"
                                          "bmw_x5/x1.jpeg,exclude,,,\n"
                                          "bmw_x5/x2.jpg,relabel,lada,,\n")
    with pytest.raises(DataError, match=r"line 3: .*cannot relabel to 'lada'"):
        scan_dataset(folders)
    (folders / DECISIONS_FILE).write_text("path,action,label,reason,decided_at\n../../etc/passwd,exclude,,,\n")
    with pytest.raises(DataError, match="line 2: .*outside the dataset folder"):
        scan_dataset(folders)


def test_set_decisions_keeps_earlier_ones_unless_told(folders):
    photo = first_photo(folders / "bmw_x5")
    set_decision(folders, photo, "keep")
    added = set_decisions(folders, [Decision(f"bmw_x5/{photo.name}", "exclude"),
                                    Decision("qashqai/" + first_photo(folders / "qashqai").name, "exclude")])
    assert added == 1
    assert load_decisions(folders)[f"bmw_x5/{photo.name}"].action == "keep"


@pytest.mark.parametrize("layout", ["folders", "kaggle"])
def test_scan_dataset_skips_exclusions_and_applies_relabels(layout, request):
    root = request.getfixturevalue(layout)
    before = scan_dataset(root)
    first, second = before.classes[0], before.classes[1]
    photos = [item.path for item in before.items if item.label == 0][:3]
    set_decision(root, photos[0], "exclude", classes=before.classes)
    set_decision(root, photos[1], "exclude", classes=before.classes)
    set_decision(root, photos[2], "relabel", second, classes=before.classes)

    after = scan_dataset(root)
    assert len(after.items) == len(before.items) - 2
    assert {item.path for item in after.excluded} == set(photos[:2])
    assert photos[0] not in after.paths and photos[1] not in after.paths
    assert dict(after.items)[photos[2]] == 1
    assert after.relabelled == ((photos[2], 0, 1),)
    assert after.counts[first] == before.counts[first] - 3
    assert after.counts[second] == before.counts[second] + 1
    assert after.counts_before == before.counts
    assert after.summary()["excluded"] == 2 and after.summary()["relabelled"] == 1
    assert [item.label for item in after.items] == sorted(item.label for item in after.items)
    # Switched off, or cleared, the dataset is as on disk again.
    assert scan_dataset(root, decisions=False).items == before.items
    clear_decisions(root)
    assert scan_dataset(root).items == before.items
