"""``python -m carclf predict MODEL_DIR|default IMAGE_OR_DIR... [--tta N] [--top-k K] [--json]``.

Prints one line per photo (a table, or one JSON object per line with ``--json``). A photo that cannot be
read is reported on its own line and makes the exit code 1; the other photos are still answered.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "Classify photos (files or folders) with a trained bundle or the default model."

# Show a progress bar on stderr from this many photos on.
PROGRESS_MIN_IMAGES = 8

# Column widths of the table output.
FILE_WIDTH = 32
LABEL_WIDTH = 24

# --tta of predict, evaluate and submit (the model's own = the bundle's meta.json "tta", see carclf.tta.own_tta).
TTA_HELP = "average N test-time views per photo (1 = off; default: the model's own, the views of its val score)"

# Exit code when some photos could not be read (user errors raised as CarclfError exit with 2).
EXIT_UNREADABLE = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL_DIR", help="bundle folder (models/<name>) or 'default'")
    parser.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR", help="photo files and/or folders of photos")
    parser.add_argument("--tta", type=int, default=None, metavar="N", help=TTA_HELP)
    parser.add_argument("--top-k", type=int, default=3, metavar="K", help="how many labels to list per photo")
    parser.add_argument("--json", action="store_true", help="print one JSON object per photo (JSON Lines)")
    parser.add_argument("--recursive", action="store_true", help="also look for photos in sub-folders")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def collect_images(arguments: list[str], recursive: bool = False) -> list[Path]:
    """Files as given (even non-images: they are reported as unreadable), folders expanded to their photos."""
    from carclf.data import list_images

    paths: list[Path] = []
    for argument in arguments:
        path = Path(argument).expanduser()
        paths.extend(list_images(path, recursive=recursive) if path.is_dir() else [path])
    return paths


def run(args: argparse.Namespace) -> int:
    from carclf.errors import ConfigError
    from carclf.predict import load_model

    if args.top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, got {args.top_k}.")
    paths = collect_images(args.images, args.recursive)
    model = load_model(args.model)
    progress = None
    if not args.no_progress and len(paths) >= PROGRESS_MIN_IMAGES:
        from carclf.data import tqdm_progress

        progress = tqdm_progress("predicting")
    results = model.predict_batch(paths, tta=args.tta, top_k=args.top_k, progress=progress)
    if args.json:
        for path, result in zip(paths, results):
            print(json.dumps({**result.to_dict(), "source": str(path)}, ensure_ascii=False))
    else:
        print(format_table(model, paths, results))
    from carclf.commands.evaluate import skipped_exit_code

    return skipped_exit_code(sum(not r.ok for r in results), "predicted")


def format_table(model, paths: list[Path], results) -> str:
    """A readable table: file, verdict (gate; "not sure" under the bundle's threshold), label with its
    (calibrated) probability, car score, the other top-k."""
    lines = []
    if model.notice:
        lines += [f"note: {model.notice}", ""]
    lines.append(f"{'file':<{FILE_WIDTH}} {'verdict':<9} {'label':<{LABEL_WIDTH}} {'prob':>6} {'car':>5}  others")
    for path, r in zip(paths, results):
        name = _clip(path.name, FILE_WIDTH)
        if not r.ok:
            lines.append(f"{name:<{FILE_WIDTH}} {'ERROR':<9} {r.error}")
            continue
        verdict = "not car" if not r.is_car else "not sure" if r.uncertain else "car"
        others = ", ".join(f"{label} {p:.2f}" for label, p in r.top_k[1:])
        changed = "  (TTA changed the answer)" if r.tta_changed_answer else ""
        lines.append(
            f"{name:<{FILE_WIDTH}} {verdict:<9} {_clip(r.label, LABEL_WIDTH):<{LABEL_WIDTH}} "
            f"{r.probability:>6.3f} {r.car_score:>5.2f}  {others}{changed}"
        )
    return "\n".join(lines)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
