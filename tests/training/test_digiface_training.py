"""Every step of a pack with an imported generator and measured attributes (training/configs/
tiny_digiface.json: the same pipeline as every pack, `python -m training pack`), seconds each: the
real DigiFace generator and MTCNN, few samples, and the exported pack as services read it."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.support import ROOT


@pytest.fixture(scope="module")
def tiny_digiface(tmp_path_factory):
    from training.__main__ import main

    base = tmp_path_factory.mktemp("tiny_digiface")
    work, out = base / "work", base / "store" / "tiny_digiface"
    main(["pack", "--config", str(ROOT / "training/configs/tiny_digiface.json"), "--work", str(work),
          "--out", str(out)])
    return work, out


def test_annotation_finds_most_generated_faces_and_a_plausible_template(tiny_digiface):
    work, _ = tiny_digiface
    ann = json.loads((work / "report.json").read_text())["annotate"]
    assert ann["found_share"] >= 0.8  # MTCNN finds ~95 % of DigiFace DCGAN faces
    eye_l, eye_r, nose, mouth_l, mouth_r = np.array(ann["template"])
    assert eye_l[0] < nose[0] < eye_r[0] and eye_l[1] < nose[1] < mouth_l[1]
    assert 0 < eye_l[0] and mouth_r[0] < 64 and mouth_r[1] < 64


def test_exported_pack_loads_with_every_method_and_its_alignment(tiny_digiface):
    from facedit_core.pack import load_pack

    _, out = tiny_digiface
    pack = load_pack(out.name, out.parent)
    for name in pack.manifest["artefacts"]:
        pack.artefact(name)  # sha256 checked
    assert pack.attributes == ("yaw", "roll", "smile", "mouth_open", "skin_tone")
    assert set(pack.manifest["methods"]) >= {"interfacegan", "refined", "tlgan", "crg", "sefa", "words", "istrc"}
    assert len(pack.manifest["alignment"]["template"]) == 5
    # the evaluation's figures are in evaluation.json, not repeated in the manifest
    assert "evaluation" not in pack.manifest["metrics"]
    ev = json.loads((out / "evaluation.json").read_text())
    for table in ("reconstruction_generated", "reconstruction_real"):
        row = ev[table]
        assert 0 <= row["mae"] <= 1 and 0 <= row["mse"] <= 1
        assert all(0 <= row[h] <= 1 for h in ("dhash", "phash", "whash"))
    assert ev["reconstruction_real"]["photos"] == ["skimage.data.astronaut"]
    lfw = ev["reconstruction_real_lfw"]  # real LFW faces (gray 25x25): most are found and aligned
    assert lfw["tried"] == 8 and lfw["samples"] >= 6 and 0.4 < lfw["valid_share"] <= 1
    assert 0 <= lfw["mae"] <= 1 and all(0 <= lfw[h] <= 1 for h in ("dhash", "phash", "whash"))
    card = (out / "model_card.md").read_text()
    assert "Encoder reconstruction" in card and "Edit success" in card
    assert "Words -> latent" in card and "ISTRC" in card


def test_refine_moves_the_mouth_directions_only_and_reports_both_ways(tiny_digiface):
    from facedit_core.pack import load_pack, read_directions

    work, out = tiny_digiface
    vectors = {r.id: v for r, v in read_directions(load_pack(out.name, out.parent))}
    for a in ("yaw", "roll", "skin_tone"):  # no region: InterFaceGAN's normal as it is
        assert np.array_equal(vectors[f"refined/{a}"], vectors[f"interfacegan/{a}"])
    for a in ("smile", "mouth_open"):  # fitted (a few steps here): moved off the normal, still a unit vector
        assert not np.array_equal(vectors[f"refined/{a}"], vectors[f"interfacegan/{a}"])
        assert abs(np.linalg.norm(vectors[f"refined/{a}"]) - 1) < 1e-4
    figures = json.loads((work / "report.json").read_text())["refine"]
    assert figures["smile"]["region"] == "mouth" and figures["yaw"]["region"] is None
    assert set(figures["smile"]["refined"]) == {"+", "-"}
    assert set(figures["smile"]["refined"]["+"]) == {"gain", "lip_darkening", "outside_ms", "others_ms"}
    assert "Refined directions" in (out / "model_card.md").read_text()


def test_words_of_the_digiface_lexicon_become_directions_of_its_attributes(tiny_digiface):
    work, out = tiny_digiface
    records = json.loads((work / "directions" / "words.json").read_text())
    assert [r["id"] for r in records] == [f"words/{a}" for a in ("yaw", "roll", "smile", "mouth_open", "skin_tone")]
    assert [r["word"] for r in records] == ["right", "clockwise", "smile", "open", "pale"]
    vocab = json.loads((out / "words_vocab.json").read_text())
    assert vocab["trained"]["counterclockwise"] == {**vocab["trained"]["counterclockwise"], "attribute": "roll", "sign": -1}
    assert {c["word"] for c in vocab["concepts"]} >= {"open", "closed", "pale", "dark"}
    # the edits of the evaluation include the words directions
    ev = json.loads((work / "report.json").read_text())["evaluation"]["edit_success"]
    assert {f"words/{a}" for a in ("yaw", "smile")} <= set(ev)
    # and ISTRC, through FaceNet and the mapping, on its bounded number of faces
    assert {f"istrc/{a}" for a in ("yaw", "roll", "smile", "mouth_open", "skin_tone")} <= set(ev)
    assert all(0 <= ev[f"istrc/{a}"]["positive_after_plus"] <= 1 for a in ("yaw", "smile"))
