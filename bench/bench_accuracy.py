"""carclf's default training vs the plain keras.io transfer-learning recipe, on the same data and backbone.

Both start from the same pretrained EfficientNet-Lite0. Each seed draws a stratified 3-way split of real
car photos (``../shared/data``, merged by brand into one folder-per-class tree of symlinks): both methods
train on exactly the same training photos and get the same validation photos (the recipe as keras.io
uses them, as ``validation_data`` to watch; carclf through its ``val_data`` option, for early stopping
and the best checkpoint); both are scored on the test photos neither saw.

The recipe (keras.io "transfer learning" guide): frozen backbone called with training=False, RandomFlip,
global average pooling, Dropout 0.2, softmax; Adam 1e-3; a fixed number of epochs; no fine-tuning, no TTA.

Target: carclf's test error <= 2/3 of the recipe's, with carclf's CPU training within 10 minutes.
Prints one JSON object. Slow (minutes): run it rarely on a shared machine.

    python bench/bench_accuracy.py [--preset quick] [--seeds 0 1 2 3 4]

Several seeds = several different train/test splits; the error ratio compares mean test errors (one
split of 47 test photos moves by 2 points per photo).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

# Real 5-brand photos: the second source adds audi/lamborghini/mercedes photos to the same brand classes.
SOURCES = ("cars/vidhyagupta_car_brands_5", "cars/mfismail_car_brands_3")
# Share of every class held out as the test set, unseen by both methods.
TEST_FRACTION = 0.3
# Share of the remaining photos of every class given to both methods as validation photos.
VAL_FRACTION = 0.2
# The recipe's schedule (keras.io trains the new top for a fixed number of epochs).
RECIPE_EPOCHS = 20
RECIPE_LR = 1e-3
RECIPE_DROPOUT = 0.2
BATCH_SIZE = 16
BACKBONE = "efficientnet_lite0"
# Target: carclf's error at most this fraction of the recipe's.
TARGET_ERROR_RATIO = 2 / 3
TARGET_TRAIN_SECONDS = 600


def merged_tree(root: Path, data_root: Path = SHARED_DATA) -> Path:
    """One folder per brand holding symlinks to every photo of that brand in SOURCES (under ``data_root``)."""
    from carclf.data import list_images

    tree = root / "all"
    for source in SOURCES:
        for class_dir in sorted(p for p in (data_root / source).iterdir() if p.is_dir()):
            target = tree / class_dir.name
            target.mkdir(parents=True, exist_ok=True)
            for photo in list_images(class_dir):
                (target / f"{Path(source).name}__{photo.name}").symlink_to(photo.resolve())
    return tree


def split_tree(items, classes, root: Path) -> Path:
    """A folder-per-class tree of symlinks holding only ``items``."""
    for item in items:
        target = root / classes[item.label]
        target.mkdir(parents=True, exist_ok=True)
        (target / Path(item.path).name).symlink_to(Path(item.path).resolve())
    return root


def load_arrays(items, img_size: int):
    import numpy as np

    from carclf.images import load_rgb_array

    images = np.stack([load_rgb_array(item.path, img_size) for item in items]).astype("float32")
    return images, np.array([item.label for item in items])


def run_recipe(train_items, val_items, test_items, num_classes: int, seed: int, epochs: int = RECIPE_EPOCHS) -> dict:
    """The keras.io recipe on the same backbone and photos; returns test accuracy and time."""
    import keras

    from carclf.backbones import build_backbone, get_backbone

    keras.utils.set_random_seed(seed)
    img_size = get_backbone(BACKBONE).input_size
    x_train, y_train = load_arrays(train_items, img_size)
    x_val, y_val = load_arrays(val_items, img_size)
    x_test, y_test = load_arrays(test_items, img_size)
    backbone = build_backbone(BACKBONE, "imagenet", img_size)
    backbone.trainable = False
    inputs = keras.Input((img_size, img_size, 3))
    x = keras.layers.RandomFlip("horizontal")(inputs)
    x = backbone(x, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(RECIPE_DROPOUT)(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(RECIPE_LR), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    started = time.monotonic()
    model.fit(x_train, y_train, batch_size=BATCH_SIZE, epochs=epochs, shuffle=True, verbose=0,
              validation_data=(x_val, y_val))
    seconds = time.monotonic() - started
    _, accuracy = model.evaluate(x_test, y_test, batch_size=BATCH_SIZE, verbose=0)
    return {"test_accuracy": round(float(accuracy), 4), "train_seconds": round(seconds, 1),
            "img_size": img_size, "epochs": epochs}


def run_carclf(train_dir: Path, val_dir: Path, test_items, work: Path, preset: str, seed: int) -> dict:
    """carclf's default training (the preset) on the same photos; test accuracy with and without TTA."""
    from carclf import runs
    from carclf.bundle import load_bundle
    from carclf.config import load_config
    from carclf.train import evaluate_tta, train

    config = load_config(preset=preset, overrides={
        "data": str(train_dir), "val_data": str(val_dir), "models_dir": str(work / "models"), "name": "bench", "seed": seed})
    paths = runs.create_run(config, work / "runs")
    started = time.monotonic()
    with contextlib.redirect_stdout(sys.stderr):  # the training log must not mix with the JSON on stdout
        status = train(config, paths.root, verbose=0)
    seconds = time.monotonic() - started
    bundle = load_bundle(status["bundle"])
    plain = evaluate_tta(bundle.model, test_items, bundle.img_size, 1)
    with_tta = evaluate_tta(bundle.model, test_items, bundle.img_size, config.tta) if config.tta > 1 else plain
    history = runs.read_history(paths.run_id, work / "runs")
    return {"test_accuracy": round(with_tta, 4), "test_accuracy_no_tta": round(plain, 4), "tta": config.tta,
            "train_seconds": round(seconds, 1), "img_size": bundle.img_size, "epochs_run": int(len(history)),
            "val_metrics": status.get("val_metrics"), "preset": preset}


class Split(NamedTuple):
    """One benchmark split: the scanned photos, the three parts, and symlink folders of train and val."""

    info: object
    train: list
    val: list
    test: list
    train_dir: Path
    val_dir: Path


def make_split(work: Path, seed: int) -> Split:
    """The split drawn with ``seed`` (30 % test, 20 % of the rest validation), its folders under ``work``."""
    from carclf.data import scan_dataset, stratified_split

    info = scan_dataset(merged_tree(work))
    rest, test_items = stratified_split(info, TEST_FRACTION, seed=seed)
    train_items, val_items = stratified_split(rest, VAL_FRACTION, seed=seed)
    return Split(info, train_items, val_items, test_items, split_tree(train_items, info.classes, work / "train"),
                 split_tree(val_items, info.classes, work / "val"))


def one_split(seed: int, preset: str) -> dict:
    """Both methods on the split drawn with ``seed``."""
    with tempfile.TemporaryDirectory(prefix="carclf-bench-") as temp:
        work = Path(temp)
        split = make_split(work, seed)
        recipe = run_recipe(split.train, split.val, split.test, split.info.num_classes, seed)
        ours = run_carclf(split.train_dir, split.val_dir, split.test, work, preset, seed)
    return {"seed": seed, "classes": list(split.info.classes), "train": len(split.train), "val": len(split.val),
            "test": len(split.test), "recipe": recipe, "carclf": ours}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    args = parser.parse_args()

    splits = []
    for seed in args.seeds:
        splits.append(one_split(seed, args.preset))
        print(json.dumps(splits[-1]), file=sys.stderr, flush=True)  # partial results survive a kill

    def mean(method, key):
        return round(sum(split[method][key] for split in splits) / len(splits), 4)

    recipe_error = 1 - mean("recipe", "test_accuracy")
    our_error = 1 - mean("carclf", "test_accuracy")
    our_error_no_tta = 1 - mean("carclf", "test_accuracy_no_tta")
    ratio = our_error / recipe_error if recipe_error else None
    slowest = max(split["carclf"]["train_seconds"] for split in splits)
    print(json.dumps({
        "dataset": {"sources": SOURCES, "classes": splits[0]["classes"], "train": splits[0]["train"],
                    "val": splits[0]["val"], "test": splits[0]["test"], "seeds": args.seeds},
        "backbone": BACKBONE,
        "recipe_mean_test_error": round(recipe_error, 4),
        "carclf_mean_test_error": round(our_error, 4),
        "carclf_mean_test_error_no_tta": round(our_error_no_tta, 4),
        "error_ratio": None if ratio is None else round(ratio, 3),
        "error_ratio_no_tta": None if not recipe_error else round(our_error_no_tta / recipe_error, 3),
        "carclf_train_seconds_max": slowest,
        "recipe_train_seconds_max": max(split["recipe"]["train_seconds"] for split in splits),
        "per_split_test_error": [
            {"seed": split["seed"], "recipe": round(1 - split["recipe"]["test_accuracy"], 4),
             "carclf": round(1 - split["carclf"]["test_accuracy"], 4),
             "carclf_no_tta": round(1 - split["carclf"]["test_accuracy_no_tta"], 4)} for split in splits],
        "target": {"error_ratio_max": round(TARGET_ERROR_RATIO, 3), "train_seconds_max": TARGET_TRAIN_SECONDS},
        "met": ratio is not None and ratio <= TARGET_ERROR_RATIO and slowest <= TARGET_TRAIN_SECONDS,
        "splits": splits,
        "cpu_cores": os.cpu_count(),
        "caveat": "small test sets; the machine's 2 cores were shared with other engineers' jobs",
    }, indent=2))


if __name__ == "__main__":
    main()
