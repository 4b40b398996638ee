"""Encoder service: images -> latents (CRG encoder) and attribute scores (classifier); for
packs with an alignment template, photos -> every face found (MTCNN), aligned and encoded; for
packs with ISTRC, FaceNet embeddings, the embedding -> latent mapping and embedding edits
(services/encoder/istrc.py).

    python -m services.encoder.server --port 50051 --packs synth
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np

from facedit.v1 import common_pb2, encoder_pb2, encoder_pb2_grpc
from facedit_core import align, images
from facedit_core.errors import InvalidArgument
from facedit_core.pack import Pack, PackError, load_pack, load_verified
from facedit_core.records import ISTRC_PREFIX
from facedit_faces.detect import FaceDetector
from services.common import channels, config, deadlines, logs, metrics, onnx, security, tracing
from services.common.loading import Loading
from services.common.server import Service, service_main
from services.common.tensors import from_tensor, to_tensor
from services.encoder import inversion, istrc

MAX_IMAGES = 64  # per request
MAX_RESOLUTION = 256  # assumed for a pack whose manifest cannot be read yet (the request limit is set at start)
MAX_FACES = 16   # per photo (DetectFaces); regions per MeasureFaces
MAX_REGION_SIDE = 512  # pixels, per MeasureFaces region
MATCH_SHIFT = 0.5  # MeasureFaces: a face found again lies within half an eye distance (mean landmark distance)


class PackModels:
    """One pack's encoder.onnx and classifier.onnx, each behind a dynamic batcher that
    merges concurrent requests. pixels (N, R, R, 3) uint8 in."""

    def __init__(self, pack: Pack, threading: onnx.Threading, max_batch: int = MAX_IMAGES,
                 max_delay_s: float = 0.002, max_queue: int = 256, io_binding: str = "auto", workers: int = 1):
        self.pack = pack
        template = pack.manifest.get("alignment", {}).get("template")
        self.template = np.asarray(template, np.float64) if template else None  # (5, 2) crop pixels
        self.encoder = onnx.batched(pack.artefact("encoder"), threading, io_binding, max_batch, max_delay_s,
                                    max_queue, workers, name=f"enc-{pack.name}")
        self.classifier = onnx.batched(pack.artefact("classifier"), threading, io_binding, max_batch, max_delay_s,
                                       max_queue, workers, name=f"cls-{pack.name}")
        has_istrc = all(a in pack.manifest["artefacts"] for a in istrc.ARTEFACTS)
        self.istrc = istrc.IstrcModels(pack, threading, max_batch, max_delay_s, max_queue) if has_istrc else None
        self.inverter = None
        if inversion.available(pack):
            if self.istrc is None:
                raise PackError(f"pack {pack.name!r}: faithful inversion needs FaceNet, which this build takes "
                                "from the pack's ISTRC artefacts; the manifest lists none")
            self.inverter = inversion.Inverter(pack, threading, self.istrc.embed)

    def encode(self, pixels: np.ndarray, timeout_s: float = deadlines.DEFAULT_DEADLINE_S) -> np.ndarray:
        """(N, R, R, 3) uint8 -> z (N, latent_dim) float32."""
        return self.encoder.call(pixels, timeout_s)[0]

    def score(self, pixels: np.ndarray, timeout_s: float = deadlines.DEFAULT_DEADLINE_S) -> np.ndarray:
        """(N, R, R, 3) uint8 -> probabilities (N, len(attributes)) float32."""
        return self.classifier.call(pixels, timeout_s)[0]

    def identity(self, faces: np.ndarray, timeout_s: float = deadlines.DEFAULT_DEADLINE_S) -> np.ndarray | None:
        """(N, 160, 160, 3) uint8 faces aligned at FaceNet's resolution -> (N, 512) unit FaceNet embeddings,
        with the pack's FaceNet (its istrc artefacts); None for a pack without it."""
        return None if self.istrc is None else self.istrc.embed_faces(faces, timeout_s)

    def close(self) -> None:
        self.encoder.close()
        self.classifier.close()
        if self.istrc is not None:
            self.istrc.close()


def request_pixels(request, resolution: int) -> np.ndarray:
    """The request's images as (N, R, R, 3) uint8 at the pack's resolution."""
    has_pixels = bool(request.pixels.shape)
    if has_pixels == bool(request.images):
        raise InvalidArgument("send exactly one of `pixels` or `images`")
    if has_pixels:
        pixels = from_tensor(request.pixels, "pixels")
        if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[3] != 3:
            raise InvalidArgument(f"pixels: expected (N, H, W, 3) uint8, got {list(pixels.shape)} {pixels.dtype}")
        if not 1 <= len(pixels) <= MAX_IMAGES:
            raise InvalidArgument(f"pixels: 1 to {MAX_IMAGES} images per request, got {len(pixels)}")
        if pixels.shape[1:3] == (resolution, resolution):
            return np.ascontiguousarray(pixels)
        return np.stack([images.resize(p, resolution) for p in pixels])
    if len(request.images) > MAX_IMAGES:
        raise InvalidArgument(f"images: at most {MAX_IMAGES} per request, got {len(request.images)}")
    with tracing.step("decode", images=len(request.images)):
        return np.stack([images.resize(images.decode(b, f"images[{i}]"), resolution)
                         for i, b in enumerate(request.images)])


class EncoderServicer(encoder_pb2_grpc.EncoderServicer):
    def __init__(self, models: dict[str, PackModels], default_pack: str, detector=None,
                 default_deadline_s: float = deadlines.DEFAULT_DEADLINE_S):
        """detector: a facedit_faces.detect.FaceDetector for DetectFaces; made here (at start, not on the
        first photo) from the third_party folder of the packs' model store when none is given and a pack
        has an alignment template."""
        self.models, self.default_pack = models, default_pack
        self.default_deadline_s = default_deadline_s
        photo_packs = [m.pack for m in models.values() if m.template is not None]
        if detector is None and photo_packs:
            detector = FaceDetector(folder=photo_packs[0].root.parent / "third_party")
        self.detector = detector

    def _models(self, pack: str) -> PackModels:
        m = self.models.get(pack or self.default_pack)
        if m is None:
            raise InvalidArgument(f"unknown pack {pack!r}; this encoder serves {sorted(self.models)}")
        return m

    def _photo_models(self, pack: str) -> PackModels:
        """The pack's models if it has an alignment template (it takes photos), else INVALID_ARGUMENT."""
        m = self._models(pack)
        if m.template is None:
            with_template = sorted(n for n, x in self.models.items() if x.template is not None)
            raise InvalidArgument(f"pack {m.pack.name!r} has no face alignment template, so it edits only "
                                  f"aligned face crops (use Edit/Encode); packs that take photos: {with_template}")
        return m

    def _timeout(self, context) -> float:
        return deadlines.remaining(context, self.default_deadline_s)

    def _inputs(self, request, m: PackModels, context) -> tuple[np.ndarray, list, list[bool]]:
        """An EncodeImagesRequest -> (pixels (N, R, R, 3) uint8 at the pack's resolution, the faces found:
        [(Detection, affine)] per image with find_faces on a pack with a template, else [], and per image
        file whether it is grey)."""
        resolution = m.pack.resolution
        if not (request.find_faces and request.images and m.template is not None):
            pixels = request_pixels(request, resolution)
            return pixels, [], [images.is_grey(p) for p in pixels] if request.images else []
        if request.pixels.shape:
            raise InvalidArgument("send exactly one of `pixels` or `images`")
        if len(request.images) > MAX_IMAGES:
            raise InvalidArgument(f"images: at most {MAX_IMAGES} per request, got {len(request.images)}")
        crops, faces, grey = [], [], []
        for i, data in enumerate(request.images):
            with tracing.step("decode"):
                photo = images.decode(data, f"images[{i}]")
            grey.append(images.is_grey(photo))
            with tracing.step("detect"):
                found = self.detector.detect(photo, self._timeout(context))
            if not found:
                with tracing.step("turns"):
                    turns = self.detector.turns_with_faces(photo, self._timeout(context))
                raise InvalidArgument(f"images[{i}]: " + align.no_face_message(photo.shape[1], photo.shape[0], turns,
                                                                               "image"))
            largest = max(found, key=lambda d: (d.box[2] - d.box[0]) * (d.box[3] - d.box[1]))
            affine = align.similarity(largest.landmarks, m.template)
            crops.append(align.crop(photo, affine, resolution))
            faces.append((largest, affine))
        return np.stack(crops), faces, grey

    def EncodeImages(self, request, context):
        m = self._models(request.pack)
        faithful = request.fidelity == common_pb2.FIDELITY_FAITHFUL
        inverter = inversion.require(m.pack, m.inverter) if faithful else None
        deadline = time.monotonic() + self._timeout(context)
        pixels, faces, grey = self._inputs(request, m, context)
        if faithful and len(pixels) > inversion.MAX_FAITHFUL_IMAGES:
            raise InvalidArgument(f"fidelity FAITHFUL takes at most {inversion.MAX_FAITHFUL_IMAGES} images per "
                                  f"call (seconds each), got {len(pixels)}")
        z = m.encode(pixels, self._timeout(context))
        response = encoder_pb2.EncodeImagesResponse(pack=common_pb2.PackRef(name=m.pack.name, version=m.pack.version),
                                                    latents=to_tensor(z), faces=[_face(d, a) for d, a in faces],
                                                    grey=grey)
        if inverter is not None:
            results = inverter.invert(pixels, z, deadline)
            response.latents.CopyFrom(to_tensor(np.stack([r.z for r in results])))
            response.modulations.CopyFrom(to_tensor(np.stack([r.modulation for r in results])))
            response.inversions.extend([r.report for r in results])
        return response

    def ScoreImages(self, request, context):
        m = self._models(request.pack)
        scores = m.score(request_pixels(request, m.pack.resolution), deadlines.remaining(context, self.default_deadline_s))
        return encoder_pb2.ScoreImagesResponse(pack=common_pb2.PackRef(name=m.pack.name, version=m.pack.version),
                                               attributes=list(m.pack.attributes), scores=to_tensor(scores))

    # -- ISTRC -----------------------------------------------------------------
    def EmbedImages(self, request, context):
        m = self._models(request.pack)
        models = istrc.require(m.pack, m.istrc)
        e = models.embed(self._inputs(request, m, context)[0], self._timeout(context))
        return encoder_pb2.EmbedImagesResponse(pack=common_pb2.PackRef(name=m.pack.name, version=m.pack.version),
                                               embeddings=to_tensor(e), latents=to_tensor(models.to_latents(e)))

    def MapEmbeddings(self, request, context):
        m = self._models(request.pack)
        models = istrc.require(m.pack, m.istrc)
        e = models.check_embeddings(from_tensor(request.embeddings, "embeddings"))
        return encoder_pb2.MapEmbeddingsResponse(pack=common_pb2.PackRef(name=m.pack.name, version=m.pack.version),
                                                 embeddings=to_tensor(e), latents=to_tensor(models.to_latents(e)))

    def IstrcEdit(self, request, context):
        m = self._models(request.pack)
        models = istrc.require(m.pack, m.istrc)
        e = models.check_embeddings(from_tensor(request.embedding, "embedding"), "embedding")
        if len(e) != 1:
            raise InvalidArgument(f"embedding: give one embedding, got {len(e)}")
        if request.directions:
            # the registry's directions (resolved by the directions service), one per edit
            if len(request.directions) != len(request.edits):
                raise InvalidArgument(f"directions: give one per edit ({len(request.edits)}), "
                                      f"got {len(request.directions)}")
            targets = [istrc.Target.from_message(d, models.dim, "direction") for d in request.directions]
            kept = [istrc.Target.from_message(d, models.dim, "keep direction") for d in request.keep_directions]
        else:
            # no directions given: the pack's own classifiers, by attribute
            targets = []
            for op in request.edits:
                target = op.WhichOneof("target")
                if target == "direction_id" and op.direction_id.startswith(ISTRC_PREFIX):
                    targets.append(models.target(op.direction_id[len(ISTRC_PREFIX):], "edit"))
                elif target == "attribute":
                    targets.append(models.target(op.attribute, "edit"))
                else:
                    raise InvalidArgument("ISTRC edits name an attribute (or direction_id 'istrc/<attribute>'), "
                                          f"got {target or 'nothing'}")
            kept = [models.target(a, "keep") for a in request.keep]
        edited, details = models.edit(e[0], [(t, op.strength) for t, op in zip(targets, request.edits)], kept)
        both = np.stack([e[0], edited])
        return encoder_pb2.IstrcEditResponse(
            pack=common_pb2.PackRef(name=m.pack.name, version=m.pack.version), embeddings=to_tensor(both),
            latents=to_tensor(models.to_latents(both)),
            edits=[encoder_pb2.IstrcEditDetail(**d) for d in details])


    def DetectFaces(self, request, context):
        m = self._photo_models(request.pack)
        if not request.image:
            raise InvalidArgument("image: empty; send the bytes of a PNG or JPEG photo")
        if not 0 <= request.max_faces <= MAX_FACES:
            raise InvalidArgument(f"max_faces must be 0 (= {MAX_FACES}) to {MAX_FACES}, got {request.max_faces}")
        faithful = request.fidelity == common_pb2.FIDELITY_FAITHFUL
        inverter = inversion.require(m.pack, m.inverter) if faithful else None
        deadline = time.monotonic() + deadlines.remaining(context, self.default_deadline_s)
        with tracing.step("decode"):
            photo = images.decode(request.image, "image")
        with tracing.step("detect"):
            found = self.detector.detect(photo, deadlines.remaining(context, self.default_deadline_s))[
                :request.max_faces or MAX_FACES]
        ref = common_pb2.PackRef(name=m.pack.name, version=m.pack.version)
        response = encoder_pb2.DetectFacesResponse(pack=ref, width=photo.shape[1], height=photo.shape[0])
        if not found:
            with tracing.step("turns"):
                turns = self.detector.turns_with_faces(photo, deadlines.remaining(context, self.default_deadline_s))
            response.turns.extend(turns or [])
            response.turns_checked = turns is not None
            return response
        affines = [align.similarity(d.landmarks, m.template) for d in found]
        crops = np.stack([align.crop(photo, a, m.pack.resolution) for a in affines])
        z = m.encode(crops, deadlines.remaining(context, self.default_deadline_s))
        results = inverter.invert(crops, z, deadline) if inverter is not None else [None] * len(z)
        for d, a, c, zi, r in zip(found, affines, crops, z, results):
            face = response.faces.add(box=d.box.tolist(), score=d.score, landmarks=d.landmarks.ravel().tolist(),
                                      affine=a.ravel().tolist(), crop=to_tensor(c), latent=to_tensor(zi))
            if r is not None:
                face.latent.CopyFrom(to_tensor(r.z))
                face.modulation.CopyFrom(to_tensor(r.modulation))
                face.inversion.CopyFrom(r.report)
        return response

    def MeasureFaces(self, request, context):
        m = self._photo_models(request.pack)
        if not 1 <= len(request.regions) <= MAX_FACES:
            raise InvalidArgument(f"regions: 1 to {MAX_FACES} per request, got {len(request.regions)}")
        resolution = m.pack.resolution
        side = m.istrc.size if m.istrc is not None else 0  # FaceNet's input size; 0: no identity
        template_side = m.template * side / resolution  # the pack's framing at FaceNet's size
        response = encoder_pb2.MeasureFacesResponse(pack=common_pb2.PackRef(name=m.pack.name, version=m.pack.version),
                                                    attributes=list(m.pack.attributes))
        crops, crops_side, rows = [], [], []
        for i, region in enumerate(request.regions):
            pixels, expected = _region(region, f"regions[{i}]")
            eye = max(float(np.linalg.norm(expected[1] - expected[0])), 1.0)
            with tracing.step("detect"):  # faces down to about the expected eye distance wide (boxes are ~2x)
                found = self.detector.detect(pixels, self._timeout(context), min_face=eye)
            face = response.faces.add()
            shifts = [float(np.linalg.norm(d.landmarks - expected, axis=1).mean()) / eye for d in found]
            if not shifts or min(shifts) > MATCH_SHIFT:
                continue
            best = found[int(np.argmin(shifts))]
            face.found, face.score, face.shift = True, best.score, min(shifts)
            face.landmarks.extend(best.landmarks.ravel().tolist())
            crops.append(align.crop(pixels, align.similarity(best.landmarks, m.template), resolution))
            if side:
                crops_side.append(align.crop(pixels, align.similarity(best.landmarks, template_side), side))
            rows.append(i)
        if rows:
            scores = m.score(np.stack(crops), self._timeout(context))
            identity = m.identity(np.stack(crops_side), self._timeout(context)) if side else None
            for k, i in enumerate(rows):
                response.faces[i].scores.CopyFrom(to_tensor(scores[k]))
                if identity is not None:
                    response.faces[i].identity.CopyFrom(to_tensor(identity[k]))
        return response


def _face(d, affine: np.ndarray) -> encoder_pb2.DetectedFace:
    """A detection and its photo -> crop transform as a DetectedFace without crop and latent."""
    return encoder_pb2.DetectedFace(box=d.box.tolist(), score=d.score, landmarks=d.landmarks.ravel().tolist(),
                                    affine=affine.ravel().tolist())


def _region(region: encoder_pb2.FaceRegion, what: str) -> tuple[np.ndarray, np.ndarray]:
    """A FaceRegion -> (pixels (H, W, 3) uint8, expected landmarks (5, 2)), or INVALID_ARGUMENT."""
    pixels = from_tensor(region.pixels, f"{what}.pixels")
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3 or \
            not (1 <= pixels.shape[0] <= MAX_REGION_SIDE and 1 <= pixels.shape[1] <= MAX_REGION_SIDE):
        raise InvalidArgument(f"{what}.pixels: expected (H, W, 3) uint8 with 1..{MAX_REGION_SIDE} pixels a side, "
                              f"got {list(pixels.shape)} {pixels.dtype}")
    expected = np.asarray(region.landmarks, np.float64)
    if expected.shape != (10,) or not np.isfinite(expected).all():
        raise InvalidArgument(f"{what}.landmarks: give 5 finite (x, y) pairs, got {len(expected)} numbers")
    return np.ascontiguousarray(pixels), expected.reshape(5, 2)


def parser() -> argparse.ArgumentParser:
    p = config.parser("encoder", 50051)
    p.add_argument("--packs", default=config.env("packs", "digiface64"), help="comma-separated packs (first = default)")
    config.add_batching_flags(p)
    return p


# the pack artefacts it reads (checked against their sha256 at start)
USES = ("encoder", "classifier", *istrc.ARTEFACTS, *inversion.ARTEFACTS)


def create(args: argparse.Namespace, logger: logging.Logger) -> Service:
    """The encoder servicer over every pack of --packs; with a face detector when a pack edits photos
    (NOT_SERVING while their files are not valid: services/common/loading.py)."""
    sec = security.from_args(args, "encoder", logger)  # refuses an unsafe address before loading models
    packs = [n for n in args.packs.split(",") if n]

    def build():
        store = Path(args.model_store)
        loaded = load_verified(packs, store, USES)
        detector = None
        if any(p.manifest.get("alignment", {}).get("template") for p in loaded):
            # MTCNN's networks, checked against mtcnn.json's sha256 (PackError) before any model starts
            detector = FaceDetector(threads=args.threads, folder=store / "third_party")
        models = {p.name: PackModels(p, onnx.Threading.from_flags(args), min(args.max_batch, MAX_IMAGES),
                                     args.max_delay_ms / 1e3, args.max_queue, args.io_binding, args.batch_workers)
                  for p in loaded}
        logs.log(logger, "loaded", packs=packs, providers=onnx.providers())
        metrics.set_build_info("encoder", {p.name: p.version for p in loaded})

        def close() -> None:
            for m in models.values():
                m.close()
        return EncoderServicer(models, packs[0], detector, args.default_deadline_s), close

    loading = Loading("encoder", build, logger, args.pack_retry_s)
    return Service("encoder", loading.servicer, encoder_pb2_grpc.add_EncoderServicer_to_server, "facedit.v1.Encoder",
                   loading.close, sec, max_receive_bytes=max_request_bytes(packs, Path(args.model_store)),
                   loading=loading, tracing=tracing.Tracing.from_args(args, "encoder"))


def max_request_bytes(packs: list[str], store: Path) -> int:
    """The largest request the encoder accepts: one photo, or MAX_IMAGES crops (uint8) of its largest pack
    (a pack whose manifest cannot be read yet counts as MAX_RESOLUTION)."""
    largest = 0
    for name in packs:
        try:
            largest = max(largest, load_pack(name, store).resolution)
        except PackError:
            largest = max(largest, MAX_RESOLUTION)
    return max(channels.MAX_REQUEST_BYTES, MAX_IMAGES * largest ** 2 * 3 + 1024 * 1024)


def main(argv: list[str] | None = None) -> None:
    service_main("encoder", parser(), create, argv)


if __name__ == "__main__":
    main()
