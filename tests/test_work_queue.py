"""carclf.work_queue with real threads: arrival order, places reported, the limit, timeouts, errors."""

from __future__ import annotations

import threading
import time

import pytest

from carclf.errors import BusyError, CarclfError
from carclf.work_queue import QueuedEmbedder, QueuedPredictor, WorkQueue

# Seconds a test waits for a thread to reach a state before failing (generous: the CPU is shared).
WAIT_S = 20


def wait_until(condition, timeout=WAIT_S):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def hold(queue, release):
    """Hold a slot of ``queue`` until ``release`` is set (run in a thread)."""
    with queue.slot():
        release.wait(WAIT_S)


def start(target, *args):
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


def test_waiters_enter_in_arrival_order_and_hear_their_place():
    queue = WorkQueue(max_concurrent=1, poll_s=0.05)
    release = threading.Event()
    order, places = [], {}

    def holder():
        with queue.slot():
            release.wait(WAIT_S)

    def visitor(name):
        seen = places.setdefault(name, [])
        with queue.slot(on_wait=lambda position, ahead: seen.append((position, ahead))):
            order.append(name)
            time.sleep(0.2)  # long enough for the ones behind to hear that they moved up

    threads = [start(holder)]
    wait_until(lambda: queue.running == 1)
    for number, name in enumerate("abcd"):
        threads.append(start(visitor, name))
        wait_until(lambda: queue.waiting == number + 1)  # arrival order is fixed before the next starts
    wait_until(lambda: all(places.get(name) for name in "abcd"))
    # While the holder works: d is 4th in line with the holder and a, b, c in front of it.
    assert places["a"][0] == (1, 1)
    assert places["d"][0] == (4, 4)
    release.set()
    for thread in threads:
        thread.join(WAIT_S)
    assert order == list("abcd")
    # d moved up as the others went in: its reported places only ever shrink, down to "next in".
    d_places = [place for place, _ in places["d"]]
    assert d_places == sorted(d_places, reverse=True) and d_places[-1] < 4
    assert queue.running == 0 and queue.waiting == 0 and queue.served == 5


@pytest.mark.parametrize("limit", [1, 3])
def test_never_more_than_max_concurrent_at_once(limit):
    queue = WorkQueue(max_concurrent=limit, poll_s=0.02)
    lock = threading.Lock()
    inside, most = [0], [0]

    def work():
        with queue.slot():
            with lock:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            time.sleep(0.02)
            with lock:
                inside[0] -= 1

    threads = [start(work) for _ in range(12)]
    for thread in threads:
        thread.join(WAIT_S)
    assert most[0] == limit == queue.peak_running
    assert queue.served == 12 and queue.running == 0


def test_a_caller_that_waits_too_long_gets_busy_error_and_leaves_the_line():
    queue = WorkQueue(max_concurrent=1, poll_s=0.02)
    release = threading.Event()
    holder = start(hold, queue, release)
    wait_until(lambda: queue.running == 1)
    began = time.monotonic()
    with pytest.raises(BusyError, match="busy: 1 still ahead of you"):
        with queue.slot(timeout=0.3):
            pytest.fail("entered a taken slot")
    assert 0.3 <= time.monotonic() - began < 5
    assert isinstance(BusyError("x"), CarclfError)
    assert queue.waiting == 0  # the timed-out ticket does not block the ones behind it
    release.set()
    holder.join(WAIT_S)


def test_an_exception_in_the_body_gives_the_slot_back():
    queue = WorkQueue(max_concurrent=1)
    with pytest.raises(ZeroDivisionError):
        with queue.slot():
            1 / 0
    assert queue.running == 0
    with queue.slot(timeout=1):  # free again at once
        assert queue.running == 1


def test_an_on_wait_that_raises_leaves_the_line_and_lets_the_next_in():
    queue = WorkQueue(max_concurrent=1, poll_s=0.02)
    release = threading.Event()
    order = []

    def holder():
        with queue.slot():
            release.wait(WAIT_S)

    def leaver(position, ahead):
        raise KeyboardInterrupt("visitor closed the page")

    def behind():
        with queue.slot():
            order.append("behind")

    first = start(holder)
    wait_until(lambda: queue.running == 1)
    errors = []

    def leave():
        try:
            with queue.slot(on_wait=leaver):
                order.append("leaver")
        except KeyboardInterrupt as error:
            errors.append(error)

    leaving = start(leave)
    leaving.join(WAIT_S)
    second = start(behind)
    wait_until(lambda: queue.waiting == 1)
    release.set()
    for thread in (first, second):
        thread.join(WAIT_S)
    assert order == ["behind"] and len(errors) == 1 and queue.waiting == 0


@pytest.fixture(scope="module")
def predictor():
    """A tiny real Predictor: the colour model plus a small 1000-way stand-in gate."""
    import keras

    from carclf.predict import KIND_TRAINED, Predictor
    from inference_helpers import COLOURS, colour_classifier

    keras.utils.set_random_seed(1)
    image = keras.Input((48, 48, 3))
    x = keras.layers.Conv2D(4, 3, strides=4)(keras.layers.Rescaling(1 / 128.0)(image))
    gate = keras.Model(image, keras.layers.Dense(1000, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x)))
    return Predictor("colour", KIND_TRAINED, colour_classifier(), gate, COLOURS, COLOURS)


@pytest.fixture(scope="module")
def car_photo(shared_data):
    return shared_data / "cars/mfismail_car_brands_3/lamborghini/train_31.jpeg"


def test_queued_predictor_waits_for_the_slot_and_keeps_results(predictor, car_photo):
    default_predictor = predictor
    queue = WorkQueue(max_concurrent=1, poll_s=0.05)
    queued = QueuedPredictor(default_predictor, queue=queue)
    assert queued.class_names == default_predictor.class_names  # everything else passes through
    release = threading.Event()
    holder = start(hold, queue, release)
    wait_until(lambda: queue.running == 1)
    answers = []
    worker = start(lambda: answers.append(queued.predict(car_photo, tta=2)))
    wait_until(lambda: queue.waiting == 1)
    time.sleep(0.2)
    assert answers == []  # still waiting behind the holder
    release.set()
    worker.join(WAIT_S * 3)
    holder.join(WAIT_S)
    assert answers[0].label == default_predictor.predict(car_photo, tta=2).label
    progress = []
    batch = queued.predict_batch([car_photo] * 3, tta=1, progress=lambda done, total: progress.append((done, total)))
    assert [r.label for r in batch] == [answers[0].views[0].label] * 3
    assert progress[-1] == (3, 3)
    assert queue.served == 3 and queue.peak_running == 1


def test_the_malloc_setting_applies_unless_the_environment_already_decides(monkeypatch):
    from carclf import work_queue

    if work_queue._LIBC is None or not hasattr(work_queue._LIBC, "mallopt"):
        pytest.skip("no glibc here")
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert work_queue.tune_malloc() is False
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_")
    assert work_queue.tune_malloc() is True


@pytest.mark.parametrize("tta", [0, 2])
def test_an_evaluation_through_the_line_takes_a_slot_per_chunk_and_scores_the_same(predictor, shared_data,
                                                                                     tmp_path, tta, monkeypatch):
    from carclf import work_queue
    from carclf.evaluation import evaluate
    from inference_helpers import PHOTOS, copy_photos

    monkeypatch.setattr(work_queue, "PHOTOS_PER_SLOT", 4)  # 9 photos -> 3 chunks with TTA
    data = copy_photos(shared_data, PHOTOS, tmp_path / "val")
    queue = WorkQueue(max_concurrent=1)
    queued = QueuedPredictor(predictor, queue=queue)
    progress = []
    report = evaluate(queued, data, tta=tta, batch_size=4, progress=lambda done, total: progress.append((done, total)))
    plain = evaluate(predictor, data, tta=tta, batch_size=4)
    assert report.n_images == plain.n_images == 9 and report.accuracy == plain.accuracy == 1.0
    assert queue.served == 3  # three batches of 4, 4, 1 photos (or three TTA chunks), one slot each
    assert progress[-1] == (9, 9)


def test_a_health_checks_feature_model_takes_a_slot_per_batch_and_computes_the_same(shared_data):
    import numpy as np

    from carclf.embedding_cache import LazyEmbedder, embed_files

    photos = sorted((shared_data / "cars/manzhura_ru_5models/qashqai").iterdir())[:5]
    embedder = LazyEmbedder()
    queue = WorkQueue(max_concurrent=1)
    queued = embed_files(photos, embedder=QueuedEmbedder(embedder, queue=queue), batch_size=2)
    plain = embed_files(photos, embedder=embedder, batch_size=2)
    assert queue.served == 3  # batches of 2, 2, 1 photos: other visitors get in between them
    assert np.allclose(queued.features, plain.features) and np.allclose(queued.car_scores, plain.car_scores)
