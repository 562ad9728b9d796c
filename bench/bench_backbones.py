"""Build and single-image predict times of the offline EfficientNet-Lite backbones on this machine (JSON).

    python bench/bench_backbones.py [--names efficientnet_lite0,...] [--repeats 20]

Build time is cold (first build in the process, .pth parse included) and warm (cached arrays); predict
time is ``predict_on_batch`` on one 224-px-class image after one warm-up call (which traces the graph).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing carclf

# A real photo, so the numbers come from real decoding sizes; any RGB image would do.
PHOTO = ROOT.parent / "shared" / "data" / "noncars" / "caffe_cat.jpg"


def bench(name: str, repeats: int) -> dict:
    from carclf.backbones import build_imagenet_classifier
    from carclf.imagenet import center_crop, decode

    start = time.perf_counter()
    model = build_imagenet_classifier(name)
    cold = time.perf_counter() - start
    start = time.perf_counter()
    build_imagenet_classifier(name)
    warm = time.perf_counter() - start
    size = model.input_shape[1]
    image = center_crop(PHOTO, size)[None].astype("float32")
    start = time.perf_counter()
    probabilities = model.predict_on_batch(image)
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.predict_on_batch(image)
        times.append(time.perf_counter() - start)
    return {
        "backbone": name,
        "input_size": size,
        "params": model.count_params(),
        "build_cold_s": round(cold, 3),
        "build_warm_s": round(warm, 3),
        "predict_first_call_s": round(first, 3),
        "predict_median_s": round(statistics.median(times), 4),
        "predict_min_s": round(min(times), 4),
        "top1": decode(probabilities[0], k=1)[0][1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", default="efficientnet_lite0,efficientnet_lite1,efficientnet_lite2")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    results = [bench(name, args.repeats) for name in args.names.split(",")]
    print(json.dumps({"machine": platform.node(), "cpus": os.cpu_count(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
