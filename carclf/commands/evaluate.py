"""``python -m carclf evaluate MODEL_DIR --data DIR``: score a model on a labelled folder."""

from __future__ import annotations

import argparse
import sys

from carclf.commands.predict import TTA_HELP

HELP = ("Evaluate a model on a labelled folder: accuracy, per-class metrics, confusion matrix, mistakes, and "
        "calibration (ECE, NLL, Brier before and after the bundle's temperature).")

# Confusions listed in the readable summary (the full matrix is in --out / --json).
TOP_CONFUSIONS = 5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL_DIR", help="bundle folder (models/<name>) or 'default'")
    parser.add_argument("--data", required=True, metavar="DIR",
                        help="labelled folder: DIR/<class>/*.jpg or DIR/train.csv + DIR/train/")
    parser.add_argument("--tta", type=int, default=None, metavar="N", help=TTA_HELP)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")
    parser.add_argument("--out", metavar="DIR",
                        help="also write report.json, per_class.csv, confusion.csv, misclassified.csv here")
    parser.add_argument("--batch-size", type=int, default=None, metavar="N", help="photos per model call")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def run(args: argparse.Namespace) -> int:
    from carclf.batch import DEFAULT_BATCH_SIZE
    from carclf.data import tqdm_progress
    from carclf.evaluation import evaluate
    from carclf.predict import load_model

    batch_size = DEFAULT_BATCH_SIZE if args.batch_size is None else args.batch_size  # predict_files checks it
    model = load_model(args.model)
    progress = None if args.no_progress else tqdm_progress("evaluating")
    report = evaluate(model, args.data, tta=args.tta, progress=progress, batch_size=batch_size)
    if args.out:
        report.save(args.out)
    if args.json:
        print(report.to_json())
    else:
        print(summary(report, args.out))
    return skipped_exit_code(len(report.unreadable), "evaluated")


def skipped_exit_code(n_skipped: int, done: str) -> int:
    """The one rule of evaluate, predict and submit: a run that completed but skipped unreadable photos
    says so on stderr and exits 1 (user errors exit 2, a clean run 0)."""
    from carclf.commands.predict import EXIT_UNREADABLE

    if not n_skipped:
        return 0
    print(f"warning: {n_skipped} photo(s) could not be read and were not {done} (reasons above / in the "
          f"output); exit code {EXIT_UNREADABLE}", file=sys.stderr)
    return EXIT_UNREADABLE


def summary(report, out_dir=None) -> str:
    """A readable report: score, per-class table, the most frequent confusions, unreadable files."""
    lines = [
        f"model {report.model_name}  data {report.data_dir}  tta {report.tta}",
        f"accuracy {report.accuracy:.4f} on {report.n_images} photos (macro F1 {report.macro_f1:.4f})"
        + (f"; {len(report.unreadable)} unreadable" if report.unreadable else ""),
        "",
        f"{'class':<24} {'precision':>9} {'recall':>7} {'f1':>7} {'support':>7}",
    ]
    for m in report.per_class:
        lines.append(f"{m.name[:24]:<24} {m.precision:>9.3f} {m.recall:>7.3f} {m.f1:>7.3f} {m.support:>7d}")
    if report.calibration:
        from carclf.calibration import summary_line

        lines += ["", summary_line(report.calibration)]
    confusions = sorted(
        ((int(report.confusion[i, j]), report.labels[i], report.labels[j])
         for i in range(len(report.labels)) for j in range(len(report.labels)) if i != j and report.confusion[i, j]),
        reverse=True,
    )
    if confusions:
        lines += ["", "most frequent confusions (true -> predicted):"]
        lines += [f"  {true} -> {pred}: {count}" for count, true, pred in confusions[:TOP_CONFUSIONS]]
    if report.unreadable:
        lines += ["", "unreadable (skipped):"] + [f"  {reason}" for _, reason in report.unreadable]
    if out_dir:
        lines += ["", f"report written to {out_dir}"]
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run it as: python -m carclf evaluate ...")
