"""Time to accuracy on a CPU: the reference (quick before issue 9), quick, fast and the keras.io recipe.

Every split (seed) is drawn as in ``bench/bench_accuracy.py`` (5 real car brands, 30 % test, 20 % of the
rest as validation); all four methods train on the same photos and are scored on the same unseen test
photos, in one process, in one run, so they share the machine's conditions. The carclf methods' wall time
is ``carclf.train.train`` from the data scan to the exported bundle (final validation, gate threshold and
export included); the recipe's is its ``fit``. The order of the carclf methods rotates from split to split
so no method always pays the process's first-run costs.

Noise: each test photo moves a split's error by about 2 points. "quick is no worse than the reference" is
judged on paired per-split differences (same photos): mean difference, its standard error and t statistic;
worse beyond noise = t above the one-sided 95 % critical value for n-1 degrees of freedom.

Scaling (``--scaling``): training time of fast and quick at 1x, 2x and 4x the photos of split 0 (train and
validation photos repeated under new names: same photos, new augmentation draws) on 2 cores and on 1
(``taskset -c 0``), each measurement in its own process; JSON table and PNG plot in bench/results/.

    python bench/bench_time_to_accuracy.py [--seeds 0 1 2 3 4] [--out bench/results/time_to_accuracy.json]
    python bench/bench_time_to_accuracy.py --scaling [--out bench/results/scaling.json]
    --keep-bundles DIR: also keep every split's bundles and photo lists (bench/bench_calibration.py reads them)

Needs matplotlib for the plot (bench/requirements.txt). Slow (an hour): run it rarely on a shared machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(BENCH_DIR.parent))

import bench_accuracy  # noqa: E402  (the splits, the data and the keras.io recipe)

RESULTS = BENCH_DIR / "results"
# The quick preset as it was before issue 9: the baseline whose time quick must halve.
REFERENCE_CONFIG = BENCH_DIR / "configs" / "reference_quick.yaml"
# Method name -> how its config is loaded.
METHODS = {"reference": {"path": str(REFERENCE_CONFIG)}, "quick": {"preset": "quick"}, "fast": {"preset": "fast"}}
TARGET_TIME_RATIO = 0.5  # quick's time / the reference's
TARGET_FAST_SECONDS = 60  # fast on ~200 photos
SCALES = (1, 2, 4)
CORE_SETS = {2: None, 1: "0"}  # cores -> taskset CPU list (None = all)
# One-sided 95 % critical values of Student's t for n-1 = 1..9 degrees of freedom.
T_CRITICAL_95 = {1: 6.314, 2: 2.920, 3: 2.353, 4: 2.132, 5: 2.015, 6: 1.943, 7: 1.895, 8: 1.860, 9: 1.833}


def load_method_config(method: str, train_dir: Path, val_dir: Path, work: Path, seed: int):
    from carclf.config import load_config

    return load_config(**METHODS[method], overrides={
        "data": str(train_dir), "val_data": str(val_dir), "models_dir": str(work / "models"), "name": method,
        "seed": seed})


def train_timed(config, work: Path) -> tuple[dict, float, str]:
    """(final status, wall seconds of ``train``, run id): data scan to exported bundle."""
    from carclf import runs
    from carclf.train import train

    paths = runs.create_run(config, work / "runs")
    started = time.monotonic()
    with contextlib.redirect_stdout(sys.stderr):  # the training log must not mix with the JSON on stdout
        status = train(config, paths.root, verbose=0)
    return status, time.monotonic() - started, paths.run_id


def run_method(method: str, train_dir: Path, val_dir: Path, test_items, work: Path, seed: int,
               keep: Path = None) -> dict:
    """One carclf method on one split: wall time, test accuracy with and without its TTA, epochs run.

    ``keep``: copy the trained bundle to ``keep/<method>`` (bench_calibration.py reuses them)."""
    from carclf import runs
    from carclf.bundle import load_bundle
    from carclf.train import evaluate_tta

    config = load_method_config(method, train_dir, val_dir, work, seed)
    status, seconds, run_id = train_timed(config, work)
    bundle = load_bundle(status["bundle"])
    if keep is not None:
        shutil.copytree(status["bundle"], keep / method, dirs_exist_ok=True)
    plain = evaluate_tta(bundle.model, test_items, bundle.img_size, 1)
    with_tta = evaluate_tta(bundle.model, test_items, bundle.img_size, config.tta) if config.tta > 1 else plain
    history = runs.read_history(run_id, work / "runs")
    return {"test_error": round(1 - with_tta, 4), "test_error_no_tta": round(1 - plain, 4), "tta": config.tta,
            "train_seconds": round(seconds, 1), "epochs_per_stage": history.groupby("stage").size().tolist(),
            "val_metrics": status.get("val_metrics")}


def keep_split(keep: Path, seed: int, classes, splits: dict) -> Path:
    """``keep/seed<N>/split.json``: each photo's real path and class name, so the split can be rebuilt."""
    folder = keep / f"seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    listing = {name: [[str(Path(item.path).resolve()), classes[item.label]] for item in items]
               for name, items in splits.items()}
    (folder / "split.json").write_text(json.dumps(listing, indent=1) + "\n", encoding="utf-8")
    return folder


def one_split(seed: int, keep: Path = None) -> dict:
    with tempfile.TemporaryDirectory(prefix="carclf-tta-") as temp:
        work = Path(temp)
        info, train_items, val_items, test_items, train_dir, val_dir = bench_accuracy.make_split(work, seed)
        order = list(METHODS)[seed % len(METHODS):] + list(METHODS)[:seed % len(METHODS)]
        kept = keep_split(keep, seed, info.classes, {"train": train_items, "val": val_items, "test": test_items}) \
            if keep else None
        results = {method: run_method(method, train_dir, val_dir, test_items, work, seed, kept) for method in order}
        recipe = bench_accuracy.run_recipe(train_items, val_items, test_items, info.num_classes, seed)
    results["recipe"] = {"test_error": round(1 - recipe["test_accuracy"], 4),
                         "train_seconds": recipe["train_seconds"], "epochs": recipe["epochs"]}
    return {"seed": seed, "train": len(train_items), "val": len(val_items), "test": len(test_items),
            "order": order, "methods": results}


def paired(splits: list, method: str, baseline: str, key: str = "test_error") -> dict:
    """Mean paired difference method - baseline over splits, its standard error, t and the verdict."""
    diffs = [split["methods"][method][key] - split["methods"][baseline][key] for split in splits]
    mean = statistics.fmean(diffs)
    se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else float("nan")
    t = mean / se if se and se == se else float("nan")
    critical = T_CRITICAL_95.get(len(diffs) - 1)
    return {"differences": [round(d, 4) for d in diffs], "mean": round(mean, 4), "standard_error": round(se, 4),
            "t": round(t, 2) if t == t else None, "t_critical_one_sided_95": critical,
            "worse_beyond_noise": bool(critical is not None and t == t and t > critical)}


def summarize(splits: list) -> dict:
    methods = list(splits[0]["methods"])

    def mean(method, key):
        return round(statistics.fmean(split["methods"][method][key] for split in splits), 4)

    table = {method: {"mean_test_error": mean(method, "test_error"), "mean_train_seconds": mean(method, "train_seconds"),
                      **({"mean_test_error_no_tta": mean(method, "test_error_no_tta")} if method != "recipe" else {})}
             for method in methods}
    reference_seconds = table["reference"]["mean_train_seconds"]
    for method in methods:
        table[method]["time_ratio_to_reference"] = round(table[method]["mean_train_seconds"] / reference_seconds, 3)
    quick_vs_reference = paired(splits, "quick", "reference")
    return {
        "methods": table,
        "per_split": [{"seed": split["seed"], **{method: {"test_error": split["methods"][method]["test_error"],
                                                          "train_seconds": split["methods"][method]["train_seconds"]}
                                                 for method in methods}} for split in splits],
        "quick_minus_reference_test_error": quick_vs_reference,
        "fast_minus_reference_test_error": paired(splits, "fast", "reference"),
        "quick_time_ratios_per_split": [round(s["methods"]["quick"]["train_seconds"] / s["methods"]["reference"]["train_seconds"], 3)
                                        for s in splits],
        "met": {"quick_time_ratio": table["quick"]["time_ratio_to_reference"] <= TARGET_TIME_RATIO,
                "quick_error_not_worse_beyond_noise": not quick_vs_reference["worse_beyond_noise"]},
    }


def main_accuracy(seeds: list, out: Path, keep: Path = None) -> dict:
    splits = []
    for seed in seeds:
        splits.append(one_split(seed, keep))
        print(json.dumps(splits[-1]), file=sys.stderr, flush=True)  # partial results survive a kill
    result = {"dataset": {"sources": bench_accuracy.SOURCES, "train": splits[0]["train"], "val": splits[0]["val"],
                          "test": splits[0]["test"], "seeds": seeds},
              "configs": {"reference": str(REFERENCE_CONFIG.relative_to(BENCH_DIR.parent)), "quick": "preset quick",
                          "fast": "preset fast", "recipe": "keras.io transfer learning, frozen Lite0, 20 epochs"},
              "targets": {"quick_time_ratio_max": TARGET_TIME_RATIO, "fast_seconds_max_200_photos": TARGET_FAST_SECONDS},
              **summarize(splits), "splits": splits, "cpu_cores": os.cpu_count(),
              "load_average_at_end": os.getloadavg(),
              "caveat": "2 CPU cores shared with other jobs: wall times move with the machine's load; the "
                        "methods of a split run back to back, so compare within splits"}
    return result


# ------------------------------------------------------------------------------------------------ scaling


def repeated_tree(source: Path, target: Path, times: int) -> Path:
    """``source``'s class folders with every photo linked ``times`` times under new names."""
    for class_dir in sorted(p for p in source.iterdir() if p.is_dir()):
        (target / class_dir.name).mkdir(parents=True, exist_ok=True)
        for photo in sorted(class_dir.iterdir()):
            for copy in range(times):
                (target / class_dir.name / f"r{copy}_{photo.name}").symlink_to(photo.resolve())
    return target


def scaling_point(method: str, scale: int, seed: int = 0) -> dict:
    """One measurement (run in its own process): ``method`` on split ``seed``'s photos repeated ``scale`` times."""
    from carclf.data import scan_dataset, stratified_split

    with tempfile.TemporaryDirectory(prefix="carclf-scale-") as temp:
        work = Path(temp)
        info = scan_dataset(bench_accuracy.merged_tree(work))
        rest, _ = stratified_split(info, bench_accuracy.TEST_FRACTION, seed=seed)
        train_items, val_items = stratified_split(rest, bench_accuracy.VAL_FRACTION, seed=seed)
        train_dir = repeated_tree(bench_accuracy.split_tree(train_items, info.classes, work / "train1"), work / "train", scale)
        val_dir = repeated_tree(bench_accuracy.split_tree(val_items, info.classes, work / "val1"), work / "val", scale)
        config = load_method_config(method, train_dir, val_dir, work, seed)
        status, seconds, run_id = train_timed(config, work)
        from carclf import runs

        history = runs.read_history(run_id, work / "runs")
    return {"method": method, "scale": scale, "photos": scale * (len(train_items) + len(val_items)),
            "train_photos": scale * len(train_items), "train_seconds": round(seconds, 1),
            "epochs_per_stage": history.groupby("stage").size().tolist(),
            "stage_seconds": history.groupby("stage")["time"].sum().round(1).tolist(),
            "val_accuracy": status.get("val_metrics", {}).get("val_accuracy")}


def main_scaling(out: Path, methods: list, scales: list, cores: list, order: list = None) -> dict:
    """Every (method, cores, scale) point in its own process; the JSON and plot are rewritten after each
    point, so a run cut short keeps what it measured. ``order``: explicit "method:scale:cores" points."""
    grid = [(m, int(s), int(c)) for m, s, c in (point.split(":") for point in order)] if order else \
        [(method, scale, core_count) for method in methods for core_count in cores for scale in scales]
    points, result = [], {}
    for method, scale, core_count in grid:
        command = [sys.executable, __file__, "--point", method, str(scale)]
        if CORE_SETS[core_count]:
            command = ["taskset", "-c", CORE_SETS[core_count]] + command
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
        point = {**json.loads(done.stdout.strip().splitlines()[-1]), "cores": core_count}
        points.append(point)
        print(json.dumps(point), file=sys.stderr, flush=True)
        result = {"split_seed": 0, "points": points, "growth": growth(points), "load_average_at_end": os.getloadavg(),
                  "caveat": "repeated photos (new names, new augmentation draws); 2 CPU cores shared with other jobs"}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        plot(points, out.with_suffix(".png"))
    return result


def growth(points: list) -> list:
    """Seconds per extra photo between scales, per method and core count: the marginal cost of data."""
    rows = []
    for method in sorted({p["method"] for p in points}):
        for cores in sorted({p["cores"] for p in points}):
            line = sorted((p for p in points if p["method"] == method and p["cores"] == cores), key=lambda p: p["scale"])
            for low, high in zip(line, line[1:]):
                rows.append({"method": method, "cores": cores, "from_photos": low["photos"], "to_photos": high["photos"],
                             "seconds_per_extra_photo": round((high["train_seconds"] - low["train_seconds"])
                                                              / (high["photos"] - low["photos"]), 3),
                             "time_ratio": round(high["train_seconds"] / low["train_seconds"], 2)})
    return rows


def plot(points: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.4, 4.2))
    for method in sorted({p["method"] for p in points}):
        for cores, style in ((2, "-o"), (1, "--s")):
            line = sorted((p for p in points if p["method"] == method and p["cores"] == cores), key=lambda p: p["photos"])
            if line:
                axis.plot([p["photos"] for p in line], [p["train_seconds"] for p in line], style,
                          label=f"{method}, {cores} core{'s' if cores > 1 else ''}")
    axis.axhline(TARGET_FAST_SECONDS, color="grey", linewidth=0.8, linestyle=":")
    axis.set_xlabel("photos (training + validation)")
    axis.set_ylabel("train wall time (s), data scan to bundle")
    axis.set_title("carclf training time vs photos and cores (EfficientNet-Lite0, CPU)")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--scaling", action="store_true", help="the scaling table and plot instead")
    parser.add_argument("--methods", nargs="+", default=["fast", "quick"], help="scaling: methods to time")
    parser.add_argument("--scales", type=int, nargs="+", default=list(SCALES), help="scaling: photo multiples")
    parser.add_argument("--cores", type=int, nargs="+", default=[2, 1], choices=sorted(CORE_SETS))
    parser.add_argument("--order", nargs="+", help="scaling: explicit METHOD:SCALE:CORES points, in this order")
    parser.add_argument("--point", nargs=2, metavar=("METHOD", "SCALE"), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--keep-bundles", type=Path, metavar="DIR",
                        help="keep each split's bundles and photo lists in DIR/seed<N>/ (for bench_calibration.py)")
    args = parser.parse_args()
    if args.point:
        print(json.dumps(scaling_point(args.point[0], int(args.point[1]))))
        return
    if args.scaling:
        out = args.out or RESULTS / "scaling.json"
        result = main_scaling(out, args.methods, args.scales, args.cores, args.order)
    else:
        out = args.out or RESULTS / "time_to_accuracy.json"
        result = main_accuracy(args.seeds, out, args.keep_bundles)
    text = json.dumps(result, indent=2)
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
