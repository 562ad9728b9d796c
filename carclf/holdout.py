"""A held-out validation folder cut from a labelled dataset, as links, for train / evaluate / doctor.

A notebook on Kaggle trains with ``--val-data`` on a fixed share of the competition's labelled photos and then
evaluates (TTA, confusion matrix, worst photos) on exactly those photos, which the model never trained on.
The dataset itself stays untouched (on Kaggle it is read-only): ``make_holdout`` writes
``OUT/train/<class>/`` and ``OUT/val/<class>/`` of symbolic links (copies where links are not allowed), from
either layout, after the dataset's decisions file, optionally capped per class for a quick first run.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Union


from carclf.atomic import atomic_write_json
from carclf.data import (DEFAULT_VAL_FRACTION, LABELS_FILE, DatasetInfo, cap_per_class, scan_dataset,
                         stratified_split)
from carclf.errors import DataError

# Written into OUT: what the split was made from; its presence also marks OUT as ours to rebuild.
MANIFEST = "holdout.json"
PARTS = ("train", "val")


@dataclass(frozen=True)
class Holdout:
    """The two folders ``make_holdout`` wrote and how many photos of each class went where."""

    train: Path
    val: Path
    counts: dict  # class -> {"train": n, "val": n}

    @property
    def n_train(self) -> int:
        return sum(c["train"] for c in self.counts.values())

    @property
    def n_val(self) -> int:
        return sum(c["val"] for c in self.counts.values())


def make_holdout(
    data: Union[str, Path, DatasetInfo],
    out_dir: Union[str, Path],
    val_fraction: float = DEFAULT_VAL_FRACTION,
    seed: int = 42,
    max_per_class: int = 0,
) -> Holdout:
    """Split the dataset ``data`` (a folder, or what ``scan_dataset`` found in it) stratified into
    ``out_dir/train`` and ``out_dir/val`` (links to the photos).

    ``max_per_class`` > 0 first keeps that many photos of each class (a seeded random choice). The same
    arguments always give the same split. A previous split in ``out_dir`` is replaced; any other non-empty
    ``out_dir`` is refused, so that nothing else is ever deleted.
    """
    info = data if isinstance(data, DatasetInfo) else scan_dataset(data)
    items = cap_per_class(list(info.items), max_per_class, seed) if max_per_class > 0 else list(info.items)
    train, val = stratified_split(items, val_fraction, seed)
    if not val:
        raise DataError(f"{info.root}: too few photos for a validation split; add photos (2+ per class).")
    out = _fresh_output(Path(out_dir))
    names = dict(zip(info.classes, info.display_names))
    counts = {name: {"train": 0, "val": 0} for name in info.classes}
    for part, part_items in zip(PARTS, (train, val)):
        for item in part_items:
            _link(item.path, _target(out / part / info.classes[item.label], item.path))
            counts[info.classes[item.label]][part] += 1
        (out / part / LABELS_FILE).write_text(json.dumps(names, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    atomic_write_json(out / MANIFEST, {"source": str(info.root), "val_fraction": val_fraction, "seed": seed,
                                       "max_per_class": max_per_class, "counts": counts})
    return Holdout(train=out / "train", val=out / "val", counts=counts)


def _fresh_output(out: Path) -> Path:
    """``out`` emptied of a previous split (only ours: it has the manifest), or refused when it holds other files."""
    if out.is_dir() and any(out.iterdir()):
        if not (out / MANIFEST).is_file():
            raise DataError(f"{out} is not empty and is not a holdout split made by carclf; choose another folder.")
        for part in PARTS:
            if (out / part).is_dir():
                shutil.rmtree(out / part)
        (out / MANIFEST).unlink()
    for part in PARTS:
        (out / part).mkdir(parents=True, exist_ok=True)
    return out


def _target(folder: Path, source: Path) -> Path:
    """``folder/<source name>``, made unique when two photos of a class share a name (nested folders)."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / source.name
    number = 1
    while os.path.lexists(target):
        target = folder / f"{source.stem}-{number}{source.suffix}"
        number += 1
    return target


def _link(source: Path, target: Path) -> None:
    try:
        target.symlink_to(Path(source).resolve())
    except OSError:  # no symlinks here (some Windows setups): copy instead
        shutil.copy2(source, target)


__all__ = ["Holdout", "MANIFEST", "make_holdout"]
