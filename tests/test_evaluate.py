"""Evaluation: metrics on a hand-checked case, a real model on real photos, cells, class mapping, bad files."""

from __future__ import annotations

import csv
import json

import numpy as np
import pandas as pd
import pytest

import carclf
from carclf.errors import DataError
from carclf.evaluation import (
    CONFUSION_FILE,
    MISCLASSIFIED_FILE,
    PER_CLASS_FILE,
    REPORT_FILE,
    EvalReport,
    FileResult,
    build_report,
    evaluate,
)
from inference_helpers import (
    COLOURS,
    PHOTOS,
    colour_predictor,
    copy_photo,
    copy_photos,
    expected_colour,
    save_colour_bundle,
    truncated_copy,
)

# Folder (true label) -> photos put in it. Two are deliberately mislabelled so there are mistakes to find.
LABELLED = {
    "red": PHOTOS["red"][:2] + [PHOTOS["green"][0]],
    "green": PHOTOS["green"][1:],
    "blue": PHOTOS["blue"] + [PHOTOS["red"][2]],
}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return colour_predictor(save_colour_bundle(tmp_path_factory.mktemp("models")))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, shared_data):
    return copy_photos(shared_data, LABELLED, tmp_path_factory.mktemp("val"))


@pytest.fixture(scope="module")
def expected(data_dir):
    """(true, predicted) per file name, computed with numpy from the pixels."""
    return {p.name: (p.parent.name, expected_colour(p)) for p in data_dir.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def report(model, data_dir):
    return evaluate(model, data_dir, batch_size=4)


def test_metrics_on_a_hand_checked_case():
    pairs = [("a", "a"), ("a", "a"), ("a", "b"), ("b", "b"), ("b", "a"), ("c", "c")]
    files = [FileResult(f"{i}.jpg", t, p, 0.9, ((p, 0.9),)) for i, (t, p) in enumerate(pairs)]
    report = build_report(files, model_classes=("a", "b", "c", "d"))
    assert report.labels == ("a", "b", "c")  # "d" neither occurs nor is predicted
    assert report.confusion.tolist() == [[2, 1, 0], [1, 1, 0], [0, 0, 1]]
    assert report.accuracy == pytest.approx(4 / 6)
    metrics = {m.name: m for m in report.per_class}
    assert metrics["a"].precision == pytest.approx(2 / 3) and metrics["a"].recall == pytest.approx(2 / 3)
    assert metrics["b"].precision == pytest.approx(1 / 2) and metrics["b"].recall == pytest.approx(1 / 2)
    assert metrics["b"].f1 == pytest.approx(1 / 2) and metrics["c"].f1 == pytest.approx(1.0)
    assert [m.support for m in report.per_class] == [3, 2, 1]
    assert report.macro_f1 == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert report.cell("a", "b") == ["2.jpg"] and report.cell("c", "a") == []


def test_a_class_never_predicted_has_zero_precision_not_nan():
    files = [FileResult("1.jpg", "a", "b", 0.6), FileResult("2.jpg", "b", "b", 0.7)]
    metrics = {m.name: m for m in build_report(files, ("a", "b")).per_class}
    assert (metrics["a"].precision, metrics["a"].recall, metrics["a"].f1) == (0.0, 0.0, 0.0)


def test_real_model_on_real_photos_matches_the_pixel_arithmetic(report, expected):
    assert report.n_images == len(expected) == 9
    assert report.labels == COLOURS
    index = {name: i for i, name in enumerate(COLOURS)}
    confusion = np.zeros((3, 3), dtype=int)
    for true, predicted in expected.values():
        confusion[index[true], index[predicted]] += 1
    assert report.confusion.tolist() == confusion.tolist()
    assert report.accuracy == pytest.approx(np.trace(confusion) / confusion.sum())
    wrong = {name for name, (true, predicted) in expected.items() if true != predicted}
    assert {f.path.split("/")[-1] for f in report.misclassified} == wrong and len(wrong) == 2
    for f in report.misclassified:
        assert f.top_k[0] == (f.predicted, f.probability) and len(f.top_k) == 3
        assert f.probability >= f.top_k[1][1] >= f.top_k[2][1]


def test_confusion_cell_lists_the_photos_behind_it(report, expected):
    for true in COLOURS:
        for predicted in COLOURS:
            names = sorted(p.split("/")[-1] for p in report.cell(true, predicted))
            assert names == sorted(n for n, pair in expected.items() if pair == (true, predicted))
    with pytest.raises(DataError, match="purple"):
        report.cell("purple", "red")


def test_data_classes_map_onto_model_classes_by_name(model, data_dir, tmp_path, shared_data):
    # Only two of the three classes, in a folder order different from the model's: still scored by name.
    subset = tmp_path / "subset"
    for relative in PHOTOS["blue"][:2]:
        copy_photo(shared_data, relative, subset / "blue")
    copy_photo(shared_data, PHOTOS["green"][1], subset / "green")
    report = evaluate(model, subset)
    assert report.labels == ("green", "blue") and report.accuracy == 1.0
    assert report.confusion.tolist() == [[1, 0], [0, 2]]


def test_unknown_class_folder_is_a_clear_data_error(model, tmp_path, shared_data):
    copy_photo(shared_data, PHOTOS["red"][0], tmp_path / "red")
    copy_photo(shared_data, PHOTOS["red"][1], tmp_path / "purple")
    with pytest.raises(DataError, match="purple") as caught:
        evaluate(model, tmp_path)
    assert "red, green, blue" in str(caught.value)


def test_unreadable_files_are_reported_not_scored(model, tmp_path, shared_data):
    copy_photo(shared_data, PHOTOS["red"][0], tmp_path / "red")
    truncated_copy(shared_data, PHOTOS["red"][1], tmp_path / "red" / "half.jpg")  # fails when decoded
    (tmp_path / "blue").mkdir()
    (tmp_path / "blue" / "notes.jpg").write_text("not a photo")  # fails the scan's header check
    copy_photo(shared_data, PHOTOS["blue"][0], tmp_path / "blue")
    report = evaluate(model, tmp_path)
    assert report.n_images == 2 and report.accuracy == 1.0
    bad = {path.split("/")[-1]: reason for path, reason in report.unreadable}
    assert set(bad) == {"half.jpg", "notes.jpg"}
    assert all(reason for reason in bad.values())


def test_kaggle_layout_with_a_missing_file(tmp_path, shared_data):
    # train.csv + train/<Category>/<Id>.jpg, categories "0", "1", "2" = red, green, blue.
    model = colour_predictor(save_colour_bundle(tmp_path / "models", "cars", ("0", "1", "2")))
    rows = []
    for category, colour in zip("012", COLOURS):
        for number, relative in enumerate(PHOTOS[colour][:2]):
            image_id = f"{category}{number}00.jpg"
            photo = copy_photo(shared_data, relative, tmp_path / "data" / "train" / category)
            assert expected_colour(photo.rename(photo.with_name(image_id))) == colour
            rows.append(f"{image_id},{category}")
    rows.append("999.jpg,2")  # listed, but no such file
    (tmp_path / "data" / "train.csv").write_text("Id,Category\n" + "\n".join(rows) + "\n")
    report = evaluate(model, tmp_path / "data")
    assert report.labels == ("0", "1", "2") and report.n_images == 6 and report.accuracy == 1.0
    assert [path for path, _ in report.unreadable] == ["999.jpg"]


def test_tta_goes_through_the_predictor_and_averages_views(model, data_dir):
    report = evaluate(model, data_dir, tta=3)
    assert report.n_images == 9 and report.tta == 3
    one = report.files[0]
    direct = model.predict(one.path, tta=3)
    assert one.probability == pytest.approx(direct.probability, abs=1e-5)
    assert one.predicted == model.class_names[int(np.argmax(direct.probabilities))]


def test_progress_is_reported_per_batch(model, data_dir):
    calls = []
    evaluate(model, data_dir, batch_size=4, progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (9, 9) and len(calls) == 3
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


def test_save_writes_files_the_dashboard_can_reopen(report, tmp_path):
    report.save(tmp_path)
    summary = json.loads((tmp_path / REPORT_FILE).read_text())
    assert summary["accuracy"] == pytest.approx(report.accuracy) and summary["n_images"] == 9
    confusion = pd.read_csv(tmp_path / CONFUSION_FILE, index_col=0)
    assert list(confusion.columns) == list(COLOURS) and confusion.values.tolist() == report.confusion.tolist()
    per_class = pd.read_csv(tmp_path / PER_CLASS_FILE)
    assert per_class["support"].tolist() == [m.support for m in report.per_class]
    with open(tmp_path / MISCLASSIFIED_FILE, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["path"] for r in rows} == {f.path for f in report.misclassified}
    reopened = EvalReport.load(tmp_path)
    assert reopened.confusion.tolist() == report.confusion.tolist()
    assert reopened.cell("blue", "red") == report.cell("blue", "red")
    assert reopened.misclassified == report.misclassified


def test_package_level_evaluate_is_the_function_even_after_the_module_is_imported(model, data_dir):
    import carclf.evaluation  # noqa: F401  (a submodule import must not shadow the public function)

    assert carclf.evaluate(model, data_dir).confusion.tolist() == evaluate(model, data_dir).confusion.tolist()
