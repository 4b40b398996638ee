"""Plain Python values -> the gateway's request messages (shared by Client and AsyncClient).

Faces (FaceLike): Face.image(path or bytes), Face.seed(7), Face.latent_id("..."),
Face.latent([...floats]); or directly an int (a seed), bytes (an image file), a pathlib.Path
(an image file) or a str spec ("seed:7", "id:<latent id>", or an image file's path).

Image faces and photos take a fidelity (docs/inversion.md): "fast" (the encoder alone, milliseconds)
or "faithful" (the face optimised against the photo, seconds per face; answers carry an
InversionReport): Face.image("face.png", fidelity="faithful").

Edits (EditsLike): {"smile": 1.5, "interfacegan/yaw": -1} (a target with "/" is a direction
id), or a sequence of Edit / (target, strength) tuples; text edits with Edit.text("a big grin", 2).
"""
from __future__ import annotations

import array
import dataclasses
import os
import sys
from pathlib import Path
from typing import Iterable, Mapping, Sequence, Union

from facedit_client.v1 import common_pb2, gateway_pb2

FaceSource = gateway_pb2.FaceSource
FaceLike = Union[FaceSource, int, bytes, str, os.PathLike]
ImageLike = Union[bytes, str, os.PathLike]

METHODS: dict[str, int] = {name.removeprefix("METHOD_").lower(): value
                           for name, value in common_pb2.Method.items() if value != 0}
FORMATS: dict[str, int] = {"png": common_pb2.IMAGE_FORMAT_PNG, "jpeg": common_pb2.IMAGE_FORMAT_JPEG,
                           "jpg": common_pb2.IMAGE_FORMAT_JPEG}
TEXT_MODES: dict[str, int] = {"addition": common_pb2.TEXT_MODE_ADDITION, "averaging": common_pb2.TEXT_MODE_AVERAGING}
FIDELITIES: dict[str, int] = {"fast": common_pb2.FIDELITY_FAST, "faithful": common_pb2.FIDELITY_FAITHFUL}


def fidelity_enum(fidelity: str) -> int:
    """"fast" -> FIDELITY_FAST, "faithful" -> FIDELITY_FAITHFUL; anything else: ValueError."""
    if not isinstance(fidelity, str) or fidelity.lower() not in FIDELITIES:
        raise ValueError(f'fidelity must be "fast" (the encoder alone, milliseconds) or "faithful" (optimised '
                         f'against the face, seconds per face), got {fidelity!r}')
    return FIDELITIES[fidelity.lower()]


def is_faithful(request) -> bool:
    """Whether a request asks for a faithful inversion (its own fidelity, or an image face's): such a
    call takes seconds per face, and the clients give it a longer default deadline."""
    for field, value in request.ListFields():
        if field.name == "fidelity" and value == common_pb2.FIDELITY_FAITHFUL:
            return True
        if field.message_type is FaceSource.DESCRIPTOR:
            faces = value if field.is_repeated else [value]
            if any(f.HasField("image") and f.fidelity == common_pb2.FIDELITY_FAITHFUL for f in faces):
                return True
    return False


def read_image(image: ImageLike) -> bytes:
    """An image file's bytes: bytes as they are, a str or PathLike read from disk."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image)
    return Path(image).read_bytes()


class Face:
    """Builders of the face to edit (facedit.v1.FaceSource)."""

    @staticmethod
    def image(image: ImageLike, fidelity: str = "fast") -> FaceSource:
        """An image file of a face (PNG, JPEG, ...; at most 10 MiB, 4096x4096), its bytes or path.
        fidelity "fast": the encoder alone (milliseconds, a look-alike); "faithful": optimised against
        the face (seconds; the face's latent id then renders the person in later edits)."""
        return FaceSource(image=read_image(image), fidelity=fidelity_enum(fidelity))

    @staticmethod
    def seed(seed: int) -> FaceSource:
        """A generated face: z ~ N(0, I) from this seed."""
        return FaceSource(seed=int(seed))

    @staticmethod
    def latent_id(latent_id: str) -> FaceSource:
        """A latent cached by an earlier call (Edit, Encode, EditPhoto's faces; 1 hour after last use)."""
        return FaceSource(latent_id=latent_id)

    @staticmethod
    def latent(values: Sequence[float]) -> FaceSource:
        """A latent vector, shape (latent_dim,) float32 (ListAttributes tells latent_dim)."""
        return FaceSource(latent=to_tensor(values))

    @staticmethod
    def parse(spec: str, fidelity: str = "fast") -> FaceSource:
        """"seed:<n>", "id:<latent id>" or the path of an image file (read with `fidelity`)."""
        fidelity_enum(fidelity)
        kind, _, value = spec.partition(":")
        if kind == "seed" and value.lstrip("-").isdigit():
            return Face.seed(int(value))
        if kind == "id" and value:
            return Face.latent_id(value)
        path = Path(spec)
        if not path.is_file():
            raise ValueError(f"face {spec!r}: not seed:<n>, id:<latent id> or an image file")
        return Face.image(path, fidelity)


def as_face(face: FaceLike, fidelity: str | None = None) -> FaceSource:
    """Any FaceLike -> FaceSource (an int is a seed, bytes an image file, a str a Face.parse spec).
    fidelity ("fast", "faithful"): set on an image face (a FaceSource given is copied, not changed);
    None: as given (an image built here is "fast"); seeds and latents have none."""
    source = _as_face(face)
    if fidelity is None:
        return source
    value = fidelity_enum(fidelity)
    if source.HasField("image") and source.fidelity != value:
        source = FaceSource(image=source.image, fidelity=value)
    return source


def _as_face(face: FaceLike) -> FaceSource:
    if isinstance(face, FaceSource):
        return face
    if isinstance(face, bool):
        raise TypeError("a face is not a bool")
    if isinstance(face, int):
        return Face.seed(face)
    if isinstance(face, (bytes, bytearray, memoryview)):
        return Face.image(face)
    if isinstance(face, str):
        return Face.parse(face)
    if isinstance(face, os.PathLike):
        return Face.image(face)
    raise TypeError(f"a face is a FaceSource, int (seed), bytes, str or path; got {type(face).__name__}")


@dataclasses.dataclass(frozen=True)
class Edit:
    """One edit. target: an attribute ("smile", resolved with `method`, default the pack's) or a
    direction id ("interfacegan/smile", "custom/my_smile", "istrc/yaw"); strength: signed
    distance along the direction (its units and range: ListAttributes, docs/methods.md).
    Text edits: Edit.text(phrase, theta, mode)."""

    target: str
    strength: float = 1.0
    method: str | None = None
    is_text: bool = False
    text_mode: str = "addition"

    @classmethod
    def text(cls, phrase: str, theta: float = 1.0, mode: str = "addition") -> "Edit":
        """A words edit: a word or phrase (1-200 characters), theta may be negative;
        mode "addition" (z + theta w/|w|) or "averaging"."""
        if mode not in TEXT_MODES:
            raise ValueError(f"text mode must be one of {sorted(TEXT_MODES)}, got {mode!r}")
        return cls(phrase, theta, "words", True, mode)

    @classmethod
    def parse(cls, spec: str, method: str | None = None, text: bool = False, text_mode: str = "addition") -> "Edit":
        """"smile=1.5", "custom/my_smile=-1", "a big grin=2" -> Edit; no "=": strength 1."""
        target, sep, value = spec.rpartition("=")
        if not sep:
            target, value = spec, "1"
        try:
            strength = float(value)
        except ValueError:
            raise ValueError(f"edit {spec!r}: the strength after '=' must be a number") from None
        if not target.strip():
            raise ValueError(f"edit {spec!r}: expected <target>=<strength>")
        return cls.text(target, strength, text_mode) if text else cls(target, strength, method)

    def to_proto(self, default_method: str | None = None) -> common_pb2.EditOp:
        op = common_pb2.EditOp(strength=float(self.strength), method=method_enum(self.method or default_method))
        if self.is_text:
            op.text, op.text_mode = self.target, TEXT_MODES[self.text_mode]
        elif "/" in self.target:
            op.direction_id = self.target
        else:
            op.attribute = self.target
        return op


EditsLike = Union[Mapping[str, float], Iterable[Union[Edit, tuple]]]


def method_enum(method: str | None) -> int:
    """"interfacegan", "istrc", ... -> the Method enum value; None -> METHOD_UNSPECIFIED (0)."""
    if not method:
        return 0
    if method.lower() not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
    return METHODS[method.lower()]


def method_name(value: int) -> str:
    """A Method enum value -> "interfacegan", ...; 0 -> "default"."""
    return next((k for k, v in METHODS.items() if v == value), "default")


def format_enum(fmt: str) -> int:
    if fmt.lower() not in FORMATS:
        raise ValueError(f"image format must be png or jpeg, got {fmt!r}")
    return FORMATS[fmt.lower()]


def edit_ops(edits: EditsLike, method: str | None = None) -> list[common_pb2.EditOp]:
    """EditsLike -> EditOps; `method` applies to attribute edits that name none."""
    if isinstance(edits, Mapping):
        items: Iterable = edits.items()
    else:
        items = edits
    ops = []
    for item in items:
        edit = item if isinstance(item, Edit) else Edit(str(item[0]), float(item[1]))
        ops.append(edit.to_proto(None if edit.is_text else method))
    return ops


def to_tensor(values: Sequence[float], shape: Sequence[int] | None = None) -> common_pb2.Tensor:
    """Floats -> a float32 Tensor (little-endian); shape default (len(values),)."""
    data = array.array("f", values)
    if shape is not None and _prod(shape) != len(data):
        raise ValueError(f"{len(data)} values do not fill shape {tuple(shape)}")
    if sys.byteorder == "big":
        data.byteswap()
    return common_pb2.Tensor(dtype=common_pb2.DTYPE_FLOAT32, shape=list(shape or (len(data),)), data=data.tobytes())


def floats(tensor: common_pb2.Tensor) -> list[float]:
    """A float32 Tensor (e.g. EditResponse.latent, shape (latent_dim,)) -> its values, C order."""
    if tensor.dtype != common_pb2.DTYPE_FLOAT32:
        raise ValueError(f"not a float32 tensor (dtype {tensor.dtype})")
    data = array.array("f")
    data.frombytes(tensor.data)
    if sys.byteorder == "big":
        data.byteswap()
    return data.tolist()


def _prod(shape: Sequence[int]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


# ----- one request builder per RPC: (method name, request) -----

def edit_request(face: FaceLike, edits: EditsLike, keep: Sequence[str], method: str | None, pack: str, fmt: str,
                 return_original: bool, skip_scores: bool, replace: bool = False,
                 fidelity: str | None = None) -> gateway_pb2.EditRequest:
    return gateway_pb2.EditRequest(pack=pack, face=as_face(face, fidelity), edits=edit_ops(edits, method),
                                   keep=list(keep), format=format_enum(fmt), return_original=return_original,
                                   skip_scores=skip_scores, paste=paste_enum(replace))


def edit_photo_request(photo: ImageLike, edits: EditsLike, keep: Sequence[str], method: str | None, pack: str,
                       fmt: str, max_faces: int, replace: bool, return_crops: bool,
                       fidelity: str = "fast") -> gateway_pb2.EditPhotoRequest:
    return gateway_pb2.EditPhotoRequest(
        pack=pack, image=read_image(photo), edits=edit_ops(edits, method), keep=list(keep), format=format_enum(fmt),
        max_faces=max_faces, return_crops=return_crops, fidelity=fidelity_enum(fidelity), paste=paste_enum(replace))


def paste_enum(replace: bool) -> int:
    """How an edited face goes back into its photo: the rendered face (replace) or the edit's change."""
    return gateway_pb2.PASTE_MODE_REPLACE if replace else gateway_pb2.PASTE_MODE_DELTA


def sweep_request(face: FaceLike, target: str, start: float, stop: float, steps: int, keep: Sequence[str],
                  method: str | None, pack: str, fmt: str, fidelity: str | None = None) -> gateway_pb2.EditSweepRequest:
    return gateway_pb2.EditSweepRequest(pack=pack, face=as_face(face, fidelity),
                                        edit=Edit(target, 0.0, method).to_proto(), start=start, stop=stop,
                                        steps=steps, keep=list(keep), format=format_enum(fmt))


def encode_request(photo: ImageLike, return_reconstruction: bool, pack: str, fmt: str,
                   fidelity: str = "fast") -> gateway_pb2.EncodeRequest:
    return gateway_pb2.EncodeRequest(pack=pack, image=read_image(photo), return_reconstruction=return_reconstruction,
                                     format=format_enum(fmt), fidelity=fidelity_enum(fidelity))


def generate_request(seeds: Sequence[int], latents: Sequence[Sequence[float]] | None, pack: str,
                     fmt: str) -> gateway_pb2.GenerateRequest:
    request = gateway_pb2.GenerateRequest(pack=pack, seeds=[int(s) for s in seeds], format=format_enum(fmt))
    if latents:
        rows = [list(r) for r in latents]
        request.latents.CopyFrom(to_tensor([v for r in rows for v in r], (len(rows), len(rows[0]))))
    return request


def create_direction_request(name: str, positive: Sequence[ImageLike], negative: Sequence[ImageLike],
                             attribute: str, method: str | None, replace: bool,
                             pack: str) -> gateway_pb2.CreateDirectionRequest:
    return gateway_pb2.CreateDirectionRequest(
        pack=pack, name=name, positive_images=[read_image(p) for p in positive],
        negative_images=[read_image(n) for n in negative], attribute=attribute, replace=replace,
        method=method_enum(method))


def blend_request(faces: Sequence[FaceLike], t: float | None, weights: Sequence[float], return_inputs: bool,
                  pack: str, fmt: str, fidelity: str | None = None) -> gateway_pb2.BlendRequest:
    request = gateway_pb2.BlendRequest(pack=pack, faces=[as_face(f, fidelity) for f in faces], weights=list(weights),
                                       return_inputs=return_inputs, format=format_enum(fmt))
    if t is not None:
        request.t = t
    return request


def arithmetic_request(a: FaceLike, b: FaceLike, c: FaceLike, linear: bool, return_inputs: bool, pack: str,
                       fmt: str, fidelity: str | None = None) -> gateway_pb2.ArithmeticRequest:
    return gateway_pb2.ArithmeticRequest(pack=pack, a=as_face(a, fidelity), b=as_face(b, fidelity),
                                         c=as_face(c, fidelity), linear=linear, return_inputs=return_inputs,
                                         format=format_enum(fmt))
