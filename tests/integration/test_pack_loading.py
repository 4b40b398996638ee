"""A service whose pack files do not match their sha256 starts NOT_SERVING, answers UNAVAILABLE
with the reason, and serves once the files are right again, with no restart
(services/common/loading.py; every service verifies the artefacts it reads at start)."""
from __future__ import annotations

import shutil
import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from facedit.v1 import (
    directions_pb2,
    directions_pb2_grpc,
    encoder_pb2,
    encoder_pb2_grpc,
    generator_pb2,
    generator_pb2_grpc,
)
from services.common.server import start_local
from services.common.tensors import to_tensor
from services.directions import server as directions
from services.encoder import server as encoder
from services.generator import server as generator
from tests.support import LOGGER, MINILM

SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


def health(channel) -> int:
    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status


def generate(channel, pack):
    return generator_pb2_grpc.GeneratorStub(channel).GenerateImages(generator_pb2.GenerateImagesRequest(
        latents=to_tensor(np.zeros((1, pack.latent_dim), np.float32))), timeout=10)


def encode(channel, pack):
    pixels = np.zeros((1, pack.resolution, pack.resolution, 3), np.uint8)
    return encoder_pb2_grpc.EncoderStub(channel).EncodeImages(
        encoder_pb2.EncodeImagesRequest(pixels=to_tensor(pixels)), timeout=10)


def list_directions(channel, pack):
    return directions_pb2_grpc.DirectionsStub(channel).ListDirections(
        directions_pb2.ListDirectionsRequest(pack="tiny"), timeout=10)


CASES = {  # service -> (module, the artefact spoiled, extra flags, a call)
    "generator": (generator, "generator", [], generate),
    "encoder": (encoder, "encoder", [], encode),
    "directions": (directions, "words_glove", ["--sentence-encoder", str(MINILM)], list_directions),
}


@pytest.mark.parametrize("service", list(CASES))
def test_a_spoiled_artefact_keeps_the_service_not_serving_until_it_is_right(service, tiny_pack, pack, tmp_path,
                                                                            redis_server):
    module, artefact, extra, call = CASES[service]
    store = tmp_path / "store"
    shutil.copytree(tiny_pack[1], store)
    target = (store / "tiny" / pack.manifest["artefacts"][artefact]["path"]).resolve()
    good = target.read_bytes()
    target.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))  # one bit flipped
    flags = ["--model-store", str(store), "--packs", "tiny", "--pack-retry-s", "0.2", *extra]
    if service == "directions":
        flags += ["--redis-url", redis_server.url]
    svc = module.create(module.parser().parse_args(flags), LOGGER)
    server, address = start_local(svc, LOGGER)
    try:
        with grpc.insecure_channel(address) as channel:
            assert health(channel) == NOT_SERVING
            with pytest.raises(grpc.RpcError) as info:
                call(channel, pack)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert f"{artefact}:" in info.value.details() and "does not match the manifest" in info.value.details()
            target.write_bytes(good)
            give_up = time.monotonic() + 10
            while health(channel) != SERVING and time.monotonic() < give_up:
                time.sleep(0.05)
            assert health(channel) == SERVING
            call(channel, pack)
    finally:
        server.stop(0).wait()
        svc.stop()


def test_a_service_with_valid_packs_serves_at_once(tiny_pack, pack):
    svc = generator.create(generator.parser().parse_args(["--model-store", str(tiny_pack[1]), "--packs", "tiny"]),
                           LOGGER)
    assert svc.loading.ready and type(svc.servicer).__name__ == "GeneratorServicer"  # no stand-in in the way
    svc.close()



def test_a_spoiled_face_detector_keeps_the_encoder_not_serving_until_it_is_right(tiny_pack, pack, tmp_path):
    """A pack that takes photos (an alignment template) needs MTCNN's networks: the encoder checks them against
    third_party/mtcnn.json at start like a pack artefact."""
    import json

    from facedit_faces.detect import MANIFEST
    from tests.support import MODEL_STORE

    store = tmp_path / "store"
    shutil.copytree(tiny_pack[1], store)
    manifest = json.loads((store / "tiny" / "manifest.json").read_text())
    manifest["alignment"] = {"template": [[9.0, 12.0], [19.0, 12.0], [14.0, 17.0], [10.0, 22.0], [18.0, 22.0]]}
    (store / "tiny" / "manifest.json").write_text(json.dumps(manifest))
    for name in ("mtcnn_pnet.onnx", "mtcnn_rnet.onnx", "mtcnn_onet.onnx", MANIFEST):
        shutil.copy(MODEL_STORE / "third_party" / name, store / "third_party" / name)
    target = store / "third_party" / "mtcnn_pnet.onnx"
    good = target.read_bytes()
    target.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))  # one bit flipped
    svc = encoder.create(encoder.parser().parse_args(["--model-store", str(store), "--packs", "tiny",
                                                      "--pack-retry-s", "0.2"]), LOGGER)
    server, address = start_local(svc, LOGGER)
    try:
        with grpc.insecure_channel(address) as channel:
            assert health(channel) == NOT_SERVING
            with pytest.raises(grpc.RpcError) as info:
                encode(channel, pack)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "mtcnn_pnet.onnx: sha256" in info.value.details() and "does not match mtcnn.json" in info.value.details()
            target.write_bytes(good)
            give_up = time.monotonic() + 10
            while health(channel) != SERVING and time.monotonic() < give_up:
                time.sleep(0.05)
            assert health(channel) == SERVING
            encode(channel, pack)
            assert svc.loading.target().detector is not None
    finally:
        server.stop(0).wait()
        svc.stop()
