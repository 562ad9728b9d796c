"""evaluate/predict/submit on awkward real inputs: undecodable file names, one-class folders, and the one
exit-code rule for unreadable photos (completed run that skipped some: exit 1, count on stderr)."""

from __future__ import annotations

import csv
import json
import os

import pytest

from carclf.cli import main
from carclf.evaluation import REPORT_FILE, EvalReport
from inference_helpers import PHOTOS, copy_photo, expected_colour, save_colour_bundle, truncated_copy

BAD_NAME = b"\xff\xfe.jpg"  # not valid UTF-8: Python keeps it as surrogate escapes


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return save_colour_bundle(tmp_path_factory.mktemp("models"))


def _bad_named_copy(shared_data, relative, folder):
    folder.mkdir(parents=True, exist_ok=True)
    with open(os.path.join(os.fsencode(folder), BAD_NAME), "wb") as handle:
        handle.write((shared_data / relative).read_bytes())
    return folder / os.fsdecode(BAD_NAME)


def test_evaluate_out_with_an_undecodable_file_name(bundle, tmp_path, shared_data, capsys):
    data = tmp_path / "val"
    copy_photo(shared_data, PHOTOS["red"][0], data / "red")
    bad = _bad_named_copy(shared_data, PHOTOS["blue"][0], data / "blue")
    out = tmp_path / "eval"
    assert main(["evaluate", str(bundle), "--data", str(data), "--out", str(out), "--no-progress", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((out / REPORT_FILE).read_bytes().decode("utf-8"))  # strict UTF-8, complete JSON
    assert saved["n_images"] == printed["n_images"] == 2 and saved["accuracy"] == 1.0
    reopened = EvalReport.load(out)
    assert len(reopened.files) == 2 and any("\\udcff" in f.path for f in reopened.files)
    assert expected_colour(bad) == "blue"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_submit_with_an_undecodable_file_name(bundle, tmp_path, shared_data, capsys):
    test_dir = tmp_path / "test_upload"
    copy_photo(shared_data, PHOTOS["green"][0], test_dir)
    _bad_named_copy(shared_data, PHOTOS["red"][0], test_dir)
    out = tmp_path / "submission.csv"
    assert main(["submit", str(bundle), "--test-dir", str(test_dir), "--out", str(out), "--no-progress"]) == 0
    rows = list(csv.reader(out.read_bytes().decode("utf-8").splitlines()))
    assert rows[0] == ["Id", "Category"] and len(rows) == 3
    assert dict(rows[1:])["\\udcff\\udcfe.jpg"] == "red"


def test_evaluate_a_folder_holding_one_of_the_model_classes(bundle, tmp_path, shared_data, capsys):
    data = tmp_path / "only_green"
    for relative in PHOTOS["green"][1:]:
        copy_photo(shared_data, relative, data / "green")
    assert main(["evaluate", str(bundle), "--data", str(data), "--no-progress", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n_images"] == 2 and report["accuracy"] == 1.0 and report["labels"] == ["green"]
    (data / "purple").mkdir()
    copy_photo(shared_data, PHOTOS["red"][0], data / "purple")
    assert main(["evaluate", str(bundle), "--data", str(data), "--no-progress"]) == 2
    assert "does not know: purple" in capsys.readouterr().err


@pytest.fixture()
def with_unreadable(tmp_path, shared_data):
    """red/: one good real photo, a truncated copy of a real JPEG and a text file named .jpg."""
    data = tmp_path / "data"
    copy_photo(shared_data, PHOTOS["red"][0], data / "red")
    truncated_copy(shared_data, PHOTOS["red"][1], data / "red" / "half.jpg")
    (data / "red" / "notes.jpg").write_text("not a photo")
    return data


def test_one_exit_code_rule_for_skipped_photos(bundle, with_unreadable, tmp_path, capsys):
    red = with_unreadable / "red"
    assert main(["evaluate", str(bundle), "--data", str(with_unreadable), "--no-progress", "--json"]) == 1
    captured = capsys.readouterr()
    report = json.loads(captured.out)  # still the complete report
    assert report["n_images"] == 1 and len(report["unreadable"]) == 2
    assert "2 photo(s) could not be read" in captured.err
    assert main(["predict", str(bundle), str(red), "--no-progress", "--json"]) == 1
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 3 and "2 photo(s) could not be read" in captured.err
    out = tmp_path / "s.csv"
    assert main(["submit", str(bundle), "--test-dir", str(red), "--out", str(out), "--no-progress",
                 "--allow-missing", "--json"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["n_rows"] == 3 and "2 photo(s) could not be read" in captured.err
    assert main(["predict", str(bundle), str(red / PHOTOS["red"][0].split("/")[-1]), "--no-progress"]) == 0
