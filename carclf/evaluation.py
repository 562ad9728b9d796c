"""Evaluate a model on a labelled folder: accuracy, per-class metrics, confusion matrix, mistakes.

The report is built for looking at errors, not just scoring: every evaluated file keeps its prediction,
so the dashboard can open the photos behind any confusion cell (``report.cell(true, predicted)``), and
``save(dir)`` writes plain CSV/JSON files that need no carclf to read.

The data folder's class names (its sub-folder names) are matched to the model's classes by name, so a
validation folder may hold only some of the model's classes, in any order; a class the model does not
know is a ``DataError``, because its photos could never be right.

Probabilities are also scored as probabilities (``carclf.calibration``): expected calibration error with
its reliability bins, negative log-likelihood and Brier score, before and after the bundle's temperature.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from carclf import calibration
from carclf.atomic import atomic_write_text
from carclf.batch import DEFAULT_BATCH_SIZE, Progress, predict_files
from carclf.errors import DataError
from carclf.tta import OFF, view_count

# File names written by ``EvalReport.save`` (the dashboard reads them back with ``EvalReport.load``).
REPORT_FILE = "report.json"
PER_CLASS_FILE = "per_class.csv"
CONFUSION_FILE = "confusion.csv"
MISCLASSIFIED_FILE = "misclassified.csv"
PREDICTIONS_FILE = "predictions.csv"  # every file, so any confusion cell (diagonal too) can be opened

# Alternatives kept per file: enough to see what else the model considered.
TOP_K = 3

# Why a photo listed in a Kaggle-layout train.csv is not scored.
MISSING_REASON = "listed in the labels CSV, but the file does not exist"

# Probabilities in reports are rounded: 6 digits are far below any meaningful difference.
DIGITS = 6


@dataclass(frozen=True)
class ClassMetrics:
    """Precision, recall, F1 and support of one class (0.0 where undefined: nothing predicted / no photos)."""

    name: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class FileResult:
    """One evaluated photo: its true and predicted class (folder names) and the model's top alternatives."""

    path: str
    true: str
    predicted: str
    probability: float
    top_k: tuple = field(default_factory=tuple)  # ((class, probability), ...) most probable first

    @property
    def correct(self) -> bool:
        return self.true == self.predicted


@dataclass(frozen=True)
class EvalReport:
    """Everything ``evaluate`` measured. ``labels`` are the confusion matrix's rows (true) and columns
    (predicted): the model's classes that occur in the data or in the predictions, in model order."""

    labels: tuple
    confusion: np.ndarray  # (len(labels), len(labels)) int counts, rows true, columns predicted
    per_class: tuple  # ClassMetrics per label
    files: tuple  # FileResult per readable evaluated photo, in data order
    unreadable: tuple  # ((path, reason), ...)
    tta: int = OFF  # views averaged per photo (1 = off)
    data_dir: str = ""
    model_name: str = ""
    # {"temperature": T or None, "before": scores, "after": scores} (carclf.calibration.scores: accuracy,
    # ece, nll, brier, bins), plus "not_calibrated": why, when training skipped the bundle's fit; None for
    # reports written before calibration was measured.
    calibration: Optional[dict] = None

    @property
    def n_images(self) -> int:
        """Photos that were read and scored (unreadable ones are not counted)."""
        return len(self.files)

    @property
    def accuracy(self) -> float:
        return float(np.trace(self.confusion) / self.n_images) if self.n_images else 0.0

    @property
    def macro_f1(self) -> float:
        """Mean F1 over the classes present in the data (each class counts equally)."""
        scores = [m.f1 for m in self.per_class if m.support > 0]
        return float(np.mean(scores)) if scores else 0.0

    @property
    def misclassified(self) -> tuple:
        """The FileResults whose prediction is wrong, least confident mistakes last."""
        wrong = [f for f in self.files if not f.correct]
        return tuple(sorted(wrong, key=lambda f: -f.probability))

    def cell(self, true: str, predicted: str) -> list:
        """Paths of the photos of class ``true`` that the model called ``predicted`` (one confusion cell)."""
        for name in (true, predicted):
            if name not in self.labels:
                raise DataError(f"{name!r} is not a class of this report; classes: {', '.join(self.labels)}.")
        return [f.path for f in self.files if f.true == true and f.predicted == predicted]

    def confusion_frame(self):
        """The confusion matrix as a pandas DataFrame (index = true class, columns = predicted class)."""
        import pandas as pd

        frame = pd.DataFrame(self.confusion, index=list(self.labels), columns=list(self.labels))
        frame.index.name, frame.columns.name = "true", "predicted"
        return frame

    def to_dict(self) -> dict:
        """JSON-ready summary: scores, per-class metrics, confusion, misclassified and unreadable files."""
        return {
            "model": self.model_name,
            "data_dir": self.data_dir,
            "tta": self.tta,
            "n_images": self.n_images,
            "accuracy": round(self.accuracy, DIGITS),
            "macro_f1": round(self.macro_f1, DIGITS),
            "labels": list(self.labels),
            "per_class": {m.name: {k: v for k, v in asdict(m).items() if k != "name"} for m in self.per_class},
            "confusion": self.confusion.astype(int).tolist(),
            "misclassified": [_file_dict(f) for f in self.misclassified],
            "unreadable": [{"path": path, "reason": reason} for path, reason in self.unreadable],
            "calibration": self.calibration,
        }

    def to_json(self, indent: Optional[int] = None) -> str:
        """The JSON text; a file name that is not valid UTF-8 becomes a ``\\udcXX`` escape (reads back as is)."""
        text = json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)
        return text.encode("utf-8", errors="backslashreplace").decode("utf-8")

    def save(self, out_dir) -> Path:
        """Write report.json, per_class.csv, confusion.csv, misclassified.csv and predictions.csv."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / REPORT_FILE, self.to_json(indent=2) + "\n")
        _write_csv(
            out_dir / PER_CLASS_FILE,
            ["class", "precision", "recall", "f1", "support"],
            [[m.name, m.precision, m.recall, m.f1, m.support] for m in self.per_class],
        )
        _write_csv(
            out_dir / CONFUSION_FILE,
            ["true \\ predicted", *self.labels],
            [[name, *map(int, row)] for name, row in zip(self.labels, self.confusion)],
        )
        file_header = ["path", "true", "predicted", "probability", "top_k"]
        _write_csv(out_dir / MISCLASSIFIED_FILE, file_header, [_file_row(f) for f in self.misclassified])
        _write_csv(out_dir / PREDICTIONS_FILE, file_header, [_file_row(f) for f in self.files])
        return out_dir

    @classmethod
    def load(cls, out_dir) -> "EvalReport":
        """Read back a report written by ``save`` (the dashboard uses this to browse old evaluations)."""
        out_dir = Path(out_dir)
        missing = [n for n in (REPORT_FILE, PREDICTIONS_FILE) if not (out_dir / n).is_file()]
        if missing:
            raise DataError(f"{out_dir} is not an evaluation folder (missing {', '.join(missing)}): run evaluate.")
        summary = json.loads((out_dir / REPORT_FILE).read_text(encoding="utf-8"))
        with open(out_dir / PREDICTIONS_FILE, newline="", encoding="utf-8") as handle:
            files = tuple(_file_from_row(row) for row in csv.DictReader(handle))
        return cls(
            labels=tuple(summary["labels"]),
            confusion=np.asarray(summary["confusion"], dtype=np.int64).reshape(len(summary["labels"]), -1),
            per_class=tuple(ClassMetrics(name=name, **values) for name, values in summary["per_class"].items()),
            files=files,
            unreadable=tuple((u["path"], u["reason"]) for u in summary["unreadable"]),
            tta=view_count(int(summary.get("tta", OFF))),  # reports from before 1 meant off said 0
            data_dir=summary.get("data_dir", ""),
            model_name=summary.get("model", ""),
            calibration=summary.get("calibration") if isinstance(summary.get("calibration"), dict) else None,
        )


def evaluate(
    model,
    data_dir,
    tta: Optional[int] = None,
    progress: Optional[Progress] = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    top_k: int = TOP_K,
) -> EvalReport:
    """Score ``model`` (a Predictor, or a bundle folder to load) on the labelled folder ``data_dir``.

    ``data_dir`` has one sub-folder per class, named like the model's classes. ``tta`` views are averaged
    per photo (1 = off); None = the model's own, so a bundle evaluated on its run's validation photos
    reproduces its headline score. ``progress(done, total)`` is called after every batch.
    """
    from carclf.data import scan_dataset

    if isinstance(model, (str, Path)):
        from carclf.predict import load_model

        model = load_model(model)
    info = scan_dataset(data_dir, min_classes=1)  # a folder may hold any subset of the model's classes
    model_classes = tuple(str(name) for name in model.class_names)
    class_map = map_classes(info.classes, model_classes)
    paths = [path for path, _ in info.items]
    true_index = np.array([class_map[label] for _, label in info.items], dtype=np.int64)
    tta = model.views_for(tta)
    predictions = predict_files(model, paths, tta=tta, batch_size=batch_size, progress=progress)

    ok = predictions.ok
    unreadable = [(str(path), reason) for path, reason in _scan_unreadable(info)]
    unreadable += [(str(image_id), MISSING_REASON) for image_id in getattr(info, "missing", ())]
    unreadable += [(row, reason) for row, reason in getattr(info, "rejected", ())]
    unreadable += [(str(predictions.paths[i]), reason) for i, reason in sorted(predictions.errors.items())]
    files = tuple(
        _file_result(path, model_classes[t], predictions.probabilities[i], model_classes, top_k)
        for i, (path, t) in enumerate(zip(paths, true_index))
        if ok[i]
    )
    report = build_report(
        files=files,
        model_classes=model_classes,
        unreadable=tuple(unreadable),
        tta=tta,
        data_dir=str(data_dir),
        model_name=str(getattr(model, "name", "") or ""),
    )
    skipped = model.calibration_skipped(tta) if hasattr(model, "calibration_skipped") else None
    return replace(report, calibration=calibration_scores(predictions, true_index, skipped))


def calibration_scores(predictions, true_index: np.ndarray, skipped: Optional[str] = None) -> dict:
    """ECE (and bins), NLL and Brier of the readable photos before and after the model's temperature
    (``temperature`` None: none applied; ``not_calibrated`` then says why when training skipped the fit)."""
    ok = predictions.ok
    raw = predictions.raw_probabilities if predictions.raw_probabilities is not None else predictions.probabilities
    labels = true_index[ok]
    measured = {
        "temperature": predictions.temperature,
        "before": _rounded(calibration.scores(raw[ok], labels)),
        "after": _rounded(calibration.scores(predictions.probabilities[ok], labels)),
    }
    if skipped and predictions.temperature is None:
        measured["not_calibrated"] = skipped
    return measured


def _rounded(value):
    """Floats in nested dicts/lists rounded to DIGITS (report files stay readable)."""
    if isinstance(value, float):
        return round(value, DIGITS)
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_rounded(item) for item in value]
    return value


def map_classes(data_classes: Sequence[str], model_classes: Sequence[str]) -> dict:
    """Data label index -> model output index, matching class folder names. Unknown classes: DataError."""
    position = {name: i for i, name in enumerate(model_classes)}
    unknown = [str(name) for name in data_classes if str(name) not in position]
    if unknown:
        shown = ", ".join(list(model_classes)[:20]) + (" ..." if len(model_classes) > 20 else "")
        raise DataError(
            f"the data folder has class(es) the model does not know: {', '.join(unknown)}. The model's classes "
            f"are: {shown}. Remove or rename those folders, or evaluate a model trained on them."
        )
    return {i: position[str(name)] for i, name in enumerate(data_classes)}


def build_report(
    files: Sequence[FileResult],
    model_classes: Sequence[str],
    unreadable: Sequence = (),
    tta: int = OFF,
    data_dir: str = "",
    model_name: str = "",
) -> EvalReport:
    """Compute the confusion matrix and per-class metrics from per-file results."""
    used = {f.true for f in files} | {f.predicted for f in files}
    labels = tuple(name for name in model_classes if name in used)
    index = {name: i for i, name in enumerate(labels)}
    confusion = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for f in files:
        confusion[index[f.true], index[f.predicted]] += 1
    return EvalReport(
        labels=labels,
        confusion=confusion,
        per_class=per_class_metrics(confusion, labels),
        files=tuple(files),
        unreadable=tuple(unreadable),
        tta=int(tta),
        data_dir=data_dir,
        model_name=model_name,
    )


def per_class_metrics(confusion: np.ndarray, labels: Sequence[str]) -> tuple:
    """Precision/recall/F1/support per class from a confusion matrix (rows true, columns predicted)."""
    true_positive = np.diag(confusion).astype(np.float64)
    predicted = confusion.sum(axis=0).astype(np.float64)
    support = confusion.sum(axis=1)
    precision = _safe_ratio(true_positive, predicted)
    recall = _safe_ratio(true_positive, support.astype(np.float64))
    f1 = _safe_ratio(2 * precision * recall, precision + recall)
    return tuple(
        ClassMetrics(
            name=name,
            precision=round(float(precision[i]), DIGITS),
            recall=round(float(recall[i]), DIGITS),
            f1=round(float(f1[i]), DIGITS),
            support=int(support[i]),
        )
        for i, name in enumerate(labels)
    )


def _safe_ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (no predictions or no photos of a class)."""
    out = np.zeros_like(numerator, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _scan_unreadable(info) -> list:
    """Files the dataset scan already found unreadable, as (path, reason) pairs."""
    found = []
    for entry in getattr(info, "unreadable", ()) or ():
        if isinstance(entry, (tuple, list)) and len(entry) == 2:
            found.append((entry[0], str(entry[1])))
        else:
            found.append((entry, "unreadable image"))
    return found


def _file_result(path, true: str, probs: np.ndarray, model_classes: Sequence[str], top_k: int) -> FileResult:
    order = np.argsort(-probs, kind="stable")[: max(1, top_k)]
    alternatives = tuple((model_classes[i], round(float(probs[i]), DIGITS)) for i in order)
    return FileResult(
        path=str(path),
        true=true,
        predicted=alternatives[0][0],
        probability=alternatives[0][1],
        top_k=alternatives,
    )


def _file_dict(f: FileResult) -> dict:
    return {
        "path": f.path,
        "true": f.true,
        "predicted": f.predicted,
        "probability": f.probability,
        "top_k": [[name, p] for name, p in f.top_k],
    }


def _file_row(f: FileResult) -> list:
    """CSV row; top_k is written as ``class:probability;class:probability``."""
    return [f.path, f.true, f.predicted, f.probability, ";".join(f"{name}:{p}" for name, p in f.top_k)]


def _file_from_row(row: dict) -> FileResult:
    top_k = tuple(
        (name, float(p)) for name, _, p in (item.rpartition(":") for item in row["top_k"].split(";") if item)
    )
    return FileResult(
        path=row["path"],
        true=row["true"],
        predicted=row["predicted"],
        probability=float(row["probability"]),
        top_k=top_k,
    )


def _write_csv(path: Path, header: list, rows: list) -> None:
    """Write one CSV atomically; undecodable file names are written with backslash escapes."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())
