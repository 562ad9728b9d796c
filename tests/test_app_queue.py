"""The Predict page waits its turn in the server-wide line and tells the visitor their place meanwhile.

The test thread holds the shared queue's only slot, runs the page (real default model, real photo) in
another thread, reads what the page shows while it waits, then lets it go and checks the answer came.
"""

from __future__ import annotations

import threading
import time

from streamlit.testing.v1 import app_test
from streamlit.testing.v1.element_tree import parse_tree_from_messages

from app_helpers import app_env, open_page, texts  # noqa: F401  (app_env is a fixture)
from carclf.work_queue import shared_queue

CAR = "cars/sf_dl_car_classification_ostrebko/0/3076.jpg"
# Seconds to wait for the page to join the line / show its message (the CPU is shared).
WAIT_S = 120


class RecordingRunner(app_test.LocalScriptRunner):
    """AppTest's script runner, remembered so the test can read the page while its script still runs."""

    latest = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        RecordingRunner.latest = self

    def texts_so_far(self) -> list[str]:
        tree = parse_tree_from_messages(list(self.forward_msgs()))
        return texts(tree.info)


def wait_for(condition, what: str):
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_visitor_waiting_for_the_model_sees_their_place_then_the_answer(app_env, shared_data, monkeypatch):
    queue = shared_queue()
    at = open_page("predict.py")
    at.toggle(key="predict_explain").set_value(False)
    at.file_uploader(key="predict_upload").set_value(("3076.jpg", (shared_data / CAR).read_bytes(), "image/jpeg"))
    monkeypatch.setattr(app_test, "LocalScriptRunner", RecordingRunner)
    release = threading.Event()
    holding = threading.Event()

    def hold():
        with queue.slot():
            holding.set()
            release.wait(WAIT_S)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    holding.wait(WAIT_S)
    page = threading.Thread(target=at.run, daemon=True)
    try:
        page.start()
        wait_for(lambda: queue.waiting == 1, "the page to join the line")
        wait_for(lambda: any("ahead of you" in t for t in RecordingRunner.latest.texts_so_far()), "the message")
        message = next(t for t in RecordingRunner.latest.texts_so_far() if "ahead of you" in t)
        assert message.startswith("1 visitor is ahead of you")
        assert page.is_alive()  # still waiting: the answer needs the slot
    finally:
        release.set()
        holder.join(WAIT_S)
    page.join(WAIT_S * 2)
    assert not page.is_alive() and not at.exception, at.exception
    assert "confident" in at.success[0].value  # the verdict arrived once the slot was free
    assert not any("ahead of you" in t for t in texts(at.info))  # the message is gone with the wait
    assert queue.running == 0 and queue.waiting == 0
