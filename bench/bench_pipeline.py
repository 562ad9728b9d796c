"""Throughput of the tf.data input pipelines on real photos; prints one JSON object.

    python bench/bench_pipeline.py [--images 200] [--batch 16] [--size 224] [--preset default]

Uses the car photos in ../shared/data (repeated to --images files). Each pipeline is run for one
untimed warm-up epoch (tracing, file cache), then one timed epoch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
SHARED_CARS = REPO_ROOT.parent / "shared" / "data" / "cars"


def _photos(count: int) -> tuple[list[Path], int]:
    from carclf.images import is_image_file

    found = sorted(p for p in SHARED_CARS.rglob("*") if p.is_file() and is_image_file(p))
    if not found:
        sys.exit(f"no photos under {SHARED_CARS}")
    return [found[i % len(found)] for i in range(count)], len(found)


def _timed_epoch(dataset) -> tuple[float, float, int]:
    """(wall seconds, process CPU seconds, images) of one epoch after an untimed warm-up epoch.

    CPU time (all threads) is the steadier number on a shared machine: wall time depends on how many
    cores other processes leave free."""
    for _ in dataset:  # warm-up: tracing, thread pools, OS file cache
        pass
    start, cpu_start = time.perf_counter(), time.process_time()
    seen = sum(int(batch[0].shape[0]) for batch in dataset)
    return time.perf_counter() - start, time.process_time() - cpu_start, seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--preset", default="default")
    args = parser.parse_args()

    import albumentations
    import tensorflow as tf

    from carclf.augment import load_aug_config
    from carclf.pipeline import make_dataset, make_predict_dataset

    paths, distinct = _photos(args.images)
    labels = [i % 3 for i in range(len(paths))]
    result = {
        "images": len(paths),
        "distinct_photos": distinct,
        "batch": args.batch,
        "img_size": args.size,
        "preset": args.preset,
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "tensorflow": tf.__version__,
        "albumentations": albumentations.__version__,
    }
    pipelines = {
        "train": make_dataset(paths, labels, args.size, args.batch, augment=load_aug_config(args.preset), seed=0),
        "val": make_dataset(paths, labels, args.size, args.batch, augment=None, shuffle=False),
        "predict": make_predict_dataset(paths, args.size, args.batch),
    }
    for name, dataset in pipelines.items():
        seconds, cpu_seconds, seen = _timed_epoch(dataset)
        result[f"{name}_images_per_s"] = round(seen / seconds, 1)
        result[f"{name}_cpu_ms_per_image"] = round(1000 * cpu_seconds / seen, 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
