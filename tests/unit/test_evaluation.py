"""`python -m training evaluate` on the tiny pack (run by the tiny_pack fixture's `pack` step):
real properties of its figures, never the figures themselves."""
import dataclasses
import json

import numpy as np
import pytest

from facedit_core.compose import compose
from tests.support import ROOT
from training.config import PackConfig
from training.data import renderer
from training.data.datasets import latents
from training.evaluation import edits
from training.evaluation.ground_truth import label_changes, move_across
from training.generators import gan
from training.labels import oracle
from training.labels.oracle import score_latents
from training.methods import istrc

TINY = PackConfig.load(ROOT / "training/configs/tiny.json")


def _evaluation(work):
    return json.loads((work / "report.json").read_text())["evaluation"]


def test_every_direction_set_is_evaluated_for_each_of_its_attributes(tiny_pack):
    work, _ = tiny_pack
    ev = _evaluation(work)
    sets = sorted(p.stem for p in (work / "directions").glob("*.json"))
    methods = {m.name: m for m in edits.load_methods(TINY, work)}
    assert set(ev["methods"]) == set(methods) and {"interfacegan", "istrc", "istrc_mlp"} <= set(methods)
    assert set(methods) - {"istrc", "istrc_mlp"} <= set(sets)  # linear methods are direction sets; ISTRC factories
    for name, mf in ev["methods"].items():
        assert set(mf["attributes"]) == set(methods[name].attributes)
        for a, f in mf["attributes"].items():
            for source in ("encoded", "prior"):
                for mode in ("plain", "keep"):
                    entry = f[source][mode]
                    if "error" in entry:
                        continue
                    for key in ("success", "moved_towards", "leakage"):
                        assert 0 <= entry[key] <= 1, (name, a, source, mode, key)
                    assert set(entry["changed"]) == set(renderer.ATTRIBUTES) - {a}
            assert 0 <= f["encoded"]["plain"]["facenet_distance"] <= 2
            assert f["encoded"]["plain"]["identity_param_distance"] >= 0
            assert f["kept"] == [k for k in renderer.ATTRIBUTES if k != a and k in methods[name].keepable]


def test_a_strong_edit_moves_the_oracle_the_asked_way_more_often_than_chance(tiny_pack):
    work, _ = tiny_pack
    g, o = gan.load_generator(TINY, work), oracle.load(TINY, work)
    ig = next(m for m in edits.load_methods(TINY, work) if m.name == "interfacegan")
    strong = dataclasses.replace(ig, strengths={a: (-TINY.strength_limit, TINY.strength_limit) for a in ig.strengths})
    z = latents(99, 64, TINY.latent_dim)
    before = score_latents(g, o, z)
    towards = [label_changes(before, score_latents(g, o, move_across(strong, a, z, before, [])), a)["moved_towards"]
               for a in renderer.ATTRIBUTES]
    assert np.mean(towards) > 0.5, towards


def test_leakage_with_keep_is_measured_for_every_correlated_pair(tiny_pack):
    work, _ = tiny_pack
    ev = _evaluation(work)
    for name, mf in ev["methods"].items():
        for a, b in TINY.eval_correlated_pairs:
            for edit, kept in ((a, b), (b, a)):
                pair = mf["correlated_pairs"][f"{edit} keep {kept}"]
                if edit not in mf["attributes"] or kept not in mf["attributes"]:
                    assert "error" in pair
                    continue
                for source in ("encoded", "prior"):
                    assert 0 <= pair[source]["with_keep"] <= 1 and 0 <= pair[source]["without_keep"] <= 1
                lowers = mf["targets"]["pairs_keep_lowers_leakage"][f"{edit} keep {kept}"]
                assert lowers["met"] in (True, False, None)


def test_reconstruction_table_has_all_five_figures_in_range(tiny_pack):
    work, _ = tiny_pack
    ev = _evaluation(work)
    rec = ev["reconstruction"]
    for k in ("dhash", "phash", "whash"):
        t = ev["reconstruction_targets"][k]
        assert 0 <= rec[k] <= 1 and t["value"] == rec[k] and t["met"] == (rec[k] >= float(t["target"].split()[-1]))
    assert 0 < rec["mae"] <= 1 and rec["mae"] ** 2 <= rec["mse"] + 1e-5 and rec["mse"] <= rec["mae"]
    for a in renderer.ATTRIBUTES:
        for kind in ("no_edit", "reconstruction"):
            cf = ev["references"]["counterfactual_baseline"][a][kind]
            assert 0 < cf["mae"] <= 1 and all(0 <= cf[k] <= 1 for k in ("dhash", "phash", "whash"))


def test_identity_regressor_beats_the_mean_and_facenet_sees_identity(tiny_pack):
    work, _ = tiny_pack
    refs = _evaluation(work)["references"]
    acc = refs["regressor_accuracy"]["rendered"]
    assert acc["mae"] < acc["mean_predictor_mae"] and acc["l2"] < acc["mean_predictor_l2"]
    # the real FaceNet: the same rendered identity with one attribute changed is closer than two identities
    same = np.mean([refs["true_counterfactual"][a]["facenet"] for a in renderer.ATTRIBUTES])
    assert same < refs["facenet"]["different_identities"]


def test_linear_edit_with_keep_is_the_directions_service_composition(tiny_pack):
    work, _ = tiny_pack
    ig = next(m for m in edits.load_methods(TINY, work) if m.name == "interfacegan")
    records = json.loads((work / "directions" / "interfacegan.json").read_text())
    vectors = np.load(work / "directions" / "interfacegan.npy")
    rows = {r["attribute"]: v for r, v in zip(records, vectors)}
    z = latents(7, 5, TINY.latent_dim)
    moved = ig.edit(z, "age", 2.5, ["beard", "eyeglasses"]) - z
    delta, _ = compose([rows["age"]], [2.5], np.stack([rows["beard"], rows["eyeglasses"]]))
    assert np.allclose(moved, delta[None], atol=1e-5)
    assert np.abs(moved @ rows["beard"]).max() < 1e-4 and np.abs(moved @ rows["eyeglasses"]).max() < 1e-4
    assert np.allclose(np.linalg.norm(moved, axis=1), 2.5, atol=1e-4)


def test_a_registered_non_linear_method_is_evaluated_like_the_others(tiny_pack, monkeypatch):
    work, _ = tiny_pack
    ig = next(m for m in edits.load_methods(TINY, work) if m.name == "interfacegan")

    def factory(cfg, work_dir):  # a stand-in for ISTRC: any function z -> z'
        return edits.EditMethod(name="halfway", edit=lambda z, a, s, keep: ig.edit(z, a, s, keep) * 0.5 + z * 0.5,
                                strengths={"smile": (-1.0, 1.0)}, accuracy={}, keepable=frozenset(),
                                description="test method")

    monkeypatch.setattr(edits, "FACTORIES", (factory,))
    methods = edits.load_methods(TINY, work)
    assert methods[-1].name == "halfway" and methods[-1].attributes == ["smile"]
    g, o = gan.load_generator(TINY, work), oracle.load(TINY, work)
    z = latents(3, 8, TINY.latent_dim)
    before = score_latents(g, o, z)
    figures = label_changes(before, score_latents(g, o, move_across(methods[-1], "smile", z, before, [])), "smile")
    assert 0 <= figures["success"] <= 1 and 0 <= figures["leakage"] <= 1


def test_card_and_json_beside_it_carry_the_evaluation(tiny_pack):
    work, store = tiny_pack
    ev = _evaluation(work)
    assert json.loads((store / "tiny" / "evaluation.json").read_text()) == ev
    card = (store / "tiny" / "model_card.md").read_text()
    assert "## Evaluation against ground truth" in card
    for name in ev["methods"]:
        assert f"### {name}" in card
    assert "success keep (>= 0.90)" in card and ("met" in card or "MISSED" in card)


@pytest.mark.parametrize("name", ["istrc", "istrc_mlp"])
def test_istrc_is_evaluated_on_a_bounded_number_of_faces(tiny_pack, name):
    """ISTRC (training/evaluation/edits.py istrc_method; logistic and MLP classifiers) has rows like every
    method, on the first eval_istrc_samples faces of each set; its edit is training.methods.istrc.Istrc's."""
    work, _ = tiny_pack
    mf = _evaluation(work)["methods"][name]
    n = TINY.eval_istrc_samples
    assert n < TINY.eval_edit_samples and mf["samples"] == {
        "edit": n, "identity_facenet": min(n, TINY.eval_identity_samples),
        "counterfactual": min(n, TINY.eval_counterfactual_samples)}
    assert set(mf["attributes"]) == set(renderer.ATTRIBUTES) and "radians" in mf["description"]
    for a, f in mf["attributes"].items():
        assert (f["strength_min"], f["strength_max"]) == (-TINY.istrc_strength, TINY.istrc_strength)
        assert 0 <= f["accuracy"]["validation_accuracy"] <= 1
        assert f["kept"] == [k for k in renderer.ATTRIBUTES if k != a]
        for mode in ("plain", "keep"):
            assert 0 <= f["encoded"][mode]["success"] <= 1 and 0 <= f["encoded"][mode]["leakage"] <= 1
            assert 0 <= f["counterfactual"][mode]["mae"] <= 1
    assert set(mf["targets"]) >= set(renderer.ATTRIBUTES)
    method = next(m for m in edits.load_methods(TINY, work) if m.name == name)
    z = latents(4, 3, TINY.latent_dim)
    classifier = "mlp" if name == "istrc_mlp" else "logistic"
    assert np.allclose(method.edit(z, "smile", 0.25, ["age"]),
                       istrc.Istrc.load(TINY, work, classifier).edit(z, "smile", 0.25, ("age",)), atol=1e-5)
