"""The gateway's merged downstream calls (services/gateway/merged.py).

First the merging itself, with a plain function as the downstream (it counts the items of
each call); then concurrent Edits through the tiny stack's real gateway, encoder and
generator, which must answer each Edit exactly as it is answered alone."""
from __future__ import annotations

import threading
import time

import grpc
import pytest

from facedit_core.errors import FaceditError, InvalidArgument
from services.gateway.merged import MergedHop
from tests.support import at_once, other_gateway

from .test_services_integration import rendered_png


class Downstream:
    """Answers items (ints) with item * 10 after `delay_s`; 'bad' items make the call INVALID_ARGUMENT,
    `down` makes every call UNAVAILABLE. Records the items of every call."""

    def __init__(self, delay_s=0.02):
        self.delay_s, self.calls, self.down = delay_s, [], False
        self.lock = threading.Lock()

    def __call__(self, items, deadline):
        with self.lock:
            self.calls.append(list(items))
        time.sleep(self.delay_s)
        if self.down:
            raise FaceditError("encoder: connection refused", "UNAVAILABLE")
        bad = [i for i, x in enumerate(items) if x == "bad"]
        if bad:
            raise InvalidArgument(f"images[{bad[0]}]: cannot decode the image")
        return [x * 10 for x in items]


def call_all(hop, items, deadline_s=5.0):
    """Each item's call in its own thread, all at once -> {item index: result or the exception}."""
    return at_once(lambda k: hop.call(items[k], time.monotonic() + deadline_s), len(items))


def test_concurrent_calls_share_rpcs_and_each_gets_its_own_answer():
    down = Downstream()
    hop = MergedHop("test", down, max_batch=8, workers=2)
    try:
        out = call_all(hop, list(range(24)))
        assert out == {k: k * 10 for k in range(24)}
        assert len(down.calls) < 24 and max(len(c) for c in down.calls) > 1
        assert max(len(c) for c in down.calls) <= 8
        assert sorted(x for c in down.calls for x in c) == list(range(24))  # every item sent exactly once
    finally:
        hop.close()


def test_a_lone_call_is_made_at_once():
    down = Downstream(delay_s=0.0)
    hop = MergedHop("test", down, max_batch=8)
    try:
        assert [hop.call(k, time.monotonic() + 5) for k in range(3)] == [0, 10, 20]
        assert down.calls == [[0], [1], [2]]
    finally:
        hop.close()


def test_a_bad_item_fails_alone_and_an_outage_fails_everyone():
    down = Downstream()
    hop = MergedHop("test", down, max_batch=8, workers=1)
    try:
        items = [1, 2, "bad", 4, 5, 6]
        out = call_all(hop, items)
        assert isinstance(out[2], InvalidArgument) and str(out[2]) == "images[0]: cannot decode the image"
        assert {k: v for k, v in out.items() if k != 2} == {k: items[k] * 10 for k in (0, 1, 3, 4, 5)}
        down.down = True
        out = call_all(hop, [1, 2, 3, 4])
        assert all(isinstance(v, FaceditError) and v.status == "UNAVAILABLE" for v in out.values())
        down.down = False
        assert hop.call(7, time.monotonic() + 5) == 70  # and it keeps serving
    finally:
        hop.close()


def test_a_service_that_refuses_merged_calls_still_answers_each_and_says_what_to_change(caplog):
    """A downstream whose per-request limit is below --merge-max-batch: every item still gets its answer
    (alone) and the gateway logs a warning naming the knob."""
    down, attempted = Downstream(delay_s=0.05), []

    def at_most_two(items, deadline):
        attempted.append(len(items))
        if len(items) > 2:
            raise InvalidArgument(f"{len(items)} rows in one request; the limit is 2")
        return down(items, deadline)
    hop = MergedHop("generator:tiny", at_most_two, max_batch=8, workers=1)
    try:
        with caplog.at_level("WARNING", logger="gateway.merged"):
            out = call_all(hop, list(range(10)))
        assert out == {k: k * 10 for k in range(10)}
        assert max(attempted) > 2  # the nine behind the first call were merged, then refused
        assert "--merge-max-batch" in caplog.text and "generator:tiny" in caplog.text
    finally:
        hop.close()


def test_each_caller_waits_no_longer_than_its_own_deadline():
    down = Downstream(delay_s=0.5)
    hop = MergedHop("test", down, max_batch=8, workers=1)
    try:
        blocker = threading.Thread(target=hop.call, args=(1, time.monotonic() + 5))
        blocker.start()
        time.sleep(0.05)  # the worker is busy: this one queues
        t0 = time.monotonic()
        with pytest.raises(FaceditError) as info:
            hop.call(2, time.monotonic() + 0.1)
        assert info.value.status == "DEADLINE_EXCEEDED"
        assert time.monotonic() - t0 < 0.4
        blocker.join(5)
    finally:
        hop.close()


def test_concurrent_edits_through_the_gateway_match_the_same_edits_alone(client, tiny_servers):
    """Different faces, lean and full Edits, at once: every answer is the one its request gets alone,
    and at least one encoder or generator RPC carried several Edits."""
    faces = [rendered_png(seed) for seed in range(40, 52)]
    requests = [(faces[k], k % 3 == 0) for k in range(len(faces))]  # (image, skip_scores)

    def edit(image, lean):
        return client.edit(client.face(image=image), [("smile", 1.5)], keep=["age"], skip_scores=lean)

    alone = [edit(*r) for r in requests]
    hops = tiny_servers.gateway.merged._hops
    for _ in range(3):  # a loaded machine may serialise one round; three rounds would not all be
        before = {k: (h.batcher.batches, h.batcher.rows) for k, h in hops.items()}
        results = at_once(lambda k: edit(*requests[k]), len(requests), errors=())
        for k, r in enumerate(alone):
            assert results[k].image == r.image, k
            assert results[k].latent == r.latent
            assert dict(results[k].scores_after) == pytest.approx(dict(r.scores_after), abs=1e-6)
        merged = [(h.batcher.rows - before.get(k, (0, 0))[1]) > (h.batcher.batches - before.get(k, (0, 0))[0])
                  for k, h in hops.items()]
        if any(merged):
            break
    assert any(merged), "no RPC carried more than one Edit"


def test_a_bad_image_among_concurrent_edits_fails_alone(client):
    good = [rendered_png(seed) for seed in range(60, 66)]
    files = good[:3] + [b"\x89PNG\r\n\x1a\n not really"] + good[3:]
    out = at_once(lambda k: client.edit(client.face(image=files[k]), [("smile", 1.0)], skip_scores=True).image,
                  len(files))
    with pytest.raises(grpc.RpcError) as alone:
        client.edit(client.face(image=files[3]), [("smile", 1.0)], skip_scores=True)
    err = out.pop(3)
    assert isinstance(err, grpc.RpcError) and err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == alone.value.details() and err.details().startswith("image: "), err.details()
    assert all(isinstance(v, bytes) and v.startswith(b"\x89PNG") for v in out.values())


def test_a_generator_that_is_down_is_unavailable_for_every_merged_edit(tiny_servers):
    """A gateway (merging on) whose generator address has nothing listening: every concurrent Edit gets
    UNAVAILABLE naming the hop, none hangs, and the gateway keeps serving other RPCs."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"  # closed again before use: nothing listens there
    with other_gateway(tiny_servers, dead, tiny_servers.redis_client, merge_max_batch=8) as (client, _):
        faces = [rendered_png(seed) for seed in range(70, 76)]
        out = at_once(lambda k: client.edit(client.face(image=faces[k]), [("smile", 1.0)], skip_scores=True),
                      len(faces))
        assert len(out) == len(faces)
        for err in out.values():
            assert isinstance(err, grpc.RpcError) and err.code() == grpc.StatusCode.UNAVAILABLE, err
            assert err.details().startswith("generator:"), err.details()
        assert "smile" in set(client.attributes().attributes)  # still serving
