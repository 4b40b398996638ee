"""Every training step on a tiny configuration, so the training code cannot rot,
and the exported ONNX models match PyTorch."""
import json

import numpy as np
import onnxruntime as ort
import torch

from facedit_core.pack import load_pack
from tests.support import ROOT
from training.config import PackConfig
from training.data import renderer
from training.encoders import crg_encoder
from training.generators import gan
from training.labels import oracle
from training.models import GeneratorExport, PixelsIn

TINY = PackConfig.load(ROOT / "training/configs/tiny.json")


def test_pack_has_every_artefact_with_matching_sha256(tiny_pack):
    _, store = tiny_pack
    pack = load_pack("tiny", store)
    assert pack.latent_dim == TINY.latent_dim and pack.resolution == TINY.resolution
    assert pack.attributes == renderer.ATTRIBUTES
    for name in ("generator", "encoder", "classifier", "directions", "direction_vectors"):
        assert pack.artefact(name).exists()  # also checks the sha256
    records = json.loads(pack.artefact("directions").read_text())
    vectors = np.load(pack.artefact("direction_vectors"))
    by_method = {}
    for r in records:
        by_method.setdefault(r["method"], []).append(r)
    for method in ("interfacegan", "tlgan"):
        assert [r["attribute"] for r in by_method[method]] == list(renderer.ATTRIBUTES), method
    assert len([r for r in by_method["sefa"] if r["id"].startswith("sefa/component_")]) == TINY.sefa_components
    assert [r["row"] for r in records] == list(range(len(vectors)))
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    for r in records:
        if r["method"] == "interfacegan":
            assert 0 <= r["metrics"]["validation_accuracy"] <= 1
        assert r["strength_min"] < 0 < r["strength_max"] <= r["strength_limit"], r["id"]
    card = (store / "tiny" / "model_card.md").read_text()
    assert "SVM val. acc." in card and "Encoder reconstruction" in card
    # TL-GAN's heat maps and probability curves are drawn beside the card and linked from it
    from PIL import Image

    for name in ("tlgan_correlation.png", "tlgan_probability.png"):
        assert f"]({name})" in card
        with Image.open(store / "tiny" / name) as im:
            assert im.format == "PNG" and im.width > 300


def test_onnx_generator_matches_pytorch(tiny_pack):
    work, store = tiny_pack
    g = GeneratorExport(gan.load_generator(TINY, work))
    z = np.random.default_rng(1).standard_normal((5, TINY.latent_dim), dtype=np.float32)
    sess = ort.InferenceSession(str(store / "tiny" / "generator.onnx"), providers=["CPUExecutionProvider"])
    onnx_px = sess.run(None, {"z": z})[0]
    torch_px = g(torch.from_numpy(z)).numpy()
    assert onnx_px.dtype == np.uint8 and onnx_px.shape == (5, TINY.resolution, TINY.resolution, 3)
    # uint8 rounding may differ by one level where a float lands on .5
    assert np.abs(onnx_px.astype(int) - torch_px.astype(int)).max() <= 1
    assert (onnx_px != torch_px).mean() < 0.01


def test_onnx_encoder_and_classifier_match_pytorch(tiny_pack):
    work, store = tiny_pack
    pixels = renderer.render(renderer.sample_faces(3, 4), size=TINY.resolution)
    for name, model, out in (("encoder", PixelsIn(crg_encoder.load(TINY, work)), "z"),
                             ("classifier", PixelsIn(oracle.load(TINY, work), sigmoid=True), "probabilities")):
        sess = ort.InferenceSession(str(store / "tiny" / f"{name}.onnx"), providers=["CPUExecutionProvider"])
        got = sess.run([out], {"pixels": pixels})[0]
        want = model(torch.from_numpy(pixels)).detach().numpy()
        assert np.allclose(got, want, atol=1e-4), (name, np.abs(got - want).max())


def test_training_resumes_from_its_checkpoint(tiny_pack, tmp_path):
    work, _ = tiny_pack
    state = torch.load(work / gan.CHECKPOINT, weights_only=True)
    assert state["step"] == TINY.gan_steps
    # a finished run, run again, does not train further: same weights
    before = {k: v.clone() for k, v in state["generator"].items()}
    gan.train(TINY, work)
    after = torch.load(work / gan.CHECKPOINT, weights_only=True)["generator"]
    for k in before:
        if "running" not in k and "num_batches" not in k:
            assert torch.equal(before[k], after[k]), k


def test_leakage_check_runs_on_the_exported_pack(tiny_pack):
    from training.evaluation.leakage import measure

    _, store = tiny_pack
    result = measure(store / "tiny", "beard", ["age"], 3.0, n=8, seed=0)
    assert set(result) == {"+3 with_keep", "+3 without_keep", "-3 with_keep", "-3 without_keep"}
    for entry in result.values():
        assert 0 <= entry["edited_on_asked_side"] <= 1
        assert 0 <= entry["age"]["label_unchanged"] <= 1 and entry["age"]["mean_abs_change"] >= 0
