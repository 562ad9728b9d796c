"""The Data page on a real folder-per-class tree of photos from ../shared/data."""

from __future__ import annotations

import json
from pathlib import Path

from app_helpers import app_env, copy_photos, open_page, texts  # noqa: F401  (app_env is a fixture)

LAYOUT = {
    "audi": ["cars/vidhyagupta_car_brands_5/audi/test_66.jpg", "cars/vidhyagupta_car_brands_5/audi/test_67.jpg",
             "cars/vidhyagupta_car_brands_5/audi/test_68.jpg"],
    "bmw_x5": ["cars/manzhura_ru_5models/bmw_x5/x1.jpeg", "cars/manzhura_ru_5models/bmw_x5/x2.jpg"],
}


def test_data_page_shows_counts_samples_and_unreadable(app_env, shared_data, tmp_path):
    folder = copy_photos(shared_data, LAYOUT, tmp_path / "data")
    (folder / "audi" / "notes.jpg").write_text("this is not a photo")
    at = open_page("data.py")
    assert not at.error
    at.text_input(key="data_folder").set_value(str(folder)).run()
    assert not at.exception and not at.error, texts(at.error)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Classes"] == "2"
    assert metrics["Photos"] == "5"
    assert metrics["Unreadable"] == "1"
    chart = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert sorted(chart["data"][0]["y"]) == [2, 3]
    unreadable = at.dataframe[0].value
    assert list(unreadable["file"].str.endswith("notes.jpg")) == [True]
    captions = [img.proto.imgs[0].caption for img in at.image]
    assert sorted(captions) == sorted(Path(p).name for files in LAYOUT.values() for p in files)


def test_data_page_bad_folder_is_one_line(app_env, tmp_path):
    at = open_page("data.py")
    at.text_input(key="data_folder").set_value(str(tmp_path / "nope")).run()
    assert not at.exception
    assert "not a folder" in at.error[0].value
    (tmp_path / "empty").mkdir()
    at.text_input(key="data_folder").set_value(str(tmp_path / "empty")).run()
    assert not at.exception
    assert "no classes found" in at.error[0].value
    at.text_input(key="data_folder").set_value("a" * 5000).run()  # a pasted paragraph: the OS refuses the name
    assert not at.exception
    assert "File name too long" in at.error[0].value and len(at.error[0].value) < 300


def test_the_folder_entered_on_one_page_fills_the_next(app_env, shared_data, tmp_path):
    folder = copy_photos(shared_data, LAYOUT, tmp_path / "data")
    at = open_page("data.py")
    at.text_input(key="data_folder").set_value(str(folder)).run()
    at.switch_page("pages/train.py").run()
    assert not at.exception and at.text_input(key="train_data").value == str(folder)
    assert any("2 classes, 5 photos" in text for text in texts(at.success))  # checked there as if typed
    at.text_input(key="train_data").set_value("").run()  # emptied on purpose: the next page starts empty
    at.switch_page("pages/evaluate.py").run()
    assert at.text_input(key="eval_data").value == ""
