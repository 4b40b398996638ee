"""The gateway's faces in photos: EditPhoto, and the photo answer of Edit for a face that came from a
photo. Mixed into GatewayServicer (uses its downstream stubs, caches, `_pack`, `_start_compose`,
`_generate` and `_score`).

A photo edit is judged on the photo: after the edited faces are blended back, each face is found
again (MTCNN) in a region around it of the returned photo, aligned, classified with the pack's
classifier and embedded with FaceNet, by the encoder's MeasureFaces; the face in the sent photo is
measured the same way, so `scores_before` / `scores_after` compare like with like and
`identity_cosine` says whether the edited face is still the person. The classifier's view of the
generator's renderings is kept beside them (`rendered_scores_*`).

A face found in a photo is cached with its photo's id and its place in it (services/gateway/cache.py),
so an Edit by its latent id answers with the whole photo again (`EditResponse.photo`).
"""
from __future__ import annotations

import numpy as np

from facedit.v1 import common_pb2, encoder_pb2, gateway_pb2
from facedit_core import align, images, latents
from facedit_core.errors import InvalidArgument
from services.common import deadlines, tracing
from services.common.tensors import encode_image, from_tensor, output_format, to_tensor
from services.gateway.cache import PhotoPlace
from services.gateway.downstream import Budget
from services.gateway.edits import apply_composed, pose_warnings, quality

MAX_PHOTO_FACES = 16  # faces edited per EditPhoto (the encoder's limit too)


def score_rows(measured: list, attributes: list[str]) -> np.ndarray:
    """MeasuredFaces -> (N, A) float32 scores, NaN rows for faces not found."""
    rows = np.full((len(measured), len(attributes)), np.nan, np.float32)
    for k, m in enumerate(measured):
        if m.found:
            rows[k] = from_tensor(m.scores, "scores")
    return rows


def identity_cosine(before, after) -> float:
    """FaceNet cosine between two MeasuredFaces; NaN unless both were found and embedded."""
    if not (before.found and after.found and before.identity.shape and after.identity.shape):
        return float("nan")
    a, b = from_tensor(before.identity, "identity"), from_tensor(after.identity, "identity")
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


def photo_face(place: PhotoPlace, latent_id: str, attributes: list[str] = (), before=None, after=None,
               rendered: tuple[dict[str, int], np.ndarray, np.ndarray] | None = None,
               crops: tuple[bytes, bytes] = (b"", b"")) -> gateway_pb2.PhotoFace:
    """A PhotoFace: where, its latent id, and the measurements given (MeasuredFace before / after the edit;
    rendered: (attribute -> column, scores of the rendering before, after))."""
    face = gateway_pb2.PhotoFace(box=place.box.tolist(), score=place.score, latent_id=latent_id,
                                 crop_before=crops[0], crop_after=crops[1], identity_cosine=float("nan"))
    for field, m in (("scores_before", before), ("scores_after", after)):
        if m is not None and m.found:
            getattr(face, field).update(zip(attributes, from_tensor(m.scores, "scores").tolist()))
    if after is not None:
        face.found_after = after.found
    if before is not None and after is not None:
        face.identity_cosine = identity_cosine(before, after)
    if rendered is not None:
        index, r_before, r_after = rendered
        face.rendered_scores_before.update({a: float(r_before[i]) for a, i in index.items()})
        face.rendered_scores_after.update({a: float(r_after[i]) for a, i in index.items()})
    return face


class PhotoRpcs:
    """EditPhoto and Edit's photo answer (see the module docstring)."""

    def _measure(self, pack: str, faces: list[tuple[np.ndarray, PhotoPlace]], budget) -> tuple[list[str], list]:
        """[(photo pixels, the place of one face in it)] -> (attributes, one MeasuredFace per item), by one
        MeasureFaces call on a region around each face (align.region)."""
        regions = []
        for photo, place in faces:
            pixels, landmarks = align.region(photo, place.box, place.landmarks)
            regions.append(encoder_pb2.FaceRegion(pixels=to_tensor(pixels), landmarks=landmarks.ravel().tolist()))
        # like photos, regions queue for the encoder's face detector: they may wait all of their budget
        resp = self.down.call("encoder", self.down.encoder.MeasureFaces,
                              encoder_pb2.MeasureFacesRequest(pack=pack, regions=regions), budget,
                              hop_timeout_s=deadlines.MAX_DEADLINE_S)
        return list(resp.attributes), list(resp.faces)

    @staticmethod
    def _blend(photo: np.ndarray, places: list[PhotoPlace], before: np.ndarray, after: np.ndarray, paste: int,
               grey: bool) -> np.ndarray:
        """Each face's rendering (after; with delta paste, the change after - before) blended into the photo
        at its place, under the feathered mask of its landmarks; only the luminance for a grey photo."""
        out, res = photo, after.shape[1]
        for k, place in enumerate(places):
            with tracing.step("blend", face=k):
                mask = align.blend_mask(align.apply(place.affine, place.landmarks), res)
                original = before[k] if paste == gateway_pb2.PASTE_MODE_DELTA else None
                out = align.paste(out, place.affine, after[k], mask, original_face=original, luminance_only=grey)
        return out

    @staticmethod
    def _returned(out: np.ndarray, image: bytes) -> np.ndarray:
        """The pixels of the returned photo as the client decodes them: `out` for a PNG; a JPEG, lossy, is
        decoded again."""
        return out if image.startswith(b"\x89PNG") else images.decode(image, "answer")

    def _photo_answer(self, source, latent_id: str, pack: str, rendered: np.ndarray, request, fmt: int,
                      budget) -> dict:
        """Edit of a face from a photo -> EditResponse fields: the whole photo with the face edited and the
        face measured on it (unless skip_scores), or photo_forgotten. rendered: (2, R, R, 3) the unedited
        and the edited rendering."""
        data = source.photo_file if source.photo_file is not None else self.photos.get(source.photo_id)
        if data is None:
            return {"photo_forgotten": True}
        photo = images.decode(data, "photo")
        out = self._blend(photo, [source.place], rendered[:1], rendered[1:], request.paste, source.grey)
        with tracing.step("encode_image", format=fmt):
            image = encode_image(out, fmt)
        if request.skip_scores:
            return {"photo": image, "photo_face": photo_face(source.place, latent_id)}
        attributes, (before, after) = self._measure(
            pack, [(photo, source.place), (self._returned(out, image), source.place)], budget)
        return {"photo": image, "photo_face": photo_face(source.place, latent_id, attributes, before, after)}

    def EditPhoto(self, request, context):
        """Every face of a photo: detect + align + encode (encoder), edit, render, blend back, measure."""
        budget = Budget(context, self.default_deadline_s)
        fmt = output_format(request.format)
        if not request.edits:
            raise InvalidArgument("no edits given; add at least one edit (e.g. smile +2)")
        if not request.image:
            raise InvalidArgument("image: empty; send the bytes of a PNG or JPEG photo")
        if not 0 <= request.max_faces <= MAX_PHOTO_FACES:
            raise InvalidArgument(f"max_faces must be 0 (= {MAX_PHOTO_FACES}) to {MAX_PHOTO_FACES}, "
                                  f"got {request.max_faces}")
        with tracing.step("decode"):
            photo = images.decode(request.image, "image")  # for the paste-back; checks size limits first
            grey = images.is_grey(photo)  # a grey photo gets only the luminance of the edit, and stays grey
        info = self._pack(request.pack, budget)
        pack = info.pack.name
        compose = self._start_compose(pack, request.edits, request.keep, budget)
        try:
            # photos queue for the encoder's face detector under load: they may wait all of their budget
            found = self.down.call("encoder", self.down.encoder.DetectFaces,
                                   encoder_pb2.DetectFacesRequest(pack=pack, image=request.image,
                                                                  max_faces=request.max_faces,
                                                                  fidelity=request.fidelity), budget,
                                   hop_timeout_s=deadlines.MAX_DEADLINE_S)
        except BaseException:
            compose.cancel()
            raise
        if not found.faces:
            compose.cancel()
            raise InvalidArgument(align.no_face_message(found.width, found.height,
                                                        list(found.turns) if found.turns_checked else None))
        places = [PhotoPlace.from_detected(f) for f in found.faces]
        # the faces in the sent photo are measured, and the photo kept, while the edit is rendered
        measured_before = self.down.aside(self._measure, pack, [(photo, p) for p in places], budget)
        kept = self.down.aside(self.photos.put, request.image)
        composed = compose.result()
        z = np.stack([latents.check(from_tensor(f.latent, "latent"), info.latent_dim, "encoded latent")[0]
                      for f in found.faces])
        n = len(z)
        faithful = request.fidelity == common_pb2.FIDELITY_FAITHFUL
        modulations = np.stack([from_tensor(f.modulation, "modulation") for f in found.faces]) if faithful else None
        pixels = self._generate(np.concatenate([z, apply_composed(z, composed, 1.0)]), pack, budget,
                                None if modulations is None else np.concatenate([modulations, modulations]))
        names, rendered = self._score(pixels, pack, budget)
        out = self._blend(photo, places, pixels[:n], pixels[n:], request.paste, grey)
        with tracing.step("encode_image", format=fmt):
            image = encode_image(out, fmt)
        attributes, after = self._measure(pack, [(self._returned(out, image), p) for p in places], budget)
        _, before = measured_before.result()
        photo_id = kept.result()
        index = {a: i for i, a in enumerate(names)}
        shown = images.to_grey(pixels) if grey else pixels
        faces = [photo_face(place, self.cache.put(pack, z[k], grey, photo_id, place,
                                                  None if modulations is None else modulations[k]),
                            attributes, before[k], after[k], (index, rendered[k], rendered[n + k]),
                            (encode_image(shown[k], fmt), encode_image(shown[n + k], fmt)) if request.return_crops
                            else (b"", b""))
                 for k, place in enumerate(places)]
        if faithful:
            for face, found_face in zip(faces, found.faces):
                face.inversion.CopyFrom(found_face.inversion)
        b_rows, a_rows = score_rows(before, attributes), score_rows(after, attributes)
        both = ~np.isnan(b_rows).any(1) & ~np.isnan(a_rows).any(1)  # faces measured before and after
        return gateway_pb2.EditPhotoResponse(
            pack=composed.pack, image=image, format=fmt, faces=faces,
            quality=quality(composed, {a: i for i, a in enumerate(attributes)}, b_rows[both], a_rows[both]),
            warnings=pose_warnings(composed, info.pose_attributes, request.paste))

