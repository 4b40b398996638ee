"""numpy arrays and images <-> facedit.v1 messages (Tensor, ImageFormat), with the checks every
service needs."""
from __future__ import annotations

import math

import numpy as np

from facedit.v1 import common_pb2
from facedit_core import images
from facedit_core.errors import InvalidArgument, shorten

MAX_DIMS = 8  # dimensions of a tensor message
MAX_DIM = 2**31 - 1  # size of one dimension (an empty tensor's other dimensions too)
_DTYPES = {common_pb2.DTYPE_FLOAT32: np.dtype("<f4"), common_pb2.DTYPE_UINT8: np.dtype("u1")}
_CODES = {np.dtype("float32"): common_pb2.DTYPE_FLOAT32, np.dtype("uint8"): common_pb2.DTYPE_UINT8}


def to_tensor(array: np.ndarray) -> common_pb2.Tensor:
    """float32 or uint8 array -> Tensor (C order, little-endian)."""
    array = np.asarray(array)
    if array.dtype not in _CODES:
        raise TypeError(f"only float32 and uint8 travel as tensors, got {array.dtype}")
    return common_pb2.Tensor(dtype=_CODES[array.dtype], shape=list(array.shape),
                             data=np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes())


def from_tensor(tensor: common_pb2.Tensor, what: str = "tensor") -> np.ndarray:
    """Tensor -> numpy array (read-only view of the message bytes).

    Raises InvalidArgument when dtype, shape and byte length disagree.
    """
    if tensor.dtype not in _DTYPES:
        raise InvalidArgument(f"{what}: dtype must be DTYPE_FLOAT32 or DTYPE_UINT8")
    dtype = _DTYPES[tensor.dtype]
    shape = tuple(int(s) for s in tensor.shape)
    if len(shape) > MAX_DIMS or any(not 0 <= s <= MAX_DIM for s in shape):
        raise InvalidArgument(f"{what}: shape {shorten(list(shape))} needs 0 to {MAX_DIMS} dimensions of 0 to "
                              f"{MAX_DIM}")
    if 0 in shape and math.prod(s for s in shape if s) > MAX_DIM:  # numpy refuses such empty shapes
        raise InvalidArgument(f"{what}: shape {shorten(list(shape))} is empty but its other dimensions hold "
                              f"more than {MAX_DIM} elements")
    expected = math.prod(shape) * dtype.itemsize  # Python ints: a shape like [2**62, 4] cannot overflow
    if len(tensor.data) != expected:
        raise InvalidArgument(f"{what}: shape {shorten(list(shape))} of {np.dtype(dtype).name} needs "
                              f"{expected} bytes, got {len(tensor.data)}")
    return np.frombuffer(tensor.data, dtype=dtype).reshape(shape)


_IMAGE_FORMATS = {common_pb2.IMAGE_FORMAT_PNG: "png", common_pb2.IMAGE_FORMAT_JPEG: "jpeg"}


def output_format(fmt: int) -> int:
    """Resolve IMAGE_FORMAT_UNSPECIFIED to PNG and reject unknown values."""
    if fmt == common_pb2.IMAGE_FORMAT_UNSPECIFIED:
        return common_pb2.IMAGE_FORMAT_PNG
    if fmt not in _IMAGE_FORMATS:
        raise InvalidArgument(f"format: unknown image format {fmt}; use IMAGE_FORMAT_PNG or IMAGE_FORMAT_JPEG")
    return fmt


def encode_image(pixels: np.ndarray, fmt: int = common_pb2.IMAGE_FORMAT_PNG) -> bytes:
    """(H, W, 3) uint8 -> image file bytes in the proto's format (PNG or JPEG)."""
    return images.encode(pixels, _IMAGE_FORMATS[output_format(fmt)])
