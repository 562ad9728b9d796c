"""Inference speed and memory of the default model, printed as JSON.

Usage: python bench/bench_inference.py [--data ../shared/data] [--repeats 10] [--rss-predictions 100]

- ``tta8_one_call_s``: one 8-view TTA prediction (views rendered + ONE model call), median of repeats
- ``eight_single_predictions_s``: eight separate ``predict(photo, tta=1)`` calls (what a caller without
  batched TTA would do); the TTA targets are measured against these
- ``eight_single_calls_s``: the bare lower bound: the 8 views, already rendered, sent as eight one-image
  traced calls (no photo loading, no gate, no result building)
- ``eight_eager_calls_s``: the same 8 views as eight eager ``model(x)`` calls (TTA done naively)
- ``one_single_s``: one prediction without TTA
- ``predict_batch``: images/s for 1, 8 and 32 photos (no TTA, and 8-view TTA)
- ``peak_rss_mb``: a fresh process that loads the default model and serves N 8-view predictions
- ``trained_bundle``: the same TTA / eight singles / single comparison for a bundle of the classifier
  training builds (efficientnet_lite0 at 224 px; random weights: only timing matters), where each
  prediction also runs the gate, on the unaltered view only
Targets: TTA >= 1.8x faster than eight singles and <= 5x one single; peak RSS < 1200 MB.
Timings depend on the machine's load: run once, on a quiet machine if possible, and report the load.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# The photos the benchmark reads (competition photos, 640x480-ish JPEGs), cycled as needed.
PHOTO_GLOB = "cars/sf_dl_car_classification_ostrebko/*/*.jpg"
BATCH_SIZES = (1, 8, 32)
TTA_VIEWS = 8
TARGET_SPEEDUP = 1.8  # TTA vs eight single calls
TARGET_TTA_VS_SINGLE = 5.0  # TTA must cost at most this many single predictions
TARGET_RSS_MB = 1200


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_medians(fns: dict, repeats: int) -> dict:
    """Median seconds of each function, timed in turns (a, b, c, a, b, c, ...) so that a shared machine's
    changing load hits them all alike instead of whichever happened to run during a busy spell."""
    times: dict = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def peak_rss_mb() -> float:
    """Peak resident memory of this process (VmHWM: unlike ru_maxrss it is not inherited from the parent
    that spawned us, so the child's figure is its own)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def serve(photos: list[Path], predictions: int) -> dict:
    """Child mode: load the default model, serve ``predictions`` TTA predictions, report peak RSS."""
    import carclf

    start = time.perf_counter()
    model = carclf.load_model("default")
    loaded = time.perf_counter() - start
    for i in range(predictions):
        model.predict(photos[i % len(photos)], tta=TTA_VIEWS)
    total = time.perf_counter() - start
    return {"predictions": predictions, "load_s": round(loaded, 2), "total_s": round(total, 1), "peak_rss_mb": round(peak_rss_mb())}


def trained_bundle_timings(photo: Path, repeats: int) -> dict:
    """TTA vs eight singles vs one single for a bundle with the training classifier's architecture."""
    import tempfile

    import carclf
    from carclf.bundle import save_bundle
    from carclf.config import load_config
    from carclf.model import build_classifier

    config = load_config(preset="quick", overrides={"img_size": 224, "weights": "none"})
    with tempfile.TemporaryDirectory() as folder:
        bundle = save_bundle(build_classifier(config, 10), Path(folder) / "bench", [str(i) for i in range(10)],
                             meta={"backbone": config.backbone})
        model = carclf.load_model(bundle)
    model.predict(photo, tta=TTA_VIEWS)
    model.predict(photo, tta=1)
    medians = interleaved_medians(
        {
            "tta8": lambda: model.predict(photo, tta=TTA_VIEWS),
            "singles8": lambda: [model.predict(photo, tta=1) for _ in range(TTA_VIEWS)],
            "single": lambda: model.predict(photo, tta=1),
        },
        repeats,
    )
    return {
        "tta8_one_call_s": round(medians["tta8"], 4),
        "eight_single_predictions_s": round(medians["singles8"], 4),
        "one_single_s": round(medians["single"], 4),
        "tta_speedup_vs_eight_singles": round(medians["singles8"] / medians["tta8"], 2),
        "tta_cost_in_singles": round(medians["tta8"] / medians["single"], 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--rss-predictions", type=int, default=100)
    parser.add_argument("--serve-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    photos = sorted(Path(args.data).glob(PHOTO_GLOB))
    if args.serve_child:
        print(json.dumps(serve(photos, args.rss_predictions)))
        return 0

    # the serving process runs first, before this process grows
    child = subprocess.run(
        [sys.executable, __file__, "--serve-child", "--data", args.data,
         "--rss-predictions", str(args.rss_predictions)],
        capture_output=True, text=True, check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    served = json.loads(child.stdout.strip().splitlines()[-1])

    import carclf
    import numpy as np
    from carclf.tta import tta_views

    start = time.perf_counter()
    model = carclf.load_model("default")
    load_s = time.perf_counter() - start
    photo = photos[0]
    start = time.perf_counter()
    model.predict(photo, tta=TTA_VIEWS)  # traces the graph once
    first_call_s = time.perf_counter() - start
    model.predict(photo, tta=1)

    def eight_singles():
        views, _ = tta_views(photo, TTA_VIEWS, model.inference.input_size)
        for i in range(TTA_VIEWS):
            model.score_arrays(views[i : i + 1])

    def eight_eager():
        views, _ = tta_views(photo, TTA_VIEWS, model.inference.input_size)
        for i in range(TTA_VIEWS):
            np.asarray(model.inference.branches["imagenet"](views[i : i + 1].astype("float32"), training=False))

    eight_eager()  # first eager call builds kernels
    calls = model.inference.calls
    model.predict(photo, tta=TTA_VIEWS)
    assert model.inference.calls == calls + 1, "a TTA prediction must be one model call"
    medians = interleaved_medians(
        {
            "tta8": lambda: model.predict(photo, tta=TTA_VIEWS),
            "predictions8": lambda: [model.predict(photo, tta=1) for _ in range(TTA_VIEWS)],
            "singles8": eight_singles,
            "eager8": eight_eager,
            "single": lambda: model.predict(photo, tta=1),
        },
        args.repeats,
    )
    tta8, predictions8, singles8, eager8, single = (
        medians[k] for k in ("tta8", "predictions8", "singles8", "eager8", "single"))

    trained = trained_bundle_timings(photo, args.repeats)

    throughput = {}
    for tta in (1, TTA_VIEWS):
        for n in BATCH_SIZES:
            batch = [photos[i % len(photos)] for i in range(n)]
            seconds = median_time(lambda: model.predict_batch(batch, tta=tta), max(1, args.repeats // 3))
            throughput[f"tta{tta}_n{n}"] = round(n / seconds, 2)

    report = {
        "model": model.name,
        "input_size": model.inference.input_size,
        "load_s": round(load_s, 2),
        "first_tta_call_with_tracing_s": round(first_call_s, 2),
        "tta8_one_call_s": round(tta8, 4),
        "eight_single_predictions_s": round(predictions8, 4),
        "eight_single_calls_s": round(singles8, 4),
        "eight_eager_calls_s": round(eager8, 4),
        "one_single_s": round(single, 4),
        "tta_speedup_vs_eight_single_predictions": round(predictions8 / tta8, 2),
        "tta_speedup_vs_eight_bare_calls": round(singles8 / tta8, 2),
        "tta_speedup_vs_eight_eager": round(eager8 / tta8, 2),
        "tta_cost_in_singles": round(tta8 / single, 2),
        "predict_batch_images_per_s": throughput,
        "trained_bundle": trained,
        "serving": served,
        "targets_met": {
            "speedup>=1.8": predictions8 / tta8 >= TARGET_SPEEDUP,
            "tta<=5x_single": tta8 / single <= TARGET_TTA_VS_SINGLE,
            "peak_rss<1200MB": served["peak_rss_mb"] < TARGET_RSS_MB,
        },
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
