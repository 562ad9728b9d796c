"""Does temperature scaling make carclf's probabilities honest? ECE, NLL, Brier and accuracy on held-out photos
before and after, with and without TTA, and what the "not sure" threshold catches and costs.

Each split is bench/bench_accuracy.py's (the real 5-brand photos of ``../shared/data``, the same stratified
train / val / test split per seed). The temperature is fitted on the split's validation photos with the
functions training uses (``carclf.train.score_views`` + ``carclf.calibration.fit_views``: the very fit a
bundle gets at the end of its run) and every score is measured on the test photos, which neither the
model nor the fit saw. "With TTA" is the bundle's own TTA, or ``BENCH_TTA`` views for a bundle without
one (the fast preset).

Two ways to get bundles:

    python bench/bench_calibration.py --bundles DIR     # DIR/seed<N>/{quick,fast}/ + DIR/seed<N>/split.json,
                                                        # as bench_time_to_accuracy.py --keep-bundles leaves them
    python bench/bench_calibration.py --seeds 0 1 2 3 4 --presets quick fast [--keep DIR]   # train them here

``--override KEY=VALUE`` changes the training config (YAML values; e.g. ``img_size=96`` for a quick try).
Prints one JSON object and writes it to bench/results/calibration.json (``--out``). Training is slow
(minutes per split and preset on 2 cores): run it rarely on a shared machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_accuracy  # noqa: E402  (merged_tree, split_tree, the split fractions)

RESULTS = REPO_ROOT / "bench" / "results"
SPLIT_FILE = "split.json"
# Key of the per-photo test probabilities a row keeps for the pooled scores (left out of the printed rows).
POOL_KEY = "_pool"
# Views averaged for "with TTA" when a bundle has no TTA of its own (quick's own is 4).
BENCH_TTA = 4
# "Not sure" thresholds reported besides carclf.calibration.UNCERTAIN_BELOW (calibrated top probability).
THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
# The target: after calibration ECE <= 5 % where it was above 10 % before.
TARGET_ECE_AFTER = 0.05
TARGET_ECE_BEFORE_ABOVE = 0.10


def read_split(folder: Path, class_names: list) -> dict:
    """``split.json`` as carclf Items labelled in the bundle's class order."""
    from carclf.data import Item

    listing = json.loads((folder / SPLIT_FILE).read_text(encoding="utf-8"))
    index = {name: i for i, name in enumerate(class_names)}
    return {part: [Item(Path(path), index[name]) for path, name in listing[part]] for part in ("val", "test")}


def not_sure(probabilities, labels, threshold: float) -> dict:
    """Share of wrong answers a threshold catches and of right answers it withholds."""
    import numpy as np

    top = probabilities.max(axis=1)
    right = probabilities.argmax(axis=1) == np.asarray(labels)
    flagged = top < threshold
    return {"threshold": threshold, "wrong": int((~right).sum()), "right": int(right.sum()),
            "wrong_flagged": int(flagged[~right].sum()), "right_flagged": int(flagged[right].sum()),
            "wrong_caught": round(float(flagged[~right].mean()), 4) if (~right).any() else None,
            "right_lost": round(float(flagged[right].mean()), 4) if right.any() else None}


def _scores(probabilities, labels) -> dict:
    from carclf import calibration

    found = calibration.scores(probabilities, labels)
    return {key: round(found[key], 4) for key in ("accuracy", "ece", "nll", "brier", "mean_confidence")}


def evaluate_bundle(bundle_dir: Path, split_dir: Path) -> dict:
    """Fit on the split's val photos as training does, score the test photos before and after."""
    import numpy as np

    from carclf import calibration
    from carclf.bundle import load_bundle
    from carclf.train import score_views
    from carclf.tta import own_tta

    bundle = load_bundle(bundle_dir)
    items = read_split(split_dir, list(bundle.class_names))
    tta = own_tta(bundle.meta) if own_tta(bundle.meta) > 1 else BENCH_TTA
    started = time.monotonic()
    val_views = score_views(bundle.model, items["val"], bundle.img_size, tta)
    test_views, test_labels = score_views(bundle.model, items["test"], bundle.img_size, tta)
    fitted = calibration.fit_views(*val_views, tta)
    stored = calibration.Calibration.from_meta(bundle.meta)
    result = {"bundle": bundle_dir.name, "tta": tta, "val": len(val_views[0]), "test": len(test_labels),
              "stored_temperatures": None if stored is None else stored.to_meta()["temperature"]}
    for views, name in ((1, "no_tta"), (tta, "tta")):
        raw = np.stack([p[0] if views == 1 else p[:views].mean(axis=0) for p in test_views])
        temperature = fitted.temperature_for(views)
        calibrated = calibration.apply_temperature(raw, temperature)
        result[name] = {
            "views": views, "temperature": round(temperature, 4), "fit": fitted.fits[views]["reason"],
            "before": _scores(raw, test_labels), "after": _scores(calibrated, test_labels),
            "not_sure": [not_sure(calibrated, test_labels, t) for t in THRESHOLDS],
            "not_sure_uncalibrated": not_sure(raw, test_labels, calibration.UNCERTAIN_BELOW),
            POOL_KEY: {"before": raw.tolist(), "after": calibrated.tolist(), "labels": list(map(int, test_labels))},
        }
    result["seconds"] = round(time.monotonic() - started, 1)
    return result


def from_bundles(root: Path, methods: list) -> list:
    """Every DIR/seed<N>/<method>/ bundle with its DIR/seed<N>/split.json."""
    rows = []
    for split_dir in sorted(root.glob("seed*"), key=lambda p: int(p.name[4:]) if p.name[4:].isdigit() else -1):
        if not (split_dir / SPLIT_FILE).is_file():
            continue
        for method in methods:
            if (split_dir / method).is_dir():
                row = {"seed": int(split_dir.name[4:]), "method": method,
                       **evaluate_bundle(split_dir / method, split_dir)}
                print(json.dumps(without_pools([row])[0]), file=sys.stderr, flush=True)  # partial results survive a kill
                rows.append(row)
    return rows


def train_bundles(seeds: list, presets: list, overrides: dict, keep: Path) -> Path:
    """Train each preset on each seed's split (bench_accuracy's split) and leave them as
    ``keep/seed<N>/<preset>/`` + ``split.json``, the layout ``from_bundles`` reads."""
    from carclf import runs
    from carclf.config import load_config
    from carclf.train import train
    from bench_time_to_accuracy import keep_split  # the same split.json the timing benchmark leaves

    for seed in seeds:
        with tempfile.TemporaryDirectory(prefix="carclf-calib-") as temp:
            work = Path(temp)
            info, train_items, val_items, test_items, train_dir, val_dir = bench_accuracy.make_split(work, seed)
            folder = keep_split(keep, seed, info.classes, {"train": train_items, "val": val_items, "test": test_items})
            for preset in presets:
                config = load_config(preset=preset, overrides={
                    **overrides, "data": str(train_dir), "val_data": str(val_dir),
                    "models_dir": str(work / "models"), "name": preset, "seed": seed})
                paths = runs.create_run(config, work / "runs")
                with contextlib.redirect_stdout(sys.stderr):  # the training log must not mix with the JSON
                    status = train(config, paths.root, verbose=0)
                if status["state"] != runs.FINISHED:
                    raise SystemExit(f"error: seed {seed} {preset} did not finish: {status.get('error')}")
                shutil.copytree(status["bundle"], folder / preset, dirs_exist_ok=True)
    return keep


def ece_noise_floor(probabilities, draws: int = 200, seed: int = 0) -> float:
    """Mean ECE of a model calibrated by construction: labels drawn from ``probabilities`` themselves.
    What a test set this size reads as "miscalibration" from sampling alone."""
    import numpy as np

    from carclf import calibration

    probabilities = np.asarray(probabilities, dtype=np.float64)
    rng = np.random.default_rng(seed)
    cumulative = probabilities.cumsum(axis=1)
    values = []
    for _ in range(draws):
        labels = (rng.random((len(probabilities), 1)) > cumulative).sum(axis=1).clip(0, probabilities.shape[1] - 1)
        values.append(calibration.ece(probabilities, labels))
    return round(float(np.mean(values)), 4)


def pooled_scores(parts: list) -> dict:
    """Scores over every split's test photos together: one split's ~47 photos put about 5-10 points of
    sampling noise into a 10-bin ECE even for a perfectly calibrated model; all splits together about half."""
    import numpy as np

    from carclf import calibration

    labels = [label for p in parts for label in p[POOL_KEY]["labels"]]
    pooled_after = [row for p in parts for row in p[POOL_KEY]["after"]]
    result = {"photos": len(labels), "ece_noise_floor": ece_noise_floor(pooled_after),
              "ece_noise_floor_one_split": round(statistics.mean(ece_noise_floor(p[POOL_KEY]["after"])
                                                                 for p in parts), 4)}
    pooled = {when: np.array([row for p in parts for row in p[POOL_KEY][when]]) for when in ("before", "after")}
    for when, probabilities in pooled.items():
        result[when] = _scores(probabilities, labels)
    # The ceiling of temperature scaling here: ONE temperature fitted on these very test photos (hindsight, so
    # not a method): what is left above the noise floor is miscalibration no temperature can remove.
    hindsight = calibration.fit_temperature(pooled["before"], labels).temperature
    result["hindsight"] = {"temperature": round(hindsight, 4),
                           **_scores(calibration.apply_temperature(pooled["before"], hindsight), labels)}
    return result


def without_pools(rows: list) -> list:
    """The rows as printed: the per-photo probabilities kept for pooling are left out."""
    return [{key: ({k: v for k, v in value.items() if k != POOL_KEY} if isinstance(value, dict) else value)
             for key, value in row.items()} for row in rows]


def summarize(rows: list) -> dict:
    """Means per method and TTA setting, the target check per split, and the "not sure" trade-off pooled."""
    from carclf.calibration import UNCERTAIN_BELOW

    summary = {}
    for method in sorted({row["method"] for row in rows}):
        mine = [row for row in rows if row["method"] == method]
        for name in ("no_tta", "tta"):
            parts = [row[name] for row in mine]
            mean = {f"{when}_{key}": round(statistics.mean(p[when][key] for p in parts), 4)
                    for when in ("before", "after") for key in ("accuracy", "ece", "nll", "brier")}
            target = [p["after"]["ece"] <= TARGET_ECE_AFTER for p in parts if p["before"]["ece"] > TARGET_ECE_BEFORE_ABOVE]
            pooled = []
            for index, threshold in enumerate(THRESHOLDS):
                wrong, right, caught, lost = (sum(p["not_sure"][index][key] for p in parts)
                                              for key in ("wrong", "right", "wrong_flagged", "right_flagged"))
                pooled.append({"threshold": threshold, "wrong_caught": round(caught / wrong, 4) if wrong else None,
                               "right_lost": round(lost / right, 4) if right else None,
                               "answers_withheld": round((caught + lost) / max(1, wrong + right), 4)})
            pooled_test = pooled_scores(parts)
            summary[f"{method}_{name}"] = {
                "splits": len(parts), "views": sorted({p["views"] for p in parts}),
                "pooled_test_photos": pooled_test,
                # the target read on all splits' test photos together (one split's ECE is mostly noise)
                "pooled_target": {"applies": pooled_test["before"]["ece"] > TARGET_ECE_BEFORE_ABOVE,
                                  "met": pooled_test["after"]["ece"] <= TARGET_ECE_AFTER},
                "temperatures": [p["temperature"] for p in parts], **mean,
                "accuracy_unchanged": all(p["before"]["accuracy"] == p["after"]["accuracy"] for p in parts),
                "target_splits": len(target), "target_met": sum(target),
                "not_sure": pooled,
                "not_sure_default": next(p for p in pooled if p["threshold"] == UNCERTAIN_BELOW),
            }
    return summary


def parse_overrides(pairs: list) -> dict:
    import yaml

    overrides = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"error: --override wants KEY=VALUE, got {pair!r}")
        overrides[key] = yaml.safe_load(value)
    return overrides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundles", type=Path, metavar="DIR", help="evaluate DIR/seed<N>/<method>/ bundles")
    parser.add_argument("--methods", nargs="+", default=["quick", "fast"], help="bundle folders per split")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="splits to train")
    parser.add_argument("--presets", nargs="+", default=["quick", "fast"], help="presets to train")
    parser.add_argument("--override", action="append", metavar="KEY=VALUE", help="training config change")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="keep the trained bundles here")
    parser.add_argument("--out", type=Path, default=RESULTS / "calibration.json")
    args = parser.parse_args()

    started = time.monotonic()
    if args.bundles:
        root, methods, trained_here = args.bundles, args.methods, False
    else:
        root = args.keep or Path(tempfile.mkdtemp(prefix="carclf-calib-bundles-"))
        train_bundles(args.seeds, args.presets, parse_overrides(args.override), root)
        methods, trained_here = args.presets, True
    rows = from_bundles(root, methods)
    if not rows:
        raise SystemExit(f"error: no bundles under {root} (expected {root}/seed<N>/<method>/ and {SPLIT_FILE})")
    if trained_here and not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    from carclf.calibration import BINS, MIN_FIT_PHOTOS, UNCERTAIN_BELOW

    result = {
        "dataset": {"sources": bench_accuracy.SOURCES, "seeds": sorted({row["seed"] for row in rows}),
                    "val": rows[0]["val"], "test": rows[0]["test"]},
        "bundles": str(args.bundles) if args.bundles else "trained here",
        "overrides": parse_overrides(args.override) if not args.bundles else None,
        "ece_bins": BINS, "min_fit_photos": MIN_FIT_PHOTOS, "uncertain_below": UNCERTAIN_BELOW,
        "target": {"ece_after_max": TARGET_ECE_AFTER, "where_ece_before_above": TARGET_ECE_BEFORE_ABOVE},
        "summary": summarize(rows),
        "splits": without_pools(rows),
        "seconds": round(time.monotonic() - started, 1),
        "cpu_cores": os.cpu_count(),
    }
    text = json.dumps(result, indent=2)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
