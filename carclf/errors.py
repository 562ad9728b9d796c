"""Typed errors for mistakes a user can fix.

Every message says what went wrong and what to do. The CLI and the dashboard print ``str(error)`` as one
line; so they do an ``OSError`` (``describe_os_error``): the system refusing a path the user typed (too long,
no permission, disk full) is not a bug either. Anything else is a bug and may show a traceback.
"""

from typing import Callable

# Longest path quoted whole in a message; a longer one (a pasted paragraph) is cut.
MAX_QUOTED_PATH = 120


class CarclfError(Exception):
    """Base class: a problem caused by input, configuration or environment, not by a bug."""


class ImageError(CarclfError):
    """An image that cannot be read (not an image, truncated, too large, empty)."""


class DataError(CarclfError):
    """A dataset folder that does not have a usable layout."""


class ConfigError(CarclfError):
    """A training or augmentation config with an unknown key, bad value or wrong type."""


class BackboneError(CarclfError):
    """An unknown backbone, or pretrained weights that cannot be obtained."""


class BundleError(CarclfError):
    """A model bundle that is missing, partial or incompatible."""


class RunError(CarclfError):
    """A training run that does not exist or cannot be started, stopped or resumed."""


class BusyError(CarclfError):
    """The server's line for model work did not reach this request in time (too many visitors at once)."""


class ArchiveError(CarclfError):
    """A zip file that is unsafe, damaged or holds nothing usable (it is refused and nothing is kept)."""


class QuotaError(CarclfError):
    """The workspace folder would grow past its disk quota."""


def describe_os_error(error: OSError, show_path: Callable[[str], str] = str) -> str:
    """One line for an ``OSError``: the system's reason and the path it refused, cut short when long.

    ``show_path`` rewrites the path first (the public app cuts its server folders out of it: after the
    cut they would no longer be recognised)."""
    reason = error.strerror or str(error)
    if error.filename is None:
        return reason
    name = show_path(str(error.filename))
    if len(name) > MAX_QUOTED_PATH:
        name = f"{name[:MAX_QUOTED_PATH // 2]}... ({len(name)} characters)"
    return f"{reason}: {name}"
