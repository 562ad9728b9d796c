"""Finding labelled photos on disk: dataset layouts, class names, train/validation splits.

Two layouts are understood, each a ``LayoutSpec`` in ``LAYOUTS`` (tried in order):

- ``kaggle``: ``DIR/train.csv`` (``Id,Category``) + ``DIR/train/<Category>/<Id>``, the format of the
  "sf-dl-car-classification" competition. CSV rows without a file and files without a CSV row are reported.
- ``folders``: ``DIR/<class>/*.jpg`` (any depth below the class folder).

Both honour the user's decisions file (``DIR/carclf-decisions.csv``, see ``carclf.decisions``): excluded
photos are left out and relabelled ones counted under their new class, so training, evaluation and the
pages all see the reviewed dataset while the photos on disk stay untouched.

Unreadable files (empty, not an image, absurdly large) are found by a cheap header check, reported once
and skipped, never fatal: one bad photo among 15,000 must not stop a training run.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, NamedTuple, Optional, Sequence, Union

import numpy as np

from carclf.errors import ConfigError, DataError, ImageError
from carclf.images import IMAGE_EXTENSIONS, is_image_file, probe_image

LOG = logging.getLogger(__name__)

# The ten classes of the Kaggle "sf-dl-car-classification" competition: Category id -> car model.
COMPETITION_CLASS_NAMES = {
    "0": "Lada Priora",
    "1": "Ford Focus",
    "2": "VAZ-2114 Samara",
    "3": "VAZ-2110",
    "4": "VAZ-2107 Zhiguli",
    "5": "Lada Niva",
    "6": "Lada Kalina",
    "7": "VAZ-2109",
    "8": "Volkswagen Passat",
    "9": "VAZ-21099",
}

# Optional file in a dataset folder mapping class folder names to display names: {"bmw_x5": "BMW X5"}.
LABELS_FILE = "labels.json"

# Kaggle layout: the label table and the folder of class sub-folders next to it.
KAGGLE_CSV = "train.csv"
KAGGLE_IMAGE_DIR = "train"
KAGGLE_COLUMNS = ("Id", "Category")

# How many unreadable/unlisted file names a log line shows before "... and N more".
LOG_EXAMPLES = 5

# Default share of each class held out for validation.
DEFAULT_VAL_FRACTION = 0.2

ProgressCallback = Callable[[int, int], None]
"""Called as ``progress(done, total)`` while files are checked, e.g. to move a progress bar."""


class Item(NamedTuple):
    """One labelled photo: its path and the index of its class in ``DatasetInfo.classes``."""

    path: Path
    label: int


@dataclass(frozen=True)
class DatasetInfo:
    """What ``scan_dataset`` found: classes, usable photos and everything that had to be skipped."""

    root: Path  # the folder that was scanned
    layout: str  # a key of LAYOUTS
    classes: tuple[str, ...]  # class folder names / category ids, naturally sorted: the label order
    display_names: tuple[str, ...]  # human names, same order as classes
    items: tuple[Item, ...]  # usable photos, sorted by class then natural path order
    unreadable: tuple[tuple[Path, str], ...] = ()  # (path, reason) skipped by the header check
    missing: tuple[str, ...] = ()  # kaggle: CSV ids whose file does not exist
    unlisted: tuple[Path, ...] = ()  # kaggle: image files under train/ with no CSV row
    rejected: tuple[tuple[str, str], ...] = ()  # kaggle: (row "Id,Category", reason) pointing outside train/
    excluded: tuple[Item, ...] = ()  # left out by the decisions file (with their label on disk)
    relabelled: tuple[tuple[Path, int, int], ...] = ()  # (path, label on disk, label decided), both indices

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def paths(self) -> list[Path]:
        return [item.path for item in self.items]

    @property
    def labels(self) -> list[int]:
        return [item.label for item in self.items]

    @property
    def counts(self) -> dict[str, int]:
        """Usable photos per class, in label order."""
        tally = Counter(item.label for item in self.items)
        return {name: tally.get(index, 0) for index, name in enumerate(self.classes)}

    @property
    def counts_before(self) -> dict[str, int]:
        """Photos per class as on disk, before the decisions file (excluded back in, relabels undone)."""
        tally = Counter(item.label for item in self.items)
        for _, disk, decided in self.relabelled:
            tally[decided] -= 1
            tally[disk] += 1
        tally.update(item.label for item in self.excluded)
        return {name: tally.get(index, 0) for index, name in enumerate(self.classes)}

    def summary(self) -> dict:
        """A JSON-ready summary for run folders and bundle metadata."""
        return {
            "root": str(self.root),
            "layout": self.layout,
            "classes": list(self.classes),
            "display_names": list(self.display_names),
            "num_images": len(self.items),
            "counts": self.counts,
            "unreadable": len(self.unreadable),
            "missing": len(self.missing),
            "unlisted": len(self.unlisted),
            "rejected": len(self.rejected),
            "excluded": len(self.excluded),
            "relabelled": len(self.relabelled),
        }


@dataclass(frozen=True)
class LayoutSpec:
    """How to recognise and read one dataset layout."""

    name: str
    detect: Callable[[Path], bool]  # True when the folder is in this layout
    find: Callable[[Path], "_Found"]  # class -> files, plus problems found before opening files
    default_names: Mapping[str, str] = field(default_factory=dict)  # display names when none are given
    describe: str = ""  # shown in the error when no layout fits


@dataclass
class _Found:
    files: dict[str, list[Path]]  # class name -> candidate image files
    missing: list[str] = field(default_factory=list)
    unlisted: list[Path] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)


# Folder names that say "the photos" rather than what they are: a dataset is named after their parent.
GENERIC_FOLDER_NAMES = frozenset({"train", "training", "images", "imgs", "data", "dataset", "photos", "pictures"})


def dataset_name(root: Union[str, Path]) -> str:
    """A human name for a dataset folder, for default run names: ``.../cars/train`` -> ``cars``.

    A Kaggle-layout folder is named after itself (its ``train/`` is inside it); a folder with a generic
    name (``train``, ``images``, ``data``...) after its parent; any other folder after itself.
    """
    path = Path(root).expanduser().resolve()
    if path.name.lower() in GENERIC_FOLDER_NAMES and path.parent.name:
        return path.parent.name
    return path.name or "dataset"


def natural_key(text: Union[str, Path]) -> tuple:
    """Sort key that puts "10" after "9" and "img2" before "img10"."""
    parts = re.split(r"(\d+)", str(text))
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part.lower()) for part in parts)


def _visible(path: Path) -> bool:
    """Hidden entries and "_" folders (``__MACOSX`` from zip files, ``_cache``) are not classes or photos."""
    return not path.name.startswith((".", "_"))


def _image_files(folder: Path, recursive: bool) -> list[Path]:
    pattern = folder.rglob("*") if recursive else folder.iterdir()
    files = [p for p in pattern if p.is_file() and _visible(p) and is_image_file(p)]
    return sorted(files, key=natural_key)


def _detect_kaggle(root: Path) -> bool:
    return (root / KAGGLE_CSV).is_file()


def _find_kaggle(root: Path) -> _Found:
    """Read train.csv and match each row with train/<Category>/<Id>.

    A row whose Id or Category would lead outside ``train/`` (``..``, an absolute path, a symlink out)
    is rejected and reported, and its file is never opened.
    """
    csv_path = root / KAGGLE_CSV
    image_dir = root / KAGGLE_IMAGE_DIR
    if not image_dir.is_dir():
        raise DataError(f"{root}: found {KAGGLE_CSV} but no {KAGGLE_IMAGE_DIR}/ folder next to it; "
                        f"expected {KAGGLE_IMAGE_DIR}/<Category>/<Id>.jpg.")
    rows = _read_kaggle_csv(csv_path)
    found = _Found(files={})
    listed: set[Path] = set()
    inside = image_dir.resolve()
    for image_id, category in rows:
        if not image_id or not category:
            continue
        reason = _escape_reason(inside, image_id, category)
        if reason:
            found.rejected.append((f"{image_id},{category}", reason))
            continue
        path = image_dir / category / image_id
        found.files.setdefault(category, [])
        if path.is_file():
            found.files[category].append(path)
            listed.add(path)
        else:
            found.missing.append(image_id)
    if found.rejected and not found.files:
        raise DataError(f"{csv_path}: every row points outside {KAGGLE_IMAGE_DIR}/ (e.g. "
                        f"{found.rejected[0][0]!r}: {found.rejected[0][1]}); Id must be a file name and "
                        f"Category a folder name inside {KAGGLE_IMAGE_DIR}/.")
    found.unlisted = [p for p in _image_files(image_dir, recursive=True) if p not in listed]
    for category in found.files:
        found.files[category].sort(key=natural_key)
    return found


def _read_kaggle_csv(csv_path: Path) -> list[tuple[str, str]]:
    """(Id, Category) rows of train.csv; an unreadable, non-UTF-8 or header-less file is a DataError."""
    hint = f"expected a UTF-8 CSV with the header {','.join(KAGGLE_COLUMNS)}"
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or not set(KAGGLE_COLUMNS) <= set(reader.fieldnames):
                raise DataError(f"{csv_path}: expected the columns {','.join(KAGGLE_COLUMNS)}, "
                                f"found {','.join(reader.fieldnames or []) or 'nothing'}.")
            return [((row["Id"] or "").strip(), (row["Category"] or "").strip()) for row in reader]
    except UnicodeDecodeError as error:
        raise DataError(f"{csv_path}: not UTF-8 text (byte {error.start}); {hint}. Re-save it as UTF-8.") from error
    except (csv.Error, ValueError) as error:
        raise DataError(f"{csv_path}: not a readable CSV ({error}); {hint}.") from error
    except OSError as error:
        raise DataError(f"{csv_path}: cannot read it ({error.strerror or error}).") from error


def _escape_reason(image_dir: Path, image_id: str, category: str) -> str:
    """Why ``train/<category>/<image_id>`` is not a plain file name inside ``image_dir`` ("" when it is)."""
    for part, what in ((category, "Category"), (image_id, "Id")):
        if "\x00" in part:
            return f"{what} contains a NUL byte"
        pieces = part.replace("\\", "/").split("/")
        if part.startswith(("/", "\\")) or ".." in pieces or (len(part) > 1 and part[1] == ":"):
            return f"{what} {part!r} leads outside {KAGGLE_IMAGE_DIR}/"
    resolved = (image_dir / category / image_id).resolve()
    if not resolved.is_relative_to(image_dir):
        return f"{category}/{image_id} resolves outside {KAGGLE_IMAGE_DIR}/ (symlink)"
    return ""


def _detect_folders(root: Path) -> bool:
    return any(p.is_dir() and _visible(p) for p in root.iterdir())


def _find_folders(root: Path) -> _Found:
    classes = [p for p in root.iterdir() if p.is_dir() and _visible(p)]
    return _Found(files={p.name: _image_files(p, recursive=True) for p in classes})


# Dataset layouts, tried in this order (the Kaggle CSV is the more specific signal).
LAYOUTS: dict[str, LayoutSpec] = {
    "kaggle": LayoutSpec(
        name="kaggle",
        detect=_detect_kaggle,
        find=_find_kaggle,
        default_names=COMPETITION_CLASS_NAMES,
        describe=f"DIR/{KAGGLE_CSV} (Id,Category) + DIR/{KAGGLE_IMAGE_DIR}/<Category>/<Id>.jpg",
    ),
    "folders": LayoutSpec(
        name="folders",
        detect=_detect_folders,
        find=_find_folders,
        default_names=COMPETITION_CLASS_NAMES,  # used only when the folders are exactly the ids 0..9
        describe="DIR/<class name>/*.jpg, one sub-folder per class",
    ),
}


def scan_dataset(
    path: Union[str, Path],
    class_names: Union[Mapping[str, str], Sequence[str], None] = None,
    progress: Optional[ProgressCallback] = None,
    min_classes: int = 2,
    decisions: bool = True,
) -> DatasetInfo:
    """Find the classes and usable photos under ``path``.

    ``min_classes`` is 2 for training (a classifier needs two classes); evaluation passes 1, since a
    labelled folder may hold any subset of a model's classes.

    ``class_names`` gives display names, as ``{class: name}`` or a list in class order; otherwise they
    come from ``DIR/labels.json``, then the layout's defaults (the ten competition names), then the
    class folder names. Raises ``DataError`` when the folder cannot be used for training.

    ``decisions`` (default True) applies ``DIR/carclf-decisions.csv``: excluded photos are left out (listed
    in ``DatasetInfo.excluded``), relabels applied (``DatasetInfo.relabelled``); a bad row is a ``DataError``.
    """
    root = Path(path).expanduser().resolve()  # absolute: item paths must not depend on the cwd
    if not root.is_dir():
        raise DataError(f"{root}: no such folder. Point to a folder with one sub-folder per class, "
                        f"or with {KAGGLE_CSV} + {KAGGLE_IMAGE_DIR}/.")
    layout = next((spec for spec in LAYOUTS.values() if spec.detect(root)), None)
    if layout is None:
        expected = "; or ".join(spec.describe for spec in LAYOUTS.values())
        raise DataError(f"{root}: no classes found. Expected {expected}.")
    found = layout.find(root)
    classes = sorted(found.files, key=natural_key)
    _check_classes(root, classes, found.files, min_classes)

    candidates = [(p, index) for index, name in enumerate(classes) for p in found.files[name]]
    excluded, relabelled = [], []
    if decisions:
        candidates, excluded, relabelled = _apply_decisions(root, classes, candidates)
    items, unreadable = _check_files(candidates, progress)
    _report(root, unreadable, found.missing, found.unlisted, found.rejected)
    kept = Counter(label for _, label in items)
    empty = [name for index, name in enumerate(classes) if not kept.get(index)]
    if empty:
        because = " or excluded in the decisions file" if excluded else ""
        raise DataError(f"{root}: no readable images for class(es) {', '.join(empty)}; fix or remove the "
                        f"unreadable files listed in the log{because}.")
    names = _display_names(root, classes, class_names, layout.default_names)
    return DatasetInfo(
        root=root,
        layout=layout.name,
        classes=tuple(classes),
        display_names=names,
        items=tuple(Item(p, label) for p, label in items),
        unreadable=tuple(unreadable),
        missing=tuple(found.missing),
        unlisted=tuple(found.unlisted),
        rejected=tuple(found.rejected),
        excluded=tuple(Item(p, label) for p, label in excluded),
        relabelled=tuple(relabelled),
    )


def _apply_decisions(root: Path, classes: list[str], candidates: list[tuple[Path, int]]):
    """(kept candidates with decided labels, excluded (path, label), relabelled (path, old, new))."""
    from carclf.decisions import load_decisions

    decided = load_decisions(root, classes)
    if not decided:
        return candidates, [], []
    index = {name: i for i, name in enumerate(classes)}
    kept, excluded, relabelled = [], [], []
    for path, label in candidates:
        decision = decided.get(path.relative_to(root).as_posix())
        if decision is None or decision.action == "keep":
            kept.append((path, label))
        elif decision.action == "exclude":
            excluded.append((path, label))
        else:
            new = index[decision.label]
            kept.append((path, new))
            if new != label:
                relabelled.append((path, label, new))
    kept.sort(key=lambda c: (c[1], natural_key(c[0])))  # items stay sorted by class, then path
    if excluded or relabelled:
        LOG.info("%s: decisions file: %d photo(s) excluded, %d relabelled", root, len(excluded), len(relabelled))
    return kept, excluded, relabelled


def _check_classes(root: Path, classes: list[str], files: Mapping[str, list[Path]], min_classes: int = 2) -> None:
    if not classes:
        raise DataError(f"{root}: no class folders found; put the photos in {root}/<class name>/.")
    empty = [name for name in classes if not files[name]]
    if empty:
        raise DataError(f"{root}: class(es) {', '.join(empty)} have no images "
                        f"(looked for {', '.join(sorted(IMAGE_EXTENSIONS))} files); add photos or remove the class.")
    if len(classes) < min_classes:
        raise DataError(f"{root}: only one class ({classes[0]}) found; a classifier needs at least two "
                        "class folders.")


def _check_files(
    candidates: list[tuple[Path, int]], progress: Optional[ProgressCallback]
) -> tuple[list[tuple[Path, int]], list[tuple[Path, str]]]:
    """Header-check every file; keep the readable ones, collect (path, reason) for the rest."""
    items: list[tuple[Path, int]] = []
    unreadable: list[tuple[Path, str]] = []
    total = len(candidates)
    for done, (file, label) in enumerate(candidates, start=1):
        try:
            probe_image(file)
            items.append((file, label))
        except ImageError as error:
            unreadable.append((file, str(error)))
        if progress is not None:
            progress(done, total)
    return items, unreadable


def _report(root: Path, unreadable: list, missing: list[str], unlisted: list[Path], rejected: list = ()) -> None:
    """Log each kind of problem once, with a few examples, instead of one line per file."""
    if rejected:
        LOG.warning("%s: ignoring %d row(s) of %s that point outside %s/ (never read): %s%s", root, len(rejected),
                    KAGGLE_CSV, KAGGLE_IMAGE_DIR, "; ".join(f"{row!r}: {why}" for row, why in rejected[:LOG_EXAMPLES]),
                    _more(list(rejected)))
    if unreadable:
        examples = "; ".join(reason for _, reason in unreadable[:LOG_EXAMPLES])
        LOG.warning("%s: skipping %d unreadable file(s): %s%s", root, len(unreadable), examples,
                    _more(unreadable))
    if missing:
        LOG.warning("%s: %d id(s) in %s have no file: %s%s", root, len(missing), KAGGLE_CSV,
                    ", ".join(missing[:LOG_EXAMPLES]), _more(missing))
    if unlisted:
        LOG.warning("%s: skipping %d file(s) not listed in %s: %s%s", root, len(unlisted), KAGGLE_CSV,
                    ", ".join(p.name for p in unlisted[:LOG_EXAMPLES]), _more(unlisted))


def _more(things: list) -> str:
    return f" ... and {len(things) - LOG_EXAMPLES} more" if len(things) > LOG_EXAMPLES else ""


def _display_names(
    root: Path,
    classes: list[str],
    given: Union[Mapping[str, str], Sequence[str], None],
    defaults: Mapping[str, str],
) -> tuple[str, ...]:
    if given is None and (root / LABELS_FILE).is_file():
        given = _read_labels_file(root / LABELS_FILE)
    if given is None:
        given = defaults if set(classes) == set(defaults) else {}
    if not isinstance(given, Mapping):
        given = list(given)
        if len(given) != len(classes):
            raise DataError(f"{len(given)} class names given for {len(classes)} classes "
                            f"({', '.join(classes)}); give one name per class, in this order.")
        given = dict(zip(classes, given))
    return tuple(str(given.get(name, name)) for name in classes)


def _read_labels_file(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: cannot read it as JSON ({error}); expected {{\"class\": \"name\"}}.") from error
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object {{\"class folder\": \"display name\"}}.")
    return {str(key): str(value) for key, value in data.items()}


def cap_per_class(items: list, limit: int, seed: int) -> list:
    """``limit`` photos of each class, chosen by ``seed``, in their original order."""
    rng = np.random.default_rng(seed)
    by_label: dict = {}
    for item in items:
        by_label.setdefault(item.label, []).append(item)
    kept = []
    for label in sorted(by_label):
        members = by_label[label]
        kept += [members[i] for i in sorted(rng.permutation(len(members))[:limit])]
    return kept


def stratified_split(
    data: Union[DatasetInfo, Iterable[Item]],
    val_fraction: float = DEFAULT_VAL_FRACTION,
    seed: int = 0,
) -> tuple[list[Item], list[Item]]:
    """Split into (train, val) keeping each class's share; the same seed always gives the same split.

    Every class with at least two photos puts at least one in validation (so per-class accuracy exists);
    a class with a single photo keeps it for training.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}.")
    items = list(data.items if isinstance(data, DatasetInfo) else data)
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[Item]] = {}
    for item in sorted(items, key=lambda it: (it.label, natural_key(it.path))):
        by_class.setdefault(item.label, []).append(Item(Path(item.path), int(item.label)))
    train: list[Item] = []
    val: list[Item] = []
    for label in sorted(by_class):
        members = by_class[label]
        order = rng.permutation(len(members))
        n_val = 0
        if val_fraction > 0 and len(members) >= 2:
            n_val = min(len(members) - 1, max(1, int(round(len(members) * val_fraction))))
        val.extend(members[i] for i in order[:n_val])
        train.extend(members[i] for i in order[n_val:])
    return train, val


def list_images(path: Union[str, Path], recursive: bool = False) -> list[Path]:
    """Image files in an unlabelled folder (e.g. a Kaggle ``test_upload/``), in natural order."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder.")
    files = _image_files(folder, recursive)
    if not files:
        hint = "; its sub-folders hold some (predict reads them with --recursive)" \
            if not recursive and _image_files(folder, True) else ""
        raise DataError(f"{folder}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) found{hint}.")
    return files


def tqdm_progress(description: str = "checking images") -> ProgressCallback:
    """A ``progress`` callback that draws a tqdm bar on stderr (for the CLI)."""
    from tqdm import tqdm

    bar: dict = {}

    def update(done: int, total: int) -> None:
        if "bar" not in bar:
            bar["bar"] = tqdm(total=total, desc=description, unit="img")
        bar["bar"].update(done - bar["bar"].n)
        if done >= total:
            bar["bar"].close()

    return update
