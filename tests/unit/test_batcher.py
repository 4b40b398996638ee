"""Dynamic batcher (services.common.batcher): merging, splitting, limits, errors."""
import threading
import time

import numpy as np
import pytest

from facedit_core.errors import DeadlineExceeded, InvalidArgument, ResourceExhausted
from services.common.batcher import DynamicBatcher


def test_each_request_gets_its_own_rows_back():
    b = DynamicBatcher(lambda x: x * 2, max_batch=16, max_delay_s=0.01)
    try:
        futures = [b.submit(np.full((i % 3 + 1, 2), i, np.float32)) for i in range(20)]
        for i, f in enumerate(futures):
            out, _ = f.result(5)
            assert out.shape == (i % 3 + 1, 2) and np.all(out == 2 * i)
    finally:
        b.close()


def test_concurrent_requests_share_a_batch():
    gate = threading.Event()
    sizes = []

    def slow(x):
        gate.wait(5)
        sizes.append(len(x))
        return x

    b = DynamicBatcher(slow, max_batch=64, max_delay_s=0.05)
    try:
        first = b.submit(np.zeros((1, 1), np.float32))  # occupies the worker until the gate opens
        time.sleep(0.05)
        rest = [b.submit(np.zeros((1, 1), np.float32)) for _ in range(10)]
        gate.set()
        first.result(5)
        batch_sizes = {f.result(5)[1] for f in rest}
        assert batch_sizes == {10}, sizes
    finally:
        b.close()


def test_batches_never_exceed_max_batch():
    sizes = []
    b = DynamicBatcher(lambda x: sizes.append(len(x)) or x, max_batch=8, max_delay_s=0.01)
    try:
        futures = [b.submit(np.zeros((3, 1), np.float32)) for _ in range(10)]
        [f.result(5) for f in futures]
        assert max(sizes) <= 8 and sum(sizes) == 30
        with pytest.raises(InvalidArgument, match="limit is 8"):
            b.submit(np.zeros((9, 1), np.float32))
    finally:
        b.close()


def test_full_queue_is_resource_exhausted():
    gate = threading.Event()
    b = DynamicBatcher(lambda x: gate.wait(5) and x, max_batch=1, max_delay_s=0, max_queue=2)
    try:
        b.submit(np.zeros((1, 1), np.float32))
        time.sleep(0.05)  # the worker holds the first one
        b.submit(np.zeros((1, 1), np.float32))
        b.submit(np.zeros((1, 1), np.float32))
        with pytest.raises(ResourceExhausted, match="busy"):
            b.submit(np.zeros((1, 1), np.float32))
    finally:
        gate.set()
        b.close()


def test_model_error_fails_that_batch_and_the_batcher_keeps_serving():
    calls = []

    def flaky(x):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return x

    b = DynamicBatcher(flaky, max_batch=4, max_delay_s=0)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            b.submit(np.zeros((1, 1), np.float32)).result(5)
        out, _ = b.submit(np.ones((1, 1), np.float32)).result(5)
        assert out[0, 0] == 1
    finally:
        b.close()


def test_two_workers_run_batches_side_by_side_and_a_lone_request_gets_run_batch():
    """workers=2: while one batch is held in the model, the other worker collects and runs the next
    (on run_shared); a lone request with the model idle runs on run_batch."""
    gate, running = threading.Event(), threading.Semaphore(0)
    calls = []

    def held(kind):
        def run(x):
            calls.append((kind, len(x)))
            running.release()
            gate.wait(5)
            return x + (1 if kind == "lone" else 2)
        return run

    b = DynamicBatcher(held("lone"), max_batch=64, max_delay_s=0.01, workers=2, run_shared=held("shared"))
    try:
        first = b.submit(np.zeros((1, 1), np.float32))
        assert running.acquire(timeout=5)  # the lone request is in the model, the other worker is free
        rest = [b.submit(np.full((1, 1), i, np.float32)) for i in range(5)]
        assert running.acquire(timeout=5)  # ... and runs the others beside it, without waiting for the gate
        gate.set()
        assert first.result(5)[0][0, 0] == 1
        for i, f in enumerate(rest):
            out, size = f.result(5)
            assert out[0, 0] == i + 2 and size == 5
        assert calls == [("lone", 1), ("shared", 5)]
        assert b.batches == 2 and b.shared == 1 and b.running == 0
    finally:
        b.close()


def test_inline_runs_a_lone_request_in_the_callers_thread_and_queues_the_rest():
    """inline=True: a request with no other in the last max_delay_s and the model idle runs in the caller's
    thread; one arriving while it runs is batched by the worker."""
    gate, threads = threading.Event(), []

    def run(x):
        threads.append(threading.current_thread())
        gate.wait(5)
        return x * 3

    b = DynamicBatcher(run, max_batch=8, max_delay_s=0.01, inline=True)
    try:
        gate.set()
        out, size = b.submit(np.ones((2, 1), np.float32)).result(0)  # done when submit returns
        assert np.all(out == 3) and size == 2 and threads == [threading.current_thread()]
        # while a lone request runs inline, others go to the worker (and wait for no one)
        gate.clear()
        time.sleep(0.02)  # longer than max_delay_s since the last request: the next one is lone
        lone = threading.Thread(target=lambda: b.submit(np.ones((1, 1), np.float32)))
        lone.start()
        time.sleep(0.05)
        queued = b.submit(np.full((1, 1), 2, np.float32))
        assert not queued.done() and threads[-1] is lone
        gate.set()
        assert queued.result(5)[0][0, 0] == 6 and threads[-1] is not lone and threads[-1] is not threading.current_thread()
        lone.join(5)
        failing = DynamicBatcher(lambda x: 1 / 0, inline=True)
        with pytest.raises(ZeroDivisionError):
            failing.submit(np.ones((1, 1), np.float32)).result(0)
        failing.close()
        assert b.running == 0 and b.batches == 3
    finally:
        b.close()


def test_a_request_whose_deadline_passed_in_the_queue_never_runs():
    gate, ran = threading.Event(), []

    def slow(x):
        gate.wait(5)
        ran.append(len(x))
        return x

    b = DynamicBatcher(slow, max_batch=4, max_delay_s=0.0, name="gen")
    try:
        first = b.submit(np.zeros((1, 1), np.float32))  # holds the only worker
        time.sleep(0.05)
        with pytest.raises(DeadlineExceeded, match="gen: no answer within the deadline"):
            b.call(np.zeros((2, 1), np.float32), timeout_s=0.05)  # its caller gives up while it waits
        late = b.submit(np.zeros((3, 1), np.float32), deadline=time.monotonic() + 0.05)
        time.sleep(0.1)
        gate.set()
        first.result(5)
        with pytest.raises(DeadlineExceeded, match="passed while queued"):
            late.result(5)
        assert b.call(np.zeros((1, 1), np.float32), timeout_s=5)[0].shape == (1, 1)
        assert ran == [1, 1]  # neither abandoned request reached the model
        assert b.expired == 1  # the cancelled one is not counted as expired: its caller cancelled it
    finally:
        b.close()
