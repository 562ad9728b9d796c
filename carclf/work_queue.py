"""A fair line for heavy model work, shared by every session of one server process.

Streamlit runs each visitor's script in its own thread. Measured with real browsers uploading a photo at
the same moment (default model, TTA 8 + Grad-CAM), the server grew by about 130 MB per visitor predicting
at once (16 visitors: 3.03 GB, over Community Cloud's 2.7 GB) and the slowest waited 47 s, because every
visitor's TensorFlow calls ran side by side on two cores, each with its own activations and eager tape.
Running at most ``max_concurrent`` heavy calls at once (default 1 on a CPU) keeps memory flat and serves
visitors in arrival order; a waiting visitor is told their place in line through ``on_wait``.

No Streamlit import here: the dashboard wraps a slot with a placeholder in ``carclf.ui.work_slot``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import itertools
import os
import threading
import time
from collections import deque
from typing import Callable, Iterator, Optional

from carclf.errors import BusyError

# Heavy calls running at once when CARCLF_MAX_CONCURRENT is not set. TensorFlow already spreads one call
# over the cores: on 2 cores, 16 visitors at once got their verdicts no sooner with 2 (median 8.1 s against
# 8.2 s) and the server tree peaked 136 MB above one visitor's peak against 75 MB with 1 (bench/bench_load.py,
# bench/results/load.json and load_concurrent2.json). A GPU box may set more.
DEFAULT_MAX_CONCURRENT = 1
# Environment variable overriding DEFAULT_MAX_CONCURRENT (a GPU box can run more at once).
MAX_CONCURRENT_ENV = "CARCLF_MAX_CONCURRENT"
# Seconds a visitor waits in line before being told the server is busy. Sixteen visitors each needing a
# TTA prediction and a Grad-CAM (about 1 s together) clear in well under a minute; five minutes means
# something is stuck, not busy.
DEFAULT_TIMEOUT_S = 300.0
# How often a waiter wakes to report its place even when nothing moved (so a caller whose on_wait raises,
# e.g. a Streamlit session that was closed or rerun, leaves the line promptly).
POLL_S = 0.5

# on_wait(position, ahead): position is 1 for the next to go in; ahead counts everyone in front of this
# caller, those already working included.
OnWait = Callable[[int, int], None]


# Allocations of this many bytes or more get their own memory map from glibc, given back to the system when
# freed. Each Streamlit rerun is a new thread, threads get malloc arenas of their own, and glibc's default
# threshold rises to 32 MB once big blocks are freed, after which freed photos and activations stay in each
# arena. Measured in one process (default model, 16 threads x 3 rounds of predict + Grad-CAM through the
# line, RSS after against before): +227 MB with glibc's default, -11 MB with 1 MiB, at the same speed
# (0.10-0.12 s per photo); the server benchmark is bench/bench_load.py. Setting
# MALLOC_ARENA_MAX=2 before start helped as much, but glibc reads that only before the first threads exist.
MMAP_THRESHOLD_BYTES = 1 << 20
# glibc's mallopt parameter number for the mmap threshold (M_MMAP_THRESHOLD in malloc.h).
_M_MMAP_THRESHOLD = -3


def tune_malloc(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Make glibc give big freed blocks back at once, so a many-threaded server stays flat (call it once).

    Leaves a ``MALLOC_MMAP_THRESHOLD_`` set in the environment alone. Returns whether the setting was applied
    (False where glibc is absent or the environment decides).
    """
    if _LIBC is None or os.environ.get("MALLOC_MMAP_THRESHOLD_") or not hasattr(_LIBC, "mallopt"):
        return False
    return bool(_LIBC.mallopt(_M_MMAP_THRESHOLD, int(threshold)))


def _release_freed_memory() -> None:
    """Hand memory freed by the last heavy call back to the system (glibc ``malloc_trim``, about 5 ms).

    Freed blocks below the mmap threshold stay in the arena of the thread that freed them. In the measurement
    of MMAP_THRESHOLD_BYTES this took 16 threads x 3 rounds from +292 MB to +227 MB alone and, with the
    threshold, from +18 MB to -11 MB. A no-op where glibc is absent.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def _find_libc():
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


_LIBC = _find_libc()
_MALLOC_TRIM = getattr(_LIBC, "malloc_trim", None)


class WorkQueue:
    """A FIFO ticket line admitting at most ``max_concurrent`` holders of a slot at once.

    ``with queue.slot(on_wait=report):`` waits for the caller's turn, runs the body, and always gives the
    slot back (also on exceptions). Tickets are served strictly in arrival order.
    """

    def __init__(self, max_concurrent: int = DEFAULT_MAX_CONCURRENT, poll_s: float = POLL_S,
                 trim_memory: bool = True):
        if int(max_concurrent) < 1:
            raise ValueError(f"max_concurrent must be at least 1, got {max_concurrent}.")
        self.max_concurrent = int(max_concurrent)
        self.poll_s = float(poll_s)
        self.trim_memory = trim_memory
        self._lock = threading.Condition()
        self._line: deque[int] = deque()  # tickets waiting, first = next in
        self._running = 0
        self._tickets = itertools.count(1)
        self.served = 0  # slots given out so far (tests, diagnostics)
        self.peak_running = 0  # the most slots held at once so far (tests check it never passes the limit)

    @property
    def running(self) -> int:
        """Slots held right now."""
        with self._lock:
            return self._running

    @property
    def waiting(self) -> int:
        """Callers waiting in line right now."""
        with self._lock:
            return len(self._line)

    def _place(self, ticket: int) -> tuple[int, int]:
        position = self._line.index(ticket) + 1
        return position, self._running + position - 1

    def _may_enter(self, ticket: int) -> bool:
        return self._running < self.max_concurrent and self._line[0] == ticket

    @contextlib.contextmanager
    def slot(self, on_wait: Optional[OnWait] = None, timeout: Optional[float] = DEFAULT_TIMEOUT_S) -> Iterator[None]:
        """Hold one slot for the body of the ``with`` block, waiting in line first if all are taken.

        ``on_wait(position, ahead)`` is called (outside the lock) when the caller has to wait, whenever its
        place changes, and at least every ``poll_s`` seconds while it waits; if it raises, the caller leaves
        the line and the exception propagates. Raises ``BusyError`` after ``timeout`` seconds in line
        (None = wait forever).
        """
        ticket = next(self._tickets)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self._line.append(ticket)
        try:
            self._wait_turn(ticket, on_wait, deadline, timeout)
        except BaseException:
            with self._lock:
                if ticket in self._line:
                    self._line.remove(ticket)
                self._lock.notify_all()  # the ones behind move up
            raise
        try:
            yield
        finally:
            with self._lock:
                self._running -= 1
                self._lock.notify_all()
            if self.trim_memory:
                _release_freed_memory()

    def _wait_turn(self, ticket: int, on_wait: Optional[OnWait], deadline: Optional[float],
                   timeout: Optional[float]) -> None:
        """Block until ``ticket`` is first in line and a slot is free, then take the slot."""
        while True:
            with self._lock:
                if self._may_enter(ticket):
                    self._line.popleft()
                    self._running += 1
                    self.served += 1
                    self.peak_running = max(self.peak_running, self._running)
                    self._lock.notify_all()  # the next in line may also fit when max_concurrent > 1
                    return
                place = self._place(ticket)
            if deadline is not None and time.monotonic() >= deadline:
                raise BusyError(
                    f"the server is busy: {place[1]} still ahead of you after {timeout:.0f} s in line; "
                    "try again in a minute."
                )
            if on_wait is not None:
                on_wait(*place)
            with self._lock:
                if self._may_enter(ticket):
                    continue
                wait = self.poll_s if deadline is None else min(self.poll_s, max(deadline - time.monotonic(), 0))
                self._lock.wait(wait)


# Photos per slot when a QueuedPredictor runs a long predict_batch (an evaluation): the line moves between
# chunks, so a visitor's single photo waits for one chunk (about 3 s at TTA 8 on 2 cores), not a whole
# evaluation.
PHOTOS_PER_SLOT = 16

# heavy_slot(): a fresh context manager holding one slot for one heavy call.
SlotFactory = Callable[[], "contextlib.AbstractContextManager[None]"]


class QueuedPredictor:
    """A ``carclf.Predictor`` whose every heavy call first waits for a slot; anything else is passed through.

    ``predict``, ``explain``, ``predict_arrays`` and ``score_arrays`` hold one slot each; ``predict_batch``
    holds one per PHOTOS_PER_SLOT photos, so an evaluation of thousands of photos lets visitors in between.
    ``heavy_slot`` makes the context manager for one call (default: a plain slot of ``queue``); the dashboard
    passes one that shows the visitor's place in line.
    """

    def __init__(self, predictor, queue: Optional[WorkQueue] = None, heavy_slot: Optional[SlotFactory] = None):
        self.predictor = predictor
        queue = queue or shared_queue()
        self._heavy_slot = heavy_slot or queue.slot

    def __getattr__(self, name):
        return getattr(self.predictor, name)

    def __repr__(self) -> str:
        return f"QueuedPredictor({self.predictor!r})"

    def predict(self, *args, **kwargs):
        with self._heavy_slot():
            return self.predictor.predict(*args, **kwargs)

    def explain(self, *args, **kwargs):
        with self._heavy_slot():
            return self.predictor.explain(*args, **kwargs)

    def predict_arrays(self, *args, **kwargs):
        with self._heavy_slot():
            return self.predictor.predict_arrays(*args, **kwargs)

    def score_arrays(self, *args, **kwargs):
        with self._heavy_slot():
            return self.predictor.score_arrays(*args, **kwargs)

    def predict_batch(self, images, tta: Optional[int] = None, top_k: Optional[int] = None, progress=None) -> list:
        """``Predictor.predict_batch`` in chunks of PHOTOS_PER_SLOT photos, one slot each (same results)."""
        images = list(images)
        options = {} if top_k is None else {"top_k": top_k}
        results: list = []
        for start in range(0, len(images), PHOTOS_PER_SLOT):
            chunk = images[start : start + PHOTOS_PER_SLOT]
            chunk_progress = None
            if progress is not None:
                chunk_progress = lambda done, _total, offset=start: progress(offset + done, len(images))  # noqa: E731
            with self._heavy_slot():
                results += self.predictor.predict_batch(chunk, tta=tta, progress=chunk_progress, **options)
        return results


class QueuedEmbedder:
    """A feature model (``predict_on_batch``, as ``carclf.embedding_cache.embed_files`` calls it) holding one
    slot per batch: a health check of thousands of photos lets other visitors' predictions in between its
    batches instead of making them wait for the whole check."""

    def __init__(self, embedder, queue: Optional[WorkQueue] = None, heavy_slot: Optional[SlotFactory] = None):
        self.embedder = embedder
        self._heavy_slot = heavy_slot or (queue or shared_queue()).slot

    def predict_on_batch(self, batch):
        with self._heavy_slot():
            return self.embedder.predict_on_batch(batch)


def _configured_max_concurrent() -> int:
    text = os.environ.get(MAX_CONCURRENT_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_CONCURRENT
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        from carclf.errors import ConfigError

        raise ConfigError(f"{MAX_CONCURRENT_ENV}={text!r} is not a whole number of at least 1; set it to e.g. 1.")
    return value


_SHARED: Optional[WorkQueue] = None
_SHARED_LOCK = threading.Lock()


def shared_queue() -> WorkQueue:
    """The one queue of this process (built on first use with ``CARCLF_MAX_CONCURRENT`` or the default)."""
    global _SHARED
    with _SHARED_LOCK:
        if _SHARED is None:
            _SHARED = WorkQueue(_configured_max_concurrent())
        return _SHARED


__all__ = [
    "WorkQueue", "QueuedPredictor", "QueuedEmbedder", "shared_queue", "tune_malloc",
    "PHOTOS_PER_SLOT", "DEFAULT_MAX_CONCURRENT", "DEFAULT_TIMEOUT_S", "MAX_CONCURRENT_ENV",
]
