"""The gateway's memo of Compose answers (services/gateway/compose_memo.py): hits while the
registry is unchanged, never an answer from before a registry write, bounded, and off at size 0.
Real Redis, real gRPC servers of the tiny stack."""
from __future__ import annotations

import numpy as np
import pytest

from facedit.v1 import common_pb2, directions_pb2
from facedit_core import latents
from services.common.redis_server import read_state
from services.common.tensors import from_tensor
from services.gateway.compose_memo import ComposeMemo

from .test_crg_directions import glasses_pngs


def counts(memo):
    return memo.hits, memo.misses


def test_a_repeated_edit_is_composed_once_and_renders_the_same(client, tiny_servers):
    memo = tiny_servers.gateway.memo
    first = client.edit(client.face(seed=31), [("smile", 1.25)], keep=["age"])
    hits, misses = counts(memo)
    again = client.edit(client.face(seed=31), [("smile", 1.25)], keep=["age"])
    assert counts(memo) == (hits + 1, misses)
    assert again.image == first.image and again.latent_shift == first.latent_shift
    assert [q.direction_id for q in again.quality] == [q.direction_id for q in first.quality]
    scaled = memo.scaled_hits
    client.edit(client.face(seed=31), [("smile", 1.5)], keep=["age"])  # another strength: scaled
    assert counts(memo) == (hits + 2, misses) and memo.scaled_hits == scaled + 1
    client.edit(client.face(seed=31), [("smile", 1.5)], keep=["yaw"])  # another kept set: another answer
    assert counts(memo) == (hits + 2, misses + 1)


def test_a_replaced_direction_is_used_at_once(client, tiny_servers):
    """Without the stamp check the second edit would reuse the first vector."""
    memo = tiny_servers.gateway.memo
    positive, negative = glasses_pngs(seed=21, n=2)
    client.create_direction("memo_check", positive, negative)
    first = client.edit(client.face(seed=3), [("custom/memo_check", 2.0)], skip_scores=True)
    assert client.edit(client.face(seed=3), [("custom/memo_check", 2.0)], skip_scores=True).latent == first.latent
    hits = memo.hits
    client.create_direction("memo_check", negative, positive, replace=True)  # the opposite direction
    flipped = client.edit(client.face(seed=3), [("custom/memo_check", 2.0)], skip_scores=True)
    assert memo.hits == hits
    z = latents.from_seed(3, len(from_tensor(first.latent)))
    moved, back = from_tensor(first.latent) - z, from_tensor(flipped.latent) - z
    assert np.linalg.norm(moved) == pytest.approx(2.0, rel=1e-4)
    np.testing.assert_allclose(back, -moved, atol=1e-5)  # the new vector, not the remembered one


def test_lookup_store_state_and_bound(tiny_servers):
    r = tiny_servers.redis_client
    memo = ComposeMemo(r, size=2)
    requests = [directions_pb2.ComposeRequest(pack="tiny", edits=[common_pb2.EditOp(attribute="smile", strength=s)])
                for s in (1.0, 2.0, 3.0)]
    state, answer = memo.lookup(requests[0])
    assert answer is None and state == ("tiny", *read_state(r, "tiny")) and state[1]
    made = directions_pb2.ComposeResponse(pack=common_pb2.PackRef(name="tiny", version=state[1]))
    memo.store(state, requests[0], made)
    assert memo.lookup(requests[0]) == (state, made)
    for req in requests[1:]:
        memo.store(state, req, made)
    assert len(memo) == 2 and memo.lookup(requests[0])[1] is None  # least recently used went first
    # an answer of another version than the state read before the call is not kept
    memo.store(state, requests[0], directions_pb2.ComposeResponse(pack=common_pb2.PackRef(name="tiny", version="x")))
    assert memo.lookup(requests[0])[1] is None
    # a stamp that changed makes every answer stale
    memo.store(("tiny", state[1], "an older stamp"), requests[1], made)
    assert memo.lookup(requests[1])[1] is None


def test_size_zero_is_off_and_unknown_packs_are_never_stored(tiny_servers):
    r = tiny_servers.redis_client
    off = ComposeMemo(r, size=0)
    request = directions_pb2.ComposeRequest(pack="tiny")
    assert off.lookup(request) == (None, None)
    memo = ComposeMemo(r)
    state, _ = memo.lookup(directions_pb2.ComposeRequest(pack="no-such-pack"))
    assert state[1] is None
    memo.store(state, request, directions_pb2.ComposeResponse())
    assert len(memo) == 0
    with pytest.raises(ValueError, match=">= 0"):
        ComposeMemo(r, size=-1)


def test_one_edit_at_another_strength_is_scaled_to_the_services_answer(tiny_servers):
    """A one-edit answer scaled to a new strength equals what the directions service answers at that
    strength: an attribute with a kept one, a direction id, a phrase (negated clause included) and an
    averaging text edit. Strengths beyond the limit and requests of two edits are not answered."""
    import grpc

    from facedit.v1 import directions_pb2_grpc
    from services.client import FaceditClient

    memo = ComposeMemo(tiny_servers.redis_client)
    ops = [FaceditClient.edit_op("smile", 1.5), FaceditClient.edit_op("interfacegan/age", -1.0),
           FaceditClient.text_op("a big grin and no beard", 1.0), FaceditClient.text_op("old", 0.5, "averaging")]
    keeps = [["age"], [], [], []]
    with grpc.insecure_channel(tiny_servers.addresses["directions"]) as channel:
        stub = directions_pb2_grpc.DirectionsStub(channel)
        for op, keep in zip(ops, keeps):
            first = directions_pb2.ComposeRequest(pack="tiny", edits=[op], keep=keep)
            state, answer = memo.lookup(first)
            assert answer is None
            memo.store(state, first, stub.Compose(first, timeout=10))
            for strength in (2.0, -0.75, 0.0):
                request = directions_pb2.ComposeRequest()
                request.CopyFrom(first)
                request.edits[0].strength = strength
                scaled = memo.lookup(request)[1]
                direct = stub.Compose(request, timeout=10)
                assert scaled is not None, (op, strength)
                np.testing.assert_allclose(from_tensor(scaled.delta), from_tensor(direct.delta), atol=1e-6)
                np.testing.assert_allclose(from_tensor(scaled.pull), from_tensor(direct.pull), atol=1e-6)
                assert scaled.pull_weight == pytest.approx(direct.pull_weight, abs=1e-6)
                assert [e.strength for e in scaled.edits] == pytest.approx([e.strength for e in direct.edits])
                assert [e.direction.id for e in scaled.edits] == [e.direction.id for e in direct.edits]
            beyond = directions_pb2.ComposeRequest()
            beyond.CopyFrom(first)
            beyond.edits[0].strength = min(e.direction.strength_limit for e in direct.edits) + 1
            assert memo.lookup(beyond)[1] is None  # the service says why: INVALID_ARGUMENT
            with pytest.raises(grpc.RpcError) as refused:
                stub.Compose(beyond, timeout=10)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    two = directions_pb2.ComposeRequest(pack="tiny", edits=[ops[0], ops[1]])
    memo.store(memo.lookup(two)[0], two, directions_pb2.ComposeResponse(
        pack=common_pb2.PackRef(name="tiny", version=read_state(tiny_servers.redis_client, "tiny")[0])))
    two.edits[0].strength = 0.5
    assert memo.lookup(two)[1] is None  # two edits: only the exact request is remembered
    assert memo.scaled_hits == 3 * len(ops)
