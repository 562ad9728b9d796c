"""Which TensorFlow and Keras carclf needs, checked from package metadata without importing TensorFlow.

carclf does not install TensorFlow itself (``pip install carclf`` keeps a notebook's GPU build; the ``[cpu]``
and ``[gpu]`` extras add one), so an unsuitable one must be named at ``import carclf`` in one line, not
surface later as a deep Keras traceback. A missing TensorFlow is reported only when something needs it:
the dashboard imports ``carclf`` first and must still be able to show its own "install TensorFlow" line.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
from typing import Optional

# Oldest versions carclf supports: TensorFlow 2.16 is the first whose tf.keras is Keras 3; Keras 3.10 is the
# floor requirements.txt has always pinned. Tested with TensorFlow 2.21.0 and Keras 3.15.1.
MIN_TENSORFLOW = (2, 16)
MIN_KERAS = (3, 10)
KERAS_BEFORE = (4,)  # Keras 4 may break the API carclf uses
# Distribution names a TensorFlow install may have: the version comes from their metadata, TF is not imported.
TENSORFLOW_DISTRIBUTIONS = ("tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tensorflow-intel", "tensorflow-macos",
                            "tensorflow-rocm", "intel-tensorflow", "tf-nightly", "tf-nightly-cpu")
KERAS_DISTRIBUTIONS = ("keras", "keras-nightly")
# What to run, in each message.
INSTALL_HINT = ('install one: pip install "carclf[cpu]" (CPU) or "carclf[gpu]" (Linux + NVIDIA GPU); in a '
                "Kaggle/Colab notebook keep its own TensorFlow and upgrade only what is too old")


def installed(distributions: tuple) -> tuple:
    """``(name, version)`` of the first of ``distributions`` that is installed, or ``(None, None)``."""
    for name in distributions:
        try:
            return name, importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None, None


def parse_version(text: str) -> tuple:
    """Leading numeric release parts: '2.21.0' -> (2, 21, 0), '2.22.0rc1' and '2.22.0-dev2026' -> (2, 22, 0)."""
    match = re.match(r"\d+(?:\.\d+)*", text.strip())
    return tuple(int(part) for part in match.group(0).split(".")) if match else ()


def _format(version: tuple) -> str:
    return ".".join(map(str, version))


def _wanted() -> str:
    return (f"carclf needs TensorFlow >= {_format(MIN_TENSORFLOW)} with Keras 3 "
            f"(>= {_format(MIN_KERAS)}, < {_format(KERAS_BEFORE)})")


def missing_message(framework: str) -> str:
    """One line for a missing ``framework`` ("TensorFlow" or "Keras"): what carclf needs and how to install it."""
    return f"{_wanted()}; this Python has no {framework}: {INSTALL_HINT}."


def version_problem(tensorflow: Optional[str], keras: Optional[str], need_installed: bool = False,
                    tensorflow_dist: str = "tensorflow") -> str:
    """'' when these versions suit carclf, else one line saying what is wrong and what to run.

    ``need_installed`` False (at import) lets a missing TensorFlow or Keras pass: only a present but
    unsuitable one is an error then. ``tensorflow_dist`` is the installed TensorFlow's package name, the one
    to upgrade (upgrading another would install a second TensorFlow over it).
    """
    wanted = _wanted()
    if tensorflow is None or keras is None:
        return missing_message("TensorFlow" if tensorflow is None else "Keras") if need_installed else ""
    tf_version, keras_version = parse_version(tensorflow), parse_version(keras)
    if tf_version and tf_version < MIN_TENSORFLOW:
        return (f"{wanted}; this Python has TensorFlow {tensorflow}: "
                f'pip install -U "{tensorflow_dist}>={_format(MIN_TENSORFLOW)}".')
    if keras_version and not MIN_KERAS <= keras_version < KERAS_BEFORE:
        return (f"{wanted}; this Python has Keras {keras}: "
                f'pip install -U "keras>={_format(MIN_KERAS)},<{_format(KERAS_BEFORE)}" (TensorFlow stays as it is).')
    return ""


def _found(distributions: tuple, module: str) -> tuple:
    """``installed(distributions)``; a module importable under a name not listed there counts as present,
    version unknown (''), so that an unusual build is never refused."""
    name, version = installed(distributions)
    if version is None and importlib.util.find_spec(module) is not None:
        return None, ""
    return name, version


def check_versions(need_installed: bool = False) -> None:
    """Raise ``ImportError`` with one line when the installed TensorFlow/Keras cannot run carclf."""
    tensorflow_dist, tensorflow = _found(TENSORFLOW_DISTRIBUTIONS, "tensorflow")
    _, keras = _found(KERAS_DISTRIBUTIONS, "keras")
    problem = version_problem(tensorflow, keras, need_installed, tensorflow_dist or "tensorflow")
    if problem:
        raise ImportError(problem)


def missing_framework_message(error: ModuleNotFoundError) -> str:
    """The one-line install message when ``error`` is TensorFlow or Keras missing; '' for any other module."""
    framework = {"tensorflow": "TensorFlow", "keras": "Keras"}.get((error.name or "").split(".")[0])
    return missing_message(framework) if framework else ""


__all__ = ["MIN_TENSORFLOW", "MIN_KERAS", "TENSORFLOW_DISTRIBUTIONS", "check_versions", "installed",
           "missing_framework_message", "missing_message", "parse_version", "version_problem"]
