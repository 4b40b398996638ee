"""Faithful inversion (fidelity FAITHFUL) through real gRPC servers on loopback serving the committed
digiface64 pack, on a real face: the encoder optimises the latent and the generator's modulation, the
generator renders with it, the gateway caches it with the latent id.

Every figure here is measured by the test on the returned images (the aligned face against the
rendering), not taken from the service's own report."""
from __future__ import annotations

import json

import grpc
import numpy as np
import onnxruntime as ort
import pytest

from facedit.v1 import common_pb2, gateway_pb2, generator_pb2, generator_pb2_grpc
from facedit_core import align, images
from facedit_core.pack import load_pack
from facedit_faces.detect import FaceDetector
from services.common.redis_server import EmbeddedRedis
from services.common.tensors import to_tensor
from tests.support import MODEL_STORE, Servers, decode_image, image_file

FAITHFUL = common_pb2.FIDELITY_FAITHFUL


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from services.client import FaceditClient

    redis = EmbeddedRedis(workdir=str(tmp_path_factory.mktemp("redis-faithful"))).start()
    try:
        servers = Servers(MODEL_STORE, "digiface64", redis.url, more_packs=("synth",))
        client = FaceditClient(servers.addresses["gateway"], timeout_s=120)
        yield servers, client
        client.close()
        servers.stop()
    finally:
        redis.stop()


@pytest.fixture(scope="module")
def face():
    """(the aligned 64-px face, an image file of the same face aligned at 256 px): a real portrait
    (scikit-image's astronaut, public domain)."""
    from skimage import data

    photo = data.astronaut()
    template = np.asarray(load_pack("digiface64", MODEL_STORE).manifest["alignment"]["template"])
    found = FaceDetector(folder=MODEL_STORE / "third_party").detect(photo)[0]
    a = align.similarity(found.landmarks, template)
    big = align.similarity(found.landmarks, template * 4)
    return align.crop(photo, a, 64), image_file(align.crop(photo, big, 256))


def _facenet():
    session = ort.InferenceSession(str(MODEL_STORE / "third_party" / "facenet.onnx"))
    return lambda px: session.run(None, {"pixels": np.stack([images.resize(p, 160) for p in px])})[0]


def test_modulated_generator_renders_the_plain_generator_at_zero_modulation():
    pack = load_pack("digiface64", MODEL_STORE)
    plain = ort.InferenceSession(str(pack.artefact("generator")))
    modulated = ort.InferenceSession(str(pack.artefact("generator_modulated")))
    size = pack.manifest["artefacts"]["generator_modulated"]["modulation_size"]
    z = np.random.default_rng(1).standard_normal((6, pack.latent_dim)).astype(np.float32)
    rows = np.concatenate([z, np.zeros((6, size), np.float32)], axis=1)
    a = plain.run(None, {"z": z})[0]
    b = modulated.run(None, {"z_modulation": rows})[0]
    assert np.array_equal(a, b)
    rows[:, pack.latent_dim:] = 0.2
    assert np.abs(modulated.run(None, {"z_modulation": rows})[0].astype(int) - a).mean() > 5


def test_faithful_encode_is_closer_to_the_face_than_the_encoder_alone(stack, face):
    _, client = stack
    aligned, image = face
    fast = client.stub.Encode(gateway_pb2.EncodeRequest(image=image, return_reconstruction=True), timeout=120)
    faithful = client.stub.Encode(gateway_pb2.EncodeRequest(image=image, return_reconstruction=True,
                                                            fidelity=FAITHFUL), timeout=120)
    assert not fast.HasField("inversion") and faithful.HasField("inversion")
    embed = _facenet()
    target = embed(aligned[None])[0]
    figures = {}
    for name, resp in (("fast", fast), ("faithful", faithful)):
        recon = decode_image(resp.reconstruction)
        figures[name] = (float(np.abs(recon.astype(int) - aligned).mean()), float(embed(recon[None])[0] @ target))
    print(json.dumps(figures))
    (mae_fast, id_fast), (mae_faithful, id_faithful) = figures["fast"], figures["faithful"]
    assert mae_faithful < 0.75 * mae_fast, figures
    assert id_faithful > id_fast + 0.2 and id_faithful >= 0.85, figures
    report = faithful.inversion
    assert report.steps > 0 and report.identity_after > report.identity_before


def test_an_edit_by_latent_id_renders_with_the_faces_modulation(stack, face):
    _, client = stack
    aligned, image = face
    encoded = client.stub.Encode(gateway_pb2.EncodeRequest(image=image, return_reconstruction=True,
                                                           fidelity=FAITHFUL), timeout=120)
    edited = client.edit(client.face(latent_id=encoded.latent_id), [("smile", 1.0)], return_original=True)
    assert not edited.HasField("inversion")  # by latent id: no new inversion
    original = decode_image(edited.original)
    assert np.abs(original.astype(int) - decode_image(encoded.reconstruction)).max() <= 1
    assert np.abs(decode_image(edited.image).astype(int) - original).mean() > 1  # the edit changed the face


def test_faithful_edit_photo_reports_each_faces_inversion(stack):
    from skimage import data

    _, client = stack
    photo = data.astronaut()
    resp = client.stub.EditPhoto(gateway_pb2.EditPhotoRequest(image=image_file(photo), edits=[client.edit_op("smile", 1.0)],
                                                              return_crops=True, fidelity=FAITHFUL), timeout=120)
    assert len(resp.faces) == 1 and resp.faces[0].HasField("inversion")
    assert resp.faces[0].inversion.identity_after > resp.faces[0].inversion.identity_before


def test_faithful_on_a_pack_without_inversion_is_refused(stack, face):
    _, client = stack
    with pytest.raises(grpc.RpcError) as err:
        client.stub.Encode(gateway_pb2.EncodeRequest(pack="synth", image=face[1], fidelity=FAITHFUL), timeout=60)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "fidelity FAST" in err.value.details()


@pytest.mark.parametrize("rows, width", [(2, 1920), (1, 7)])
def test_generator_refuses_modulations_of_the_wrong_shape(stack, rows, width):
    servers, _ = stack
    with grpc.insecure_channel(servers.addresses["generator"]) as channel:
        stub = generator_pb2_grpc.GeneratorStub(channel)
        request = generator_pb2.GenerateImagesRequest(
            pack="digiface64", latents=to_tensor(np.zeros((1, 100), np.float32)),
            modulations=to_tensor(np.zeros((rows, width), np.float32)))
        with pytest.raises(grpc.RpcError) as err:
            stub.GenerateImages(request, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "(1, 1920) float32" in err.value.details()


def test_an_edit_of_a_faithful_image_face_reports_its_inversion(stack, face):
    _, client = stack
    source = gateway_pb2.FaceSource(image=face[1], fidelity=FAITHFUL)
    edited = client.stub.Edit(gateway_pb2.EditRequest(face=source, edits=[client.edit_op("smile", 1.0)]), timeout=120)
    assert edited.inversion.steps > 0 and edited.inversion.identity_after > edited.inversion.identity_before
