"""The services over real gRPC on loopback with a real Redis, on the tiny pack:
the happy paths and the bad input that must come back as INVALID_ARGUMENT."""
import io

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from facedit.v1 import common_pb2, gateway_pb2, generator_pb2, generator_pb2_grpc
from facedit_core import images
from services.common.tensors import from_tensor, to_tensor
from training.data import renderer

BAD = grpc.StatusCode.INVALID_ARGUMENT


def png_of(pixels):
    return images.encode(pixels)


def rendered_png(seed=0):
    return png_of(renderer.render(renderer.sample_faces(seed, 1), size=32)[0])


def expect(code, fn, match):
    with pytest.raises(grpc.RpcError) as info:
        fn()
    assert info.value.code() == code, info.value.details()
    assert match in info.value.details(), info.value.details()


def test_every_service_reports_serving(tiny_servers):
    for address in tiny_servers.addresses.values():
        with grpc.insecure_channel(address) as ch:
            status = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5).status
            assert status == health_pb2.HealthCheckResponse.SERVING


def test_edit_from_seed_returns_png_latent_id_and_quality(client):
    resp = client.edit(client.face(seed=3), [("smile", 2.0)], keep=["age"], return_original=True)
    img = Image.open(io.BytesIO(resp.image))
    assert img.format == "PNG" and img.size == (32, 32)
    assert resp.latent_id and len(resp.quality) == 1
    q = resp.quality[0]
    assert q.direction_id == "interfacegan/smile" and q.strength == 2.0
    assert 0 <= q.score_before <= 1 and 0 <= q.score_after <= 1
    assert set(resp.scores_before) == set(renderer.ATTRIBUTES)
    assert resp.latent_shift == pytest.approx(2.0, rel=1e-4)  # unit direction, renormalised after projection
    # the cached latent id gives back the same source face
    again = client.edit(client.face(latent_id=resp.latent_id), [("smile", 2.0)], keep=["age"])
    assert again.image == resp.image


def test_edit_with_skip_scores_returns_the_same_edited_image_without_scores(client):
    """The lean edit (no classifier, no original) renders exactly the full edit's image."""
    for face in (client.face(seed=3), client.face(image=rendered_png(2))):
        full = client.edit(face, [("smile", 2.0)], keep=["age"])
        lean = client.edit(face, [("smile", 2.0)], keep=["age"], skip_scores=True)
        assert lean.image == full.image and lean.image.startswith(b"\x89PNG")
        np.testing.assert_array_equal(from_tensor(lean.latent), from_tensor(full.latent))
        assert lean.latent_shift == pytest.approx(full.latent_shift)
        assert not lean.scores_before and not lean.scores_after and not lean.original
        q = lean.quality[0]
        assert q.direction_id == "interfacegan/smile" and q.strength == 2.0
        assert np.isnan(q.score_before) and np.isnan(q.score_after)
        assert q.projected_norm == pytest.approx(full.quality[0].projected_norm)
        # the cached source latent is the same face
        by_id = client.edit(client.face(latent_id=lean.latent_id), [("smile", 2.0)], keep=["age"], skip_scores=True)
        assert by_id.image == lean.image
    # return_original still renders the original, with the same pixels as the full edit's
    full = client.edit(client.face(seed=4), [("beard", 1.0)], return_original=True)
    lean = client.edit(client.face(seed=4), [("beard", 1.0)], return_original=True, skip_scores=True)
    assert lean.original == full.original and lean.image == full.image and not lean.scores_after


def test_edit_with_skip_scores_keeps_clear_errors(client):
    face = client.face(seed=1)
    lean = {"skip_scores": True}
    cases = [
        (lambda: client.edit(client.face(image=b"this is not an image"), [("smile", 1)], **lean), "not an image"),
        (lambda: client.edit(face, [("moustache", 1)], **lean), "unknown attribute 'moustache'"),
        (lambda: client.edit(face, [("smile", 1e6)], **lean), "outside the allowed range"),
        (lambda: client.edit(face, [], **lean), "no edits"),
        (lambda: client.edit(face, [("smile", 1)], pack="nope", **lean), "unknown pack 'nope'"),
    ]
    for call, match in cases:
        expect(BAD, call, match)
    expect(grpc.StatusCode.NOT_FOUND,
           lambda: client.edit(client.face(latent_id="abc123"), [("smile", 1)], **lean), "unknown or expired")


def test_encode_caches_a_latent_and_edits_by_id(client):
    enc = client.encode(rendered_png(1), reconstruction=True)
    z = from_tensor(enc.latent)
    assert z.shape == (16,) and np.isfinite(z).all() and enc.expires_in_s == 60
    assert Image.open(io.BytesIO(enc.reconstruction)).size == (32, 32)
    resp = client.edit(client.face(latent_id=enc.latent_id), [("eyeglasses", 1.0)])
    assert resp.latent_id == enc.latent_id


def test_sweep_streams_one_frame_per_strength(client):
    frames = client.sweep(client.face(seed=4), "yaw", -2, 2, 5)
    assert [round(f.strength, 3) for f in frames] == [-2, -1, 0, 1, 2]
    assert frames[0].latent_id and len({f.image for f in frames}) > 1


def test_generate_is_deterministic_for_a_seed(client):
    a, b = client.generate([1, 2]), client.generate([2])
    assert a.images[1] == b.images[0] and a.images[0] != a.images[1]


def test_generator_batches_concurrent_requests(tiny_servers):
    from concurrent.futures import ThreadPoolExecutor

    with grpc.insecure_channel(tiny_servers.addresses["generator"]) as ch:
        stub = generator_pb2_grpc.GeneratorStub(ch)
        z = np.zeros((1, 16), np.float32)
        call = lambda _: stub.GenerateImages(generator_pb2.GenerateImagesRequest(latents=to_tensor(z)), timeout=20)
        with ThreadPoolExecutor(16) as pool:
            responses = list(pool.map(call, range(64)))
    assert all(from_tensor(r.pixels).shape == (1, 32, 32, 3) for r in responses)
    assert max(r.batch_size for r in responses) > 1  # some requests shared a model call


def test_bad_input_is_invalid_argument_and_the_stack_keeps_serving(client):
    stub = client.stub
    face = client.face(seed=1)
    cases = [
        (lambda: client.edit(client.face(image=b"this is not an image"), [("smile", 1)]), "not an image"),
        (lambda: client.edit(client.face(image=rendered_png()[:80]), [("smile", 1)]), "cannot decode"),
        (lambda: stub.Edit(gateway_pb2.EditRequest(), timeout=10), "no edits"),
        (lambda: stub.Edit(gateway_pb2.EditRequest(edits=[common_pb2.EditOp(attribute="smile", strength=1)]),
                           timeout=10), "face: set one of"),
        (lambda: client.edit(face, [("moustache", 1)]), "unknown attribute 'moustache'"),
        (lambda: client.edit(client.face(latent=np.zeros(7, np.float32)), [("smile", 1)]), "expected length 16"),
        (lambda: client.edit(client.face(latent=np.full(16, np.nan, np.float32)), [("smile", 1)]), "NaN"),
        (lambda: client.edit(face, [("smile", 1e6)]), "outside the allowed range"),
        (lambda: client.edit(face, [("smile", float("nan"))]), "outside the allowed range"),
        (lambda: client.edit(face, [("smile", 1)], keep=["smile"]), "cannot both edit and keep"),
        (lambda: client.edit(face, [("smile", 1)], keep=["wings"]), "unknown attribute 'wings'"),
        (lambda: client.edit(face, [("interfacegan/nothing", 1)]), "unknown direction"),
        (lambda: client.edit(client.face(seed=-5), [("smile", 1)]), "seed must be >= 0"),
        (lambda: client.sweep(face, "smile", -1, 1, 1000), "steps must be"),
        (lambda: client.generate(list(range(65))), "at most 64 seeds"),
        (lambda: client.encode(b""), "empty"),
        (lambda: client.edit(face, [("smile", 1)], pack="nope"), "unknown pack 'nope'"),
    ]
    for call, match in cases:
        expect(BAD, call, match)
    # still serving, and nothing was lost
    assert client.edit(face, [("smile", 1.0)]).image


def test_unknown_latent_id_is_not_found(client):
    expect(grpc.StatusCode.NOT_FOUND, lambda: client.edit(client.face(latent_id="abc123"), [("smile", 1)]),
           "unknown or expired")


def test_method_is_chosen_per_edit_and_a_missing_one_is_a_clear_error(client):
    face = client.face(seed=2)
    tl = client.edit(face, [("smile", 2.0)], method="tlgan")
    assert tl.quality[0].direction_id == "tlgan/smile" and tl.quality[0].method == common_pb2.METHOD_TLGAN
    ig = client.edit(face, [("smile", 2.0)])  # the pack's default method
    assert ig.quality[0].direction_id == "interfacegan/smile" and ig.image != tl.image
    sefa = client.edit(face, [("sefa/component_0", 2.0)])
    assert sefa.quality[0].method == common_pb2.METHOD_SEFA
    listed = {d.id for d in client.attributes().directions}
    assert {"interfacegan/smile", "tlgan/smile", "sefa/component_0"} <= listed
    # tiny has 3 SeFa components for 6 attributes, so some attribute has no sefa/<attribute> alias
    missing = next(a for a in client.attributes().attributes if f"sefa/{a}" not in listed)
    expect(BAD, lambda: client.edit(face, [(missing, 1.0)], method="sefa"), f"has no sefa direction for {missing!r}")


def test_encoder_batches_concurrent_requests_and_answers_each_its_own(tiny_servers, monkeypatch):
    import time
    from concurrent.futures import ThreadPoolExecutor

    from facedit.v1 import encoder_pb2, encoder_pb2_grpc

    pixels = renderer.render(renderer.sample_faces(9, 32), size=32)
    models = tiny_servers.encoder_models
    alone = models.encode(pixels)  # reference: one model call for all 32
    batcher = models.encoder

    def waiting_for_company(run):
        def run_after_others_queued(rows):  # a busy model: requests pile up meanwhile (at most 5 s)
            give_up = time.monotonic() + 5
            while batcher.queue.qsize() < 4 and time.monotonic() < give_up:
                time.sleep(0.005)
            return run(rows)
        return run_after_others_queued

    monkeypatch.setattr(batcher, "run_batch", waiting_for_company(batcher.run_batch))
    monkeypatch.setattr(batcher, "run_shared", waiting_for_company(batcher.run_shared))
    before = batcher.batches
    with grpc.insecure_channel(tiny_servers.addresses["encoder"]) as ch:
        stub = encoder_pb2_grpc.EncoderStub(ch)
        call = lambda i: from_tensor(stub.EncodeImages(encoder_pb2.EncodeImagesRequest(
            pixels=to_tensor(pixels[i:i + 1])), timeout=20).latents)
        with ThreadPoolExecutor(16) as pool:
            latents = np.concatenate(list(pool.map(call, range(32))))
    assert np.allclose(latents, alone, atol=1e-5)  # each request got its own face's latent
    assert batcher.batches - before < 32  # some requests shared a model call


@pytest.mark.parametrize("request_, rpc, field", [
    (gateway_pb2.EditPhotoRequest(image=b"x", paste=99), "EditPhoto", "paste: 99"),
    (gateway_pb2.EditRequest(face=gateway_pb2.FaceSource(seed=1),
                             edits=[common_pb2.EditOp(attribute="smile", strength=1, method=42)]), "Edit",
     "edits[0].method: 42"),
    (gateway_pb2.GenerateRequest(seeds=[1], format=7), "Generate", "format: 7"),
])
def test_the_gateway_refuses_undefined_enum_values_naming_the_field(client, request_, rpc, field):
    expect(BAD, lambda: getattr(client.stub, rpc)(request_, timeout=10), f"{field} is not a value of")
