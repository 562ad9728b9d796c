"""Training step time of the default classifier at batch 16: head only, and fine-tuning.

Builds carclf's default classifier (the ``quick`` preset's backbone and size, ImageNet weights) and times
``train_on_batch`` on one fixed batch after a warm-up (tracing) step, for each unfreeze setting a stage
can use. Prints one JSON object. The numbers are from whatever machine runs it: note its load.

    python bench/bench_train_step.py [--preset quick] [--steps 5] [--batch-size 16] [--unfreeze all 90% ...]
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
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Stage settings timed: head only, the quick preset's light fine-tune, the whole backbone.
UNFREEZE_SETTINGS = {"head_only": "none", "fine_tune_20pct": "20%", "fine_tune_50pct": "50%", "fine_tune_all": "all"}
NUM_CLASSES = 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--unfreeze", nargs="+", metavar="VALUE",
                        help="time these unfreeze values instead of the default four (e.g. all 90%% 80%%)")
    args = parser.parse_args()

    import numpy as np

    from carclf.config import StageConfig, load_config
    from carclf.devices import configure_devices
    from carclf.model import build_classifier, resolve_img_size, set_trainable
    from carclf.train import compile_stage

    config = load_config(preset=args.preset)
    setup = configure_devices(config)
    img_size = resolve_img_size(config)
    with setup.strategy.scope():
        model = build_classifier(config, NUM_CLASSES)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.batch_size, img_size, img_size, 3)).astype("float32")
    labels = np.eye(NUM_CLASSES, dtype="float32")[rng.integers(0, NUM_CLASSES, args.batch_size)]

    settings = {value: value for value in args.unfreeze} if args.unfreeze else UNFREEZE_SETTINGS
    results = {}
    for name, unfreeze in settings.items():
        layers = set_trainable(model, unfreeze)
        compile_stage(model, StageConfig(learning_rate=1e-4, unfreeze=unfreeze), config, setup)
        started = time.perf_counter()
        model.train_on_batch(images, labels)
        warmup = time.perf_counter() - started
        times = []
        for _ in range(args.steps):
            started = time.perf_counter()
            model.train_on_batch(images, labels)
            times.append(time.perf_counter() - started)
        results[name] = {"unfreeze": unfreeze, "trainable_backbone_layers": layers,
                         "step_s_median": round(float(np.median(times)), 4),
                         "images_per_s": round(args.batch_size / float(np.median(times)), 1),
                         "first_step_s": round(warmup, 2)}
    print(json.dumps({
        "backbone": config.backbone, "img_size": img_size, "batch_size": args.batch_size, "steps": args.steps,
        "devices": setup.describe(), "cpu_cores": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()], "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
