"""The gateway's ISTRC RPCs (FaceNet embedding space): Blend, Arithmetic and Edit with
`method: METHOD_ISTRC`. Mixed into GatewayServicer (uses its downstream stubs, latent cache,
`_budget`, `_pack`, `_face`, `_generate` and `_score`).

A face becomes an embedding through its pixels: an image file goes to the encoder's
EmbedImages (on a pack with an alignment template its largest face is found and aligned
first, as for Edit; the photo is not remembered with the latent); a seed, latent or latent
id is rendered by the generator first. The result embedding goes back through the pack's ISTRC mapping (MapEmbeddings / IstrcEdit) to a
latent, which the generator renders.
"""
from __future__ import annotations

import numpy as np

from facedit.v1 import common_pb2, directions_pb2, encoder_pb2, gateway_pb2
from facedit_core import sphere
from facedit_core.errors import InvalidArgument
from facedit_core.records import FACENET_SPACE, ISTRC_PREFIX
from services.common.tensors import encode_image, from_tensor, output_format, to_tensor

MAX_BLEND_FACES = 16


def is_istrc(op: common_pb2.EditOp) -> bool:
    """An edit for the ISTRC method: method METHOD_ISTRC or a direction id 'istrc/<attribute>'."""
    return op.method == common_pb2.METHOD_ISTRC or (
        op.WhichOneof("target") == "direction_id" and op.direction_id.startswith(ISTRC_PREFIX))


class IstrcRpcs:
    """Blend, Arithmetic and the ISTRC branch of Edit (see the module docstring)."""

    # -- helpers ---------------------------------------------------------------
    def _embed_faces(self, faces, info, budget) -> tuple[np.ndarray, list[str]]:
        """Face sources -> (unit embeddings (N, E) float32, cached latent id of each face).
        Image files: one EmbedImages call (the cached latent is the ISTRC mapping of the
        embedding); the other sources: one Generate and one EmbedImages call on the pixels."""
        pack = info.pack.name
        files, latent_rows, ids = [], [], [""] * len(faces)
        for i, face in enumerate(faces):
            if face.WhichOneof("source") == "image":
                if not face.image:
                    raise InvalidArgument(f"face {i}: empty image; send the bytes of a PNG or JPEG file")
                files.append(i)
            else:
                z, ids[i] = self._face(face, info, budget)
                latent_rows.append((i, z))
        out: dict[int, np.ndarray] = {}
        if files:
            resp = self.down.call("encoder", self.down.encoder.EmbedImages, encoder_pb2.EncodeImagesRequest(
                pack=pack, images=[faces[i].image for i in files], find_faces=True), budget)
            e, z = from_tensor(resp.embeddings, "embeddings"), from_tensor(resp.latents, "latents")
            for j, i in enumerate(files):
                out[i] = e[j]
                ids[i] = self.cache.put(pack, z[j])
        if latent_rows:
            pixels = self._generate(np.stack([z for _, z in latent_rows]), pack, budget)
            resp = self.down.call("encoder", self.down.encoder.EmbedImages, encoder_pb2.EncodeImagesRequest(
                pack=pack, pixels=to_tensor(pixels)), budget)
            e = from_tensor(resp.embeddings, "embeddings")
            for j, (i, _) in enumerate(latent_rows):
                out[i] = e[j]
        return np.stack([out[i] for i in range(len(faces))]).astype(np.float32), ids

    def _istrc_face(self, result: np.ndarray, inputs: np.ndarray, info, budget, fmt: int,
                    return_inputs: bool) -> gateway_pb2.IstrcFaceResponse:
        """A result embedding (and, if asked, the inputs) -> latent -> rendered image."""
        pack = info.pack.name
        rows = np.vstack([result[None], inputs]) if return_inputs else result[None]
        mapped = self.down.call("encoder", self.down.encoder.MapEmbeddings, encoder_pb2.MapEmbeddingsRequest(
            pack=pack, embeddings=to_tensor(rows.astype(np.float32))), budget)
        z = from_tensor(mapped.latents, "latents")
        e = from_tensor(mapped.embeddings, "embeddings")
        pixels = self._generate(z, pack, budget)
        return gateway_pb2.IstrcFaceResponse(
            pack=mapped.pack, image=encode_image(pixels[0], fmt), format=fmt,
            latent_id=self.cache.put(pack, z[0]), latent=to_tensor(z[0]), embedding=to_tensor(e[0]),
            angles=[sphere.angle(e[0].astype(np.float64), x.astype(np.float64)) for x in inputs],
            inputs=[encode_image(p, fmt) for p in pixels[1:]])

    def _istrc_ops(self, request, budget) -> list[bool]:
        """Per edit of an Edit request: is it an ISTRC edit? Method METHOD_ISTRC, a direction id
        'istrc/<attribute>', or a direction id whose registry direction lives in the FaceNet space
        (custom ISTRC directions; the pack's listing is read again once when it lacks an id)."""
        flags = [is_istrc(op) for op in request.edits]
        ids = [op.direction_id for op, f in zip(request.edits, flags)
               if not f and op.WhichOneof("target") == "direction_id"]
        if not ids:
            return flags
        info = self._pack(request.pack, budget)
        if any(i not in {d.id for d in info.directions} for i in ids):
            info = self._pack(request.pack, budget, fresh=True)
        embedding = {d.id for d in info.directions if d.space == FACENET_SPACE}
        return [f or (op.WhichOneof("target") == "direction_id" and op.direction_id in embedding)
                for op, f in zip(request.edits, flags)]

    # -- RPCs ------------------------------------------------------------------
    def Blend(self, request, context):
        budget = self._budget(context)
        fmt = output_format(request.format)
        n = len(request.faces)
        if not 2 <= n <= MAX_BLEND_FACES:
            raise InvalidArgument(f"faces: give 2 to {MAX_BLEND_FACES} faces to blend, got {n}")
        has_t = request.HasField("t")
        if has_t and request.weights:
            raise InvalidArgument("give either t (slerp between two faces) or weights (average of N faces), not both")
        if has_t:
            if n != 2:
                raise InvalidArgument(f"t interpolates between exactly two faces, got {n}; give weights to "
                                      f"average more faces")
            if not (np.isfinite(request.t) and 0.0 <= request.t <= 1.0):
                raise InvalidArgument(f"t must be in [0, 1] (0 = the first face, 1 = the second), got {request.t:g}")
        weights = np.asarray(request.weights, np.float64) if request.weights else None
        if weights is not None:
            if len(weights) != n:
                raise InvalidArgument(f"weights: give one per face ({n}), got {len(weights)}")
            if not np.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0:
                raise InvalidArgument("weights: finite numbers >= 0, not all zero")
        info = self._pack(request.pack, budget)
        e, _ = self._embed_faces(request.faces, info, budget)
        try:
            if weights is None and n == 2:
                result = sphere.slerp(e[0], e[1], float(request.t) if has_t else 0.5)
            else:
                result = sphere.mean(e, weights)
        except ValueError as err:
            raise InvalidArgument(str(err))
        return self._istrc_face(result, e, info, budget, fmt, request.return_inputs)

    def Arithmetic(self, request, context):
        budget = self._budget(context)
        fmt = output_format(request.format)
        faces = [request.a, request.b, request.c]
        for name, face in zip("abc", faces):
            if face.WhichOneof("source") is None:
                raise InvalidArgument(f"{name}: give a face (image, latent_id, latent or seed); result = a - b + c")
        info = self._pack(request.pack, budget)
        e, _ = self._embed_faces(faces, info, budget)
        try:
            result = sphere.arithmetic(e[0], e[1], e[2], spherical=not request.linear)
        except ValueError as err:
            raise InvalidArgument(f"a - b + c: {err}")
        return self._istrc_face(result, e, info, budget, fmt, request.return_inputs)

    def _edit_istrc(self, request, budget, fmt: int, istrc_ops: list[bool]) -> gateway_pb2.EditResponse:
        """Edit with method ISTRC: the registry's `istrc/` directions (ResolveIstrc on the directions
        service), the face's embedding walked along them (the encoder's IstrcEdit), start and end
        mapped to latents, rendered and scored."""
        if not all(istrc_ops):
            raise InvalidArgument("ISTRC edits move the FaceNet embedding, not the latent: send them without "
                                  "edits of other methods in one request")
        info = self._pack(request.pack, budget)
        pack = info.pack.name
        # the registry's directions are resolved (and the edits checked) while the face is embedded
        resolve = self.down.start("directions", self.down.directions.ResolveIstrc, directions_pb2.ComposeRequest(
            pack=pack, edits=request.edits, keep=request.keep), budget)
        try:
            e, ids = self._embed_faces([request.face], info, budget)
        except BaseException:
            resolve.cancel()
            raise
        resolved = resolve.result()
        resp = self.down.call("encoder", self.down.encoder.IstrcEdit, encoder_pb2.IstrcEditRequest(
            pack=pack, embedding=to_tensor(e[0]), edits=request.edits, directions=resolved.edits,
            keep_directions=resolved.keep), budget)
        z = from_tensor(resp.latents, "latents")
        original, result, index, scores = self._render_edit(z[0], z[1], request, pack, budget)
        quality = []
        for d in resp.edits:
            i = index.get(d.attribute)
            quality.append(gateway_pb2.EditQuality(
                direction_id=d.direction_id, attribute=d.attribute, method=common_pb2.METHOD_ISTRC,
                strength=d.strength, score_before=float(scores[0, i]) if i is not None else float("nan"),
                score_after=float(scores[1, i]) if i is not None else float("nan"), projected_norm=1.0,
                strength_min=d.strength_min, strength_max=d.strength_max))
        return gateway_pb2.EditResponse(
            pack=resp.pack, image=encode_image(result, fmt), format=fmt, latent_id=ids[0],
            latent=to_tensor(z[1]), quality=quality,
            scores_before={a: float(scores[0, i]) for a, i in index.items()},
            scores_after={a: float(scores[1, i]) for a, i in index.items()},
            original=encode_image(original, fmt) if request.return_original else b"",
            latent_shift=float(np.linalg.norm(z[1] - z[0])))
