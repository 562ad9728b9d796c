"""``python -m carclf export MODEL_DIR --format savedmodel|tflite --out PATH``: export with a parity check."""

from __future__ import annotations

import argparse
import json

HELP = "Export a bundle as SavedModel or TFLite (raw RGB in) and check it against the Keras model."

# Exit code when the export was written but its answers drift beyond the tolerance.
PARITY_FAILED = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from carclf.export import FORMATS, QUANTIZATIONS  # light: TensorFlow is imported only when exporting

    parser.add_argument("model", metavar="MODEL_DIR", help="bundle folder (models/<name>)")
    parser.add_argument("--format", required=True, choices=list(FORMATS), help="export format")
    parser.add_argument("--quantize", choices=list(QUANTIZATIONS), default="none",
                        help="TFLite only: float16 weights, or int8 calibrated on the parity photos")
    parser.add_argument("--out", required=True, metavar="PATH",
                        help="SavedModel folder, or .tflite file (a folder gets model.tflite)")
    parser.add_argument("--parity-images", metavar="DIR",
                        help="real photos to compare on (default: the package's sample photos)")
    parser.add_argument("--overwrite", action="store_true", help="replace PATH if it exists")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")


def run(args: argparse.Namespace) -> int:
    from carclf.export import export_model

    result = export_model(
        args.model,
        args.format,
        args.out,
        quantize=args.quantize,
        parity_images=args.parity_images,
        overwrite=args.overwrite,
    )
    parity = result.parity
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print(f"exported {result.format} ({result.quantize}) to {result.path}: {result.size_bytes / 1e6:.2f} MB")
        print(
            f"parity on {parity.n_images} photos: max |dp| {parity.max_abs_diff:.2e} "
            f"(tolerance {parity.tolerance:.0e}), top-1 agreement {parity.top1_agreement:.0%} "
            f"(at least {parity.min_top1_agreement:.0%}) -> "
            f"{'OK' if parity.passed else 'FAILED'}; details in {result.parity_path}"
        )
    return 0 if parity.passed else PARITY_FAILED
