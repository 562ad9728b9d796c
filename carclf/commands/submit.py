"""``python -m carclf submit MODEL_DIR --test-dir DIR --out submission.csv``: a Kaggle submission CSV."""

from __future__ import annotations

import argparse
import json
import sys

from carclf.commands.outputs import add_overwrite_argument, new_output_file
from carclf.commands.predict import TTA_HELP

HELP = "Predict a folder of test photos and write a Kaggle Id,Category submission CSV."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL_DIR", help="bundle folder (models/<name>) or 'default'")
    parser.add_argument("--test-dir", required=True, metavar="DIR", help="folder of test photos (<Id>.jpg)")
    parser.add_argument("--out", required=True, metavar="CSV", help="where to write the submission")
    add_overwrite_argument(parser)
    parser.add_argument("--tta", type=int, default=None, metavar="N", help=TTA_HELP)
    parser.add_argument("--sample", metavar="CSV",
                        help="the competition's sample-submission.csv: same ids, order and header")
    parser.add_argument("--allow-missing", action="store_true",
                        help="fill rows of unreadable photos / sample ids without a photo with the most "
                             "frequent predicted class (listed on stderr) instead of failing")
    parser.add_argument("--batch-size", type=int, default=None, metavar="N", help="photos per model call")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def run(args: argparse.Namespace) -> int:
    from carclf.batch import DEFAULT_BATCH_SIZE
    from carclf.data import tqdm_progress
    from carclf.predict import load_model
    from carclf.submit import write_submission

    out = new_output_file(args.out, args.overwrite)  # before the model loads: a mistake costs no wait
    batch_size = DEFAULT_BATCH_SIZE if args.batch_size is None else args.batch_size  # predict_files checks it
    model = load_model(args.model)
    result = write_submission(
        model,
        args.test_dir,
        out,
        tta=args.tta,
        sample=args.sample,
        allow_missing=args.allow_missing,
        progress=None if args.no_progress else tqdm_progress("predicting"),
        batch_size=batch_size,
    )
    for image_id in result.missing:
        print(f"warning: {image_id}: no photo; row filled with {result.filled_with}", file=sys.stderr)
    for image_id, reason in result.unreadable:
        print(f"warning: {reason}; row {image_id} filled with {result.filled_with}", file=sys.stderr)
    if result.extra:
        print(f"note: {len(result.extra)} photo(s) not in the sample were skipped", file=sys.stderr)
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        counts = ", ".join(f"{name}: {n}" for name, n in result.counts.items())
        print(f"wrote {result.n_rows} rows to {result.path} ({counts})")
    from carclf.commands.evaluate import skipped_exit_code

    return skipped_exit_code(len(result.unreadable) + len(result.missing), "predicted (their rows were filled)")
