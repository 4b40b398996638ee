"""training.restore: a work folder from a committed pack, the networks equal to the pack's ONNX files."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from facedit_core.pack import load_pack
from services.common.onnx import session
from tests.support import MODEL_STORE, ROOT
from training import checkpoints
from training.config import PackConfig
from training.encoders import crg_encoder
from training.labels import oracle
from training.methods import direction_sets
from training.models import PixelsIn
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


def test_restore_keeps_existing_files_and_refuses_another_packs_config(tmp_path):
    cfg = PackConfig.load(ROOT / "training/configs/digiface64.json")
    work = tmp_path / "work"
    work.mkdir()
    (work / oracle.CHECKPOINT).write_bytes(b"mine")
    restore(cfg, MODEL_STORE / "digiface64", work)
    assert (work / oracle.CHECKPOINT).read_bytes() == b"mine"
    with pytest.raises(ValueError, match="not this config's pack"):
        restore(PackConfig.load(ROOT / "training/configs/synth.json"), MODEL_STORE / "digiface64", tmp_path / "other")
