"""The dashboard's side of the shared work line (``carclf.work_queue``): a waiting visitor sees their place.

Pages wrap their Predictor with ``queued(predictor)``; each heavy call then waits for a slot of the one
process-wide queue and, while it waits, shows "2 visitors ahead of you…" where the answer will appear.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import streamlit as st

from carclf.work_queue import QueuedPredictor, shared_queue, tune_malloc

# The icon of the waiting message.
WAIT_ICON = ":material/hourglass_top:"

# The dashboard is a many-threaded server: keep freed photos and activations from piling up in one malloc
# arena per thread (see carclf.work_queue.MMAP_THRESHOLD_BYTES). Done at import: on the first page run that
# may ask the model.
tune_malloc()


def wait_message(ahead: int) -> str:
    """What a waiting visitor reads: how many are in front of them (those already computing included)."""
    people = "1 visitor is" if ahead == 1 else f"{ahead} visitors are"
    return f"{people} ahead of you in line for the model… your answer follows as soon as they are done."


@contextlib.contextmanager
def work_slot() -> Iterator[None]:
    """Hold one slot of the shared queue, with a placeholder telling the visitor their place while waiting.

    A ``BusyError`` after the queue's timeout reaches the page's ``widgets.user_errors()`` like any carclf
    error. The placeholder is rewritten on every poll, so a visitor who leaves or reruns the page (Streamlit
    then raises in the next ``st`` call) leaves the line at once.
    """
    with slot_in(st.empty()):
        yield


@contextlib.contextmanager
def slot_in(placeholder) -> Iterator[None]:
    """``work_slot`` showing the waiting message in an existing ``placeholder`` (for work that takes a slot
    many times over, batch after batch, without adding an element to the page each time)."""

    def on_wait(position: int, ahead: int) -> None:
        del position
        placeholder.info(wait_message(ahead), icon=WAIT_ICON)

    try:
        with shared_queue().slot(on_wait=on_wait):
            placeholder.empty()
            yield
    finally:
        placeholder.empty()


def queued(predictor) -> QueuedPredictor:
    """``predictor`` with every heavy call (predict, predict_batch, explain, ...) waiting in the shared line."""
    return QueuedPredictor(predictor, heavy_slot=work_slot)
