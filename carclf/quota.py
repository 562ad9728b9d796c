"""Workspace disk quota: a public app must not fill its container's disk with uploads and runs.

``Quota`` sums the bytes under the workspace folders; an import checks it before writing and, through
``extract_safely``, while writing, so the import is refused (and its partial output removed) instead of
filling the disk.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Union

from carclf.errors import QuotaError


def folder_bytes(path: Union[str, Path]) -> int:
    """Bytes of all regular files under ``path`` (symlinks not followed; 0 if it does not exist)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                info = os.lstat(os.path.join(root, name))
            except OSError:
                continue  # removed meanwhile
            total += info.st_size
    return total


class Quota:
    """At most ``limit_bytes`` in ``folders`` together (e.g. datasets, runs and models)."""

    def __init__(self, limit_bytes: int, folders: Iterable[Union[str, Path]]):
        self.limit_bytes = int(limit_bytes)
        self.folders = [Path(folder) for folder in folders]

    def used(self) -> int:
        """Bytes in use now."""
        return sum(folder_bytes(folder) for folder in self.folders)

    def free_bytes(self) -> int:
        """Bytes still allowed (0 when full)."""
        return max(self.limit_bytes - self.used(), 0)

    def check(self, extra_bytes: int) -> None:
        """Raise ``QuotaError`` if adding ``extra_bytes`` would exceed the limit."""
        used = self.used()
        if used + int(extra_bytes) > self.limit_bytes:
            raise self.full_error(used, extra_bytes)

    def full_error(self, used: int, extra_bytes: int) -> QuotaError:
        """The one-line refusal for ``extra_bytes`` more on top of ``used``."""
        needs = f" and this needs {int(extra_bytes) / 1e6:.1f} MB more" if extra_bytes else ""
        return QuotaError(
            f"workspace is full: {used / 1e6:.1f} MB used of {self.limit_bytes / 1e6:.1f} MB{needs}: "
            "delete a dataset, run or model."
        )
