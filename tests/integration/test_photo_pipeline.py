"""EditPhoto end to end through real gRPC servers on loopback serving the committed digiface64
pack (its generator built from the gan-face-generate wheel by `make setup`), on a real portrait."""
from __future__ import annotations

import io

import grpc
import numpy as np
import pytest
from PIL import Image

from services.common.redis_server import EmbeddedRedis
from tests.support import MODEL_STORE, Servers


def _png(pixels: np.ndarray, exif_orientation: int | None = None) -> bytes:
    buf = io.BytesIO()
    img = Image.fromarray(pixels)
    if exif_orientation is None:
        img.save(buf, format="PNG")
    else:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        img.save(buf, format="JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


def _decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.fixture(scope="module")
def photo_client(tmp_path_factory):
    """A gateway client of real servers serving digiface64 (default) and synth, with their own Redis."""
    from services.client import FaceditClient

    redis = EmbeddedRedis(workdir=str(tmp_path_factory.mktemp("redis-photo"))).start()
    try:
        servers = Servers(MODEL_STORE, "digiface64", redis.url, more_packs=("synth",))
        client = FaceditClient(servers.addresses["gateway"], timeout_s=60)
        yield client
        client.close()
        servers.stop()
    finally:
        redis.stop()


@pytest.fixture(scope="module")
def astronaut():
    from skimage import data

    return data.astronaut()


def test_edit_photo_edits_the_face_in_place_and_leaves_the_rest(photo_client, astronaut):
    resp = photo_client.edit_photo(_png(astronaut), [("smile", 2.0)], return_crops=True)
    out = _decode(resp.image)
    assert out.shape == astronaut.shape
    assert len(resp.faces) == 1
    x0, y0, x1, y1 = resp.faces[0].box
    assert 150 < (x0 + x1) / 2 < 300 and 50 < (y0 + y1) / 2 < 200
    diff = np.abs(out.astype(int) - astronaut.astype(int)).sum(2)
    inside = diff[int(y0):int(y1), int(x0):int(x1)]
    assert inside.mean() > 2.0  # the face changed
    far = np.ones_like(diff, bool)
    far[max(0, int(y0) - 60):int(y1) + 60, max(0, int(x0) - 60):int(x1) + 60] = False
    assert diff[far].max() == 0  # nothing else did
    face = resp.faces[0]
    assert face.scores_after["smile"] > face.scores_before["smile"]
    assert resp.quality[0].attribute == "smile" and face.latent_id
    assert _decode(face.crop_after).shape == (64, 64, 3)
    # the cached latent edits like any other face
    again = photo_client.edit(photo_client.face(latent_id=face.latent_id), [("smile", 2.0)])
    assert again.scores_after["smile"] == pytest.approx(face.scores_after["smile"], abs=1e-4)


@pytest.mark.parametrize("replace", [False, True])
def test_a_grey_photo_stays_grey(photo_client, astronaut, replace):
    """A greyscale photo (an L-mode PNG): only the luminance of the edit is pasted, in delta and in replace
    mode, so every pixel of the answer has equal channels; the returned crops are grey too."""
    buf = io.BytesIO()
    Image.fromarray(astronaut).convert("L").save(buf, format="PNG")
    grey = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    resp = photo_client.edit_photo(buf.getvalue(), [("smile", 2.0)], replace=replace, return_crops=True)
    out = _decode(resp.image)
    assert out.shape == grey.shape
    assert np.abs(out.astype(int) - grey.astype(int)).sum(2).max() > 30  # the face was edited
    for image in (out, _decode(resp.faces[0].crop_before), _decode(resp.faces[0].crop_after)):
        assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()


def test_every_face_of_a_group_photo_is_edited(photo_client, astronaut):
    pair = np.concatenate([astronaut, astronaut[:, ::-1]], axis=1)  # two people side by side
    resp = photo_client.edit_photo(_png(pair), [("yaw", 1.5)])
    assert len(resp.faces) == 2
    centres = sorted((f.box[0] + f.box[2]) / 2 for f in resp.faces)
    assert centres[0] < 512 < centres[1]
    one = photo_client.edit_photo(_png(pair), [("yaw", 1.5)], max_faces=1)
    assert len(one.faces) == 1


def test_exif_orientation_is_applied_before_detection(photo_client, astronaut):
    # stored rotated 90 degrees, with the EXIF tag (6: rotate 90 CW to view) that makes it upright
    stored = np.rot90(astronaut, k=1).copy()
    resp = photo_client.edit_photo(_png(stored, exif_orientation=6), [("smile", 1.0)], replace=True)
    assert _decode(resp.image).shape == astronaut.shape
    assert len(resp.faces) == 1
    upright = photo_client.edit_photo(_png(astronaut), [("smile", 1.0)], replace=True)
    np.testing.assert_allclose(resp.faces[0].box, upright.faces[0].box, atol=6)


@pytest.mark.parametrize("make_image, message", [
    (lambda a: _png(np.full((200, 300, 3), 128, np.uint8)), "no face found"),
    (lambda a: b"not an image", "image"),
    (lambda a: b"", "empty"),
])
def test_bad_photos_are_invalid_argument_and_the_service_keeps_serving(photo_client, astronaut, make_image, message):
    with pytest.raises(grpc.RpcError) as err:
        photo_client.edit_photo(make_image(astronaut), [("smile", 1.0)])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in err.value.details()
    assert photo_client.edit_photo(_png(astronaut), [("smile", 1.0)]).faces


def test_no_face_suggests_turning_a_photo_that_shows_a_face_when_turned(photo_client, astronaut):
    """A portrait stored turned 90 degrees counter-clockwise, without an EXIF tag: no face upright, one once
    turned 90 degrees clockwise, and the answer says so; a cat shows no face either way, and the answer says
    that too."""
    from skimage import data

    with pytest.raises(grpc.RpcError) as err:
        photo_client.edit_photo(_png(np.ascontiguousarray(np.rot90(astronaut, 1))), [("smile", 1.0)])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "no face found in the 512x512 photo as it is, but turned 90 degrees clockwise" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        photo_client.edit_photo(_png(data.chelsea()), [("smile", 1.0)])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "no face found in the 451x300 photo" in err.value.details()
    assert "checked turned 90, 180 and 270 degrees: no face either" in err.value.details()


def test_edit_photo_limits_and_packs_without_a_template(photo_client, astronaut):
    for kwargs, message in (({"max_faces": 17}, "max_faces"), ({"pack": "synth"}, "alignment template")):
        with pytest.raises(grpc.RpcError) as err:
            photo_client.edit_photo(_png(astronaut), [("smile", 1.0)], **kwargs)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert message in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        photo_client.edit_photo(_png(astronaut), [])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
