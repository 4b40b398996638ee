"""training.packs.restore (the `restore` step): a work folder from a committed pack, the networks equal
to the pack's ONNX files, and exporting it gives the pack's artefacts again."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from facedit_core.pack import load_pack, sha256
from services.common.onnx import session
from tests.support import MODEL_STORE, ROOT
from training import checkpoints
from training.config import PackConfig
from training.encoders import crg_encoder
from training.labels import oracle
from training.methods import direction_sets, istrc, words
from training.models import PixelsIn
from training.onnx_io import strip_metadata
from training.packs.export import export
from training.packs.restore import restore


@pytest.mark.parametrize("name", ["digiface64", "synth"])
def test_restored_work_folder_reproduces_the_pack(tmp_path, name):
    cfg = PackConfig.load(ROOT / f"training/configs/{name}.json")
    work = tmp_path / "work"
    figures = restore(cfg, MODEL_STORE / name, work)
    pack = load_pack(name, MODEL_STORE)
    assert figures["version"] == pack.version
    assert set(figures["max_difference_to_onnx"]) >= {"encoder", "oracle"}
    # the restored encoder, loaded as the training steps load it, gives the served encoder's latents
    e = crg_encoder.load(cfg, work)
    pixels = np.stack([np.asarray(Image.open(p).convert("RGB"))
                       for p in sorted((pack.root / "examples").glob("*.png"))])
    with torch.no_grad():
        ours = PixelsIn(e)(torch.from_numpy(pixels)).numpy()
    served = session(pack.artefact("encoder")).run(None, {"pixels": pixels})[0]
    assert np.abs(ours - served).max() < 1e-3
    o = oracle.load(cfg, work)
    with torch.no_grad():
        probs = PixelsIn(o, sigmoid=True)(torch.from_numpy(pixels)).numpy()
    assert np.abs(probs - session(pack.artefact("classifier")).run(None, {"pixels": pixels})[0]).max() < 1e-3
    # the directions and the figures of every step come back
    records, vectors = direction_sets.collect(work)
    packed = json.loads(pack.artefact("directions").read_text())
    assert sorted(r["id"] for r in records) == sorted(r["id"] for r in packed)
    by_id = {r["id"]: vectors[r["row"]] for r in records}
    pack_vectors = np.load(pack.artefact("direction_vectors"))
    assert all(np.array_equal(by_id[r["id"]], pack_vectors[r["row"]]) for r in packed)
    report = checkpoints.read_report(work)
    assert set(pack.manifest["metrics"]) <= set(report) and report["restored"]["version"] == pack.version
    # the figures of a step are not replaced by its time (training.timings_s)
    assert all(set(report[k]) >= set(v) for k, v in pack.manifest["metrics"].items())
    # the words mappers and ISTRC's mapping and classifiers, so that export gives the whole pack
    assert set(figures["max_difference_to_onnx"]) >= {"words", "istrc"}
    assert (work / words.METHOD / "mapper.pt").exists() and (work / words.METHOD / "vocab.json").exists()
    assert np.array_equal(istrc.Istrc.load(cfg, work).weights, np.load(pack.artefact("istrc_classifiers")))


# provenance text an artefact may carry that changed since the committed pack was exported
PROVENANCE_TEXT = {"words_vocab": ("sentence_encoder",), "istrc": ("upsampling",)}


@pytest.mark.parametrize("name", ["synth", "digiface64"])
def test_a_restored_work_folder_exports_the_packs_artefacts_again(tmp_path, name):
    """Every artefact byte for byte, except provenance text in JSON and the ONNX exporter's metadata
    (stack traces with module paths) that packs exported before it was stripped still carry. With the
    config's torch threads, as `python -m training` runs: the MiniLM embeddings of the concept phrases
    (words_concepts.npy) differ in the last bits with another thread count."""
    cfg = PackConfig.load(ROOT / f"training/configs/{name}.json")
    work, out = tmp_path / "work", tmp_path / "store" / name
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        restore(cfg, MODEL_STORE / name, work)
        export(cfg, work, out)
    finally:
        torch.set_num_threads(threads)
    committed, exported = load_pack(name, MODEL_STORE), load_pack(name, out.parent)
    assert set(exported.manifest["artefacts"]) == set(committed.manifest["artefacts"])
    for artefact, entry in committed.manifest["artefacts"].items():
        ours = exported.artefact(artefact)
        if entry["sha256"] == sha256(ours):
            continue
        theirs = committed.artefact(artefact)
        if theirs.suffix == ".onnx":
            stripped = tmp_path / theirs.name
            shutil.copy(theirs, stripped)
            strip_metadata(stripped)
            assert sha256(stripped) == sha256(ours), f"{artefact}: the graph or the weights differ"
        else:
            assert theirs.suffix == ".json", f"{artefact} differs"
            a, b = json.loads(theirs.read_text()), json.loads(ours.read_text())
            for key in PROVENANCE_TEXT.get(artefact, ()):
                a.pop(key), b.pop(key)
            assert a == b, f"{artefact} differs beyond its provenance text"


def test_restore_keeps_existing_files_and_refuses_another_packs_config(tmp_path):
    cfg = PackConfig.load(ROOT / "training/configs/digiface64.json")
    work = tmp_path / "work"
    work.mkdir()
    (work / oracle.CHECKPOINT).write_bytes(b"mine")
    restore(cfg, MODEL_STORE / "digiface64", work)
    assert (work / oracle.CHECKPOINT).read_bytes() == b"mine"
    with pytest.raises(ValueError, match="not this config's pack"):
        restore(PackConfig.load(ROOT / "training/configs/synth.json"), MODEL_STORE / "digiface64", tmp_path / "other")
