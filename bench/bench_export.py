"""Parity of exported artefacts on a REAL pretrained network, printed as JSON.

Usage: python bench/bench_export.py [--backbone efficientnet_lite0] [--photos DIR] [--n 16]

The unit tests check export parity on a tiny model; quantisation error only shows its real size on a deep
network with confident answers. This exports the pretrained ImageNet classifier (offline EfficientNet-Lite
weights, 1000 classes, its native size) as SavedModel and TFLite float32 / float16 / int8 (calibrated on
the same real photos) and reports, per artefact: largest and mean probability difference against Keras,
top-1 agreement, size, and export time. Slow on CPU (a minute or two): run once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# (format, quantize) pairs measured.
VARIANTS = (("savedmodel", "none"), ("tflite", "none"), ("tflite", "float16"), ("tflite", "int8"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--photos", default=str(ROOT.parent / "shared" / "data" / "cars"))
    parser.add_argument("--n", type=int, default=16)
    args = parser.parse_args()

    from carclf.backbones import build_imagenet_classifier
    from carclf.export import export_model, parity_photo_paths
    from carclf.imagenet import IMAGENET_CLASSES

    model = build_imagenet_classifier(args.backbone)
    size = int(model.input_shape[1])
    bundle = SimpleNamespace(model=model, class_names=list(IMAGENET_CLASSES), img_size=size)
    candidates = parity_photo_paths(args.photos, limit=10_000)
    photos = candidates[:: max(1, len(candidates) // args.n)][: args.n]  # spread over all the sources
    results = []
    with tempfile.TemporaryDirectory(prefix="carclf-bench-export-") as scratch:
        for fmt, quantize in VARIANTS:
            start = time.perf_counter()
            out = Path(scratch) / f"{fmt}-{quantize}" / ("model.tflite" if fmt == "tflite" else "savedmodel")
            result = export_model(bundle, fmt, out, quantize=quantize, parity_images=photos)
            parity = result.parity
            results.append({
                "format": fmt,
                "quantize": quantize,
                "size_mb": round(result.size_bytes / 1e6, 2),
                "max_abs_diff": round(parity.max_abs_diff, 6),
                "mean_abs_diff": round(parity.mean_abs_diff, 8),
                "top1_agreement": parity.top1_agreement,
                "passed": parity.passed,
                "export_and_check_s": round(time.perf_counter() - start, 1),
            })
    print(json.dumps({"backbone": args.backbone, "img_size": size, "n_photos": len(photos),
                      "loadavg": [round(x, 2) for x in os.getloadavg()], "results": results}))


if __name__ == "__main__":
    main()
