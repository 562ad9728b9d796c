"""``python -m carclf``: one argparse program whose subcommands live in ``carclf/commands/``.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
User mistakes (``CarclfError``) become one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from carclf.errors import CarclfError, describe_os_error
from carclf.requirements_check import missing_framework_message

# Commands that never touch TensorFlow (they only read run folders): no need to pay for importing it.
# The doctor imports it itself, only when some photo is not in its embedding cache yet (a second run is fast).
COMMANDS_WITHOUT_TENSORFLOW = frozenset({"runs", "doctor"})

# Subcommand name -> module in carclf.commands. Modules are imported only when listed in --help or run,
# so that ``python -m carclf --help`` does not pay for importing TensorFlow.
COMMANDS = {
    "train": "train",
    "runs": "runs",
    "evaluate": "evaluate",
    "predict": "predict",
    "submit": "submit",
    "export": "export",
    "bundle": "bundle",
    "doctor": "doctor",
}


def build_parser() -> argparse.ArgumentParser:
    """The full parser, one subparser per command module."""
    parser = argparse.ArgumentParser(
        prog="python -m carclf",
        description="Train and serve car-photo classifiers by transfer learning.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"carclf.commands.{module_name}")
        sub = subparsers.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(_run=module.run)
    return parser


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with its C++ start-up lines (oneDNN, CPU features) kept off the user's terminal.

    TensorFlow 2.21 logs them through absl before any setting can silence them (TF_CPP_MIN_LOG_LEVEL does
    not), so stderr's file descriptor points at /dev/null for the import only. A failed import still
    raises normally afterwards.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, run the command, and turn user errors into a one-line message."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter is not for users
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    for stream in (sys.stdout, sys.stderr):  # a file name that is not UTF-8 prints escaped, never crashes
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command not in COMMANDS_WITHOUT_TENSORFLOW:
            import_tensorflow_quietly()
        return int(args._run(args) or 0)
    except ModuleNotFoundError as error:  # no TensorFlow/Keras: say what to install, not a traceback
        message = missing_framework_message(error)
        if not message:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    except CarclfError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a path the system refuses (too long, no permission, disk full)
        print(f"error: {describe_os_error(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
