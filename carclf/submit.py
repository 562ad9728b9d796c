"""Kaggle submission: one ``Id,Category`` row per test photo, exactly like the competition's sample file.

The "sf-dl-car-classification" competition scores a CSV whose ``Id`` is the test photo's file name
(``305108.jpg``) and whose ``Category`` is the class id, which is the class folder name the model was
trained on (``0``..``9``). Given the sample submission, the rows follow its ids and order and its header;
without one, the rows are the test folder's photos in natural name order.

A photo that cannot be read, or a sample id with no photo, is never silently guessed: by default the
submission fails and lists them. With ``allow_missing=True`` their rows get the most frequent predicted
class (the guess with the best expected score) and the result lists them. The CSV is written to a
temporary file and renamed, so a crash never leaves half a submission behind.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from carclf.batch import DEFAULT_BATCH_SIZE, Progress, predict_files
from carclf.errors import DataError

# The competition's header (used when no sample file is given).
ID_COLUMN = "Id"
CATEGORY_COLUMN = "Category"

# How many problem files an error message names before "and N more".
MAX_LISTED = 10


@dataclass(frozen=True)
class SubmissionResult:
    """What ``write_submission`` wrote and what it could not predict."""

    path: Path
    n_rows: int
    counts: dict  # Category -> rows (filled rows included)
    missing: tuple = ()  # sample ids with no photo in the test folder
    unreadable: tuple = ()  # ((id, reason), ...) photos that could not be read
    filled_with: Optional[str] = None  # Category written for missing/unreadable rows (allow_missing only)
    extra: tuple = field(default_factory=tuple)  # photos in the folder that the sample does not list (skipped)

    def to_dict(self) -> dict:
        return {
            "path": str(self.path),
            "n_rows": self.n_rows,
            "counts": self.counts,
            "missing": list(self.missing),
            "unreadable": [{"id": i, "reason": r} for i, r in self.unreadable],
            "filled_with": self.filled_with,
            "extra": list(self.extra),
        }


def write_submission(
    model,
    test_dir,
    out,
    tta: Optional[int] = None,
    sample=None,
    allow_missing: bool = False,
    progress: Optional[Progress] = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> SubmissionResult:
    """Predict every photo in ``test_dir`` with ``model`` (a Predictor or a bundle folder) and write the
    submission CSV to ``out``. ``tta`` views are averaged per photo (1 = off; None = the model's own). See
    the module docstring for ``sample`` and ``allow_missing``."""
    from carclf.data import list_images

    test_dir = Path(test_dir)
    if not test_dir.is_dir():
        raise DataError(f"{test_dir}: no such test folder. Point --test-dir at the folder of test photos.")
    if isinstance(model, (str, Path)):
        from carclf.predict import load_model

        model = load_model(model)
    photos = {Path(p).name: Path(p) for p in list_images(test_dir)}
    header = (ID_COLUMN, CATEGORY_COLUMN)
    if sample is not None:
        header, ids = read_sample(sample)
        missing = tuple(i for i in ids if i not in photos)
        listed = set(ids)
        extra = tuple(sorted(name for name in photos if name not in listed))
    else:
        ids = list(photos)  # list_images' natural order: 99.jpg before 100.jpg
        missing, extra = (), ()
    if not ids:
        raise DataError(f"{test_dir} has no images to predict. Put the test photos (e.g. 305108.jpg) there.")

    to_predict = [i for i in ids if i in photos]
    predictions = predict_files(model, [photos[i] for i in to_predict], tta=tta, batch_size=batch_size,
                                progress=progress)
    classes = [str(name) for name in model.class_names]
    category = {
        image_id: classes[index]
        for image_id, index in zip(to_predict, predictions.predicted)
        if index >= 0
    }
    unreadable = tuple((to_predict[i], reason) for i, reason in sorted(predictions.errors.items()))
    filled_with = None
    if missing or unreadable:
        if not allow_missing:
            raise DataError(_problem_message(missing, unreadable))
        if not category:
            raise DataError("no test photo could be read, so there is no prediction to fill the gaps with.")
        filled_with = Counter(category.values()).most_common(1)[0][0]
    rows = [(image_id, category.get(image_id, filled_with)) for image_id in ids]
    path = write_csv_atomic(out, header, rows)
    return SubmissionResult(
        path=path,
        n_rows=len(rows),
        counts=dict(Counter(value for _, value in rows).most_common()),
        missing=missing,
        unreadable=unreadable,
        filled_with=filled_with,
        extra=extra,
    )


def read_sample(sample) -> tuple:
    """Return ``(header, ids)`` from a sample submission: its two column names and its ids in order."""
    sample = Path(sample)
    try:
        with open(sample, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{sample}: cannot read the sample submission ({error}).") from error
    if not rows or len(rows[0]) != 2:
        raise DataError(f"{sample}: a sample submission has a two-column header like 'Id,Category'.")
    header = tuple(name.strip() for name in rows[0])
    ids = [row[0].strip() for row in rows[1:] if row and row[0].strip()]
    duplicates = [image_id for image_id, n in Counter(ids).items() if n > 1]
    if duplicates:
        raise DataError(f"{sample}: id(s) listed twice: {_listing(duplicates)}. Fix the sample file.")
    if not ids:
        raise DataError(f"{sample}: the sample submission lists no ids.")
    return header, ids


def submission_rows(model, names, results) -> list:
    """``(Id, Category)`` for each readable prediction: Category is the class folder of the top class.

    For callers that already hold ``Prediction`` results (the dashboard's many-photos table); unreadable
    photos (``result.ok`` false) get no row.
    """
    return [(name, model.class_names[_top_index(result.probabilities)])
            for name, result in zip(names, results) if result.ok]


def _top_index(probabilities) -> int:
    return max(range(len(probabilities)), key=probabilities.__getitem__)


def submission_text(rows, header=(ID_COLUMN, CATEGORY_COLUMN)) -> str:
    """The CSV text of a submission, in the same format ``write_submission`` writes to disk."""
    buffer = io.StringIO()
    _write_rows(buffer, header, rows)
    return buffer.getvalue()


def _write_rows(handle, header, rows) -> None:
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)


def write_csv_atomic(out, header, rows) -> Path:
    """Write a CSV next to ``out`` under a temporary name, then rename it into place (carclf.atomic)."""
    from carclf.atomic import atomic_write_text

    return atomic_write_text(out, submission_text(rows, header))


def _problem_message(missing, unreadable) -> str:
    parts = []
    if missing:
        parts.append(f"{len(missing)} id(s) in the sample have no photo in the test folder: {_listing(missing)}")
    if unreadable:
        parts.append(f"{len(unreadable)} photo(s) cannot be read: {_listing([i for i, _ in unreadable])}")
    return "; ".join(parts) + ". Fix them, or pass --allow-missing to fill those rows with the most frequent class."


def _listing(items) -> str:
    items = list(items)
    shown = ", ".join(items[:MAX_LISTED])
    return shown + (f" and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else "")
