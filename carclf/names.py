"""One rule for the names carclf turns into folders and files: run ids, bundle, dataset and augmentation
config names.

A name becomes a single path component made of letters, digits, '.', '-' and '_', starting with a letter or
digit and never holding '..' or ending in '.', so it can never climb out of its folder ('..', '/', a hidden
leading dot) or surprise a shell.
``safe_id`` turns any text into such a name; ``check_id`` refuses one that is not.
"""

from __future__ import annotations

import re

# The whole accepted name: a letter or digit first, '.', '-', '_' after it, no final '.' (and never '..').
_SAFE_ID = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9_-])?$")
# Runs of characters a name may not hold, each replaced by one '-'.
_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9._-]+")
# Names stay short enough for any file system and for a page's select box.
MAX_ID_CHARS = 100


def safe_id(text, fallback: str, max_chars: int = MAX_ID_CHARS) -> str:
    """``text`` as a safe name ('My run #2' -> 'My-run-2'); ``fallback`` when nothing usable is left."""
    cleaned = _UNSAFE_RUN.sub("-", str(text))
    cleaned = re.sub(r"\.{2,}", ".", cleaned)  # '..' never survives
    cleaned = cleaned.strip("-._")[:max_chars].strip("-._")
    return cleaned or fallback


def is_safe_id(name) -> bool:
    """True when ``name`` already is a safe name (see the module docstring)."""
    return isinstance(name, str) and len(name) <= MAX_ID_CHARS and bool(_SAFE_ID.match(name)) and ".." not in name


def check_id(name, what: str, error=ValueError) -> str:
    """Return ``name`` if it is a safe name, else raise ``error`` saying what a ``what`` name may hold."""
    if not is_safe_id(name):
        raise error(f"invalid {what} name {name!r}: use letters, digits, '.', '-' or '_' "
                    "(starting with a letter or digit).")
    return name
