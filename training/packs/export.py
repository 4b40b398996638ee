"""Step 6: export a pack into the model store.

Writes <out>/generator.onnx, encoder.onnx, classifier.onnx (uint8 NHWC pixels
at the edges), directions.json + directions.npy, manifest.json (every artefact
with its sha256) and model_card.md. The format is documented in
model_store/README.md; it is all that services read.
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

from facedit_core.pack import load_pack, sha256
from facedit_core.records import ISTRC_STRENGTH_MEANING
from training import checkpoints
from training.config import PackConfig
from training.data import lexicons, renderer
from training.data.datasets import held_out
from training.encoders import crg_encoder
from training.evaluation import plots
from training.generators import gan
from training.labels import oracle
from training.methods import direction_sets, istrc, words
from training.models import GeneratorExport, PixelsIn
from training.onnx_io import export_onnx
from training.packs.model_card import write_model_card
from training.third_party import wheels as third_party

FORMAT = "facedit-pack/1"


def export_words(cfg: PackConfig, work: Path, out: Path) -> dict:
    """The words method's serving side (services/directions/text.py): the FC mapping as ONNX, a GloVe
    table of the most frequent words (float16), the vocabulary and the concept phrases' MiniLM embeddings."""
    state = checkpoints.load(work / words.METHOD / "mapper.pt")
    add, avg = (words.WordMapper(state["latent_dim"], state["hidden"]) for _ in range(2))
    add.load_state_dict(state["addition"])
    avg.load_state_dict(state["averaging"])
    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.onnx.export(words.PackMapper(add, avg).eval(), (torch.zeros(2, words.GLOVE_DIM),),
                      str(out / "words.onnx"), dynamo=True, opset_version=18, verbose=False,
                      input_names=["glove"], output_names=["vector", "anchor"],
                      dynamic_shapes={"glove": {0: batch}}, external_data=False)
    vocab, table, concepts = words.serving_tables(work, lexicons.get(cfg.words_lexicon))
    np.save(out / "words_glove.npy", table)
    (out / "words_vocab.json").write_text(json.dumps(vocab))
    np.save(out / "words_concepts.npy", concepts)
    d = cfg.latent_dim
    return {"words_mapper": {"path": "words.onnx", "inputs": {"glove": "(N, 50) float32"},
                             "outputs": {"vector": f"(N, {d}) float32", "anchor": f"(N, {d}) float32"}},
            "words_vocab": {"path": "words_vocab.json"},
            "words_glove": {"path": "words_glove.npy", "shape": list(table.shape)},
            "words_concepts": {"path": "words_concepts.npy", "shape": [len(vocab["concepts"]), 384]}}


def export_istrc(cfg: PackConfig, work: Path, out: Path, figures: dict) -> dict:
    """ISTRC: istrc_mapping.onnx (embedding -> z), istrc_classifiers.npy (A, 512) logistic weights,
    istrc.json (biases, step, strength range, preprocessing) and the reference to FaceNet."""
    model = istrc.Istrc.load(cfg, work)
    e = istrc.EMBEDDING
    export_onnx(model.mapping, torch.zeros(2, e), out / "istrc_mapping.onnx", "embedding", "z")
    np.save(out / "istrc_classifiers.npy", model.weights.astype(np.float32))
    s = cfg.istrc_strength
    (out / "istrc.json").write_text(json.dumps({
        "attributes": model.attributes, "biases": [float(b) for b in model.biases],
        "classifier": "logistic regression on the FaceNet embedding: logit = w . e + b, w = the rows of "
                      "istrc_classifiers.npy in attribute order",
        "step": cfg.istrc_step, "strength_min": -s, "strength_max": s, "strength_limit": cfg.istrc_strength_limit,
        "strength_meaning": ISTRC_STRENGTH_MEANING, "facenet_input": istrc.SIZE, "embedding_dim": e,
        "upsampling": istrc.UPSAMPLING,
        "metrics": {a: f for a, f in figures.get("classifiers", {}).items()},
    }, indent=2))
    facenet_path, _ = third_party.pack_reference(out, third_party.FACENET)
    return {
        "facenet": {"path": facenet_path, "source": third_party.FACENET_SOURCE,
                    "inputs": {"pixels": f"(N, {istrc.SIZE}, {istrc.SIZE}, 3) uint8 RGB"},
                    "outputs": {"embedding": f"(N, {e}) float32, unit rows"}},
        "istrc_mapping": {"path": "istrc_mapping.onnx", "inputs": {"embedding": f"(N, {e}) float32"},
                          "outputs": {"z": f"(N, {cfg.latent_dim}) float32"}},
        "istrc_classifiers": {"path": "istrc_classifiers.npy", "shape": [len(model.attributes), e]},
        "istrc": {"path": "istrc.json"},
    }


def export(cfg: PackConfig, work: Path, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    g, e, o = gan.load_generator(cfg, work), crg_encoder.load(cfg, work), oracle.load(cfg, work)
    r, d = cfg.resolution, cfg.latent_dim
    export_onnx(GeneratorExport(g), torch.zeros(2, d), out / "generator.onnx", "z", "pixels")
    pixels = torch.zeros(2, r, r, 3, dtype=torch.uint8)
    export_onnx(PixelsIn(e), pixels, out / "encoder.onnx", "pixels", "z")
    export_onnx(PixelsIn(o, sigmoid=True), pixels, out / "classifier.onnx", "pixels", "probabilities")

    examples = out / "examples"
    examples.mkdir(exist_ok=True)
    pixels, _ = held_out(4, r, cfg.correlated_attributes)
    for i, p in enumerate(pixels):
        Image.fromarray(p).save(examples / f"face_{i}.png")

    report = checkpoints.read_report(work)
    records, vectors = direction_sets.collect(work)
    np.save(out / "directions.npy", vectors)
    (out / "directions.json").write_text(json.dumps(records, indent=2))

    shapes = {
        "generator": ({"z": f"(N, {d}) float32"}, {"pixels": f"(N, {r}, {r}, 3) uint8"}),
        "encoder": ({"pixels": f"(N, {r}, {r}, 3) uint8"}, {"z": f"(N, {d}) float32"}),
        "classifier": ({"pixels": f"(N, {r}, {r}, 3) uint8"},
                       {"probabilities": f"(N, {len(renderer.ATTRIBUTES)}) float32"}),
    }
    artefacts = {name: {"path": f"{name}.onnx", "inputs": i, "outputs": o_} for name, (i, o_) in shapes.items()}
    artefacts["directions"] = {"path": "directions.json"}
    artefacts["direction_vectors"] = {"path": "directions.npy", "shape": list(vectors.shape)}
    if (work / words.METHOD / "mapper.pt").exists():
        artefacts.update(export_words(cfg, work, out))
    methods = {r["method"] for r in records}
    if (work / istrc.CHECKPOINT).exists():
        artefacts.update(export_istrc(cfg, work, out, report.get("istrc", {})))
        methods.add("istrc")
    for a in artefacts.values():
        p = out / a["path"]
        a["sha256"], a["bytes"] = sha256(p), p.stat().st_size
    digest = hashlib.sha256("".join(a["sha256"] for a in artefacts.values()).encode()).hexdigest()[:10]
    manifest = {
        "format": FORMAT,
        "pack": cfg.pack,
        "version": f"{dt.date.today().isoformat()}-{digest}",
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "resolution": r,
        "latent_dim": d,
        "latent_space": "z",
        "latent_prior": "standard normal N(0, I)",
        "attributes": list(renderer.ATTRIBUTES),
        "default_method": "interfacegan",
        "methods": sorted(methods),
        "artefacts": artefacts,
        "metrics": {k: report[k] for k in ("oracle", "interfacegan", "tlgan", "sefa", "crg", "words", "istrc",
                                           "evaluation")
                    if k in report},
        "training": {"config": cfg.to_dict(), "timings_s": {k: report[k]["seconds"] for k in
                                                           ("gan", "encoder", "oracle") if k in report},
                     **({"restored": report["restored"]} if "restored" in report else {})},
        "source": {"generator": "DCGAN trained by this project on training/renderer.py faces",
                   "licence": "same as this repository"},
    }
    if "probability_along_axis" in report.get("tlgan", {}):  # pictures for the model card
        manifest["figures"] = plots.tlgan(report["tlgan"], list(renderer.ATTRIBUTES), out)
    tmp = out / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2))
    os.replace(tmp, out / "manifest.json")
    write_model_card(manifest, out / "model_card.md")
    if "evaluation" in report:  # every figure of `python -m training evaluate`, beside the card
        (out / "evaluation.json").write_text(json.dumps(report["evaluation"], indent=2, sort_keys=True) + "\n")
    pack = load_pack(out.name, out.parent)  # what services will read: every sha256 checked
    for name in artefacts:
        pack.artefact(name)
    print(f"[export] wrote {out} version {manifest['version']}")
    return {"version": manifest["version"]}
