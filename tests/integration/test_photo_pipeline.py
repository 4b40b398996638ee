"""EditPhoto end to end through real gRPC servers on loopback serving the committed digiface64
pack (its generator built from the gan-face-generate wheel by `make setup`), on a real portrait."""
from __future__ import annotations

import io

import grpc
import numpy as np
import pytest
from PIL import Image

from services.common.redis_server import EmbeddedRedis
from tests.support import MODEL_STORE, Servers, decode_image, image_file


@pytest.fixture(scope="module")
def photo_servers(tmp_path_factory):
    """Real servers serving digiface64 (default) and synth, with their own Redis."""
    redis = EmbeddedRedis(workdir=str(tmp_path_factory.mktemp("redis-photo"))).start()
    try:
        servers = Servers(MODEL_STORE, "digiface64", redis.url, more_packs=("synth",))
        yield servers
        servers.stop()
    finally:
        redis.stop()


@pytest.fixture(scope="module")
def photo_client(photo_servers):
    """A gateway client of photo_servers."""
    from services.client import FaceditClient

    client = FaceditClient(photo_servers.addresses["gateway"], timeout_s=60)
    yield client
    client.close()


@pytest.fixture(scope="module")
def encoder_stub(photo_servers):
    from facedit.v1 import encoder_pb2_grpc

    channel = grpc.insecure_channel(photo_servers.addresses["encoder"])
    yield encoder_pb2_grpc.EncoderStub(channel)
    channel.close()


@pytest.fixture(scope="module")
def astronaut():
    from skimage import data

    return data.astronaut()


def test_edit_photo_edits_the_face_in_place_and_leaves_the_rest(photo_client, astronaut):
    resp = photo_client.edit_photo(image_file(astronaut), [("smile", 2.0)], return_crops=True)
    out = decode_image(resp.image)
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
    assert face.rendered_scores_after["smile"] > face.rendered_scores_before["smile"]
    assert resp.quality[0].attribute == "smile" and face.latent_id
    assert decode_image(face.crop_after).shape == (64, 64, 3)
    # measured on the photos: the face found again in the returned photo, classified, and still the person
    assert face.found_after and set(face.scores_after) == set(face.scores_before) == set(face.rendered_scores_after)
    assert 0.3 < face.identity_cosine <= 1.0
    assert resp.quality[0].score_after == pytest.approx(face.scores_after["smile"], abs=1e-6)
    # the cached latent edits like any other face, and answers with the whole photo again
    again = photo_client.edit(photo_client.face(latent_id=face.latent_id), [("smile", 2.0)])
    assert again.scores_after["smile"] == pytest.approx(face.rendered_scores_after["smile"], abs=1e-4)
    np.testing.assert_array_equal(decode_image(again.photo), out)
    assert again.photo_face.scores_after["smile"] == pytest.approx(face.scores_after["smile"], abs=1e-4)
    assert again.photo_face.identity_cosine == pytest.approx(face.identity_cosine, abs=1e-4)
    np.testing.assert_allclose(again.photo_face.box, face.box)


@pytest.mark.parametrize("replace", [False, True])
def test_a_grey_photo_stays_grey(photo_client, astronaut, replace):
    """A greyscale photo (an L-mode PNG): only the luminance of the edit is pasted, in delta and in replace
    mode, so every pixel of the answer has equal channels; the returned crops are grey too."""
    buf = io.BytesIO()
    Image.fromarray(astronaut).convert("L").save(buf, format="PNG")
    grey = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    resp = photo_client.edit_photo(buf.getvalue(), [("smile", 2.0)], replace=replace, return_crops=True)
    out = decode_image(resp.image)
    assert out.shape == grey.shape
    assert np.abs(out.astype(int) - grey.astype(int)).sum(2).max() > 30  # the face was edited
    for image in (out, decode_image(resp.faces[0].crop_before), decode_image(resp.faces[0].crop_after)):
        assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()


def test_every_face_of_a_group_photo_is_edited(photo_client, astronaut):
    pair = np.concatenate([astronaut, astronaut[:, ::-1]], axis=1)  # two people side by side
    resp = photo_client.edit_photo(image_file(pair), [("yaw", 1.5)])
    assert len(resp.faces) == 2
    centres = sorted((f.box[0] + f.box[2]) / 2 for f in resp.faces)
    assert centres[0] < 512 < centres[1]
    one = photo_client.edit_photo(image_file(pair), [("yaw", 1.5)], max_faces=1)
    assert len(one.faces) == 1


def test_exif_orientation_is_applied_before_detection(photo_client, astronaut):
    # stored rotated 90 degrees, with the EXIF tag (6: rotate 90 CW to view) that makes it upright
    stored = np.rot90(astronaut, k=1).copy()
    resp = photo_client.edit_photo(image_file(stored, exif_orientation=6), [("smile", 1.0)], replace=True)
    assert decode_image(resp.image).shape == astronaut.shape
    assert len(resp.faces) == 1
    upright = photo_client.edit_photo(image_file(astronaut), [("smile", 1.0)], replace=True)
    np.testing.assert_allclose(resp.faces[0].box, upright.faces[0].box, atol=6)


@pytest.mark.parametrize("make_image, message", [
    (lambda a: image_file(np.full((200, 300, 3), 128, np.uint8)), "no face found"),
    (lambda a: b"not an image", "image"),
    (lambda a: b"", "empty"),
])
def test_bad_photos_are_invalid_argument_and_the_service_keeps_serving(photo_client, astronaut, make_image, message):
    with pytest.raises(grpc.RpcError) as err:
        photo_client.edit_photo(make_image(astronaut), [("smile", 1.0)])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in err.value.details()
    assert photo_client.edit_photo(image_file(astronaut), [("smile", 1.0)]).faces


def test_no_face_suggests_turning_a_photo_that_shows_a_face_when_turned(photo_client, astronaut):
    """A portrait stored turned 90 degrees counter-clockwise, without an EXIF tag: no face upright, one once
    turned 90 degrees clockwise, and the answer says so; a cat shows no face either way, and the answer says
    that too."""
    from skimage import data

    with pytest.raises(grpc.RpcError) as err:
        photo_client.edit_photo(image_file(np.ascontiguousarray(np.rot90(astronaut, 1))), [("smile", 1.0)])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "no face found in the 512x512 photo as it is, but turned 90 degrees clockwise" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        photo_client.edit_photo(image_file(data.chelsea()), [("smile", 1.0)])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "no face found in the 451x300 photo" in err.value.details()
    assert "checked turned 90, 180 and 270 degrees: no face either" in err.value.details()


def test_edit_photo_limits_and_packs_without_a_template(photo_client, astronaut):
    for kwargs, message in (({"max_faces": 17}, "max_faces"), ({"pack": "synth"}, "alignment template")):
        with pytest.raises(grpc.RpcError) as err:
            photo_client.edit_photo(image_file(astronaut), [("smile", 1.0)], **kwargs)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert message in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        photo_client.edit_photo(image_file(astronaut), [])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def _group(astronaut: np.ndarray) -> np.ndarray:
    """Two people side by side: the astronaut, and beside her a mirrored copy at 60 % of the size."""
    small = np.asarray(Image.fromarray(astronaut[:, ::-1]).resize((307, 307), Image.Resampling.LANCZOS))
    canvas = np.full((512, 512 + 307, 3), 200, np.uint8)
    canvas[:, :512] = astronaut
    canvas[100:407, 512:] = small
    return canvas


def test_the_face_measured_is_the_one_in_the_returned_photo(photo_client, encoder_stub, astronaut):
    """scores_after is the classifier on the face found again in the returned photo, exactly what MeasureFaces
    gives for a region of the decoded answer (JPEG too: measured on what the client gets)."""
    from facedit.v1 import common_pb2, encoder_pb2
    from facedit_core import align
    from services.common.tensors import from_tensor, to_tensor

    found = encoder_stub.DetectFaces(encoder_pb2.DetectFacesRequest(image=image_file(astronaut)), timeout=60).faces[0]
    landmarks = np.asarray(found.landmarks).reshape(5, 2)
    for fmt in (common_pb2.IMAGE_FORMAT_PNG, common_pb2.IMAGE_FORMAT_JPEG):
        resp = photo_client.edit_photo(image_file(astronaut), [("smile", 2.0)], fmt=fmt)
        face = resp.faces[0]
        np.testing.assert_allclose(face.box, found.box)
        measured = {}
        for name, photo in (("before", astronaut), ("after", decode_image(resp.image))):
            pixels, where = align.region(photo, np.asarray(found.box), landmarks)
            region = encoder_pb2.FaceRegion(pixels=to_tensor(pixels), landmarks=where.ravel().tolist())
            m = encoder_stub.MeasureFaces(encoder_pb2.MeasureFacesRequest(regions=[region]), timeout=60)
            assert m.faces[0].found
            measured[name] = dict(zip(m.attributes, from_tensor(m.faces[0].scores, "scores").tolist()))
        for attribute in face.scores_after:
            assert face.scores_after[attribute] == pytest.approx(measured["after"][attribute], abs=1e-5), fmt
            assert face.scores_before[attribute] == pytest.approx(measured["before"][attribute], abs=1e-5), fmt


def test_measure_faces_finds_the_face_again_or_says_it_did_not(encoder_stub, astronaut):
    from facedit.v1 import encoder_pb2
    from facedit_core import align
    from services.common.tensors import from_tensor, to_tensor

    found = encoder_stub.DetectFaces(encoder_pb2.DetectFacesRequest(image=image_file(astronaut)), timeout=60).faces[0]
    pixels, where = align.region(astronaut, np.asarray(found.box), np.asarray(found.landmarks).reshape(5, 2))
    blank = np.full_like(pixels, 128)
    elsewhere = where + [60.0, 0.0]  # a face expected well away from where it is
    regions = [encoder_pb2.FaceRegion(pixels=to_tensor(p), landmarks=w.ravel().tolist())
               for p, w in ((pixels, where), (pixels, where), (blank, where), (pixels, elsewhere))]
    m = encoder_stub.MeasureFaces(encoder_pb2.MeasureFacesRequest(regions=regions), timeout=60)
    assert [f.found for f in m.faces] == [True, True, False, False]
    a, b = (from_tensor(f.identity, "identity") for f in m.faces[:2])
    assert a.shape == (512,) and np.linalg.norm(a) == pytest.approx(1.0, abs=1e-4) and a @ b == pytest.approx(1.0, abs=1e-5)
    assert m.faces[0].shift < 0.1
    with pytest.raises(grpc.RpcError) as err:
        encoder_stub.MeasureFaces(encoder_pb2.MeasureFacesRequest(pack="synth", regions=regions[:1]), timeout=60)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "alignment template" in err.value.details()
    big = encoder_pb2.FaceRegion(pixels=to_tensor(np.zeros((600, 10, 3), np.uint8)), landmarks=[0.0] * 10)
    with pytest.raises(grpc.RpcError) as err:
        encoder_stub.MeasureFaces(encoder_pb2.MeasureFacesRequest(regions=[big]), timeout=60)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "512" in err.value.details()


def test_encode_and_edit_of_a_photo_find_align_and_encode_its_largest_face(photo_client, astronaut):
    """On a pack with an alignment template an image is a photo: Encode and Edit encode the largest face, as
    EditPhoto aligns it (the same latent), and the photo is remembered: Edit answers with the whole photo."""
    from services.common.tensors import from_tensor

    group = _group(astronaut)
    photo = photo_client.edit_photo(image_file(group), [("smile", 2.0)])
    assert len(photo.faces) == 2
    largest = max(photo.faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
    assert (largest.box[0] + largest.box[2]) / 2 < 512  # the astronaut, not her smaller copy
    enc = photo_client.encode(image_file(group))
    np.testing.assert_allclose(enc.face.box, largest.box)
    by_photo = photo_client.edit(photo_client.face(latent_id=largest.latent_id), [("smile", 2.0)])
    np.testing.assert_allclose(from_tensor(enc.latent), from_tensor(photo_client.edit(
        photo_client.face(latent_id=enc.latent_id), [("smile", 0.0)]).latent), atol=1e-6)
    edited = photo_client.edit(photo_client.face(image=image_file(group)), [("smile", 2.0)])
    np.testing.assert_allclose(from_tensor(edited.latent), from_tensor(by_photo.latent), atol=1e-5)
    assert edited.photo and edited.photo_face.found_after and edited.photo_face.latent_id == edited.latent_id
    out = decode_image(edited.photo)
    assert out.shape == group.shape
    changed = np.abs(out.astype(int) - group.astype(int)).sum(2) > 0
    ys, xs = np.nonzero(changed)
    x0, y0, x1, y1 = largest.box
    assert xs.min() > x0 - 60 and xs.max() < x1 + 60 and ys.min() > y0 - 60 and ys.max() < y1 + 60  # one face only
    # and by the id Encode gave: the photo again, for a slider
    again = photo_client.edit(photo_client.face(latent_id=enc.latent_id), [("smile", 2.0)], skip_scores=True)
    np.testing.assert_array_equal(decode_image(again.photo), out)
    assert not again.photo_face.scores_after and not again.scores_after


def test_a_photo_without_a_face_is_refused_by_encode_and_edit(photo_client):
    """A cat (scikit-image's chelsea) gives no face, not a smiling human one."""
    from skimage import data

    cat = image_file(data.chelsea())
    calls = (lambda: photo_client.encode(cat), lambda: photo_client.edit(photo_client.face(image=cat), [("smile", 1.0)]),
             lambda: photo_client.sweep(photo_client.face(image=cat), "smile", -1.0, 1.0, 3))
    for call in calls:
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details().startswith("image: no face found in the 451x300 image"), err.value.details()


def test_a_pack_without_a_template_takes_the_image_as_an_aligned_face(photo_client, astronaut):
    """synth has no alignment template: an image is an aligned face (centre square), as before; no photo."""
    enc = photo_client.encode(image_file(astronaut), pack="synth")
    assert enc.latent_id and not enc.HasField("face")
    resp = photo_client.edit(photo_client.face(image=image_file(astronaut)), [("smile", 1.0)], pack="synth")
    assert not resp.photo and not resp.HasField("photo_face") and not resp.photo_forgotten
    assert decode_image(resp.image).shape[0] == decode_image(resp.image).shape[1]
    # a grey face comes back grey, by image and by its latent id
    grey = image_file(np.asarray(Image.fromarray(astronaut).convert("L").convert("RGB")))
    first = photo_client.edit(photo_client.face(image=grey), [("smile", 1.0)], pack="synth", return_original=True)
    again = photo_client.edit(photo_client.face(latent_id=first.latent_id), [("smile", -1.0)], pack="synth")
    for image in (first.image, first.original, again.image):
        pixels = decode_image(image)
        assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()


def test_a_latent_whose_photo_was_forgotten_still_edits_without_the_photo(photo_servers, photo_client, astronaut):
    from facedit_core.redis_keys import PHOTO_PREFIX

    face = photo_client.edit_photo(image_file(astronaut), [("smile", 1.0)]).faces[0]
    keys = photo_servers.redis_client.keys(PHOTO_PREFIX + "*")
    assert keys
    photo_servers.redis_client.delete(*keys)  # as if evicted by newer photos
    resp = photo_client.edit(photo_client.face(latent_id=face.latent_id), [("smile", 1.0)])
    assert resp.photo_forgotten and not resp.photo and resp.image and resp.scores_after


def test_a_pose_edit_pasted_as_a_change_is_warned_about(photo_client, astronaut):
    """yaw turns the head: in delta mode (the default) the photo's own face shows through twice, and the
    answer says so; smile and replace-mode answers carry no warning."""
    turned = photo_client.edit_photo(image_file(astronaut), [("yaw", 2.0)])
    assert len(turned.warnings) == 1 and turned.warnings[0].startswith("yaw turns or tilts the head")
    assert "PASTE_MODE_REPLACE" in turned.warnings[0]
    assert not photo_client.edit_photo(image_file(astronaut), [("smile", 2.0)]).warnings
    assert not photo_client.edit_photo(image_file(astronaut), [("yaw", 2.0)], replace=True).warnings
    # a slider by the photo face's latent id answers the whole photo with the same warning
    again = photo_client.edit(photo_client.face(latent_id=turned.faces[0].latent_id), [("roll", 1.0)])
    assert again.photo and [w.split(" ")[0] for w in again.warnings] == ["roll"]
