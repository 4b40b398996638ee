"""Gateway: the public facedit.v1.Gateway API.

Orchestrates encoder -> directions -> generator (-> encoder for scores), caches
latents in Redis, validates input, and gives every downstream call a deadline:
min(the hop timeout, what is left of the caller's deadline, or of
--default-deadline-s when the caller set none). Compose answers are remembered while the
registry is unchanged (compose_memo.py), and concurrent Edits' encode / generate / score
calls share one RPC per hop (merged.py).

    python -m services.gateway.server --port 50050 --encoder 127.0.0.1:50051 \
        --directions 127.0.0.1:50052 --generator 127.0.0.1:50053 --redis-url redis://...
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import hashlib
import json
import logging
import threading
import time
from concurrent.futures import Future

import numpy as np

from facedit.v1 import (
    common_pb2,
    directions_pb2,
    encoder_pb2,
    gateway_pb2,
    gateway_pb2_grpc,
    generator_pb2,
)
from facedit_core import images, latents, reference
from facedit_core.errors import FaceditError, FailedPrecondition, InvalidArgument
from facedit_core.records import FACENET_SPACE, LATENT_SPACE, NAME_PATTERN, custom_id
from services.common import channels, config, deadlines, metrics, security
from services.common import readiness as readiness_checks
from services.common.redis_server import connect
from services.common.server import Service, service_main
from services.common.tensors import encode_image, from_tensor, output_format, to_tensor
from services.common.tracing import Tracing
from services.gateway.cache import DEFAULT_PHOTO_CACHE_MB, LatentCache, PhotoCache, PhotoPlace
from services.gateway.compose_memo import ComposeMemo
from services.gateway.downstream import Budget, Downstream
from services.gateway.edits import apply_composed, pose_warnings, quality
from services.gateway.istrc import IstrcRpcs
from services.gateway.merged import MergedHops
from services.gateway.photos import PhotoRpcs, photo_face

MAX_GENERATE = 64
MAX_REFERENCE_IMAGES = 32  # per set (positive, negative) of CreateDirection
DEFAULT_STRENGTH_LIMIT = 10.0  # for custom directions of a pack that lists no limit
MAX_SWEEP_STEPS = 64
PACK_INFO_TTL_S = 10.0
ACCESS = {"*": "edit", "/facedit.v1.Gateway/CreateDirection": "create"}  # role per RPC (docs/security.md)
CRG_REFERENCE_TEXTS = {  # CreateDirection's record texts (provenance, strength meaning) per method
    "method": "CRG: normalised mean of the encoded positive images minus that of the negative images "
              "(eq. 3; one of each = the paper's single reference pair)",
    "encoder": "encoder.onnx of pack {pack} {version}",
    "projections": "the given images themselves (in-sample)",
    "strength_meaning": reference.STRENGTH_MEANING}
ISTRC_REFERENCE_TEXTS = {
    "method": "ISTRC: normalised mean FaceNet embedding of the positive images minus that of the negative "
              "images, walked on the unit sphere like the pack's istrc/<attribute> directions",
    "encoder": "FaceNet of pack {pack} {version}",
    "projections": "latitudes asin(n . e) of the given images themselves (in-sample), radians",
    "strength_meaning": "signed path length on the unit sphere of FaceNet embeddings, in radians: |s| / step "
                        "constant-length steps along the direction (tangent to the sphere), renormalised after "
                        "each; s > 0 moves towards the positive images, s < 0 away"}


@dataclasses.dataclass(frozen=True)
class Source:
    """A request's face as a latent, and where it came from."""
    z: np.ndarray                    # (D,)
    latent_id: str | None = None     # its id in the latent cache; None: not cached yet
    grey: bool = False               # from a greyscale image: renderings are returned grey
    place: PhotoPlace | None = None  # where the face is in its photo (a face found in a photo)
    photo_id: str | None = None      # that photo in the photo cache (a cached face), or None
    photo_file: bytes | None = None  # that photo's file (an image sent with this request), or None
    modulation: np.ndarray | None = None  # (M,) float32: its generator modulation (faithful inversion)
    inversion: common_pb2.InversionReport | None = None  # the faithful inversion that made it (this request)


def image_field(err: FaceditError, field: str, index: bool = False) -> FaceditError:
    """The encoder's INVALID_ARGUMENT about `images[i]` as one about the request's `field` (`field[i]` with
    index, for a repeated field)."""
    message = str(err)
    if err.status == "INVALID_ARGUMENT" and message.startswith("images["):
        rest = message[len("images"):] if index else message[message.index("]") + 1:]
        return FaceditError(field + rest, err.status)
    return err


class GatewayServicer(IstrcRpcs, PhotoRpcs, gateway_pb2_grpc.GatewayServicer):
    def __init__(self, down: Downstream, cache: LatentCache, default_pack: str, default_deadline_s: float,
                 memo: ComposeMemo | None = None, merge_max_batch: int = 0, merge_workers: int = 2,
                 photos: PhotoCache | None = None):
        """memo: remembered Compose answers (it must read the registry's Redis); None = off.
        merge_max_batch: concurrent Edits' encode / generate / score calls merged into one RPC of up to
        this many Edits (services/gateway/merged.py); 0 = one RPC per Edit. merge_workers: merged RPCs
        of a hop in flight at once. photos: the photos that cached faces came from (default: in the
        latent cache's Redis, with its TTL, at most DEFAULT_PHOTO_CACHE_MB)."""
        self.down, self.cache = down, cache
        self.photos = photos if photos is not None else PhotoCache(cache.r, cache.ttl_s)
        self.memo = memo if memo is not None else ComposeMemo(cache.r, size=0)
        self.merged = MergedHops(self._call_many, merge_max_batch, merge_workers) if merge_max_batch else None
        self.default_pack, self.default_deadline_s = default_pack, default_deadline_s
        self._pack_info: dict[str, tuple[float, directions_pb2.ListDirectionsResponse]] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        """Stop the merged-call workers and the aside threads (after the server stopped)."""
        if self.merged is not None:
            self.merged.close()
        self.down.close()

    # -- helpers ---------------------------------------------------------------
    def _budget(self, context) -> Budget:
        return Budget(context, self.default_deadline_s)

    def _pack(self, name: str, budget: Budget, fresh: bool = False) -> directions_pb2.ListDirectionsResponse:
        """The pack's attributes, version, latent size and directions (cached for a few seconds;
        `fresh` reads them again)."""
        name = name or self.default_pack
        with self._lock:
            hit = self._pack_info.get(name)
        if hit and not fresh and time.monotonic() - hit[0] < PACK_INFO_TTL_S:
            return hit[1]
        info = self.down.call("directions", self.down.directions.ListDirections,
                              directions_pb2.ListDirectionsRequest(pack=name), budget)
        with self._lock:
            self._pack_info[name] = (time.monotonic(), info)
        return info

    def _face(self, face: gateway_pb2.FaceSource, info, budget: Budget) -> tuple[np.ndarray, str]:
        """The face source -> (z (D,), latent id in the cache)."""
        source = self._source(face, info, budget)
        return source.z, source.latent_id or self._remember(info.pack.name, source)

    def _remember(self, pack: str, source: Source) -> str:
        """Cache a new face's latent (with its photo, if it came from one); returns its latent id."""
        photo_id = source.photo_id
        if photo_id is None and source.photo_file is not None:
            photo_id = self.photos.put(source.photo_file)
        return self.cache.put(pack, source.z, source.grey, photo_id, source.place, source.modulation)

    def _source(self, face: gateway_pb2.FaceSource, info, budget: Budget) -> Source:
        """The face source -> its latent and where it came from (latent_id None: not cached yet). An image on
        a pack with an alignment template is a photo: its largest face is found, aligned and encoded."""
        kind = face.WhichOneof("source")
        pack, dim = info.pack.name, info.latent_dim
        if kind is None:
            raise InvalidArgument("face: set one of image, latent_id, latent or seed")
        if kind == "latent_id":
            cached = self.cache.get_face(face.latent_id, pack)
            return Source(latents.check(cached.z, dim, "cached latent")[0], face.latent_id, cached.grey,
                          cached.place, cached.photo_id, modulation=cached.modulation)
        if kind == "image":
            if not face.image:
                raise InvalidArgument("image: empty; send the bytes of a PNG or JPEG file")
            faithful = face.fidelity == common_pb2.FIDELITY_FAITHFUL
            modulation = inversion = None
            try:
                if faithful:  # seconds: one call of its own, never merged with other Edits'
                    z, found, grey, modulation, inversion = self._encode([face.image], pack, budget, faithful)[0]
                else:
                    z, found, grey = self._edit_call("encoder", pack, face.image, budget)
            except FaceditError as err:
                raise image_field(err, "image") from None
            if found is None:
                return Source(z, grey=grey, modulation=modulation, inversion=inversion)
            return Source(z, grey=grey, place=PhotoPlace.from_detected(found), photo_file=face.image,
                          modulation=modulation, inversion=inversion)
        if kind == "latent":
            return Source(latents.check(from_tensor(face.latent, "latent"), dim)[0])
        return Source(latents.from_seed(face.seed, dim))

    def _call_many(self, hop: str, pack: str):
        """The merged form of an Edit's call to `hop` for `pack`: (items, deadline) -> one result per item.
        encoder: image files -> (z (D,), the face found in it or None, grey); generator: z (n, D) -> pixels
        (n, R, R, 3); classifier: pixels (n, R, R, 3) -> (attribute names, scores (n, A))."""
        def split(rows: np.ndarray, items: list) -> list:
            ends = np.cumsum([len(x) for x in items])
            return np.split(rows, ends[:-1])

        if hop == "encoder":
            return lambda files, deadline: self._encode(files, pack, Budget.until(deadline))
        if hop == "generator":
            return lambda zs, deadline: split(self._generate(np.concatenate(zs), pack, Budget.until(deadline)), zs)
        if hop == "classifier":
            def score(pixels: list, deadline: float) -> list:
                names, scores = self._score(np.concatenate(pixels), pack, Budget.until(deadline))
                return [(names, part) for part in split(scores, pixels)]
            return score
        raise ValueError(f"no merged form of hop {hop!r}")

    def _edit_call(self, hop: str, pack: str, item, budget: Budget):
        """One Edit's call to `hop` (see _call_many), merged with concurrent Edits' unless merging is off
        or the item is large (a merged call stays within what a service accepts: MAX_REQUEST_BYTES)."""
        size = len(item) if isinstance(item, bytes) else item.nbytes
        if self.merged is None or size > channels.MAX_REQUEST_BYTES // self.merged.max_batch:
            return self._call_many(hop, pack)([item], budget.deadline)[0]
        return self.merged.call(hop, pack, item, budget.deadline)

    def _encode(self, image_files: list[bytes], pack: str, budget: Budget, faithful: bool = False) -> list[tuple]:
        """Image files -> per file (z (D,), the face found and encoded (DetectedFace) or None for a pack without
        an alignment template, whether the image is grey); with `faithful` (fidelity FAITHFUL, seconds per
        face) also its generator modulation (M,) and InversionReport."""
        if not image_files[0]:
            raise InvalidArgument("image: empty; send the bytes of a PNG or JPEG file")
        fidelity = common_pb2.FIDELITY_FAITHFUL if faithful else common_pb2.FIDELITY_FAST
        resp = self.down.call("encoder", self.down.encoder.EncodeImages,
                              encoder_pb2.EncodeImagesRequest(pack=pack, images=image_files, find_faces=True,
                                                              fidelity=fidelity), budget,
                              hop_timeout_s=deadlines.MAX_DEADLINE_S)  # photos may queue for the face detector
        z = from_tensor(resp.latents, "latents")
        faces = list(resp.faces) or [None] * len(z)
        grey = list(resp.grey) or [False] * len(z)
        if not faithful:
            return list(zip(z, faces, grey))
        return list(zip(z, faces, grey, from_tensor(resp.modulations, "modulations"), resp.inversions))

    def _generate(self, z: np.ndarray, pack: str, budget: Budget, modulations: np.ndarray | None = None) -> np.ndarray:
        """z (N, D), modulations None or (N, M) (faithful inversions) -> pixels (N, R, R, 3) uint8."""
        request = generator_pb2.GenerateImagesRequest(pack=pack, latents=to_tensor(z))
        if modulations is not None:
            request.modulations.CopyFrom(to_tensor(np.ascontiguousarray(modulations, np.float32)))
        resp = self.down.call("generator", self.down.generator.GenerateImages, request, budget)
        return from_tensor(resp.pixels, "pixels")

    def _score(self, pixels: np.ndarray, pack: str, budget: Budget) -> tuple[list[str], np.ndarray]:
        resp = self.down.call("encoder", self.down.encoder.ScoreImages,
                              encoder_pb2.ScoreImagesRequest(pack=pack, pixels=to_tensor(pixels)), budget)
        return list(resp.attributes), from_tensor(resp.scores, "scores")

    def _render_edit(self, z: np.ndarray, edited: np.ndarray, request, pack: str, budget: Budget,
                     original: bool = False, modulation: np.ndarray | None = None):
        """z, edited (D,) -> (original (R, R, 3) uint8 or None, edited (R, R, 3) uint8, {attribute: column},
        scores (2, A): original, edited). With request.skip_scores: one generator call of the edited latent
        (and the original only if request.return_original or `original`), no classifier: index {} and scores
        (2, 0). modulation (M,): the face's generator modulation (faithful inversion), for both renderings."""
        def render(rows: np.ndarray) -> np.ndarray:
            if modulation is None:
                return self._edit_call("generator", pack, rows, budget)
            return self._generate(rows, pack, budget, np.repeat(modulation[None], len(rows), 0))
        if request.skip_scores:
            both = request.return_original or original
            pixels = render(np.stack([z, edited]) if both else edited[None])
            return (pixels[0] if both else None), pixels[-1], {}, np.zeros((2, 0), np.float32)
        pixels = render(np.stack([z, edited]))
        names, scores = self._edit_call("classifier", pack, pixels, budget)
        return pixels[0], pixels[1], {a: i for i, a in enumerate(names)}, scores

    def _start_compose(self, pack: str, edits, keep, budget: Budget) -> Future:
        """The composed edit: a done future from the memo while the registry is unchanged, else
        Compose runs on the directions service while the face is encoded (its answer is remembered)."""
        request = directions_pb2.ComposeRequest(pack=pack, edits=edits, keep=keep)
        state, answer = self.memo.lookup(request)
        if answer is not None:
            done: Future = Future()
            done.set_result(answer)
            return done
        future = self.down.start("directions", self.down.directions.Compose, request, budget)

        def remember(f: Future) -> None:
            if not f.cancelled() and f.exception() is None:
                self.memo.store(state, request, f.result())
        future.add_done_callback(remember)
        return future

    # -- RPCs ----------------------------------------------------------------
    def Edit(self, request, context):
        budget = Budget(context, self.default_deadline_s)
        fmt = output_format(request.format)
        if not request.edits:
            raise InvalidArgument("no edits given; to render a face unchanged call Generate or Encode")
        istrc_ops = self._istrc_ops(request, budget)
        if any(istrc_ops):
            return self._edit_istrc(request, budget, fmt, istrc_ops)
        info = self._pack(request.pack, budget)
        pack = info.pack.name
        compose = self._start_compose(pack, request.edits, request.keep, budget)
        try:
            source = self._source(request.face, info, budget)
        except BaseException:
            compose.cancel()
            raise
        z, latent_id = source.z, source.latent_id
        # the new latent (and its photo) go to the caches while the edit is composed and rendered
        cached = self.down.aside(self._remember, pack, source) if latent_id is None else None
        composed = compose.result()
        edited = apply_composed(z[None], composed, 1.0)[0]
        in_photo = source.place is not None
        original, result, index, scores = self._render_edit(z, edited, request, pack, budget, original=in_photo,
                                                            modulation=source.modulation)
        if cached is not None:
            latent_id = cached.result()
        photo = self._photo_answer(source, latent_id, pack, np.stack([original, result]), request, fmt, budget) \
            if in_photo else {}
        if photo.get("photo"):
            photo["warnings"] = pose_warnings(composed, info.pose_attributes, request.paste)
        if source.grey:
            original, result = (None if original is None else images.to_grey(original)), images.to_grey(result)
        return gateway_pb2.EditResponse(
            pack=composed.pack, image=encode_image(result, fmt), format=fmt, latent_id=latent_id,
            latent=to_tensor(edited), quality=quality(composed, index, scores[:1], scores[1:]),
            scores_before={a: float(scores[0, i]) for a, i in index.items()},
            scores_after={a: float(scores[1, i]) for a, i in index.items()},
            original=encode_image(original, fmt) if request.return_original else b"",
            latent_shift=float(np.linalg.norm(edited - z)), inversion=source.inversion, **photo)

    def EditSweep(self, request, context):
        budget = Budget(context, self.default_deadline_s)
        fmt = output_format(request.format)
        if not request.HasField("edit"):
            raise InvalidArgument("edit: give the attribute or direction to sweep")
        if not 2 <= request.steps <= MAX_SWEEP_STEPS:
            raise InvalidArgument(f"steps must be 2..{MAX_SWEEP_STEPS}, got {request.steps}")
        if not (np.isfinite(request.start) and np.isfinite(request.stop)):
            raise InvalidArgument("start and stop must be finite numbers")
        info = self._pack(request.pack, budget)
        pack = info.pack.name
        source = self._source(request.face, info, budget)
        z, modulation = source.z, source.modulation
        latent_id = source.latent_id or self._remember(pack, source)
        # compose at the largest |strength| asked, so the directions service checks the limit
        peak = max(abs(request.start), abs(request.stop)) or 1.0
        op = common_pb2.EditOp()
        op.CopyFrom(request.edit)
        op.strength = peak
        composed = self._start_compose(pack, [op], request.keep, budget).result()
        strengths = np.linspace(request.start, request.stop, request.steps, dtype=np.float32)
        frames = apply_composed(np.repeat(z[None], len(strengths), 0), composed, strengths / peak)
        pixels = self._generate(frames, pack, budget,
                                None if modulation is None else np.repeat(modulation[None], len(frames), 0))
        for i, (s, p) in enumerate(zip(strengths, pixels)):
            if not context.is_active():
                return
            yield gateway_pb2.SweepFrame(index=i, strength=float(s), image=encode_image(p, fmt), format=fmt,
                                         latent_id=latent_id if i == 0 else "")

    def Encode(self, request, context):
        budget = Budget(context, self.default_deadline_s)
        fmt = output_format(request.format)
        info = self._pack(request.pack, budget)
        source = self._source(gateway_pb2.FaceSource(image=request.image, fidelity=request.fidelity), info, budget)
        latent_id = self._remember(info.pack.name, source)
        recon = b""
        if request.return_reconstruction:
            modulation = None if source.modulation is None else source.modulation[None]
            pixels = self._generate(source.z[None], info.pack.name, budget, modulation)[0]
            recon = encode_image(images.to_grey(pixels) if source.grey else pixels, fmt)
        face = photo_face(source.place, latent_id) if source.place is not None else None
        return gateway_pb2.EncodeResponse(pack=info.pack, latent_id=latent_id, latent=to_tensor(source.z),
                                          expires_in_s=self.cache.ttl_s, reconstruction=recon, face=face,
                                          inversion=source.inversion)

    def Generate(self, request, context):
        budget = Budget(context, self.default_deadline_s)
        fmt = output_format(request.format)
        info = self._pack(request.pack, budget)
        if request.seeds:
            if len(request.seeds) > MAX_GENERATE:
                raise InvalidArgument(f"at most {MAX_GENERATE} seeds per request, got {len(request.seeds)}")
            z = np.stack([latents.from_seed(s, info.latent_dim) for s in request.seeds])
        elif request.latents.shape:
            z = latents.check(from_tensor(request.latents, "latents"), info.latent_dim, "latents")
            if len(z) > MAX_GENERATE:
                raise InvalidArgument(f"at most {MAX_GENERATE} latents per request, got {len(z)}")
        else:
            raise InvalidArgument("give seeds or latents")
        pixels = self._generate(z, info.pack.name, budget)
        return gateway_pb2.GenerateResponse(pack=info.pack, images=[encode_image(p, fmt) for p in pixels],
                                            latents=to_tensor(z), format=fmt)

    def ListAttributes(self, request, context):
        budget = Budget(context, self.default_deadline_s)
        info = self._pack(request.pack, budget)
        return gateway_pb2.ListAttributesResponse(pack=info.pack, attributes=info.attributes,
                                                  directions=info.directions, default_method=info.default_method,
                                                  latent_dim=info.latent_dim)

    def CreateDirection(self, request, context):
        """Positive and negative reference images -> a custom direction in the registry: CRG (latent) or,
        with method ISTRC, on the sphere of FaceNet embeddings."""
        budget = Budget(context, self.default_deadline_s)
        direction_id = custom_id(request.name)
        if request.attribute and not NAME_PATTERN.fullmatch(request.attribute):
            raise InvalidArgument(f"attribute {request.attribute[:60]!r}: use 1 to 40 characters of a-z, 0-9, "
                                  f"'_' and '-', or leave it empty")
        sets = (("positive_images", request.positive_images), ("negative_images", request.negative_images))
        for field, files in sets:
            if not 1 <= len(files) <= MAX_REFERENCE_IMAGES:
                raise InvalidArgument(f"{field}: give 1 to {MAX_REFERENCE_IMAGES} image files, got {len(files)}")
            empty = [i for i, f in enumerate(files) if not f]
            if empty:
                raise InvalidArgument(f"{field}[{empty[0]}]: empty; send the bytes of a PNG or JPEG file")
        if request.method not in (common_pb2.METHOD_UNSPECIFIED, common_pb2.METHOD_CUSTOM, common_pb2.METHOD_CRG,
                                  common_pb2.METHOD_ISTRC):
            raise InvalidArgument("method: CreateDirection makes CRG directions in the latent (METHOD_CRG, "
                                  "METHOD_CUSTOM or unset) or ISTRC directions on FaceNet embeddings (METHOD_ISTRC)")
        info = self._pack(request.pack, budget)
        pack = info.pack.name
        direction, pos, neg = self._reference_direction(request, direction_id, sets, info, budget)
        stored = self.down.call("directions", self.down.directions.PutDirection,
                                directions_pb2.PutDirectionRequest(pack=pack, direction=direction,
                                                                   replace=request.replace), budget,
                                metadata=security.forward_metadata())  # the owner of the direction
        with self._lock:
            self._pack_info.pop(pack, None)  # ListAttributes shows it at once (on this gateway)
        return gateway_pb2.CreateDirectionResponse(
            direction=stored,
            positive=gateway_pb2.ProjectionGaussian(mean=pos.mean, std=pos.std, count=pos.count),
            negative=gateway_pb2.ProjectionGaussian(mean=neg.mean, std=neg.std, count=neg.count))

    def _reference_direction(self, request, direction_id: str, sets, info, budget: Budget):
        """CreateDirection's direction -> (Direction with vector, positive and negative projection
        Gaussians). CRG (latent): the normalised mean of the encoded positive images minus that of the
        negatives, projections z . n. ISTRC (method METHOD_ISTRC): the same of their FaceNet
        embeddings (space "facenet"), projections = latitudes asin(n . e) in radians, which a walk
        along n changes by exactly the strength - so the range rule gives strength units either way."""
        pack, embed = info.pack.name, request.method == common_pb2.METHOD_ISTRC
        x_pos, version = self._encode_set(list(request.positive_images), "positive_images", info, budget, embed)
        x_neg, other = self._encode_set(list(request.negative_images), "negative_images", info, budget, embed)
        if version != other:
            raise FailedPrecondition(f"the encoder changed from pack version {version} to {other} during the "
                                     f"request; retry")
        unit, norm = reference.direction(x_pos, x_neg)
        if embed:
            own = [d.strength_limit for d in info.directions
                   if d.space == FACENET_SPACE and d.method == common_pb2.METHOD_ISTRC]
            if not own:
                raise InvalidArgument(f"pack {pack} has no ISTRC directions, so ISTRC reference directions cannot "
                                      f"join it")
            limit, space = max(own), FACENET_SPACE
            project = lambda x: np.arcsin(np.clip(reference.project(x, unit), -1.0, 1.0))  # noqa: E731
            texts = ISTRC_REFERENCE_TEXTS
        else:
            limit = max((d.strength_limit for d in info.directions if d.strength_limit > 0 and
                         d.space != FACENET_SPACE), default=DEFAULT_STRENGTH_LIMIT)
            space, project = LATENT_SPACE, lambda x: reference.project(x, unit)  # noqa: E731
            texts = CRG_REFERENCE_TEXTS
        found = reference.describe_projections(project(x_pos), project(x_neg), limit)
        provenance = {
            "method": texts["method"], "positive_images": len(x_pos), "negative_images": len(x_neg),
            "image_sha256": {field: [hashlib.sha256(f).hexdigest()[:16] for f in files] for field, files in sets},
            "encoder": texts["encoder"].format(pack=pack, version=version), "projections": texts["projections"],
            "range_rule": reference.RANGE_RULE,
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        direction = common_pb2.Direction(
            id=direction_id, attribute=request.attribute or request.name, method=common_pb2.METHOD_CUSTOM,
            pack=common_pb2.PackRef(name=pack, version=version),  # the registry checks it is the active one
            vector=to_tensor(unit), space=space, dim=len(unit),
            strength_min=found["strength_min"], strength_max=found["strength_max"],
            strength_limit=limit, strength_meaning=texts["strength_meaning"],
            metrics={**found["metrics"], "mean_difference_norm": norm}, provenance=json.dumps(provenance))
        return direction, found["positive"], found["negative"]

    def _encode_set(self, files: list[bytes], field: str, info, budget: Budget,
                    embed: bool = False) -> tuple[np.ndarray, str]:
        """One EncodeImages call (EmbedImages with `embed`) for a set of reference images ->
        (latents (N, D), or FaceNet embeddings (N, 512) with `embed`; the encoder's pack version);
        errors name the request's field."""
        rpc = self.down.encoder.EmbedImages if embed else self.down.encoder.EncodeImages
        try:
            resp = self.down.call("encoder", rpc, encoder_pb2.EncodeImagesRequest(pack=info.pack.name, images=files),
                                  budget)
        except FaceditError as err:
            raise image_field(err, field, index=True) from None
        if embed:
            return from_tensor(resp.embeddings, "embeddings"), resp.pack.version
        return latents.check(from_tensor(resp.latents, "latents"), info.latent_dim, "encoded latents"), \
            resp.pack.version

def parser() -> argparse.ArgumentParser:
    p = config.parser("gateway", 50050)
    p.add_argument("--encoder", default=config.env("encoder_addr", "127.0.0.1:50051"))
    p.add_argument("--directions", default=config.env("directions_addr", "127.0.0.1:50052"))
    p.add_argument("--generator", default=config.env("generator_addr", "127.0.0.1:50053"))
    p.add_argument("--redis-url", default=config.env("redis_url", "redis://127.0.0.1:6379/0"))
    p.add_argument("--default-pack", default=config.env("default_pack", "digiface64"))
    p.add_argument("--latent-ttl-s", type=int, default=int(config.env("latent_ttl_s", "3600")))
    p.add_argument("--photo-cache-mb", type=int, default=int(config.env("photo_cache_mb", str(DEFAULT_PHOTO_CACHE_MB))),
                   help="the photos that cached faces came from (so an Edit by such a face's latent id returns the "
                        "whole photo) are kept in Redis with the latents' TTL, at most this many MiB in all: the "
                        "least recently used are evicted beyond it; 0 = keep none")
    p.add_argument("--hop-timeout-s", type=float, default=float(config.env("hop_timeout_s", "10")),
                   help="deadline of each downstream call")
    p.add_argument("--compose-memo", type=int,
                   default=int(config.env("compose_memo", str(ComposeMemo.DEFAULT_SIZE))),
                   help="Compose answers remembered while the registry is unchanged (checked with one Redis "
                        "MGET per edit; the registry must be in the Redis of --redis-url); 0 = ask the "
                        "directions service every time")
    p.add_argument("--merge-max-batch", type=int, default=int(config.env("merge_max_batch", "32")),
                   help="concurrent Edits whose encode, generate and score calls share one RPC (at most this "
                        "many per RPC; a lone Edit is never held back); 0 = one RPC per Edit")
    p.add_argument("--merge-workers", type=int, default=int(config.env("merge_workers", "2")),
                   help="merged RPCs of one hop in flight at once")
    config.add_client_limit_flags(p)
    return p


def create(args: argparse.Namespace, logger: logging.Logger) -> Service:
    """The gateway servicer over the encoder, directions and generator at their addresses, with the
    latent cache and compose memo in --redis-url."""
    sec = security.from_args(args, "gateway", logger)
    sec.check_downstream("gateway", [args.encoder, args.directions, args.generator])
    metrics.set_build_info("gateway", {args.default_pack: ""})  # pack versions are the directions service's
    client = connect(args.redis_url)
    servicer = GatewayServicer(Downstream(args.encoder, args.directions, args.generator, args.hop_timeout_s,
                                          aside_threads=args.workers, tls=sec.internal),
                               LatentCache(client, args.latent_ttl_s),
                               args.default_pack, args.default_deadline_s, ComposeMemo(client, args.compose_memo),
                               args.merge_max_batch, args.merge_workers,
                               PhotoCache(client, args.latent_ttl_s, args.photo_cache_mb << 20))
    return Service("gateway", servicer, gateway_pb2_grpc.add_GatewayServicer_to_server, "facedit.v1.Gateway",
                   servicer.close, sec, ACCESS, client_limits=config.client_limits(args),
                   checks={**servicer.down.checks(), "redis": readiness_checks.redis(client)},
                   tracing=Tracing.from_args(args, "gateway"))


def main(argv: list[str] | None = None) -> None:
    service_main("gateway", parser(), create, argv)


if __name__ == "__main__":
    main()
