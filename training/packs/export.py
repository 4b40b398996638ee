"""The `export` step: a pack into the model store, from the work folder.

Writes into <out>/: the generator (generator.onnx, or for an imported generator a reference to
the file `make setup` builds, ../third_party/<name>), encoder.onnx and classifier.onnx (uint8
NHWC pixels at the edges), directions.json + directions.npy, the words method's and ISTRC's
serving files when their steps ran, example faces, manifest.json (every artefact with its
sha256; format facedit_core.pack.FORMAT), model_card.md and evaluation.json (the evaluation's figures,
which the manifest does not repeat). The format is
documented in docs/packs.md; it is all that services read. The pack is read back with
facedit_core.pack.load_pack (every sha256 checked) before the step ends.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from facedit_core.pack import FORMAT, load_pack, sha256
from facedit_core.records import ISTRC_STRENGTH_MEANING
from training import checkpoints
from training.config import PackConfig
from training.data import annotators, lexicons
from training.data.datasets import held_out, latents
from training.encoders import crg_encoder
from training.encoders.facenet import EMBEDDING, SIZE, UPSAMPLING
from training.evaluation import measured, plots, real_faces_report
from training.generators import gan
from training.labels import oracle, source
from training.methods import direction_sets, istrc, words
from training.models import GeneratorExport, PixelsIn, generate
from training.onnx_io import export_onnx
from training.packs.model_card import write_model_card
from training.third_party import glove, wheels

# report.json entries copied into the manifest's metrics, in this order (those present); the evaluation's
# figures ("evaluation") go to evaluation.json beside the manifest, not into it (EVALUATION)
METRICS = ("annotate", "oracle", "interfacegan", "refine", "tlgan", "sefa", "crg", "directions", "words", "istrc", "encoder")
EVALUATION = "evaluation.json"
TIMED = ("gan", "encoder", "annotate", "oracle")  # steps whose seconds the manifest lists under training.timings_s
IMPORTED_GENERATORS = {"digiface64": wheels.DIGIFACE_GENERATOR}  # cfg.generator -> file `make setup` builds
FAITHFUL = {"digiface64": (wheels.DIGIFACE_MODULATED, wheels.DIGIFACE_INVERSION)}  # faithful inversion's graphs
FAITHFUL_MODULATION = {"digiface64": 1920}  # their modulation size: 2 x (512 + 256 + 128 + 64) channels


def export_words(cfg: PackConfig, work: Path, out: Path) -> dict:
    """The words method's serving side (services/directions/text.py): the FC mapping as ONNX, the
    vocabulary, the concept phrases' MiniLM embeddings and the GloVe table of the vocabulary's words
    (float16). The table is the wheel's rows, which `make setup` builds again from the committed
    words_vocab.json (training/third_party/glove.py): it is written to <store>/third_party/ and listed
    as ../third_party/<pack>_words_glove.npy, not committed."""
    state = checkpoints.load(work / words.METHOD / "mapper.pt")
    add, avg = (words.WordMapper(state["latent_dim"], state["hidden"]) for _ in range(2))
    add.load_state_dict(state["addition"])
    avg.load_state_dict(state["averaging"])
    export_onnx(words.PackMapper(add, avg), torch.zeros(2, words.GLOVE_DIM), out / "words.onnx", "glove",
                ["vector", "anchor"])
    vocab, table, concepts = words.serving_tables(work, lexicons.get(cfg.words_lexicon))
    table_path = glove.write_table(vocab["glove_words"], out.resolve().parent / "third_party" / glove.table_name(out.name))
    (out / "words_vocab.json").write_text(json.dumps(vocab))
    (out / "words_glove.npy").unlink(missing_ok=True)  # committed in packs exported before the table moved
    np.save(out / "words_concepts.npy", concepts)
    d = cfg.latent_dim
    return {"words_mapper": {"path": "words.onnx", "inputs": {"glove": "(N, 50) float32"},
                             "outputs": {"vector": f"(N, {d}) float32", "anchor": f"(N, {d}) float32"}},
            "words_vocab": {"path": "words_vocab.json"},
            "words_glove": {"path": f"../third_party/{table_path.name}", "shape": list(table.shape),
                            "built_by": "make setup (python -m training.third_party) from words_vocab.json's "
                                        "glove_words, not in git", "source": glove.SOURCE},
            "words_concepts": {"path": "words_concepts.npy", "shape": [len(vocab["concepts"]), 384]}}


def export_istrc(cfg: PackConfig, work: Path, out: Path, figures: dict) -> dict:
    """ISTRC: istrc_mapping.onnx (embedding -> z), istrc_classifiers.npy (A, 512) logistic weights,
    istrc.json (biases, step, strength range, preprocessing) and the reference to FaceNet."""
    model = istrc.Istrc.load(cfg, work)
    e = EMBEDDING
    export_onnx(model.mapping, torch.zeros(2, e), out / "istrc_mapping.onnx", "embedding", "z")
    np.save(out / "istrc_classifiers.npy", model.weights.astype(np.float32))
    s = cfg.istrc_strength
    (out / "istrc.json").write_text(json.dumps({
        "attributes": model.attributes, "biases": [float(b) for b in model.biases],
        "classifier": "logistic regression on the FaceNet embedding: logit = w . e + b, w = the rows of "
                      "istrc_classifiers.npy in attribute order",
        "step": cfg.istrc_step, "strength_min": -s, "strength_max": s, "strength_limit": cfg.istrc_strength_limit,
        "strength_meaning": ISTRC_STRENGTH_MEANING, "facenet_input": SIZE, "embedding_dim": e,
        "upsampling": UPSAMPLING,
        "metrics": {a: f for a, f in figures.get("classifiers", {}).items()},
    }, indent=2))
    facenet_path, _ = wheels.pack_reference(out, wheels.FACENET)
    return {
        "facenet": {"path": facenet_path, "source": wheels.FACENET_SOURCE,
                    "inputs": {"pixels": f"(N, {SIZE}, {SIZE}, 3) uint8 RGB"},
                    "outputs": {"embedding": f"(N, {e}) float32, unit rows"}},
        "istrc_mapping": {"path": "istrc_mapping.onnx", "inputs": {"embedding": f"(N, {e}) float32"},
                          "outputs": {"z": f"(N, {cfg.latent_dim}) float32"}},
        "istrc_classifiers": {"path": "istrc_classifiers.npy", "shape": [len(model.attributes), e]},
        "istrc": {"path": "istrc.json"},
    }


def export_generator(cfg: PackConfig, work: Path, out: Path) -> dict:
    """generator.onnx for a generator trained here; for an imported one, the reference to the file
    `make setup` converts from its wheel (../third_party/<name>)."""
    r, d = cfg.resolution, cfg.latent_dim
    shapes = {"inputs": {"z": f"(N, {d}) float32"}, "outputs": {"pixels": f"(N, {r}, {r}, 3) uint8"}}
    if cfg.generator in IMPORTED_GENERATORS:
        path, _ = wheels.pack_reference(out, IMPORTED_GENERATORS[cfg.generator])
        return {"path": path, **shapes, "built_by": "make setup (python -m training.third_party), not in git",
                "source": wheels.DIGIFACE_SOURCE}
    g = gan.load_generator(cfg, work)
    export_onnx(GeneratorExport(g), torch.zeros(2, d), out / "generator.onnx", "z", "pixels")
    return {"path": "generator.onnx", **shapes}


def export_faithful(cfg: PackConfig, out: Path) -> dict:
    """Faithful inversion's two graphs (training/third_party/inversion_onnx.py) for an imported generator
    of a pack that takes photos: references to the files `make setup` builds; {} for other packs."""
    files = FAITHFUL.get(cfg.generator)
    if files is None:
        return {}
    r, d, m = cfg.resolution, cfg.latent_dim, FAITHFUL_MODULATION[cfg.generator]
    modulated_path, _ = wheels.pack_reference(out, files[0])
    step_path, _ = wheels.pack_reference(out, files[1])
    built = "make setup (python -m training.third_party: inversion_onnx.py), not in git"
    return {
        "generator_modulated": {
            "path": modulated_path, "modulation_size": m, "built_by": built,
            "inputs": {"z_modulation": f"(N, {d} + {m}) float32: z, then a scale and a shift per BatchNorm channel"},
            "outputs": {"pixels": f"(N, {r}, {r}, 3) uint8"}},
        "inversion": {
            "path": step_path, "modulation_size": m, "built_by": built,
            "inputs": {"z": f"(1, {d}) float32", "modulation": f"(1, {m}) float32",
                       "target": f"(1, {r}, {r}, 3) uint8", "target_embedding": "(1, 512) float32",
                       "identity_weight": "(1,) float32"},
            "outputs": {"loss": "() float32", "pixel_loss": "() float32", "identity": "() float32",
                        "grad_z": f"(1, {d}) float32", "grad_modulation": f"(1, {m}) float32"}},
    }


def example_faces(cfg: PackConfig, work: Path, out: Path) -> None:
    """Four faces the pack's encoder can take: held-out rendered faces, or generated ones when no
    renderer draws the pack's faces."""
    examples = out / "examples"
    examples.mkdir(exist_ok=True)
    if source.has_ground_truth(cfg):
        pixels, _ = held_out(4, cfg.resolution, cfg.correlated_attributes)
    else:
        pixels = generate(gan.load_generator(cfg, work), latents(cfg.seed + measured.EVAL_SEED + 1, 4, cfg.latent_dim))
    for i, p in enumerate(pixels):
        Image.fromarray(p).save(examples / f"face_{i}.png")


def observations(pack: str) -> str:
    """What people saw looking at the pack's edits (training/configs/<pack>.observations.md), if written."""
    path = Path(__file__).resolve().parents[1] / "configs" / f"{pack}.observations.md"
    return path.read_text().strip() if path.exists() else ""


def export(cfg: PackConfig, work: Path, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    attrs = list(source.attributes(cfg))
    r, d = cfg.resolution, cfg.latent_dim
    artefacts = {"generator": export_generator(cfg, work, out), **export_faithful(cfg, out)}
    e, o = crg_encoder.load(cfg, work), oracle.load(cfg, work)
    pixels = torch.zeros(2, r, r, 3, dtype=torch.uint8)
    export_onnx(PixelsIn(e), pixels, out / "encoder.onnx", "pixels", "z")
    export_onnx(PixelsIn(o, sigmoid=True), pixels, out / "classifier.onnx", "pixels", "probabilities")
    example_faces(cfg, work, out)

    report = checkpoints.read_report(work)
    records, vectors = direction_sets.collect(work)
    np.save(out / "directions.npy", vectors)
    (out / "directions.json").write_text(json.dumps(records, indent=2))
    artefacts["encoder"] = {"path": "encoder.onnx", "inputs": {"pixels": f"(N, {r}, {r}, 3) uint8"},
                            "outputs": {"z": f"(N, {d}) float32"}}
    artefacts["classifier"] = {"path": "classifier.onnx", "inputs": {"pixels": f"(N, {r}, {r}, 3) uint8"},
                               "outputs": {"probabilities": f"(N, {len(attrs)}) float32"}}
    artefacts["directions"] = {"path": "directions.json"}
    artefacts["direction_vectors"] = {"path": "directions.npy", "shape": list(vectors.shape)}
    methods = {x["method"] for x in records}
    if (work / words.METHOD / "mapper.pt").exists():
        artefacts.update(export_words(cfg, work, out))
    if (work / istrc.CHECKPOINT).exists():
        artefacts.update(export_istrc(cfg, work, out, report.get("istrc", {})))
        methods.add("istrc")
    missing = sorted({*attrs} - {x["attribute"] for x in records if x["method"] == cfg.default_method})
    if missing:
        raise ValueError(f"default_method {cfg.default_method!r} has no direction for {missing}: run its step "
                         "or choose another default_method in the pack config")
    for a in artefacts.values():
        p = out / a["path"]
        a["sha256"], a["bytes"] = sha256(p), p.stat().st_size
    digest = hashlib.sha256("".join(a["sha256"] for a in artefacts.values()).encode()).hexdigest()[:10]
    timings = {k: report[k]["seconds"] for k in TIMED if "seconds" in report.get(k, {})}
    notes = observations(cfg.pack)
    manifest = {
        "format": FORMAT,
        "pack": cfg.pack,
        "version": f"{dt.date.today().isoformat()}-{digest}",
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "resolution": r,
        "latent_dim": d,
        "latent_space": "z",
        "latent_prior": "standard normal N(0, I)",
        "attributes": attrs,
        "default_method": cfg.default_method,
        "methods": sorted(methods),
        **({"alignment": alignment(report["annotate"])} if "annotate" in report else {}),
        "artefacts": artefacts,
        "metrics": {k: report[k] for k in METRICS if k in report},
        "training": {"config": cfg.to_dict(), **({"timings_s": timings} if timings else {}),
                     **({"restored": report["restored"]} if "restored" in report else {})},
        **({"notes": notes} if notes else {}),
        "source": gan.SOURCES[cfg.generator],
    }
    if "probability_along_axis" in report.get("tlgan", {}):  # pictures for the model card
        manifest["figures"] = plots.tlgan(report["tlgan"], attrs, out)
    tmp = out / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2))
    os.replace(tmp, out / "manifest.json")
    write_model_card(manifest, out / "model_card.md", report.get("evaluation", {}), real_faces_report.load_reports(out))
    if "evaluation" in report:  # every figure of `python -m training evaluate`, beside the card
        (out / EVALUATION).write_text(json.dumps(report["evaluation"], indent=2, sort_keys=True) + "\n")
    else:
        (out / EVALUATION).unlink(missing_ok=True)
    pack = load_pack(out.name, out.parent)  # what services will read: every sha256 checked
    for name in artefacts:
        pack.artefact(name)
    print(f"[export] wrote {out} version {manifest['version']}", flush=True)
    return {"version": manifest["version"]}


def rewrite_card(out: Path) -> None:
    """model_card.md of the built pack in `out` again from its manifest.json, evaluation.json and
    real_faces/report.json (after `python -m training evaluate-real`)."""
    manifest = json.loads((out / "manifest.json").read_text())
    evaluation = json.loads((out / EVALUATION).read_text()) if (out / EVALUATION).exists() else None
    write_model_card(manifest, out / "model_card.md", evaluation, real_faces_report.load_reports(out))


def alignment(annotation: dict) -> dict:
    """The manifest's alignment entry (photos are cut out and blended back with it) from the annotation."""
    return {"template": annotation["template"],
            "landmarks": "MTCNN order: eye, eye, nose, mouth corner, mouth corner (image left first), crop pixel "
                         "coordinates",
            "detector": annotation["detector"], "found_share_on_generated_faces": annotation["found_share"],
            "pose_attributes": list(annotators.POSE)}
