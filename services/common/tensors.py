"""numpy arrays <-> facedit.v1.Tensor, with the checks every service needs."""
from __future__ import annotations

import numpy as np

from facedit.v1 import common_pb2
from services.common.errors import InvalidArgument

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
    if any(s < 0 for s in shape):
        raise InvalidArgument(f"{what}: negative dimension in shape {list(shape)}")
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(tensor.data) != expected:
        raise InvalidArgument(f"{what}: shape {list(shape)} of {np.dtype(dtype).name} needs "
                              f"{expected} bytes, got {len(tensor.data)}")
    return np.frombuffer(tensor.data, dtype=dtype).reshape(shape)


def check_latents(z: np.ndarray, latent_dim: int, what: str = "latent") -> np.ndarray:
    """Accept (D,) or (N, D) float32 finite latents; return (N, D) float32."""
    if z.dtype != np.float32:
        raise InvalidArgument(f"{what}: must be float32, got {z.dtype}")
    if z.ndim == 1:
        z = z[None]
    if z.ndim != 2 or z.shape[1] != latent_dim:
        raise InvalidArgument(f"{what}: expected length {latent_dim} (this pack's latent size), "
                              f"got shape {list(z.shape)}")
    if z.shape[0] == 0:
        raise InvalidArgument(f"{what}: no latents given")
    if not np.isfinite(z).all():
        raise InvalidArgument(f"{what}: contains NaN or infinity")
    return z
