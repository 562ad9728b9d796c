"""The decisions file: what the user decided about flagged photos, next to the data, never touching the photos.

``DIR/carclf-decisions.csv`` has one row per decided photo::

    path,action,label,reason,decided_at
    audi/img_12.jpg,exclude,,near_duplicate of audi/img_3.jpg,2026-12-02T15:10:00+00:00
    bmw/img_7.jpg,relabel,audi,suspected_label,2026-12-02T15:11:00+00:00
    bmw/img_9.jpg,keep,,reviewed,2026-12-02T15:12:00+00:00

``path`` is relative to the dataset root (``train/3/abc.jpg`` in the Kaggle layout), with forward slashes.
``exclude`` = the photo is skipped, ``relabel`` = it counts as ``label`` (an existing class), ``keep`` =
reviewed and fine (the doctor stops flagging it). ``carclf.data.scan_dataset`` applies the file, so training,
evaluation and every page honour it. It is small, sorted and diff-friendly, so it can be reviewed and
versioned; deleting it (``clear_decisions``) restores the dataset as it is on disk.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Iterable, Mapping, Optional, Union

from carclf.atomic import atomic_write_text
from carclf.clock import now_iso
from carclf.errors import DataError

DECISIONS_FILE = "carclf-decisions.csv"
COLUMNS = ("path", "action", "label", "reason", "decided_at")
ACTIONS = ("keep", "exclude", "relabel")


@dataclass(frozen=True)
class Decision:
    """One row: a photo (relative to the dataset root) and what to do with it."""

    path: str
    action: str
    label: str = ""
    reason: str = ""
    decided_at: str = ""


def decisions_path(root: Union[str, Path]) -> Path:
    """The decisions file of the dataset at ``root``."""
    return Path(root).expanduser() / DECISIONS_FILE


def relative_key(root: Union[str, Path], path: Union[str, Path]) -> str:
    """``path`` as the file names it: relative to ``root``, forward slashes; refuses anything outside root."""
    root = Path(os.path.normpath(Path(root).expanduser().resolve()))
    candidate = Path(path).expanduser()
    # Lexical, like scan_dataset's item paths (root resolved + relative part): a symlinked photo keeps its name.
    full = Path(os.path.normpath(candidate if candidate.is_absolute() else root / candidate))
    if not full.is_relative_to(root) or full == root:
        raise DataError(f"{path}: not a photo inside the dataset folder {root}; decisions can only name its photos.")
    return check_path(full.relative_to(root).as_posix())


def check_path(text: str) -> str:
    """A decision path as stored: relative, forward slashes, no ``..``, no NUL; else ``DataError``."""
    clean = (text or "").strip().replace("\\", "/")
    if not clean or "\x00" in clean:
        raise DataError(f"decision path {text!r} is empty or has a NUL byte.")
    parts = PurePosixPath(clean).parts
    if clean.startswith("/") or (len(clean) > 1 and clean[1] == ":") or ".." in parts:
        raise DataError(f"decision path {text!r} leads outside the dataset folder; use a path relative to it.")
    return PurePosixPath(*[p for p in parts if p != "."]).as_posix()


def check_decision(decision: Decision, classes: Optional[Iterable[str]] = None) -> Decision:
    """The decision with a checked path and action; a relabel must name one of ``classes`` (when given)."""
    action = (decision.action or "").strip().lower()
    if action not in ACTIONS:
        raise DataError(f"{decision.path}: unknown decision {decision.action!r}; use one of {', '.join(ACTIONS)}.")
    label = (decision.label or "").strip()
    if action == "relabel":
        if not label:
            raise DataError(f"{decision.path}: 'relabel' needs the new class in the label column.")
        known = list(classes) if classes is not None else None
        if known is not None and label not in known:
            raise DataError(f"{decision.path}: cannot relabel to {label!r}, no such class; "
                            f"classes are {', '.join(known)}.")
    else:
        label = ""
    return replace(decision, path=check_path(decision.path), action=action, label=label)


def load_decisions(root: Union[str, Path], classes: Optional[Iterable[str]] = None) -> dict[str, Decision]:
    """The decisions of the dataset at ``root`` by relative path ({} when there is no file).

    A hand-edited file with a bad row (unknown action, unknown class, a path leaving the folder) raises
    ``DataError`` naming the row, so a typo cannot silently change what a model is trained on.
    """
    file = decisions_path(root)
    if not file.is_file():
        return {}
    try:
        text = file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{file}: cannot read it as UTF-8 text ({error}).") from error
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None:
        return {}
    if not {"path", "action"} <= set(reader.fieldnames):
        raise DataError(f"{file}: expected the columns {','.join(COLUMNS)}; found {','.join(reader.fieldnames)}.")
    known = list(classes) if classes is not None else None
    decisions: dict[str, Decision] = {}
    for line, row in enumerate(reader, start=2):
        raw = Decision(*(str(row.get(column) or "") for column in COLUMNS))
        try:
            decision = check_decision(raw, known)
        except DataError as error:
            raise DataError(f"{file} line {line}: {error}") from error
        decisions[decision.path] = decision
    return decisions


def save_decisions(root: Union[str, Path], decisions: Mapping[str, Decision]) -> Path:
    """Write all ``decisions`` (sorted by path) atomically; an empty mapping removes the file."""
    file = decisions_path(root)
    if not decisions:
        file.unlink(missing_ok=True)
        return file
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for key in sorted(decisions):
        d = decisions[key]
        writer.writerow([d.path, d.action, d.label, d.reason, d.decided_at])
    try:
        atomic_write_text(file, out.getvalue())
    except OSError as error:
        raise DataError(f"{file}: cannot write the decisions file ({error.strerror or error}); "
                        "the dataset folder must be writable.") from error
    return file


def set_decision(root: Union[str, Path], path: Union[str, Path], action: str, label: str = "", reason: str = "",
                 classes: Optional[Iterable[str]] = None) -> Decision:
    """Record one decision for ``path`` (absolute, or relative to ``root``), replacing any earlier one."""
    known = list(classes) if classes is not None else None
    decision = check_decision(Decision(relative_key(root, path), action, label, reason, now_iso()), known)
    decisions = load_decisions(root, known)
    decisions[decision.path] = decision
    save_decisions(root, decisions)
    return decision


def set_decisions(root: Union[str, Path], new: Iterable[Decision], classes: Optional[Iterable[str]] = None,
                  overwrite: bool = False) -> int:
    """Record many decisions in one write; existing ones are kept unless ``overwrite``. Returns how many were added."""
    known = list(classes) if classes is not None else None
    decisions = load_decisions(root, known)
    added = 0
    for raw in new:
        decision = check_decision(replace(raw, path=relative_key(root, raw.path),
                                          decided_at=raw.decided_at or now_iso()), known)
        if decision.path in decisions and not overwrite:
            continue
        decisions[decision.path] = decision
        added += 1
    if added:
        save_decisions(root, decisions)
    return added


def clear_decision(root: Union[str, Path], path: Union[str, Path]) -> bool:
    """Forget the decision about ``path``; True when there was one."""
    decisions = load_decisions(root)
    key = relative_key(root, path)
    if key not in decisions:
        return False
    del decisions[key]
    save_decisions(root, decisions)
    return True


def clear_decisions(root: Union[str, Path]) -> int:
    """Remove the decisions file; returns how many decisions it held."""
    file = decisions_path(root)
    if not file.is_file():
        return 0
    count = len(load_decisions(root))
    file.unlink()
    return count


__all__ = ["DECISIONS_FILE", "ACTIONS", "Decision", "decisions_path", "load_decisions", "save_decisions",
           "set_decision", "set_decisions", "clear_decision", "clear_decisions", "relative_key"]
