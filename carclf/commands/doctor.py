"""``python -m carclf doctor DIR [--against DIR] [--model MODEL_DIR|default] [--json] [--out DIR] [--apply]``.

Lists what is wrong with a labelled dataset (see ``carclf.doctor``): a table per kind of finding, or one
JSON object with ``--json``. ``--apply`` writes the suggested fixes to ``DIR/carclf-decisions.csv`` (the
photos are never touched; ``--clear-decisions`` removes that file). TensorFlow is imported only when some
photo is not in the embedding cache yet, so a second run over an unchanged dataset takes seconds.
"""

from __future__ import annotations

import argparse
import sys

HELP = "Find duplicates, leaks, non-car photos, suspect labels and odd sizes in a dataset; optionally record fixes."

# Findings shown per kind in the readable table (all of them are in --json / --out).
TABLE_ROWS = 10
PATH_WIDTH = 44


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", metavar="DIR", help="labelled folder: DIR/<class>/*.jpg or DIR/train.csv + DIR/train/")
    parser.add_argument("--against", metavar="OTHER_DIR",
                        help="a test/validation folder: photos of DIR found again there are reported as leaks")
    parser.add_argument("--model", metavar="MODEL_DIR", default="default",
                        help="take the car gate's threshold from this bundle's meta.json ('default': the package's)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    parser.add_argument("--out", metavar="OUT_DIR", help="also write doctor.json and findings.csv here")
    parser.add_argument("--apply", action="store_true",
                        help="write the suggested fixes to DIR/carclf-decisions.csv (decisions already there are kept)")
    parser.add_argument("--apply-kinds", metavar="KIND,...", default=None,
                        help="kinds --apply fixes (default: every kind except outlier_size)")
    parser.add_argument("--label-fix", choices=("exclude", "relabel"), default="exclude",
                        help="what --apply does with the most confident label suspects (default: exclude; "
                             "relabel = to the suggested class)")
    parser.add_argument("--clear-decisions", action="store_true",
                        help="remove DIR/carclf-decisions.csv first (undo every recorded fix)")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the embedding cache")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def run(args: argparse.Namespace) -> int:
    from carclf.decisions import clear_decisions
    from carclf.doctor import DEFAULT_APPLY_KINDS, KINDS, apply_fixes, diagnose
    from carclf.errors import ConfigError

    kinds = [k.strip() for k in args.apply_kinds.split(",") if k.strip()] if args.apply_kinds else DEFAULT_APPLY_KINDS
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:  # before minutes of work, not after
        raise ConfigError(f"--apply-kinds: unknown kind(s) {', '.join(unknown)}; kinds are {', '.join(KINDS)}.")
    if args.clear_decisions:
        removed = clear_decisions(args.data)
        print(f"removed {removed} decision(s) from {args.data}", file=sys.stderr)
    report = diagnose(args.data, against=args.against, gate_threshold=gate_threshold(args.model),
                      progress=None if args.no_progress else tqdm_stages(), cache=not args.no_cache)
    if args.out:
        report.save(args.out)
    if args.json:
        print(report.to_json())
    else:
        print(summary(report, args.out))
    if args.apply:
        added = apply_fixes(report, kinds=kinds, label_fix=args.label_fix)
        print(f"recorded {added} decision(s) in {report.root}/carclf-decisions.csv "
              f"(review it, or undo with --clear-decisions)", file=sys.stderr)
    return 0


def gate_threshold(model: str | None) -> float | None:
    """The gate threshold of bundle ``model`` (None = the package default), read without loading the model."""
    if not model or model == "default":
        return None
    from carclf.bundle import read_bundle_meta
    from carclf.gate import CarGate

    return CarGate.from_meta(read_bundle_meta(model)).threshold


def tqdm_stages():
    """A ``progress(stage, done, total)`` drawing one tqdm bar per stage on stderr."""
    from tqdm import tqdm

    bars: dict = {}

    def update(stage: str, done: int, total: int) -> None:
        if total <= 1 and stage not in ("checking files", "embedding"):
            return
        if not total:
            return
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=total, desc=stage, unit="img", file=sys.stderr)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return update


def summary(report, out_dir=None) -> str:
    """Readable tables: counts per kind and class, then the worst findings of each kind."""
    lines = [f"data {report.root} ({report.layout}): {report.n_images} photos in {len(report.classes)} classes"
             + (f"; against {report.against} ({report.n_against} photos)" if report.against else "")
             + f"; embedded {report.computed} new, {report.timings.get('total_s', 0):.1f} s"]
    if report.excluded or report.relabelled or report.reviewed:
        lines.append(f"decisions file: {report.excluded} excluded, {report.relabelled} relabelled, "
                     f"{report.reviewed} finding(s) hidden as reviewed (keep)")
    balance = report.imbalance
    lines.append("classes: " + ", ".join(f"{name} {count}" for name, count in report.class_counts.items())
                 + (f"  (imbalanced: {balance['largest']} has {balance['ratio']:g}x {balance['smallest']})"
                    if balance["flagged"] else ""))
    lines.append("findings: " + ", ".join(f"{kind} {count}" for kind, count in report.summary.items()))
    if report.label_warning:
        lines.append("label check: " + report.label_warning)
    for kind, count in report.summary.items():
        if not count:
            continue
        lines += ["", f"{kind} ({count}, worst first):"]
        for finding in report.by_kind(kind)[:TABLE_ROWS]:
            path = finding.path if len(finding.path) <= PATH_WIDTH else "..." + finding.path[-PATH_WIDTH + 3:]
            lines.append(f"  {path:<{PATH_WIDTH}} {finding.score:5.2f}  {finding.detail}")
        if count > TABLE_ROWS:
            lines.append(f"  ... and {count - TABLE_ROWS} more (--json or --out for all)")
    if out_dir:
        lines += ["", f"report written to {out_dir}"]
    return "\n".join(lines)
