"""Directions service: the Redis registry, edit composition, pack publishing.

    python -m services.directions.server --port 50052 --redis-url redis://... --packs synth
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import threading
from pathlib import Path

import numpy as np

from facedit.v1 import common_pb2, directions_pb2, directions_pb2_grpc
from facedit_core.compose import compose, project_out
from facedit_core.errors import FailedPrecondition, InvalidArgument
from facedit_core.pack import PackError, load_pack, load_verified
from facedit_core.records import (
    CUSTOM_PREFIX,
    FACENET_SPACE,
    LATENT_SPACE,
    MAX_EDITS,
    MAX_KEEP,
    NAME_PATTERN,
    DirectionRecord,
)
from services.common import config, logs, methods, metrics, readiness, security
from services.common.loading import Loading
from services.common.redis_server import connect
from services.common.server import Service, service_main
from services.common.tensors import from_tensor, to_tensor
from services.common.tracing import Tracing
from services.directions.owners import Owners, owner_of_call
from services.directions.registry import PackInfo, Registry, Snapshot
from services.directions.republish import DEFAULT_INTERVAL_S, Republisher
from services.directions.text import SentenceEncoder, TextMapper


def direction_message(rec: DirectionRecord, info: PackInfo, vector: np.ndarray | None = None) -> common_pb2.Direction:
    msg = common_pb2.Direction(
        id=rec.id, attribute=rec.attribute, method=methods.ENUMS.get(rec.method, common_pb2.METHOD_UNSPECIFIED),
        pack=common_pb2.PackRef(name=info.name, version=info.version),
        strength_min=rec.strength_min, strength_max=rec.strength_max, strength_limit=rec.strength_limit,
        strength_meaning=rec.strength_meaning, metrics={k: float(v) for k, v in rec.metrics.items()},
        provenance=json.dumps(rec.provenance), space=rec.space, dim=rec.dim or info.latent_dim)
    if vector is not None:
        msg.vector.CopyFrom(to_tensor(vector))
    return msg


class DirectionsServicer(directions_pb2_grpc.DirectionsServicer):
    def __init__(self, registry: Registry, model_store, default_pack: str,
                 sentence_encoder: SentenceEncoder | None = None):
        self.registry, self.model_store, self.default_pack = registry, model_store, default_pack
        self.owners = Owners(registry.r)  # who owns each custom direction (docs/security.md)
        self.sentence_encoder = sentence_encoder
        self._text: dict[tuple[str, str], TextMapper] = {}
        self._text_lock = threading.Lock()
        # per pack: (snapshot, id -> Direction message without vector), rebuilt when the snapshot changes
        self._messages: dict[str, tuple[Snapshot, dict[str, common_pb2.Direction]]] = {}

    def _text_mapper(self, info: PackInfo) -> TextMapper:
        """The words artefacts of the active version of a pack (loaded once per version)."""
        key = (info.name, info.version)
        with self._text_lock:
            if key not in self._text:
                try:
                    pack = load_pack(info.name, self.model_store)
                except PackError as err:
                    raise FailedPrecondition(f"text edits: {err}")
                if pack.version != info.version:
                    raise FailedPrecondition(f"text edits: the model store has pack {info.name} version "
                                             f"{pack.version}, the registry serves {info.version}; LoadPack it")
                if "words_mapper" not in pack.manifest["artefacts"]:
                    raise InvalidArgument(f"text edits need the words method, which pack {info.name} does not "
                                          f"provide (methods: {pack.manifest.get('methods')})")
                self._text[key] = TextMapper(pack, self.sentence_encoder)
            return self._text[key]


    def _message(self, snap: Snapshot, direction_id: str) -> common_pb2.Direction:
        """The Direction message (no vector) of a record of `snap`, built once per snapshot."""
        held = self._messages.get(snap.info.name)
        if held is None or held[0] is not snap:
            held = (snap, {i: direction_message(r, snap.info) for i, r in snap.records.items()})
            self._messages[snap.info.name] = held  # one assignment: readers see the old or the new pair
        return held[1][direction_id]

    def _info(self, pack: str) -> PackInfo:
        return self.registry.pack_info(pack or self.default_pack)

    def _snapshot(self, pack: str) -> Snapshot:
        """The active version's directions, cached in this process (one Redis round trip when current)."""
        return self.registry.snapshot(pack or self.default_pack)

    def ListDirections(self, request, context):
        snap = self._snapshot(request.pack)
        info = snap.info
        return directions_pb2.ListDirectionsResponse(
            pack=common_pb2.PackRef(name=info.name, version=info.version),
            directions=[self._message(snap, i) for i in sorted(snap.records)],
            attributes=list(info.attributes), default_method=methods.ENUMS.get(info.default_method, 0),
            latent_dim=info.latent_dim, pose_attributes=list(info.pose_attributes))

    def GetDirection(self, request, context):
        snap = self._snapshot(request.pack)
        (rec, vec), = snap.get([request.direction_id])
        return direction_message(rec, snap.info, vec)

    def _resolve(self, op: common_pb2.EditOp, info: PackInfo, known) -> str:
        """An edit's target -> a direction id of the registry."""
        target = op.WhichOneof("target")
        if target is None:
            raise InvalidArgument("edit: set one of attribute, direction_id or text")
        if target == "direction_id":
            if op.direction_id not in known:
                raise InvalidArgument(f"unknown direction {op.direction_id!r} in pack {info.name}; "
                                      f"ListAttributes lists them")
            return op.direction_id
        return self._attribute_id(op.attribute, op.method, info, known)

    def _attribute_id(self, attribute: str, method: int, info: PackInfo, known) -> str:
        if attribute not in info.attributes:
            raise InvalidArgument(f"unknown attribute {attribute!r}; pack {info.name} has "
                                  f"{', '.join(info.attributes)}")
        method_name = methods.name_of(method) or info.default_method
        direction_id = f"{method_name}/{attribute}"
        if direction_id not in known:
            have = sorted({d.split('/')[0] for d in known if d.endswith('/' + attribute)})
            raise InvalidArgument(f"pack {info.name} has no {method_name} direction for {attribute!r} "
                                  f"(methods available for it: {have})")
        return direction_id

    def _edit_request(self, request: directions_pb2.ComposeRequest) -> Snapshot:
        """The snapshot of the request's pack, after checking the counts of edits and kept attributes."""
        if not request.edits:
            raise InvalidArgument("no edits given")
        if len(request.edits) > MAX_EDITS or len(request.keep) > MAX_KEEP:
            raise InvalidArgument(f"at most {MAX_EDITS} edits and {MAX_KEEP} kept attributes per request")
        return self._snapshot(request.pack)

    def Compose(self, request, context):
        snap = self._edit_request(request)
        info, known = snap.info, snap.records.keys()
        text_ops = [op for op in request.edits if op.WhichOneof("target") == "text"]
        ops = [op for op in request.edits if op.WhichOneof("target") != "text"]
        ids = [self._resolve(op, info, known) for op in ops]
        edited = snap.get(ids)
        other = [rec for rec, _ in edited if rec.space != LATENT_SPACE]
        if other:
            raise InvalidArgument(f"{[r.id for r in other]}: directions in the {other[0].space} embedding space "
                                  f"({other[0].dim}-d unit sphere), not the latent, cannot be composed into a latent "
                                  f"edit; send ISTRC edits to the gateway's Edit on their own (method METHOD_ISTRC)")
        texts = [(op, self._text_mapper(info).understand(op.text)) for op in text_ops]
        edited_attrs = {rec.attribute for rec, _ in edited} | {t.attribute for _, terms in texts for t in terms}
        clash = sorted(edited_attrs & set(request.keep))
        if clash:
            raise InvalidArgument(f"cannot both edit and keep {clash}")
        # kept directions: the same method as the first edit, else (unknown or custom) the pack default
        method = edited[0][0].method if edited else "words"
        if method not in methods.ENUMS or method == "custom":
            method = info.default_method
        keep_ids = [self._attribute_id(a, methods.ENUMS.get(method, 0), info, known) for a in request.keep]
        kept = np.stack([v for _, v in snap.get(keep_ids)]) if keep_ids else \
            np.zeros((0, info.latent_dim), np.float32)
        strengths = [_checked_strength(op.strength, rec) for op, (rec, _) in zip(ops, edited)]
        delta, norms = compose([v for _, v in edited], strengths, kept)
        composed = [directions_pb2.ComposedEdit(direction=self._message(snap, rec.id), strength=s, projected_norm=n)
                    for (rec, _), s, n in zip(edited, strengths, norms)]
        pull, pull_weight = np.zeros(info.latent_dim, np.float32), 0.0
        if texts:
            limit = max((r.strength_limit for r, _ in snap.get([f"words/{a}" for a in info.attributes
                                                                 if f"words/{a}" in known])),
                        default=10.0)
            for op, terms in texts:
                text_delta, text_pull, weight, parts = self._compose_text(op, terms, kept, limit, info)
                delta, pull, pull_weight = delta + text_delta, pull + text_pull, pull_weight + weight
                composed += parts
        return directions_pb2.ComposeResponse(
            pack=common_pb2.PackRef(name=info.name, version=info.version), delta=to_tensor(delta.astype(np.float32)),
            edits=composed, pull=to_tensor(pull.astype(np.float32)), pull_weight=pull_weight)

    def ResolveIstrc(self, request, context):
        """ISTRC edits and kept attributes -> their embedding-space directions with vectors."""
        snap = self._edit_request(request)
        info, known = snap.info, snap.records.keys()
        ids = []
        for op in request.edits:
            target = op.WhichOneof("target")
            if target == "attribute":
                ids.append(self._attribute_id(op.attribute, common_pb2.METHOD_ISTRC, info, known))
            elif target == "direction_id":
                ids.append(self._resolve(op, info, known))
            else:
                raise InvalidArgument(f"ISTRC edits name an attribute or a direction id 'istrc/<attribute>', "
                                      f"got {target or 'nothing'}")
        edited = snap.get(ids)
        latent = [rec.id for rec, _ in edited if rec.space != FACENET_SPACE]
        if latent:
            raise InvalidArgument(f"{latent} move the latent, not the FaceNet embedding: ISTRC edits cannot share "
                                  f"a request with edits of other methods")
        clash = sorted({rec.attribute for rec, _ in edited} & set(request.keep))
        if clash:
            raise InvalidArgument(f"cannot both edit and keep {clash}")
        keep_ids = [self._attribute_id(a, common_pb2.METHOD_ISTRC, info, known) for a in request.keep]
        for op, (rec, _) in zip(request.edits, edited):
            _checked_strength(op.strength, rec)
        return directions_pb2.ResolveIstrcResponse(
            pack=common_pb2.PackRef(name=info.name, version=info.version),
            edits=[direction_message(rec, info, vec) for rec, vec in edited],
            keep=[direction_message(rec, info, vec) for rec, vec in snap.get(keep_ids)])

    def _compose_text(self, op: common_pb2.EditOp, terms, kept: np.ndarray, limit: float, info: PackInfo):
        """One text edit -> (delta, pull, pull weight, ComposedEdit per understood clause).

        Addition (default): delta = sum over clauses of +-theta * w (projected off kept attributes).
        Averaging: z' = z + (theta / 2)(E - z), E the mean typical latent of the clauses' words."""
        theta = op.strength
        if not math.isfinite(theta) or abs(theta) > limit:
            raise InvalidArgument(f"strength (theta) {theta} for text {op.text[:60]!r} is outside the allowed "
                                  f"range [-{limit}, {limit}]")
        averaging = op.text_mode == common_pb2.TEXT_MODE_AVERAGING
        if averaging and len(kept):
            raise InvalidArgument("keep (conditional manipulation) works with the addition text mode only; "
                                  "averaging pulls towards a typical face and cannot hold attributes fixed")
        mapper = self._text_mapper(info)
        delta = np.zeros(info.latent_dim, np.float64)
        signed = [-theta if t.negated else theta for t in terms]
        parts = []
        for t, s in zip(terms, signed):
            norm = 1.0
            if not averaging:
                vector, norm = project_out(t.vector, kept)
                delta += s * vector
            recommended = 1.0 if averaging else mapper.theta(t)  # averaging: theta 1 = eq. 1, (z + E) / 2
            direction = common_pb2.Direction(
                id=f"words/text:{t.word}", attribute=t.attribute, method=common_pb2.METHOD_WORDS,
                pack=common_pb2.PackRef(name=info.name, version=info.version),
                strength_min=-recommended, strength_max=recommended, strength_limit=limit,
                strength_meaning=("averaging: z' = z + (theta / 2)(E - z), E the typical latent of the words"
                                  if averaging else "addition: z' = z + theta * w / |w| (latent units)"),
                metrics={"similarity": t.similarity},
                provenance=json.dumps({"text": op.text, "clause": t.clause, "understood_as": t.word,
                                       "trained_word": t.trained_word, "route": t.route, "negated": t.negated,
                                       "mode": "averaging" if averaging else "addition"}))
            parts.append(directions_pb2.ComposedEdit(direction=direction, strength=s, projected_norm=norm))
        if not averaging:
            return delta.astype(np.float32), np.zeros(info.latent_dim, np.float32), 0.0, parts
        # one pull per text edit: weight theta / 2 towards the mean typical latent of its words
        weight = theta / 2.0
        anchor = np.mean([t.anchor for t in terms], axis=0)
        negated = any(t.negated for t in terms)
        weight = -weight if negated else weight
        return np.zeros(info.latent_dim, np.float32), (weight * anchor).astype(np.float32), weight, parts

    def PutDirection(self, request, context):
        """Store one custom direction (from the gateway's CreateDirection) in the active version."""
        info = self._info(request.pack)
        d = request.direction
        name = d.id[len(CUSTOM_PREFIX):] if d.id.startswith(CUSTOM_PREFIX) else None
        if name is None or not NAME_PATTERN.fullmatch(name):
            raise InvalidArgument(f"direction id {d.id[:60]!r}: custom directions are 'custom/<name>', "
                                  f"name 1-40 characters of [a-z0-9_-]")
        if d.method not in (common_pb2.METHOD_UNSPECIFIED, common_pb2.METHOD_CUSTOM):
            raise InvalidArgument("PutDirection stores custom directions only (method METHOD_CUSTOM)")
        if not d.HasField("vector"):
            raise InvalidArgument(f"{d.id}: no vector given")
        if d.pack.version and d.pack.version != info.version:
            raise FailedPrecondition(f"{d.id} was made with pack {info.name} version {d.pack.version}, but the "
                                     f"active version is {info.version}; custom directions join the version whose "
                                     f"encoder made them - encode with the active version and retry")
        try:
            provenance = json.loads(d.provenance) if d.provenance else {}
        except json.JSONDecodeError as err:
            raise InvalidArgument(f"{d.id}: provenance is not JSON ({err})")
        space, dim = d.space or LATENT_SPACE, info.latent_dim
        if space == FACENET_SPACE:  # from a client's FaceNet embeddings (ISTRC)
            dims = {r.dim for r in self._snapshot(info.name).records.values() if r.space == space}
            if not dims:
                raise InvalidArgument(f"{d.id}: pack {info.name} has no ISTRC directions, so no direction in the "
                                      f"FaceNet embedding space can join it")
            dim = dims.pop()
        elif space != LATENT_SPACE:
            raise InvalidArgument(f"{d.id}: space {space!r}; use {LATENT_SPACE!r} (the latent) or "
                                  f"{FACENET_SPACE!r} (FaceNet embeddings, ISTRC)")
        record = DirectionRecord(id=d.id, attribute=d.attribute or name, method="custom",
                                 strength_min=d.strength_min, strength_max=d.strength_max,
                                 strength_limit=d.strength_limit, strength_meaning=d.strength_meaning,
                                 metrics=dict(d.metrics), provenance=provenance, space=space, dim=dim)
        vector = from_tensor(d.vector, "vector")
        if vector.dtype != np.float32:
            raise InvalidArgument(f"{d.id}: vector must be float32")
        claim = self.owners.claim(info.name, info.version, record.id, request.replace, owner_of_call())
        try:
            self.registry.put(info, record, vector, replace=request.replace)
        except BaseException:
            self.owners.undo(claim)
            raise
        return direction_message(record, info)

    def LoadPack(self, request, context):
        try:
            pack = load_pack(request.pack, self.model_store)
        except PackError as err:
            raise InvalidArgument(str(err))
        count = self.registry.publish(pack)
        return directions_pb2.LoadPackResponse(pack=common_pb2.PackRef(name=pack.name, version=pack.version),
                                               directions=count)


# the peer role each RPC needs when callers present certificates (docs/security.md); others: any internal peer
ACCESS = {"/facedit.v1.Directions/LoadPack": "admin", "/facedit.v1.Directions/PutDirection": "gateway"}


def _checked_strength(strength: float, rec: DirectionRecord) -> float:
    """The strength of an edit along `rec`, or INVALID_ARGUMENT when it is beyond the hard limit."""
    if not math.isfinite(strength) or abs(strength) > rec.strength_limit:
        raise InvalidArgument(f"strength {strength} for {rec.id} is outside the allowed range "
                              f"[-{rec.strength_limit}, {rec.strength_limit}] "
                              f"(recommended {rec.strength_min:.2f}..{rec.strength_max:.2f})")
    return strength


def parser() -> argparse.ArgumentParser:
    p = config.parser("directions", 50052)
    p.add_argument("--redis-url", default=config.env("redis_url", "redis://127.0.0.1:6379/0"))
    p.add_argument("--packs", default=config.env("packs", "digiface64"),
                   help="comma-separated packs to publish at start-up (first = default)")
    p.add_argument("--sentence-encoder", default=config.env("sentence_encoder", "build/minilm"),
                   help="folder with the MiniLM model.onnx + tokenizer.json for text phrases (made by make setup); "
                        "without it text edits take single words only")
    p.add_argument("--republish-interval-s", type=float,
                   default=float(config.env("republish_interval_s", str(DEFAULT_INTERVAL_S))),
                   help="how often the registry is checked for the served packs; a pack that is gone (Redis "
                        "restarted empty) is published again")
    return p


def create(args: argparse.Namespace, logger: logging.Logger) -> Service:
    """Publish every pack of --packs into the registry in --redis-url, then the directions servicer
    (NOT_SERVING while the packs' files are not valid: services/common/loading.py)."""
    sec = security.from_args(args, "directions", logger, trust_forwarded=True)  # before any work
    store = Path(args.model_store)
    packs = [name for name in args.packs.split(",") if name]
    encoder = None
    if args.sentence_encoder and (Path(args.sentence_encoder) / "model.onnx").exists():
        encoder = SentenceEncoder(Path(args.sentence_encoder))
    else:
        logs.log(logger, "no sentence encoder: text edits take single words only", folder=args.sentence_encoder)

    def build():
        loaded = load_verified(packs, store)  # every artefact: the registry publishes the whole pack
        registry = Registry(connect(args.redis_url))
        for pack in loaded:
            count = registry.publish(pack)
            logs.log(logger, "published pack", pack=pack.name, version=pack.version, directions=count)
        metrics.set_build_info("directions", {p.name: p.version for p in loaded})
        republisher = Republisher(registry, loaded, logger, args.republish_interval_s)

        def close() -> None:
            republisher.close()
            registry.r.close()
        return DirectionsServicer(registry, store, packs[0] if packs else "", encoder), close

    loading = Loading("directions", build, logger, args.pack_retry_s)
    return Service("directions", loading.servicer, directions_pb2_grpc.add_DirectionsServicer_to_server,
                   "facedit.v1.Directions", loading.close, sec, ACCESS, loading=loading,
                   checks={"redis": readiness.redis(connect(args.redis_url))},
                   tracing=Tracing.from_args(args, "directions"))


def main(argv: list[str] | None = None) -> None:
    service_main("directions", parser(), create, argv)


if __name__ == "__main__":
    main()
