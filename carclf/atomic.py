"""Write a file so that readers see the old content or the new one, never half of it.

Status, history, reports, submissions and weights are read by other processes (the dashboard, a resumed
run, Kaggle uploads) and must survive a crash mid-write: write a temporary file in the same folder, then
``os.replace`` it. This is the one place that does it. Text is UTF-8; a file name that is not valid UTF-8
(kept by Python as surrogate escapes) is written with ``backslashreplace`` instead of failing with
``UnicodeEncodeError``.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator, Union

# How text that cannot be encoded (undecodable file names) is written: visible, never an exception.
TEXT_ERRORS = "backslashreplace"
# mkstemp makes owner-only files; the written file gets the mode a plain open() would give it.
_UMASK = os.umask(0)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK


@contextlib.contextmanager
def atomic_output(path: Union[str, Path]) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to (by any library); it replaces ``path`` when the block ends.

    The temporary name keeps ``path``'s suffixes (Keras insists on ``.weights.h5``). If the block raises,
    the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:len(path.name) - len(suffix)]}.",
                                    suffix=f".tmp{suffix}")
    os.close(handle)
    temp = Path(name)
    os.chmod(temp, FILE_MODE)
    try:
        yield temp
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def atomic_write_bytes(path: Union[str, Path], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_output(path) as temp:
        temp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: Union[str, Path], text: str) -> Path:
    """Write ``text`` as UTF-8 to ``path`` atomically; unencodable characters become backslash escapes."""
    return atomic_write_bytes(path, text.encode("utf-8", errors=TEXT_ERRORS))


def read_json_object(path: Union[str, Path]) -> dict:
    """A small JSON object file written here (status, markers), or {} when it is missing, unreadable or not
    an object: such files are hints, and a damaged one must not stop a page or a run."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def atomic_write_json(path: Union[str, Path], data, **dump_options) -> Path:
    """Write ``data`` as indented JSON (plus a final newline) to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(data, indent=2, **dump_options) + "\n")
