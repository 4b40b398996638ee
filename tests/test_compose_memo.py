"""The gateway's memo of Compose answers (services/gateway/compose_memo.py): hits while the
registry is unchanged, never an answer from before a registry write, bounded, and off at size 0.
Real Redis, real gRPC servers of the tiny stack."""
from __future__ import annotations

import numpy as np
import pytest

from facedit.v1 import common_pb2, directions_pb2
from services.common import latents
from services.common.tensors import from_tensor
from services.directions.registry import read_state
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
    client.edit(client.face(seed=31), [("smile", 1.5)], keep=["age"])  # another strength: another answer
    assert counts(memo) == (hits + 1, misses + 1)


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
