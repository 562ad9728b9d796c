"""Write a file so that readers see the old content or the new one, never half of it.

Reports, submissions and status files are read by other processes (the dashboard, Kaggle uploads) and
must survive a crash mid-write: write a temporary file in the same folder, then ``os.replace`` it.
Text is UTF-8; a file name that is not valid UTF-8 (kept by Python as surrogate escapes) is written
with ``backslashreplace`` instead of failing with ``UnicodeEncodeError``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Union

# How text that cannot be encoded (undecodable file names) is written: visible, never an exception.
TEXT_ERRORS = "backslashreplace"


def atomic_write_bytes(path: Union[str, Path], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same folder + ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile("wb", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False)
    try:
        with handle:
            handle.write(data)
        os.replace(handle.name, path)
    finally:
        if os.path.exists(handle.name):
            os.unlink(handle.name)
    return path


def atomic_write_text(path: Union[str, Path], text: str) -> Path:
    """Write ``text`` as UTF-8 to ``path`` atomically; unencodable characters become backslash escapes."""
    return atomic_write_bytes(path, text.encode("utf-8", errors=TEXT_ERRORS))
