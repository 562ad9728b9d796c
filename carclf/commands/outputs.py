"""The CLI's rule for files it writes where the user said: never replace an existing file unasked.

A mistyped ``--out`` (the model's ``model.keras``, a test photo, the competition's sample file, a run's own
``status.json``) must not be overwritten by a zip or a CSV; ``--overwrite`` says the user means it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from carclf.errors import ConfigError

OVERWRITE_HELP = "replace OUT if it exists (without it, an existing file is never replaced)"


def add_overwrite_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)


def new_output_file(out, overwrite: bool) -> Path:
    """``out`` as a Path, or a one-line error when it is a folder or (without ``overwrite``) already exists."""
    out = Path(out)
    if out.is_dir():
        raise ConfigError(f"{out} is a folder: give the name of the file to write.")
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} already exists: choose another name, or pass --overwrite to replace it.")
    return out
