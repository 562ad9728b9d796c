"""Kaggle submission: the real sample file's format, ids and order; missing and unreadable photos; atomicity."""

from __future__ import annotations

import csv

import pytest

from carclf.data import natural_key
from carclf.errors import DataError
from carclf.submit import read_sample, submission_rows, submission_text, write_submission
from inference_helpers import (
    COLOURS,
    PHOTOS,
    colour_predictor,
    copy_photo,
    expected_colour,
    save_colour_bundle,
    truncated_copy,
)

SAMPLE = "sf_meta/sample-submission.csv"
CATEGORIES = ("0", "1", "2")  # the colour model renamed to competition category ids: red 0, green 1, blue 2
N_IDS = 6
TEST_PHOTOS = PHOTOS["red"][:2] + PHOTOS["green"][1:] + PHOTOS["blue"][:2]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return colour_predictor(save_colour_bundle(tmp_path_factory.mktemp("models"), "cars", CATEGORIES))


@pytest.fixture(scope="module")
def real_sample(shared_data):
    with open(shared_data / SAMPLE, newline="") as handle:
        rows = list(csv.reader(handle))
    return rows[0], [row[0] for row in rows[1:]]


def make_test_dir(shared_data, root, ids):
    """Real photos saved under competition ids, like test_upload/<Id>.jpg; returns id -> expected Category."""
    root.mkdir(parents=True, exist_ok=True)
    expected = {}
    for image_id, relative in zip(ids, TEST_PHOTOS):
        photo = copy_photo(shared_data, relative, root / "_copy")
        target = root / image_id
        photo.rename(target)
        expected[image_id] = CATEGORIES[COLOURS.index(expected_colour(target))]
    (root / "_copy").rmdir()
    return expected


def write_sample_subset(path, header, ids):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows([image_id, "0"] for image_id in ids)
    return path


def test_submission_follows_the_real_sample_format_ids_and_order(model, shared_data, real_sample, tmp_path):
    header, ids = real_sample
    subset = ids[10 : 10 + N_IDS]  # real competition ids, in the sample's (unsorted) order
    expected = make_test_dir(shared_data, tmp_path / "test_upload", subset)
    sample = write_sample_subset(tmp_path / "sample.csv", header, subset)
    result = write_submission(model, tmp_path / "test_upload", tmp_path / "submission.csv", sample=sample)

    text = (tmp_path / "submission.csv").read_text()
    real_first_line = (shared_data / SAMPLE).read_text().splitlines(keepends=True)[0]
    assert text.splitlines(keepends=True)[0] == real_first_line  # same header, same line ending
    rows = list(csv.reader(text.splitlines()))[1:]
    assert [row[0] for row in rows] == subset
    assert {row[0]: row[1] for row in rows} == expected
    assert len(set(expected.values())) == 3  # the check covers all three categories
    assert result.n_rows == N_IDS and result.missing == () and result.unreadable == ()
    assert sum(result.counts.values()) == N_IDS


def test_without_a_sample_rows_are_the_folder_in_natural_name_order(model, shared_data, real_sample, tmp_path):
    ids = real_sample[1][:N_IDS]
    expected = make_test_dir(shared_data, tmp_path / "test", ids)
    write_submission(model, tmp_path / "test", tmp_path / "out.csv")
    with open(tmp_path / "out.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["Id", "Category"]
    assert rows[1:] == sorted(([i, c] for i, c in expected.items()), key=lambda row: natural_key(row[0]))
    assert [len(row[0]) for row in rows[1:]] == sorted(len(row[0]) for row in rows[1:])  # 99.jpg before 100.jpg


def test_sample_id_without_a_photo_fails_unless_allowed(model, shared_data, real_sample, tmp_path):
    header, ids = real_sample
    make_test_dir(shared_data, tmp_path / "test", ids[:3])
    sample = write_sample_subset(tmp_path / "sample.csv", header, ids[:4])  # ids[3] has no photo
    with pytest.raises(DataError, match=ids[3]) as caught:
        write_submission(model, tmp_path / "test", tmp_path / "out.csv", sample=sample)
    assert "--allow-missing" in str(caught.value)
    assert not (tmp_path / "out.csv").exists()

    result = write_submission(model, tmp_path / "test", tmp_path / "out.csv", sample=sample, allow_missing=True)
    rows = list(csv.reader((tmp_path / "out.csv").read_text().splitlines()))[1:]
    predicted = [category for _, category in rows[:3]]
    assert result.missing == (ids[3],)
    assert rows[3] == [ids[3], result.filled_with]
    assert result.filled_with == max(set(predicted), key=predicted.count)


def test_unreadable_photo_is_reported_and_an_existing_csv_is_left_untouched(model, shared_data, tmp_path):
    test_dir = tmp_path / "test"
    copy_photo(shared_data, PHOTOS["blue"][0], test_dir)
    truncated_copy(shared_data, PHOTOS["red"][1], test_dir / "12345.jpg")
    out = tmp_path / "submission.csv"
    out.write_text("previous submission\n")
    with pytest.raises(DataError, match="12345.jpg"):
        write_submission(model, test_dir, out)
    assert out.read_text() == "previous submission\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["submission.csv", "test"]  # no temp file left

    result = write_submission(model, test_dir, out, allow_missing=True)
    assert [image_id for image_id, _ in result.unreadable] == ["12345.jpg"]
    assert "12345.jpg" in result.unreadable[0][1]  # the reason names the file
    rows = dict(csv.reader(out.read_text().splitlines()[1:]))
    assert rows["12345.jpg"] == result.filled_with == "2"  # the only readable photo is blue


def test_photos_missing_from_the_sample_are_skipped_and_listed(model, shared_data, real_sample, tmp_path):
    header, ids = real_sample
    make_test_dir(shared_data, tmp_path / "test", ids[:4])
    sample = write_sample_subset(tmp_path / "sample.csv", header, ids[:3])
    result = write_submission(model, tmp_path / "test", tmp_path / "out.csv", sample=sample)
    assert result.extra == (ids[3],) and result.n_rows == 3


def test_tta_predictions_fill_every_row(model, shared_data, real_sample, tmp_path):
    ids = real_sample[1][:3]
    make_test_dir(shared_data, tmp_path / "test", ids)
    result = write_submission(model, tmp_path / "test", tmp_path / "out.csv", tta=2)
    assert result.n_rows == 3 and set(result.counts) <= set(CATEGORIES)


def test_sample_file_problems_are_data_errors(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("Id\n1.jpg\n")
    with pytest.raises(DataError, match="two-column header"):
        read_sample(bad)
    bad.write_text("Id,Category\n1.jpg,0\n1.jpg,0\n")
    with pytest.raises(DataError, match="listed twice"):
        read_sample(bad)


def test_rows_from_held_predictions_use_the_class_folder_and_skip_unreadable(model, shared_data, tmp_path):
    """The dashboard's CSV: predictions it already holds become the same Id,Category text as a written file."""
    photos = [copy_photo(shared_data, PHOTOS["red"][1], tmp_path), copy_photo(shared_data, PHOTOS["blue"][0], tmp_path),
              truncated_copy(shared_data, PHOTOS["green"][1], tmp_path / "broken.jpg")]
    results = model.predict_batch(photos)
    rows = submission_rows(model, [p.name for p in photos], results)
    expected = [(p.name, CATEGORIES[COLOURS.index(expected_colour(p))]) for p in photos[:2]]
    assert rows == expected  # the truncated photo gets no row
    text = submission_text(rows)
    written = write_submission(model, tmp_path, tmp_path / "out" / "s.csv", allow_missing=True).path.read_text()
    assert text.splitlines()[0] == "Id,Category" == written.splitlines()[0]
    assert set(text.splitlines()[1:]) <= set(written.splitlines()[1:])
