"""One clock for the times carclf writes down.

Status files, bundles and datasets record UTC instants as ISO 8601 text to the second (readable, sortable,
comparable across machines); run ids carry the local wall-clock time, which is what a user looks for.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Optional

# Run ids end in this stamp: 'cars-20261202-143237'.
RUN_STAMP_FORMAT = "%Y%m%d-%H%M%S"


def now_iso() -> str:
    """This instant in UTC as ISO 8601 text to the second ('2026-12-02T14:32:37+00:00')."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def parse_iso(text: str) -> datetime:
    """An instant written by ``now_iso`` (ValueError for anything else)."""
    return datetime.fromisoformat(text)


def run_stamp(now: Optional[datetime] = None) -> str:
    """The local time (or ``now``) as a run-id stamp."""
    return (now or datetime.now()).strftime(RUN_STAMP_FORMAT)
