"""The real-face evaluation of a built pack: `python -m training evaluate-real --config
training/configs/<pack>.json` (`make evaluate-real`; the photos come from `make real-faces`,
training/third_party/real_faces.py, split into a tuning and a held-out set).

Every face facedit_faces' detector finds in the photos is aligned to the pack's template with
facedit_core.align, as the gateway's EditPhoto does, and measured:

- reconstruction (the CRG paper's Table 2): MAE of pixels in [0, 1] and dhash / phash / whash
  similarity between the aligned face and its reconstruction; FaceNet cosine between the two
  (both at the pack's resolution, upsampled to 160 px as the encoder service does), beside the
  cosine between the face cut at 160 px and the same face at the pack's resolution (what the
  resolution alone loses) and between faces of different photos;
- every linear direction of the pack at its recommended strength (strength_max for +, strength_min
  for -): the edited face is rendered and pasted into the photo (align.blend_mask + align.paste,
  "delta" mode by default, as EditPhoto) and the RETURNED PHOTO is measured: the face is detected
  again (in a window around it), aligned again and measured by the pack's annotators
  (training/data/annotators.py: landmarks and pixels; roll from the photo's landmarks) and by its
  classifier. A face counts as moved when the measurement moved the asked way; a face the detector
  loses counts as not moved. Beside it: what the 64-pixel rendering says (classifier on G(z') vs G(z),
  which is what EditPhoto's scores_after reports today), FaceNet cosine between the photo's face
  before and after (both cut at 160 px), time per face.

The inversion is pluggable: INVERSIONS maps a fidelity to a factory of `Inversion`, whose
`reconstruct(aligned_faces) -> (latents, reconstructions)` inverts aligned faces and whose
`render(latents, rows)` renders edited latents of those faces (rows: their index in the
reconstructed batch, for inversions that tune a generator per face). "fast" is today's encoder:
the pack's encoder.onnx, then its generator.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from facedit_core import align, images, inversion
from facedit_core.pack import Pack, read_directions
from facedit_faces.detect import FaceDetector
from training.data import annotators
from training.evaluation.similarity import hash_similarity
from training.onnx_io import session
from training.third_party import real_faces
from training.third_party.wheels import DEFAULT_DIR

FACENET_SIZE = 160
WINDOW_MARGIN = 0.5      # the re-detection window: the face's box grown by this share of its side on every side
MATCH_DISTANCE = 0.5     # a re-detected face is the same face when its landmarks are within this x eye distance
METHODS = ("interfacegan", "refined", "tlgan", "crg", "sefa", "words")  # linear directions; sefa's unlabelled components skipped
PASTE_MODES = ("delta", "replace")


class PackModels:
    """A built pack's ONNX models as the services run them, its alignment template, directions and FaceNet."""

    def __init__(self, pack: Pack, threads: int = 1):
        if "alignment" not in pack.manifest:
            raise SystemExit(f"pack {pack.name!r} has no alignment template: it edits aligned crops only, "
                             "so real photos cannot be evaluated on it")
        self.pack, self.resolution, self.attributes = pack, pack.resolution, list(pack.attributes)
        self.template = np.asarray(pack.manifest["alignment"]["template"], np.float64)
        self._sessions = {name: session(pack.artefact(name), threads) for name in ("encoder", "generator", "classifier")}
        facenet = pack.artefact("facenet") if "facenet" in pack.manifest["artefacts"] else DEFAULT_DIR / "facenet.onnx"
        self._facenet = session(facenet, threads)
        self.directions = [(r, v) for r, v in read_directions(pack) if r.method in METHODS
                           and not (r.method == "sefa" and r.id.startswith("sefa/component_"))]

    def encode(self, pixels: np.ndarray) -> np.ndarray:
        return self._sessions["encoder"].run(None, {"pixels": pixels})[0]

    def generate(self, z: np.ndarray) -> np.ndarray:
        return self._sessions["generator"].run(None, {"z": np.ascontiguousarray(z, np.float32)})[0]

    def classify(self, pixels: np.ndarray) -> np.ndarray:
        return self._sessions["classifier"].run(None, {"pixels": pixels})[0]

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        """Faces (N, R, R, 3) uint8 -> FaceNet unit embeddings (N, 512); R < 160 upsampled as the encoder service does."""
        up = np.stack([images.resize(np.ascontiguousarray(p), FACENET_SIZE) for p in pixels])
        return np.concatenate([self._facenet.run(None, {"pixels": up[i:i + 16]})[0] for i in range(0, len(up), 16)])


@dataclasses.dataclass(frozen=True)
class Inversion:
    name: str
    reconstruct: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # aligned faces -> (latents, reconstructions)
    render: Callable[[np.ndarray, np.ndarray], np.ndarray]            # (latents (N, D), rows (N,)) -> faces


def fast(models: PackModels) -> Inversion:
    """Today's encoder service: z = E(face), reconstruction G(z); edits rendered by the pack's generator."""
    def reconstruct(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z = models.encode(faces)
        return z, models.generate(z)
    return Inversion("fast", reconstruct, lambda z, rows: models.generate(z))


def faithful(models: PackModels) -> Inversion:
    """The encoder service's fidelity FAITHFUL: z0 = E(face), then facedit_core.inversion optimises z and a
    per-face generator modulation with the pack's inversion graph; faces render with generator_modulated."""
    artefacts = models.pack.manifest["artefacts"]
    if "inversion" not in artefacts or "generator_modulated" not in artefacts:
        raise SystemExit(f"pack {models.pack.name!r} has no faithful inversion (no inversion / generator_modulated "
                         "artefacts); use --fidelity fast")
    size = int(artefacts["generator_modulated"]["modulation_size"])
    step = inversion.graph_step(session(models.pack.artefact("inversion"), 2))
    modulated = session(models.pack.artefact("generator_modulated"), 2)
    tuned: dict[str, np.ndarray] = {}  # "modulations": (N, M) of the faces reconstruct() inverted last

    def render(z: np.ndarray, rows: np.ndarray) -> np.ndarray:
        m = tuned["modulations"][rows]
        return modulated.run(None, {"z_modulation": inversion.modulated_rows(z, m)})[0]

    def reconstruct(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z0, targets = models.encode(faces), models.embed(faces)
        found = [inversion.invert(z, size, f, e, step) for z, f, e in zip(z0, faces, targets)]
        tuned["modulations"] = np.stack([r.modulation for r in found])
        z = np.stack([r.z for r in found])
        return z, render(z, np.arange(len(found)))
    return Inversion("faithful", reconstruct, render)


INVERSIONS: dict[str, Callable[[PackModels], Inversion]] = {"fast": fast, "faithful": faithful}


def register(fidelity: str, factory: Callable[[PackModels], Inversion]) -> None:
    """Make another inversion (e.g. "faithful") available to `evaluate-real --fidelity`."""
    INVERSIONS[fidelity] = factory


# ---- metrics (tests/unit/test_real_faces.py) ----

def reconstruction_metrics(faces: np.ndarray, recon: np.ndarray) -> dict[str, np.ndarray]:
    """Per face: MAE of pixels in [0, 1] and dhash / phash / whash similarity (1 - Hamming / bits)."""
    x, y = faces.astype(np.float32) / 255, recon.astype(np.float32) / 255
    out = {"mae": np.abs(x - y).reshape(len(faces), -1).mean(1)}
    per = [hash_similarity(a[None], b[None]) for a, b in zip(faces, recon)]
    out.update({k: np.array([p[k] for p in per], np.float64) for k in ("dhash", "phash", "whash")})
    return out


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two (N, K) arrays."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)


def upper_lip_darkening(before: np.ndarray, after: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Faces (N, R, R, 3) uint8 before and after an edit, cut at the same place, and a (R, R) bool mask ->
    (N,) the mean darkening of the masked pixels' luminance, in [0, 1] (lightening counts 0)."""
    return np.maximum(annotators.luminance(before) - annotators.luminance(after), 0)[:, mask].mean(1)


def moved(before: np.ndarray, after: np.ndarray, sign: float) -> np.ndarray:
    """Did each measurement move the asked way (sign > 0: up)? NaN after (face lost) counts as not moved."""
    d = np.asarray(after, np.float64) - np.asarray(before, np.float64)
    return np.where(np.isnan(d), False, d * np.sign(sign) > 0)


# ---- faces in photos ----

@dataclasses.dataclass
class Face:
    photo: int                 # its photo's index in load_photos' list (information)
    landmarks: np.ndarray      # (5, 2) photo pixels, as first detected
    window: tuple[int, int, int, int]  # x0, y0, x1, y1: where it is detected again
    affine: np.ndarray         # photo -> pack crop
    crop: np.ndarray           # (R, R, 3) the aligned face


def _window(box: np.ndarray, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = (float(v) for v in box)
    m = WINDOW_MARGIN * max(x1 - x0, y1 - y0)
    return (max(0, int(x0 - m)), max(0, int(y0 - m)), min(shape[1], int(np.ceil(x1 + m))),
            min(shape[0], int(np.ceil(y1 + m))))


def find_faces(det: FaceDetector, photo: np.ndarray, index: int, template: np.ndarray, size: int) -> list[Face]:
    faces = []
    for d in det.detect(photo):
        a = align.similarity(d.landmarks, template)
        faces.append(Face(index, np.asarray(d.landmarks, np.float64), _window(d.box, photo.shape), a,
                          align.crop(photo, a, size)))
    return faces


def redetect(det: FaceDetector, photo: np.ndarray, face: Face) -> np.ndarray | None:
    """The face's landmarks (5, 2) found again in its window of `photo`, or None when it is lost."""
    x0, y0, x1, y1 = face.window
    found = det.detect(np.ascontiguousarray(photo[y0:y1, x0:x1]))
    if not found:
        return None
    eye = float(np.linalg.norm(face.landmarks[1] - face.landmarks[0])) or 1.0
    cands = [np.asarray(d.landmarks, np.float64) + [x0, y0] for d in found]
    dist = [float(np.linalg.norm(c - face.landmarks, axis=1).mean()) for c in cands]
    best = int(np.argmin(dist))
    return cands[best] if dist[best] <= MATCH_DISTANCE * eye else None


def scaled(a: np.ndarray, size: int, resolution: int) -> np.ndarray:
    """The photo -> crop transform of a `size`-pixel crop covering what the `resolution` crop of `a` covers
    (pixel centres at integers: crop pixel q becomes (q + 0.5) s - 0.5)."""
    s = size / resolution
    return np.array([[s, 0, (s - 1) / 2], [0, s, (s - 1) / 2]]) @ np.vstack([a, [0, 0, 1]])


@dataclasses.dataclass
class Measurement:
    values: np.ndarray         # (A,) the annotators' measurements (NaN: lost, or not an annotator attribute)
    probabilities: np.ndarray  # (A,) the classifier's
    face160: np.ndarray | None # the face cut at FaceNet's size


def measure(models: PackModels, photo: np.ndarray, landmarks: np.ndarray | None) -> Measurement:
    """Measure the face with these landmarks in `photo` as the annotators measure generated faces:
    aligned to the template, values from the crop and its landmarks; roll from the photo's eyes."""
    n = len(models.attributes)
    if landmarks is None:
        return Measurement(np.full(n, np.nan), np.full(n, np.nan), None)
    a = align.similarity(landmarks, models.template)
    crop = align.crop(photo, a, models.resolution)
    raw = annotators.measure(crop, align.apply(a, landmarks))
    eyes = landmarks[1] - landmarks[0]
    raw[annotators.ATTRIBUTES.index("roll")] = np.degrees(np.arctan2(eyes[1], eyes[0]))
    values = np.array([raw[annotators.ATTRIBUTES.index(x)] if x in annotators.ATTRIBUTES else np.nan
                       for x in models.attributes], np.float64)
    probs = models.classify(crop[None])[0].astype(np.float64)
    return Measurement(values, probs, align.crop(photo, scaled(a, FACENET_SIZE, models.resolution), FACENET_SIZE))


def paste_faces(photo: np.ndarray, faces: list[Face], edited: np.ndarray, rendered: np.ndarray,
                mode: str) -> np.ndarray:
    """The photo returned by EditPhoto: every face's edited rendering blended back into it (a grey photo
    gets only the luminance of the edit, as the gateway does)."""
    out, grey = photo, images.is_grey(photo)
    for f, new, old in zip(faces, edited, rendered):
        mask = align.blend_mask(align.apply(f.affine, f.landmarks), new.shape[0])
        out = align.paste(out, f.affine, new, mask, original_face=old if mode == "delta" else None,
                          luminance_only=grey)
    return out


# ---- the run ----

@dataclasses.dataclass
class Photo:
    entry: dict                # the real-faces manifest entry (file, package, licence, status, split, ...)
    pixels: np.ndarray
    faces: list[Face]
    detect_s: float = 0.0      # detecting and aligning its faces


def load_photos(det: FaceDetector, models: PackModels, folder: Path = real_faces.DEFAULT_OUT,
                splits: tuple[str, ...] = real_faces.SPLITS) -> list[Photo]:
    """The photos of `make real-faces` (sha256-checked) in the given splits, decoded as the gateway
    decodes an upload, with every face the detector finds."""
    out = []
    for entry, data in real_faces.load(folder):
        if entry["split"] in splits:
            pixels = images.decode(data, entry["file"])
            t0 = time.perf_counter()
            faces = find_faces(det, pixels, len(out), models.template, models.resolution)
            out.append(Photo(entry, pixels, faces, time.perf_counter() - t0))
    return out


def _ms(seconds: float, n: int) -> float:
    return round(1000 * seconds / max(n, 1), 1)


def evaluate(models: PackModels, inversion: Inversion, photos: list[Photo], det: FaceDetector,
             paste: str = "delta", methods: tuple[str, ...] = METHODS, sheet_method: str | None = None,
             directions: list | None = None) -> dict:
    """Every face of `photos` through the inversion and every edit of `methods` among `directions` ((record,
    vector) pairs; default the pack's, models.directions); per-face figures (real_faces_report.aggregate
    averages them per split) and the crops of the contact sheets (`sheet_method`'s edits)."""
    if paste not in PASTE_MODES:
        raise ValueError(f"paste must be one of {PASTE_MODES}, got {paste!r}")
    pairs = [(p, f) for p in photos for f in p.faces]
    faces = [f for _, f in pairs]
    if not faces:
        raise SystemExit("no face found in the real-face photos")
    n, res = len(faces), models.resolution
    crops, rows = np.stack([f.crop for f in faces]), np.arange(len(faces))
    t0 = time.perf_counter()
    z, recon = inversion.reconstruct(crops)
    reconstruct_s = time.perf_counter() - t0
    metrics = reconstruction_metrics(crops, recon)
    e_face, e_recon = models.embed(crops), models.embed(recon)
    before = [measure(models, p.pixels, _first(redetect(det, p.pixels, f), f.landmarks)) for p, f in pairs]
    e160 = models.embed(np.stack([b.face160 for b in before]))
    start = {id(p): next(k for k, (q, _) in enumerate(pairs) if q is p) for p in photos if p.faces}
    per_face = [{"file": p.entry["file"], "split": p.entry["split"], "status": p.entry["status"],
                 "face": k - start[id(p)],
                 **{m: round(float(v[k]), 4) for m, v in metrics.items()},
                 "facenet_cosine": round(float(cosine(e_face[k:k + 1], e_recon[k:k + 1])[0]), 4),
                 "facenet_cosine_resolution": round(float(cosine(e160[k:k + 1], e_face[k:k + 1])[0]), 4),
                 "edits": {}} for k, (p, f) in enumerate(pairs)]
    other = [float(cosine(e160[i:i + 1], e160[j:j + 1])[0]) for i in range(n) for j in range(i + 1, n)
             if pairs[i][0] is not pairs[j][0]]
    base_probs = models.classify(recon)
    sheet = {"original": crops, "reconstruction": recon, "edits": {}}
    lip = annotators.regions(models.template, res)["upper_lip"]  # darkened, it shows as a moustache on a photo
    stats = models.pack.manifest.get("metrics", {}).get("annotate", {}).get("stats", {})
    iqr = np.array([stats.get(a, {}).get("iqr", np.nan) for a in models.attributes], np.float64)
    edit_times, directions = {}, models.directions if directions is None else directions
    for r, v in directions:
        if r.method not in methods:
            continue
        i = models.attributes.index(r.attribute)
        for sign, strength in (("+", r.strength_max), ("-", r.strength_min)):
            if strength == 0:
                continue
            t0 = time.perf_counter()
            edited = inversion.render((z + strength * v[None]).astype(np.float32), rows)
            spent, after, shown = time.perf_counter() - t0, [], []
            for p in photos:
                if not p.faces:
                    continue
                k0 = start[id(p)]
                t0 = time.perf_counter()
                out = paste_faces(p.pixels, p.faces, edited[k0:k0 + len(p.faces)], recon[k0:k0 + len(p.faces)], paste)
                spent += time.perf_counter() - t0
                for f in p.faces:
                    after.append(measure(models, out, redetect(det, out, f)))
                    shown.append(align.crop(out, f.affine, res))
            darkening = upper_lip_darkening(crops, np.stack(shown), lip)
            found = [k for k, a in enumerate(after) if a.face160 is not None]
            ident = np.full(n, np.nan)
            if found:
                ident[found] = cosine(models.embed(np.stack([after[k].face160 for k in found])), e160[found])
            val_b, val_a = np.array([b.values[i] for b in before]), np.array([a.values[i] for a in after])
            prob_b, prob_a = np.array([b.probabilities[i] for b in before]), np.array([a.probabilities[i] for a in after])
            rendered = models.classify(edited)[:, i]
            m_ann, m_cls = moved(val_b, val_a, strength), moved(prob_b, prob_a, strength)
            m_ren = moved(base_probs[:, i], rendered, strength)
            for k in range(n):
                per_face[k]["edits"][f"{r.id} {sign}"] = {
                    "lost": bool(after[k].face160 is None), "moved_annotator": bool(m_ann[k]),
                    "moved_classifier": bool(m_cls[k]), "moved_rendering": bool(m_ren[k]),
                    "change_iqr": None if np.isnan(val_a[k] - val_b[k]) else round(float((val_a[k] - val_b[k]) / iqr[i]), 3),
                    "identity_cosine": None if np.isnan(ident[k]) else round(float(ident[k]), 4),
                    "upper_lip_darkening": round(float(darkening[k]), 4)}
            edit_times[f"{r.id} {sign}"] = _ms(spent, n)
            print(f"[evaluate-real] {r.id} {sign}: {n} faces, moved {m_ann.mean():.2f} (annotators), identity "
                  f"{np.nanmean(ident) if found else float('nan'):.2f}, upper lip darkening {darkening.mean():.3f}",
                  flush=True)
            if r.method == (sheet_method or models.pack.default_method):
                sheet["edits"][(r.attribute, sign)] = np.stack(shown)
    return {"faces": per_face, "other_people_cosine": round(float(np.mean(other)), 4) if other else None,
            "detect_ms_per_face": _ms(sum(p.detect_s for p in photos), n),
            "reconstruct_ms_per_face": _ms(reconstruct_s, n), "edit_ms_per_face": edit_times,
            "directions": {r.id: {"attribute": r.attribute, "method": r.method, "+": r.strength_max,
                                  "-": r.strength_min} for r, _ in directions if r.method in methods},
            "sheet": sheet}


def _first(a: np.ndarray | None, b: np.ndarray) -> np.ndarray:
    return b if a is None else a
