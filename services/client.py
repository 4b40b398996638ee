"""Python client and command line for the facedit gateway.

    python -m services.client --address 127.0.0.1:50050 attributes
    python -m services.client edit --seed 7 --edit beard=3 --edit age=-2 --keep eyeglasses --out edited.png
    python -m services.client edit --image face.png --edit eyeglasses=3 --out edited.png
    python -m services.client sweep --seed 7 --attribute yaw --start -3 --stop 3 --steps 7 --out sweep.png
    python -m services.client create-direction --positive a.png --positive b.png --negative c.png --name my_smile
    python -m services.client edit --seed 7 --edit custom/my_smile=2 --out smiled.png
    python -m services.client edit --seed 7 --text "a big grin"=2 --text spectacles=2.5 --out words.png
    python -m services.client edit --seed 7 --text old=1 --text-mode averaging --out averaged.png
    python -m services.client edit --seed 7 --edit smile=1 --method istrc --out istrc.png
    python -m services.client create-direction --method istrc --positive a.png --negative c.png --name my_beard
    python -m services.client blend --face seed:1 --face face.png --t 0.3 --out blend.png
    python -m services.client blend --face seed:1 --face seed:2 --face seed:3 --out mean.png
    python -m services.client arithmetic --a seed:1 --b seed:2 --c seed:3 --out sum.png

Faces of blend / arithmetic: `seed:<n>`, `id:<latent id>` or an image file path.

A secured gateway (docs/security.md): --token (or FACEDIT_TOKEN) sends `authorization: Bearer
<token>`; --tls-ca ca.pem (FACEDIT_TLS_CA) speaks TLS trusting that CA, --tls the system's CAs.

    FACEDIT_TOKEN=... python -m services.client --address api.example:50050 --tls-ca ca.pem attributes
"""
from __future__ import annotations

import argparse
import io
import os
import sys
from pathlib import Path

import grpc
import numpy as np
from PIL import Image

from facedit.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc
from services.common import methods
from services.common.security import BearerToken, is_loopback
from services.common.tensors import to_tensor


class FaceditClient:
    """A thin, typed wrapper of facedit.v1.Gateway; every call has a deadline (`timeout_s`).

    token: sent as `authorization: Bearer <token>` with every call; tls_ca: PEM file of the CA that
    signed the gateway's certificate (TLS); tls: TLS with the system's CAs; tls_server_name: the
    name to check in the certificate instead of the address's host. A token is never sent in
    plaintext beyond loopback (ValueError)."""

    def __init__(self, address: str = "127.0.0.1:50050", timeout_s: float = 30.0, token: str | None = None,
                 tls_ca: str | os.PathLike | None = None, tls: bool = False, tls_server_name: str | None = None):
        options = [("grpc.max_receive_message_length", 64 << 20)]
        if tls_server_name:
            options.append(("grpc.ssl_target_name_override", tls_server_name))
        if tls_ca or tls:
            root = Path(tls_ca).read_bytes() if tls_ca else None
            channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates=root), options)
        else:
            if token and not is_loopback(address.rsplit(":", 1)[0]):
                raise ValueError(f"refusing to send a token in plaintext to {address}: give tls_ca (--tls-ca) or "
                                 f"tls=True (--tls)")
            channel = grpc.insecure_channel(address, options=options)
        self.channel = channel
        self.stub = gateway_pb2_grpc.GatewayStub(grpc.intercept_channel(channel, BearerToken(token))
                                                 if token else channel)
        self.timeout_s = timeout_s

    def close(self) -> None:
        self.channel.close()

    @staticmethod
    def face(image: bytes | None = None, seed: int | None = None, latent_id: str | None = None,
             latent: np.ndarray | None = None) -> gateway_pb2.FaceSource:
        if image is not None:
            return gateway_pb2.FaceSource(image=image)
        if seed is not None:
            return gateway_pb2.FaceSource(seed=seed)
        if latent_id is not None:
            return gateway_pb2.FaceSource(latent_id=latent_id)
        if latent is not None:
            return gateway_pb2.FaceSource(latent=to_tensor(np.asarray(latent, np.float32)))
        raise ValueError("give one of image, seed, latent_id or latent")

    @staticmethod
    def edit_op(target: str, strength: float, method: str | None = None) -> common_pb2.EditOp:
        """'smile' -> by attribute; 'interfacegan/smile' -> by direction id."""
        op = common_pb2.EditOp(strength=strength, method=methods.ENUMS[method] if method else 0)
        if "/" in target:
            op.direction_id = target
        else:
            op.attribute = target
        return op

    @staticmethod
    def text_op(text: str, theta: float, mode: str = "addition") -> common_pb2.EditOp:
        """A words edit: a word or phrase with theta (= strength, negative allowed); mode addition or averaging."""
        modes = {"addition": common_pb2.TEXT_MODE_ADDITION, "averaging": common_pb2.TEXT_MODE_AVERAGING}
        if mode not in modes:
            raise ValueError(f"text mode must be one of {sorted(modes)}, got {mode!r}")
        return common_pb2.EditOp(text=text, strength=theta, method=common_pb2.METHOD_WORDS, text_mode=modes[mode])

    def edit(self, face: gateway_pb2.FaceSource, edits: list[tuple[str, float]], keep: list[str] = (),
             pack: str = "", method: str | None = None, return_original: bool = False,
             texts: list[tuple[str, float]] = (), text_mode: str = "addition",
             skip_scores: bool = False, replace: bool = False) -> gateway_pb2.EditResponse:
        """edits: (attribute or direction id, strength); texts: (word or phrase, theta).
        skip_scores: the edited image only (no classifier scores, no original unless return_original).
        replace: a face from a photo goes back into it as the rendered face (not the edit's change)."""
        ops = [self.edit_op(t, s, method) for t, s in edits] + [self.text_op(t, s, text_mode) for t, s in texts]
        return self.stub.Edit(gateway_pb2.EditRequest(
            pack=pack, face=face, edits=ops, keep=list(keep), return_original=return_original,
            skip_scores=skip_scores, paste=gateway_pb2.PASTE_MODE_REPLACE if replace else gateway_pb2.PASTE_MODE_DELTA),
            timeout=self.timeout_s)

    def sweep(self, face: gateway_pb2.FaceSource, attribute: str, start: float, stop: float, steps: int,
              keep: list[str] = (), pack: str = "") -> list[gateway_pb2.SweepFrame]:
        return list(self.stub.EditSweep(gateway_pb2.EditSweepRequest(
            pack=pack, face=face, edit=self.edit_op(attribute, 0.0), start=start, stop=stop, steps=steps,
            keep=list(keep)), timeout=self.timeout_s))

    def encode(self, image: bytes, pack: str = "", reconstruction: bool = False) -> gateway_pb2.EncodeResponse:
        return self.stub.Encode(gateway_pb2.EncodeRequest(pack=pack, image=image,
                                                          return_reconstruction=reconstruction),
                                timeout=self.timeout_s)

    def generate(self, seeds: list[int], pack: str = "") -> gateway_pb2.GenerateResponse:
        return self.stub.Generate(gateway_pb2.GenerateRequest(pack=pack, seeds=seeds), timeout=self.timeout_s)

    def attributes(self, pack: str = "") -> gateway_pb2.ListAttributesResponse:
        return self.stub.ListAttributes(gateway_pb2.ListAttributesRequest(pack=pack), timeout=self.timeout_s)

    def create_direction(self, name: str, positive_images: list[bytes], negative_images: list[bytes],
                         attribute: str = "", pack: str = "", replace: bool = False, method: str | None = None
                         ) -> gateway_pb2.CreateDirectionResponse:
        """Reference images with / without an attribute -> direction `custom/<name>`, usable at once
        in `edit` (target "custom/<name>"). method None / "crg": in the latent; "istrc": on FaceNet
        embeddings."""
        return self.stub.CreateDirection(gateway_pb2.CreateDirectionRequest(
            pack=pack, name=name, positive_images=list(positive_images), negative_images=list(negative_images),
            attribute=attribute, replace=replace, method=methods.ENUMS[method] if method else 0),
            timeout=self.timeout_s)


    def edit_photo(self, image: bytes, edits: list[tuple[str, float]], keep: list[str] = (), pack: str = "",
                   method: str | None = None, max_faces: int = 0, replace: bool = False,
                   return_crops: bool = False, fmt: int = common_pb2.IMAGE_FORMAT_PNG, faithful: bool = False
                   ) -> gateway_pb2.EditPhotoResponse:
        """Every face of a photo edited and blended back; `replace` pastes the rendered face instead
        of adding the edit's change to the photo; `faithful`: fidelity FAITHFUL (seconds per face)."""
        return self.stub.EditPhoto(gateway_pb2.EditPhotoRequest(
            pack=pack, image=image, edits=[self.edit_op(t, s, method) for t, s in edits], keep=list(keep),
            format=fmt, max_faces=max_faces, return_crops=return_crops,
            paste=gateway_pb2.PASTE_MODE_REPLACE if replace else gateway_pb2.PASTE_MODE_DELTA,
            fidelity=common_pb2.FIDELITY_FAITHFUL if faithful else common_pb2.FIDELITY_FAST),
            timeout=self.timeout_s)

    def blend(self, faces: list[gateway_pb2.FaceSource], t: float | None = None, weights: list[float] = (),
              pack: str = "", return_inputs: bool = False) -> gateway_pb2.IstrcFaceResponse:
        """ISTRC: slerp of two faces at t in [0, 1], or the spherical (weighted) mean of 2..16 faces."""
        request = gateway_pb2.BlendRequest(pack=pack, faces=list(faces), weights=list(weights),
                                           return_inputs=return_inputs)
        if t is not None:
            request.t = t
        return self.stub.Blend(request, timeout=self.timeout_s)

    def arithmetic(self, a: gateway_pb2.FaceSource, b: gateway_pb2.FaceSource, c: gateway_pb2.FaceSource,
                   linear: bool = False, pack: str = "", return_inputs: bool = False) -> gateway_pb2.IstrcFaceResponse:
        """ISTRC: a - b + c in FaceNet embedding space."""
        return self.stub.Arithmetic(gateway_pb2.ArithmeticRequest(pack=pack, a=a, b=b, c=c, linear=linear,
                                                                  return_inputs=return_inputs),
                                    timeout=self.timeout_s)


def parse_face(spec: str) -> gateway_pb2.FaceSource:
    """'seed:7', 'id:<latent id>' or an image file path -> FaceSource."""
    kind, _, value = spec.partition(":")
    if kind == "seed" and value.isdigit():
        return FaceditClient.face(seed=int(value))
    if kind == "id" and value:
        return FaceditClient.face(latent_id=value)
    path = Path(spec)
    if not path.is_file():
        raise SystemExit(f"face {spec!r}: not seed:<n>, id:<latent id> or an image file")
    return FaceditClient.face(image=path.read_bytes())


def hstack_png(pngs: list[bytes], scale: int = 1) -> Image.Image:
    frames = [Image.open(io.BytesIO(p)).convert("RGB") for p in pngs]
    w, h = frames[0].size
    out = Image.new("RGB", (w * len(frames), h))
    for i, f in enumerate(frames):
        out.paste(f, (i * w, 0))
    return out.resize((out.width * scale, out.height * scale), Image.Resampling.NEAREST) if scale > 1 else out


def _target_strength(arg: str) -> tuple[str, float]:
    """'smile=1.5' or 'a big grin=-1' -> (target, strength); no '=<number>' -> strength 1."""
    target, sep, strength = arg.rpartition("=")
    try:
        return (target, float(strength)) if sep else (arg, 1.0)
    except ValueError:
        return arg, 1.0


def _face_from_args(args) -> gateway_pb2.FaceSource:
    if args.image:
        return FaceditClient.face(image=Path(args.image).read_bytes())
    if args.latent_id:
        return FaceditClient.face(latent_id=args.latent_id)
    return FaceditClient.face(seed=args.seed)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m services.client", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--address", default="127.0.0.1:50050")
    p.add_argument("--pack", default="")
    p.add_argument("--timeout", type=float, default=30.0, help="deadline of each call, seconds")
    p.add_argument("--token", default=os.environ.get("FACEDIT_TOKEN", ""),
                   help="bearer token of a secured gateway (default: FACEDIT_TOKEN; prefer the variable, "
                        "a flag shows in the process list)")
    p.add_argument("--tls-ca", default=os.environ.get("FACEDIT_TLS_CA", ""),
                   help="PEM file of the CA of the gateway's certificate: connect with TLS (default: FACEDIT_TLS_CA)")
    p.add_argument("--tls", action="store_true", help="connect with TLS, trusting the system's CAs")
    p.add_argument("--tls-server-name", default="", help="name to check in the gateway's certificate")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("attributes", help="list the pack's attributes and directions")
    for name in ("edit", "sweep"):
        s = sub.add_parser(name)
        src = s.add_mutually_exclusive_group(required=True)
        src.add_argument("--image", help="a face photo (PNG/JPEG)")
        src.add_argument("--seed", type=int)
        src.add_argument("--latent-id")
        s.add_argument("--keep", action="append", default=[], help="attribute to keep fixed (repeatable)")
        s.add_argument("--out", default=f"{name}.png")
        s.add_argument("--scale", type=int, default=4, help="nearest-neighbour upscaling of the saved picture")
    edit = sub.choices["edit"]
    edit.add_argument("--edit", action="append", default=[], help="attribute=strength (repeatable)")
    edit.add_argument("--text", action="append", default=[],
                      help='a word or phrase with theta, e.g. "a big grin"=1.5 (repeatable; words method)')
    edit.add_argument("--text-mode", choices=["addition", "averaging"], default="addition",
                      help="how text edits move the latent (default addition: z + theta w/|w|)")
    edit.add_argument("--method", choices=sorted(methods.ENUMS))
    edit.add_argument("--skip-scores", action="store_true",
                      help="faster: only the edited image (no classifier scores, no original beside it)")
    sweep = sub.choices["sweep"]
    sweep.add_argument("--attribute", required=True)
    sweep.add_argument("--start", type=float, default=-3.0)
    sweep.add_argument("--stop", type=float, default=3.0)
    sweep.add_argument("--steps", type=int, default=7)
    create = sub.add_parser("create-direction", help="a custom direction from your own reference images")
    create.add_argument("--name", required=True, help="the direction becomes custom/<name> ([a-z0-9_-], 1-40)")
    create.add_argument("--positive", action="append", required=True,
                        help="an image with the attribute (repeatable, 1-32)")
    create.add_argument("--negative", action="append", required=True,
                        help="an image without the attribute (repeatable, 1-32)")
    create.add_argument("--attribute", default="", help="optional label of what it edits (default: the name)")
    create.add_argument("--replace", action="store_true", help="overwrite an existing custom/<name>")
    create.add_argument("--method", choices=["crg", "istrc"], default=None,
                        help="crg (default): a latent direction; istrc: on FaceNet embeddings (packs with ISTRC)")
    photo = sub.add_parser("edit-photo", help="edit every face of a photo of any size and blend it back")
    photo.add_argument("--image", required=True, help="a photo (PNG/JPEG), any size up to 4096x4096")
    photo.add_argument("--edit", action="append", required=True, help="attribute=strength (repeatable)")
    photo.add_argument("--keep", action="append", default=[], help="attribute to keep fixed (repeatable)")
    photo.add_argument("--method", choices=sorted(methods.ENUMS))
    photo.add_argument("--max-faces", type=int, default=0, help="0: the service's limit (16)")
    photo.add_argument("--replace", action="store_true", help="paste the rendered face instead of the change")
    photo.add_argument("--out", default="edited_photo.png")
    blend = sub.add_parser("blend", help="ISTRC: slerp two faces, or average several, in FaceNet space")
    blend.add_argument("--face", action="append", required=True, help="seed:<n>, id:<latent id> or a file (2-16)")
    blend.add_argument("--t", type=float, help="two faces: position 0..1 (default 0.5)")
    blend.add_argument("--weight", type=float, action="append", default=[], help="one per face (weighted mean)")
    arith = sub.add_parser("arithmetic", help="ISTRC: a - b + c in FaceNet space")
    for name in ("a", "b", "c"):
        arith.add_argument(f"--{name}", required=True, help="seed:<n>, id:<latent id> or a file")
    arith.add_argument("--linear", action="store_true", help="renormalised linear a - b + c (default: spherical)")
    for s in (blend, arith):
        s.add_argument("--out", default=f"{s.prog.split()[-1]}.png")
        s.add_argument("--scale", type=int, default=4, help="nearest-neighbour upscaling of the saved picture")
    args = p.parse_args(argv)

    try:
        client = FaceditClient(args.address, args.timeout, args.token or None, args.tls_ca or None, args.tls,
                               args.tls_server_name or None)
    except (ValueError, OSError) as err:
        raise SystemExit(f"error: {err}")
    try:
        if args.command == "attributes":
            resp = client.attributes(args.pack)
            print(f"pack {resp.pack.name} {resp.pack.version}, latent {resp.latent_dim}")
            for d in resp.directions:
                acc = d.metrics.get("validation_accuracy")
                print(f"  {d.id:28s} recommended {d.strength_min:+.2f}..{d.strength_max:+.2f}  "
                      f"limit {d.strength_limit:g}" + ("" if acc is None else f"  val.acc {acc:.3f}")
                      + f"  {d.space} ({d.dim}-d)")
        elif args.command == "edit":
            if not args.edit and not args.text:
                p.error("edit: give at least one --edit or --text")
            edits = [_target_strength(e) for e in args.edit]
            texts = [_target_strength(t) for t in args.text]
            resp = client.edit(_face_from_args(args), edits, args.keep, args.pack, args.method,
                               return_original=not args.skip_scores, texts=texts, text_mode=args.text_mode,
                               skip_scores=args.skip_scores)
            hstack_png([resp.original, resp.image] if resp.original else [resp.image], args.scale).save(args.out)
            for q in resp.quality:
                scores = "" if args.skip_scores else f", score {q.score_before:.3f} -> {q.score_after:.3f}"
                print(f"{q.direction_id}: strength {q.strength:+.2f}{scores}")
            print(f"latent_id {resp.latent_id}; wrote {args.out} "
                  f"({'edited' if args.skip_scores else 'original | edited'})")
        elif args.command == "sweep":
            frames = client.sweep(_face_from_args(args), args.attribute, args.start, args.stop, args.steps,
                                  args.keep, args.pack)
            hstack_png([f.image for f in frames], args.scale).save(args.out)
            print(f"{len(frames)} frames, strengths {[round(f.strength, 2) for f in frames]}; wrote {args.out}")
        elif args.command == "edit-photo":
            resp = client.edit_photo(Path(args.image).read_bytes(), [_target_strength(e) for e in args.edit], args.keep, args.pack,
                                     args.method, args.max_faces, args.replace)
            Path(args.out).write_bytes(resp.image)
            for f in resp.faces:
                print(f"face at {[round(v) for v in f.box]} (score {f.score:.3f}) latent_id {f.latent_id}")
            for q in resp.quality:
                print(f"{q.direction_id}: strength {q.strength:+.2f}, mean score {q.score_before:.3f} -> "
                      f"{q.score_after:.3f}")
            print(f"wrote {args.out}")
        elif args.command == "create-direction":
            resp = client.create_direction(args.name, [Path(f).read_bytes() for f in args.positive],
                                           [Path(f).read_bytes() for f in args.negative],
                                           args.attribute, args.pack, args.replace, args.method)
            d, pos, neg = resp.direction, resp.positive, resp.negative
            print(f"{d.id} in pack {d.pack.name} {d.pack.version}: recommended {d.strength_min:+.2f}.."
                  f"{d.strength_max:+.2f}, limit {d.strength_limit:g}")
            print(f"  projections: positive {pos.mean:+.3f} ± {pos.std:.3f} (n={pos.count}), "
                  f"negative {neg.mean:+.3f} ± {neg.std:.3f} (n={neg.count})")
            print(f"  use it: edit --seed 7 --edit {d.id}=<strength>")
        elif args.command in ("blend", "arithmetic"):
            if args.command == "blend":
                resp = client.blend([parse_face(f) for f in args.face], args.t, args.weight, args.pack, True)
            else:
                resp = client.arithmetic(parse_face(args.a), parse_face(args.b), parse_face(args.c), args.linear,
                                         args.pack, True)
            hstack_png([*resp.inputs, resp.image], args.scale).save(args.out)
            print(f"angles to the inputs (radians): {[round(a, 3) for a in resp.angles]}; latent_id {resp.latent_id}")
            print(f"wrote {args.out} (inputs through the ISTRC circle | result)")
    except grpc.RpcError as err:
        print(f"error: {err.code().name}: {err.details()}", file=sys.stderr)
        raise SystemExit(1)
    finally:
        client.close()


if __name__ == "__main__":
    main()
