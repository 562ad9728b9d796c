"""Search training settings for the accuracy benchmark: many variants x many splits, in parallel processes.

``bench_accuracy.py`` measures one preset through carclf's real trainer (tf.data, run folders, callbacks)
on 2 CPU cores: minutes per split. Choosing a preset needs dozens of variants on ten splits, so this script
replays the same recipe in memory and under any Keras 3 backend: the same backbone code and model builder
(``carclf.model``), the same augmentation (``carclf.augment.Augmenter``), the same stage schedule with
progressive unfreezing, EarlyStopping(restore_best_weights) and ReduceLROnPlateau on val_loss, the best
epoch over all stages kept (carclf's ModelCheckpoint), label smoothing and TTA (``carclf.tta``). Jobs
(variant, split) spread over worker processes; on a GPU machine without TensorFlow it runs with
``KERAS_BACKEND=torch``.

Protocol: pick a variant by its mean error on splits 5-9, then report ``bench_accuracy.py`` on 0-4.

    KERAS_BACKEND=torch python bench/sweep_accuracy.py --data-root DIR --workers 10 --out sweep.jsonl

``--data-root`` holds the SOURCES folders of bench_accuracy (default ../shared/data). Prints one JSON
summary (mean test error per variant and split group); every finished job is appended to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))
sys.path.insert(0, str(BENCH_DIR))

import bench_accuracy as bench  # noqa: E402  (the split and the recipe are shared with the benchmark)

SELECT_SEEDS = (5, 6, 7, 8, 9)
REPORT_SEEDS = (0, 1, 2, 3, 4)

QUICK_HEAD = {"epochs": 30, "learning_rate": 1e-3, "unfreeze": "none", "patience": 8}
FULL_3E4 = {"epochs": 20, "learning_rate": 3e-4, "unfreeze": "all", "patience": 6}


def _stages(*fine_tune):
    return [QUICK_HEAD, *fine_tune]


# Variant name -> TrainConfig overrides on top of the quick preset ("recipe" = bench_accuracy's keras.io recipe).
VARIANTS = {
    "recipe": None,
    "quick": {},
    "head_only": {"stages": _stages()},
    "head_only_default_aug": {"stages": _stages(), "augmentation": "default"},
    "q_default_aug": {"augmentation": "default"},
    "q_224": {"img_size": 224},
    "q_384": {"img_size": 384},
    "ft30_3e4_20": {"stages": _stages({"epochs": 20, "learning_rate": 3e-4, "unfreeze": "30%", "patience": 6})},
    "ft60_1e4_20": {"stages": _stages({"epochs": 20, "learning_rate": 1e-4, "unfreeze": "60%", "patience": 6})},
    "full_1e4_20": {"stages": _stages({"epochs": 20, "learning_rate": 1e-4, "unfreeze": "all", "patience": 6})},
    "full_1e4_20_default_aug": {"augmentation": "default",
                                "stages": _stages({"epochs": 20, "learning_rate": 1e-4, "unfreeze": "all", "patience": 6})},
    "full_3e5_30_default_aug": {"augmentation": "default",
                                "stages": _stages({"epochs": 30, "learning_rate": 3e-5, "unfreeze": "all", "patience": 8})},
    "full_1e4_30_strong_aug": {"augmentation": "strong",
                               "stages": _stages({"epochs": 30, "learning_rate": 1e-4, "unfreeze": "all", "patience": 8})},
    "full_1e4_20_default_aug_384": {"augmentation": "default", "img_size": 384,
                                    "stages": _stages({"epochs": 20, "learning_rate": 1e-4, "unfreeze": "all", "patience": 6})},
    "full_3e4_20_default_aug": {"augmentation": "default",
                                "stages": _stages({"epochs": 20, "learning_rate": 3e-4, "unfreeze": "all", "patience": 6})},
    "full_1e3_20_default_aug": {"augmentation": "default",
                                "stages": _stages({"epochs": 20, "learning_rate": 1e-3, "unfreeze": "all", "patience": 6})},
    "full_6e4_20_default_aug": {"augmentation": "default",
                                "stages": _stages({"epochs": 20, "learning_rate": 6e-4, "unfreeze": "all", "patience": 6})},
    "full_3e4_30_default_aug": {"augmentation": "default",
                                "stages": _stages({"epochs": 30, "learning_rate": 3e-4, "unfreeze": "all", "patience": 8})},
    "full_3e4_20_strong_aug": {"augmentation": "strong",
                               "stages": _stages({"epochs": 20, "learning_rate": 3e-4, "unfreeze": "all", "patience": 6})},
    "full_3e4_20_light_aug": {"stages": _stages({"epochs": 20, "learning_rate": 3e-4, "unfreeze": "all", "patience": 6})},
    "full_3e4_20_default_aug_224": {"augmentation": "default", "img_size": 224,
                                    "stages": _stages({"epochs": 20, "learning_rate": 3e-4, "unfreeze": "all", "patience": 6})},
    "head10_3e3_full_3e4_20_default_aug": {
        "augmentation": "default",
        "stages": [{"epochs": 10, "learning_rate": 3e-3, "unfreeze": "none", "patience": 4},
                   {"epochs": 20, "learning_rate": 3e-4, "unfreeze": "all", "patience": 6}]},
    "w_dropout05": {"augmentation": "default", "head": {"dropout": 0.5}, "stages": _stages(FULL_3E4)},
    "w_320": {"augmentation": "default", "img_size": 320, "stages": _stages(FULL_3E4)},
    "w_ls02": {"augmentation": "default", "label_smoothing": 0.2, "stages": _stages(FULL_3E4)},
    "w_2e4_25": {"augmentation": "default",
                 "stages": _stages({"epochs": 25, "learning_rate": 2e-4, "unfreeze": "all", "patience": 8})},
    "w_strong_30": {"augmentation": "strong",
                    "stages": _stages({"epochs": 30, "learning_rate": 3e-4, "unfreeze": "all", "patience": 8})},
    "w_bs8": {"augmentation": "default", "batch_size": 8, "stages": _stages(FULL_3E4)},
    "w_ft75": {"augmentation": "default", "stages": _stages({**FULL_3E4, "unfreeze": "75%"})},
    "ft50_3e4_20_default_aug": {"augmentation": "default",
                                "stages": _stages({"epochs": 20, "learning_rate": 3e-4, "unfreeze": "50%", "patience": 6})},
    "full_1e4_20_no_es": {"augmentation": "default", "early_stopping": False,
                          "stages": _stages({"epochs": 20, "learning_rate": 1e-4, "unfreeze": "all", "patience": 6})},
    "full_1e4_20_ls0": {"augmentation": "default", "label_smoothing": 0.0,
                        "stages": _stages({"epochs": 20, "learning_rate": 1e-4, "unfreeze": "all", "patience": 6})},
    "full_sgd_1e3_30": {"augmentation": "default", "optimizer": "sgd",
                        "stages": _stages({"epochs": 30, "learning_rate": 1e-3, "unfreeze": "all", "patience": 8})},
}


def split_items(data_root: Path, seed: int, work: Path):
    """The exact split bench_accuracy draws for ``seed``: (classes, train, val, test items)."""
    from carclf.data import scan_dataset, stratified_split

    info = scan_dataset(bench.merged_tree(work, data_root))
    rest, test_items = stratified_split(info, bench.TEST_FRACTION, seed=seed)
    train_items, val_items = stratified_split(rest, bench.VAL_FRACTION, seed=seed)
    return info.classes, train_items, val_items, test_items


def augmented_batches(photos, labels, augmenter, batch_size: int, seed: int):
    """Training batches drawn fresh every epoch through carclf's Augmenter, as a keras PyDataset."""
    import keras
    import numpy as np

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=1, use_multiprocessing=False)
            self.epoch = 0
            self.order = self._order()

        def _order(self):
            return np.random.default_rng([seed, self.epoch]).permutation(len(photos))

        def __len__(self):
            return -(-len(photos) // batch_size)

        def __getitem__(self, index):
            chosen = self.order[index * batch_size:(index + 1) * batch_size]
            images = [augmenter(photos[i], seed=int(seed * 100_003 + self.epoch * 1009 + i)) for i in chosen]
            return np.stack(images).astype("float32"), labels[chosen]

        def on_epoch_end(self):
            self.epoch += 1
            self.order = self._order()

    return Batches()


def train_variant(overrides: dict, train_items, val_items, test_items, num_classes: int, seed: int, data_dir: str,
                  max_epochs: int = 0):
    """carclf's training recipe for ``overrides`` on one split; returns test accuracies and timings."""
    import keras
    import numpy as np

    from carclf.augment import AugSchedule, Augmenter, load_aug_config, pre_resize_side
    from carclf.config import load_config
    from carclf.images import load_image, load_rgb_array
    from carclf.model import build_classifier, resolve_img_size, set_trainable
    from carclf.optimizers import build_optimizer
    from carclf.tta import tta_views

    config = load_config(preset="quick", overrides={**overrides, "data": data_dir, "seed": seed})
    if max_epochs:  # smoke runs: every stage cut short
        config = config.replace(stages=[{**vars(s), "epochs": min(s.epochs, max_epochs)} for s in config.stages])
    img_size = resolve_img_size(config)
    keras.utils.set_random_seed(seed)
    eye = np.eye(num_classes, dtype="float32")
    photos = [np.asarray(load_image(item.path, min_size=pre_resize_side(img_size))) for item in train_items]
    y_train = eye[[item.label for item in train_items]]
    x_val = np.stack([load_rgb_array(item.path, img_size) for item in val_items]).astype("float32")
    y_val = eye[[item.label for item in val_items]]
    aug_config = load_aug_config(config.augmentation)
    if aug_config.transforms:
        augmenter = Augmenter(aug_config, img_size)
    else:
        def augmenter(photo, seed=None):
            return load_rgb_array(photo, img_size)
    batches = augmented_batches(photos, y_train, augmenter, config.batch_size, seed)
    model = build_classifier(config, num_classes)

    best = {"loss": np.inf, "weights": None, "stage": None, "epoch": None}

    class KeepBest(keras.callbacks.Callback):
        """carclf's ModelCheckpoint(save_best_only) across stages, in memory."""

        def __init__(self, stage):
            super().__init__()
            self.stage = stage

        def on_epoch_end(self, epoch, logs=None):
            if logs["val_loss"] < best["loss"]:
                best.update(loss=logs["val_loss"], weights=self.model.get_weights(), stage=self.stage, epoch=epoch)

    class Weaken(keras.callbacks.Callback):
        def __init__(self, total):
            super().__init__()
            self.total, self.schedule = total, AugSchedule(last_epochs=config.aug_weaken_last)

        def on_epoch_begin(self, epoch, logs=None):
            augmenter.set_strength(self.schedule.strength_at(epoch, self.total, aug_config.strength))

    started = time.monotonic()
    epochs_run = []
    for number, stage in enumerate(config.stages, start=1):
        set_trainable(model, stage.unfreeze)
        model.compile(optimizer=build_optimizer(config.optimizer, stage.learning_rate, config.weight_decay),
                      loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
                      metrics=["accuracy"])
        callbacks = [KeepBest(number)]
        if config.early_stopping:
            callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=stage.patience,
                                                           restore_best_weights=True))
        if config.reduce_lr_factor < 1.0:
            callbacks.append(keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss", factor=config.reduce_lr_factor, patience=config.reduce_lr_patience,
                min_lr=config.min_learning_rate))
        if isinstance(augmenter, Augmenter):
            augmenter.set_strength(aug_config.strength)
            if number == len(config.stages) and config.aug_weaken_last:
                callbacks.append(Weaken(stage.epochs))
        history = model.fit(batches, validation_data=(x_val, y_val), batch_size=config.batch_size,
                            epochs=stage.epochs, callbacks=callbacks, verbose=0)
        epochs_run.append(len(history.epoch))
    seconds = time.monotonic() - started
    model.set_weights(best["weights"])

    def accuracy(views: int) -> float:
        correct = 0
        for item in test_items:
            batch = tta_views(item.path, views, img_size)[0].astype("float32")
            probs = np.asarray(model.predict_on_batch(batch)).mean(axis=0)
            correct += int(probs.argmax() == item.label)
        return correct / len(test_items)

    plain = accuracy(1)
    return {"test_accuracy": round(accuracy(config.tta), 4) if config.tta > 1 else round(plain, 4),
            "test_accuracy_no_tta": round(plain, 4), "tta": config.tta, "img_size": img_size,
            "train_seconds": round(seconds, 1), "epochs_run": epochs_run,
            "best": {"val_loss": round(float(best["loss"]), 4), "stage": best["stage"], "epoch": best["epoch"]}}


def run_job(variant: str, seed: int, data_root: str, max_epochs: int = 0) -> dict:
    """One (variant, split) job in a worker process."""
    import keras

    keras.backend.clear_session()
    with tempfile.TemporaryDirectory(prefix="carclf-sweep-") as temp:
        work = Path(temp)
        classes, train_items, val_items, test_items = split_items(Path(data_root), seed, work)
        if VARIANTS[variant] is None:
            result = bench.run_recipe(train_items, val_items, test_items, len(classes), seed,
                                      epochs=max_epochs or bench.RECIPE_EPOCHS)
            result["test_accuracy_no_tta"] = result["test_accuracy"]
        else:
            train_dir = bench.split_tree(train_items, classes, work / "train")
            result = train_variant(VARIANTS[variant], train_items, val_items, test_items, len(classes), seed,
                                   str(train_dir), max_epochs)
    return {"variant": variant, "seed": seed, "train": len(train_items), "val": len(val_items),
            "test": len(test_items), **result}


def _worker_init() -> None:
    """Each worker: few CPU threads (many workers share the machine), quiet logs."""
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    try:
        import torch

        torch.set_num_threads(2)
    except ImportError:
        pass


def summarise(results: list[dict]) -> dict:
    """Mean test error per variant over the selection and the report splits."""
    summary = {}
    for variant in VARIANTS:
        rows = [r for r in results if r["variant"] == variant]
        if not rows:
            continue
        entry = {}
        for group, seeds in (("select", SELECT_SEEDS), ("report", REPORT_SEEDS)):
            chosen = [r for r in rows if r["seed"] in seeds]
            if chosen:
                entry[f"{group}_error"] = round(1 - sum(r["test_accuracy"] for r in chosen) / len(chosen), 4)
                entry[f"{group}_error_no_tta"] = round(
                    1 - sum(r["test_accuracy_no_tta"] for r in chosen) / len(chosen), 4)
                entry[f"{group}_n"] = len(chosen)
        entry["train_seconds_max"] = max(r.get("train_seconds", 0) for r in rows)
        summary[variant] = entry
    return dict(sorted(summary.items(), key=lambda item: item[1].get("select_error", 1.0)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=str(bench.SHARED_DATA))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[*SELECT_SEEDS, *REPORT_SEEDS])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", default="sweep_results.jsonl")
    parser.add_argument("--summarise", nargs="+", metavar="JSONL", help="only print the summary of finished jobs")
    parser.add_argument("--skip-done", nargs="*", default=[], help="JSONL files of finished jobs to skip")
    parser.add_argument("--max-epochs", type=int, default=0, help="cap every stage (smoke test); 0 = as configured")
    args = parser.parse_args()

    if args.summarise:
        rows = [json.loads(line) for path in args.summarise
                for line in Path(path).read_text(encoding="utf-8").splitlines()]
        print(json.dumps({"jobs": len(rows), "variants": summarise([r for r in rows if "error" not in r])}, indent=2))
        return
    done = set()
    for path in args.skip_done:  # earlier sweeps' results: those jobs are not run again
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            if "error" not in row:
                done.add((row["variant"], row["seed"]))
    # Variant-major: the variants listed first get all their splits first (a time limit cuts the last ones).
    jobs = [(variant, seed) for variant in args.variants for seed in args.seeds if (variant, seed) not in done]
    results = []
    started = time.monotonic()
    with open(args.out, "a", encoding="utf-8") as out, ProcessPoolExecutor(
            max_workers=args.workers, initializer=_worker_init) as pool:
        futures = {pool.submit(run_job, variant, seed, args.data_root, args.max_epochs): (variant, seed) for variant, seed in jobs}
        for future in as_completed(futures):
            variant, seed = futures[future]
            try:
                result = future.result()
            except Exception as error:  # one broken variant must not lose the others' results
                result = {"variant": variant, "seed": seed, "error": f"{type(error).__name__}: {error}"}
            out.write(json.dumps(result) + "\n")
            out.flush()
            print(json.dumps(result), file=sys.stderr, flush=True)
            if "error" not in result:
                results.append(result)
    print(json.dumps({"backend": os.environ.get("KERAS_BACKEND", "tensorflow"), "jobs": len(jobs),
                      "failed": len(jobs) - len(results), "seconds": round(time.monotonic() - started, 1),
                      "variants": summarise(results)}, indent=2))


if __name__ == "__main__":
    main()
