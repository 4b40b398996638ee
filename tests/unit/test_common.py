"""Tensor and image codecs, latents from seeds (services.common)."""
import io

import numpy as np
import pytest
from PIL import Image

from facedit.v1 import common_pb2
from facedit_core import images, latents
from facedit_core.errors import InvalidArgument
from services.common.tensors import from_tensor, to_tensor


def png(pixels):
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def test_tensor_round_trip_float32_and_uint8():
    for arr in (np.arange(12, dtype=np.float32).reshape(3, 4), np.arange(24, dtype=np.uint8).reshape(2, 2, 2, 3)):
        back = from_tensor(to_tensor(arr))
        assert back.dtype == arr.dtype and np.array_equal(back, arr)


def test_tensor_with_wrong_byte_length_is_invalid():
    t = to_tensor(np.zeros((2, 3), np.float32))
    t.data = t.data[:-1]
    with pytest.raises(InvalidArgument, match="needs 24 bytes, got 23"):
        from_tensor(t)
    with pytest.raises(InvalidArgument, match="dtype"):
        from_tensor(common_pb2.Tensor(shape=[1], data=b"\0"))


def test_check_latents_rejects_wrong_length_nan_and_empty():
    assert latents.check(np.zeros(8, np.float32), 8).shape == (1, 8)
    with pytest.raises(InvalidArgument, match="expected length 8"):
        latents.check(np.zeros(7, np.float32), 8)
    z = np.zeros(8, np.float32)
    z[3] = np.nan
    with pytest.raises(InvalidArgument, match="NaN"):
        latents.check(z, 8)
    with pytest.raises(InvalidArgument, match="no latents"):
        latents.check(np.zeros((0, 8), np.float32), 8)


def test_decode_png_and_jpeg_and_reject_garbage():
    pixels = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    assert np.array_equal(images.decode(png(pixels)), pixels)
    jpeg = images.encode(pixels, "jpeg")
    assert images.decode(jpeg).shape == (20, 30, 3)
    with pytest.raises(InvalidArgument, match="not an image"):
        images.decode(b"hello, this is text")
    with pytest.raises(InvalidArgument, match="empty"):
        images.decode(b"")
    with pytest.raises(InvalidArgument, match="cannot decode"):
        images.decode(png(pixels)[:60])


def test_decode_applies_exif_orientation():
    pixels = np.zeros((10, 20, 3), np.uint8)
    pixels[:, :10] = 255  # left half white
    img = Image.fromarray(pixels)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    buf = io.BytesIO()
    img.save(buf, format="PNG", exif=exif)
    out = images.decode(buf.getvalue())
    assert out.shape == (20, 10, 3)
    assert out[:10].mean() > 200 and out[10:].mean() < 50  # white half now on top


def test_resize_centre_crops_to_a_square():
    pixels = np.zeros((40, 80, 3), np.uint8)
    pixels[:, 20:60] = 255  # the centre square is white
    out = images.resize(pixels, 16)
    assert out.shape == (16, 16, 3) and out.min() == 255


def test_seed_latents_are_deterministic_standard_normal():
    a, b = latents.from_seed(5, 64), latents.from_seed(5, 64)
    assert a.dtype == np.float32 and np.array_equal(a, b)
    assert not np.array_equal(a, latents.from_seed(6, 64))
    many = np.stack([latents.from_seed(s, 64) for s in range(300)])
    assert abs(many.mean()) < 0.05 and abs(many.std() - 1) < 0.05
    with pytest.raises(InvalidArgument):
        latents.from_seed(-1, 64)


def test_a_tensor_shape_too_large_to_multiply_is_a_clear_invalid_argument():
    """Seen answering INTERNAL: np.prod of [2**62, 4] overflowed int64; numpy refused to reshape the empty
    [0, 69, 126178, 126290, 2097143] (found by the fuzz tests)."""
    for shape, match in (([2**62, 4], "dimensions of 0 to 2147483647"), ([1] * 9, "0 to 8 dimensions"),
                         ([2**30, 2**30], "needs 4611686018427387904 bytes"),
                         ([0, 69, 126178, 126290, 2097143], "is empty but its other dimensions hold")):
        with pytest.raises(InvalidArgument, match=match):
            from_tensor(common_pb2.Tensor(dtype=common_pb2.DTYPE_FLOAT32, shape=shape, data=b""))


def test_grey_photos_are_recognised_and_a_luminance_paste_keeps_them_grey():
    from facedit_core import align

    rng = np.random.default_rng(3)
    colour = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    grey = images.to_grey(colour)
    assert images.is_grey(grey) and not images.is_grey(colour)
    for mode in ("L", "LA"):
        buf = io.BytesIO()
        Image.fromarray(grey[..., 0]).convert(mode).save(buf, format="PNG")
        assert images.is_grey(images.decode(buf.getvalue()))
    buf = io.BytesIO()  # a grey picture stored as a colour JPEG: channels a level or two apart
    Image.fromarray(grey).save(buf, format="JPEG", quality=90, subsampling=0)
    assert images.is_grey(images.decode(buf.getvalue()))
    template = np.array([[22.1, 30.9], [42.2, 30.6], [32.1, 43.8], [23.5, 54.8], [40.7, 54.6]])
    a = align.similarity(template * 1.5 + [30.0, 10.0], template)
    mask = align.blend_mask(template, 64)
    face = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)  # a colourful rendering
    for original in (None, align.crop(colour, a, 64)):
        out = align.paste(grey, a, face, mask, original_face=original, luminance_only=True)
        assert (out != grey).any()
        assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
