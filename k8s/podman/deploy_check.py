"""Edits faces through a deployed gateway as a client from outside: TLS trusting the deployment's CA, a
bearer token of its generated tokens. Exit 0 when every check passes, 1 when one fails (each says why).

    .venv/bin/python k8s/podman/deploy_check.py --address 127.0.0.1:61050      (make deploy-test runs it)

Checks, each timed:
  attributes  ListAttributes: the pack and version of the checkout's manifest (model_store/<pack>), its
              latent size, the attribute edited below among the attributes
  edit        Edit of --faces random faces, each by seed (+strength, with the original), then by its
              cached latent id (-strength): PNGs at the pack's resolution, differing from the original;
              the same face both times (equal scores before); the attribute's score higher after
              +strength than after -strength for 3 in 4 faces, by --min-separation on average
  edit-photo  EditPhoto of a portrait (skimage's astronaut unless --photo): a face found, the photo
              returned at its size, changed inside the face's box and nowhere far outside it
  refusals    without a token and with a wrong one: UNAUTHENTICATED (ListAttributes and Edit); in
              plaintext: refused (no answer)
Pictures of the edits go to --out.
"""
from __future__ import annotations

import argparse
import io
import json
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for _path in (ROOT / "protos", ROOT):  # this checkout's code and stubs, not those of another install
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import grpc
import numpy as np
from PIL import Image

from facedit.v1 import gateway_pb2, gateway_pb2_grpc
from services.client import FaceditClient

DEFAULT_CA = "k8s/components/tls-files/generated/ca.crt"
DEFAULT_TOKENS = "k8s/components/secrets/generated/client-tokens.txt"
MIN_CHANGE = 0.5  # mean absolute difference in grey levels (0..255) that counts as a changed image


class CheckFailed(Exception):
    """A wrong answer: the message says what was expected and what came."""


def read_token(path: Path, client: str) -> str:
    """The token of `client` in a `name=token` file (k8s/generate-secrets.sh's client-tokens.txt)."""
    if not path.is_file():
        raise SystemExit(f"no tokens file {path}: k8s/generate-secrets.sh makes it (make deploy-test runs it)")
    tokens = {}
    for line in path.read_text().splitlines():
        name, sep, token = line.strip().partition("=")
        if sep and name and token:
            tokens[name] = token
    if client not in tokens:
        raise SystemExit(f"client {client!r} is not in {path} (it has: {', '.join(sorted(tokens)) or 'none'})")
    return tokens[client]


def read_manifest(model_store: Path, pack: str) -> dict:
    path = model_store / pack / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise SystemExit(f"cannot read the pack's manifest {path}: {err}") from None
    missing = [k for k in ("pack", "version", "resolution", "latent_dim") if k not in manifest]
    if missing:
        raise SystemExit(f"{path} has no {', '.join(missing)}")
    return manifest


def decode(data: bytes, what: str) -> np.ndarray:
    try:
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    except Exception as err:  # noqa: BLE001 - any decoding failure is the answer's fault
        raise CheckFailed(f"{what} ({len(data)} bytes) is not an image: {err}") from None


def mean_change(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def code_of(call: Callable[[], object]) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as err:
        return err.code()
    return grpc.StatusCode.OK


def check_attributes(client: FaceditClient, manifest: dict, attribute: str) -> str:
    resp = client.attributes(manifest["pack"])
    if (resp.pack.name, resp.pack.version) != (manifest["pack"], manifest["version"]):
        raise CheckFailed(f"the gateway serves {resp.pack.name} {resp.pack.version}, the checkout's manifest is "
                          f"{manifest['pack']} {manifest['version']} (pack image out of date? make images)")
    if resp.latent_dim != manifest["latent_dim"]:
        raise CheckFailed(f"latent_dim {resp.latent_dim}, the manifest says {manifest['latent_dim']}")
    if attribute not in resp.attributes:
        raise CheckFailed(f"no attribute {attribute!r} among {list(resp.attributes)}")
    return f"{resp.pack.name} {resp.pack.version}: {len(resp.attributes)} attributes, {len(resp.directions)} directions"


def check_edit(client: FaceditClient, manifest: dict, attribute: str, strength: float, seeds: list[int],
               min_separation: float, out: Path | None) -> str:
    """Each seed's face edited at +strength (by seed, with the original) and at -strength (by its cached
    latent id). Per face: PNGs at the pack's resolution, both edits changing the image, the same face both
    times. Over the faces (one face alone can move the wrong way: about 1 in 200 of digiface64's random
    faces does for smile): the score after +strength above the one after -strength for at least 3 in 4
    faces, and by min_separation on average."""
    res, pack = manifest["resolution"], manifest["pack"]
    rows, changes = [], []
    for seed in seeds:
        up = client.edit(client.face(seed=seed), [(attribute, strength)], pack=pack, return_original=True)
        if not up.latent_id:
            raise CheckFailed(f"the Edit of seed {seed} returned no latent id")
        down = client.edit(client.face(latent_id=up.latent_id), [(attribute, -strength)], pack=pack)
        original = decode(up.original, f"seed {seed}'s original")
        for sign, resp in (("+", up), ("-", down)):
            img = decode(resp.image, f"seed {seed}'s {sign}{strength:g} edit")
            if img.shape != (res, res, 3) or original.shape != (res, res, 3):
                raise CheckFailed(f"seed {seed}: images of {img.shape} and {original.shape}, the pack renders "
                                  f"({res}, {res}, 3)")
            changes.append(mean_change(img, original))
            if changes[-1] < MIN_CHANGE:
                raise CheckFailed(f"seed {seed}: the {sign}{strength:g} edit hardly differs from the original "
                                  f"({changes[-1]:.2f} grey levels)")
        if attribute not in up.scores_before or attribute not in down.scores_after:
            raise CheckFailed(f"no score of {attribute!r} in the answer ({sorted(up.scores_before)})")
        before, again = up.scores_before[attribute], down.scores_before[attribute]
        if abs(before - again) > 1e-3:
            raise CheckFailed(f"the face by latent id is not the face of seed {seed}: {attribute} {before:.4f} "
                              f"then {again:.4f} before editing")
        rows.append((seed, before, up.scores_after[attribute], down.scores_after[attribute]))
        if out is not None and seed == seeds[0]:
            out.mkdir(parents=True, exist_ok=True)
            for name, data in (("original", up.original), ("plus", up.image), ("minus", down.image)):
                (out / f"edit_seed{seed}_{name}.png").write_bytes(data)
    judge_scores(rows, attribute, strength, min_separation)
    seed, before, high, low = rows[0]
    return (f"{len(seeds)} faces, {res}x{res} PNGs changed by {min(changes):.1f}..{max(changes):.1f} grey levels; "
            f"seed {seed}: {attribute} {before:.3f} -> {high:.3f} (+{strength:g}) / {low:.3f} (-{strength:g}); "
            f"mean separation {np.mean([h - lo for _, _, h, lo in rows]):.3f}")


def judge_scores(rows: list[tuple[int, float, float, float]], attribute: str, strength: float,
                 min_separation: float) -> None:
    """rows: (seed, score before, after +strength, after -strength). CheckFailed unless the +strength score is
    above the -strength one for at least 3 in 4 faces and by min_separation on average."""
    wrong = [r for r in rows if r[2] <= r[3]]
    mean = float(np.mean([high - low for _, _, high, low in rows]))
    if len(wrong) * 4 > len(rows) or mean < min_separation:
        shown = "; ".join(f"seed {s}: {b:.3f} -> {h:.3f} / {lo:.3f}" for s, b, h, lo in (wrong or rows)[:4])
        raise CheckFailed(f"{attribute} does not follow the edits: {len(wrong)} of {len(rows)} faces score no higher "
                          f"at +{strength:g} than at -{strength:g}, mean separation {mean:.3f} (at least "
                          f"{min_separation} asked); {shown}")


def astronaut_png() -> bytes:
    from skimage import data

    buf = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buf, format="PNG")
    return buf.getvalue()


def far_from(boxes: list[list[int]], shape: tuple[int, int]) -> np.ndarray:
    """(h, w) mask: True more than a box's width / height away from every box (x0, y0, x1, y1)."""
    far = np.ones(shape, bool)
    for x0, y0, x1, y1 in boxes:
        bw, bh = x1 - x0, y1 - y0
        far[max(y0 - bh, 0):max(y1 + bh, 0), max(x0 - bw, 0):max(x1 + bw, 0)] = False
    return far


def check_photo(client: FaceditClient, manifest: dict, attribute: str, strength: float, photo: bytes,
                out: Path | None) -> str:
    resp = client.edit_photo(photo, [(attribute, strength)], pack=manifest["pack"])
    if not resp.faces:
        raise CheckFailed("EditPhoto found no face in the photo")
    before, after = decode(photo, "the photo"), decode(resp.image, "the edited photo")
    if after.shape != before.shape:
        raise CheckFailed(f"the edited photo is {after.shape}, the photo {before.shape}")
    boxes = [[round(v) for v in f.box] for f in resp.faces]
    x0, y0, x1, y1 = boxes[0]
    h, w = before.shape[:2]
    inside = (slice(max(y0, 0), min(y1, h)), slice(max(x0, 0), min(x1, w)))
    changed_inside = mean_change(after[inside], before[inside])
    if changed_inside < MIN_CHANGE:
        raise CheckFailed(f"the face's box {x0},{y0},{x1},{y1} hardly changed ({changed_inside:.2f} grey levels)")
    far = far_from(boxes, (h, w))
    moved = int((np.abs(after.astype(np.int16) - before.astype(np.int16)).max(axis=2)[far] > 2).sum())
    if moved:
        raise CheckFailed(f"{moved} pixels changed far from the faces (more than a box size away)")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "edit_photo.png").write_bytes(resp.image)
    return (f"{len(resp.faces)} face(s), box {x0},{y0},{x1},{y1} (score {resp.faces[0].score:.3f}) changed by "
            f"{changed_inside:.1f} grey levels, the rest of the {w}x{h} photo unchanged")


def check_refusals(address: str, ca: Path, server_name: str | None, attribute: str, timeout_s: float) -> str:
    def attributes(client):
        return lambda: client.attributes()

    def edit(client):
        return lambda: client.edit(client.face(seed=1), [(attribute, 1.0)], skip_scores=True)

    seen = []
    for label, token in (("without a token", None), ("with a wrong token", "not-a-token-" + "0" * 32)):
        client = FaceditClient(address, timeout_s=timeout_s, token=token, tls_ca=ca, tls_server_name=server_name)
        try:
            for rpc, call in (("ListAttributes", attributes(client)), ("Edit", edit(client))):
                code = code_of(call)
                if code != grpc.StatusCode.UNAUTHENTICATED:
                    raise CheckFailed(f"{rpc} {label} answered {code.name}, not UNAUTHENTICATED")
                seen.append(f"{rpc} {label}")
        finally:
            client.close()
    with grpc.insecure_channel(address) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        code = code_of(lambda: stub.ListAttributes(gateway_pb2.ListAttributesRequest(), timeout=timeout_s))
    if code == grpc.StatusCode.OK:
        raise CheckFailed("the gateway answered a plaintext call")
    return f"UNAUTHENTICATED: {', '.join(seen)}; plaintext: {code.name}"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--address", required=True, help="the gateway, host:port")
    p.add_argument("--ca", type=Path, default=ROOT / DEFAULT_CA, help="PEM of the CA of the gateway's certificate")
    p.add_argument("--server-name", default=None, help="name checked in the gateway's certificate (default: the "
                                                       "address's host; the generated one holds 127.0.0.1)")
    p.add_argument("--tokens", type=Path, default=ROOT / DEFAULT_TOKENS, help="name=token lines")
    p.add_argument("--client", default="app", help="whose token to send (needs the edit role)")
    p.add_argument("--pack", default="digiface64")
    p.add_argument("--model-store", type=Path, default=ROOT / "model_store",
                   help="where the pack's manifest.json is read (its version must be the one served)")
    p.add_argument("--attribute", default="smile")
    p.add_argument("--strength", type=float, default=2.0)
    p.add_argument("--min-separation", type=float, default=0.1,
                   help="the least mean difference of the attribute's score between +strength and -strength")
    p.add_argument("--faces", type=int, default=8, help="random faces edited (seeds --seed, --seed + 1, ...)")
    p.add_argument("--seed", type=int, default=None, help="the first face's seed (default: random, printed)")
    p.add_argument("--photo", type=Path, default=None, help="a portrait for EditPhoto (default: skimage's astronaut)")
    p.add_argument("--timeout", type=float, default=60.0, help="deadline of each call, seconds")
    p.add_argument("--out", type=Path, default=None, help="write the edited pictures here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.strength <= 0:
        raise SystemExit(f"--strength must be positive (the check edits at +strength and -strength), "
                         f"got {args.strength}")
    if not 1 <= args.faces <= 100:
        raise SystemExit(f"--faces must be 1..100, got {args.faces}")
    if not args.ca.is_file():
        raise SystemExit(f"no CA certificate {args.ca}: k8s/generate-secrets.sh makes it")
    token = read_token(args.tokens, args.client)
    manifest = read_manifest(args.model_store, args.pack)
    photo = args.photo.read_bytes() if args.photo else astronaut_png()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31 - args.faces)
    seeds = list(range(seed, seed + args.faces))
    client = FaceditClient(args.address, timeout_s=args.timeout, token=token, tls_ca=args.ca,
                           tls_server_name=args.server_name)
    checks = [
        ("attributes", lambda: check_attributes(client, manifest, args.attribute)),
        ("edit", lambda: check_edit(client, manifest, args.attribute, args.strength, seeds,
                                    args.min_separation, args.out)),
        ("edit-photo", lambda: check_photo(client, manifest, args.attribute, args.strength, photo, args.out)),
        ("refusals", lambda: check_refusals(args.address, args.ca, args.server_name, args.attribute, args.timeout)),
    ]
    print(f"deploy check of {args.address} (TLS, CA {args.ca}, token of {args.client!r}), seed {seed}", flush=True)
    failed, t_all = [], time.monotonic()
    try:
        for name, check in checks:
            t0 = time.monotonic()
            try:
                detail, ok = check(), True
            except CheckFailed as err:
                detail, ok = str(err), False
            except grpc.RpcError as err:
                detail, ok = f"{err.code().name}: {err.details()}", False
            print(f"  {'ok  ' if ok else 'FAIL'} {name:<11} {time.monotonic() - t0:6.2f} s  {detail}", flush=True)
            if not ok:
                failed.append(name)
    finally:
        client.close()
    total = time.monotonic() - t_all
    if failed:
        print(f"deploy check FAILED: {', '.join(failed)} ({len(checks) - len(failed)} of {len(checks)} passed, "
              f"{total:.1f} s)", flush=True)
        return 1
    print(f"deploy check passed: {len(checks)} checks in {total:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
