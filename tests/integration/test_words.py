"""Words method: the closed-form theta (eqs. 6-7), the tiny pack's words artefacts, text edits over gRPC."""
from __future__ import annotations

import json
import os
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch

from facedit.v1 import common_pb2
from facedit_core.errors import InvalidArgument
from tests.support import MINILM, ROOT
from training.data import lexicons, renderer
from training.methods import words


def test_closed_form_theta_is_the_least_squares_scale_and_can_be_negative():
    rng = np.random.default_rng(0)
    w, d = rng.standard_normal((5, 3, 8)), rng.standard_normal((5, 8))
    theta = words.closed_form_theta(torch.from_numpy(w), torch.from_numpy(d)).numpy()
    for b in range(5):
        for k in range(3):  # eq. 6 = argmin_theta |theta w - d|^2 for each word alone
            best = np.linalg.lstsq(w[b, k][:, None], d[b], rcond=None)[0][0]
            assert theta[b, k] == pytest.approx(best, rel=1e-9)
    one = torch.tensor([[[1.0, 0.0]]])
    assert words.closed_form_theta(one, torch.tensor([[-2.5, 7.0]])).item() == pytest.approx(-2.5)
    # theta w does not change when w is scaled or flipped
    assert np.allclose(theta[..., None] * w, words.closed_form_theta(torch.from_numpy(-3 * w), torch.from_numpy(d))
                       .numpy()[..., None] * (-3 * w))


def test_addition_loss_is_eq7_and_the_hinge_wants_theta_of_the_pair_sign():
    # two orthogonal words span d exactly: eq. 7 is zero; the hinge is zero when theta has the wanted sign
    w = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 0.5, 0.0]]])
    d = torch.tensor([[3.0, -1.0, 0.0]])
    mask = torch.ones(1, 2)
    loss, theta = words.addition_loss(w, d, mask, torch.tensor([[1.0, -1.0]]), sign_weight=1.0)
    assert theta.numpy()[0] == pytest.approx([1.5, -2.0]) and loss.item() == pytest.approx(0.0, abs=1e-12)
    loss, _ = words.addition_loss(w, d, mask, torch.tensor([[1.0, 1.0]]), sign_weight=1.0)
    assert loss.item() == pytest.approx(0.5)  # hinge: relu(-theta |w|) = 1 over 2 words
    # a word left out (mask 0) leaves its part of d unexplained: mean of 1^2 over 3 dims
    loss, _ = words.addition_loss(w, d, torch.tensor([[1.0, 0.0]]), torch.ones(1, 2), sign_weight=1.0)
    assert loss.item() == pytest.approx(1 / 3)


def test_pairs_name_the_attributes_that_differ_with_the_sign_of_the_change():
    labels = np.array([[1, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 1]], bool)
    lex = lexicons.SYNTH
    vocab = list(lex.vocab)
    i, j, ids, mask, sign = words.make_pairs(labels, np.random.default_rng(0), 400, vocab, lex,
                                             list(renderer.ATTRIBUTES))
    change = labels[j].astype(int) - labels[i].astype(int)
    assert np.array_equal(mask, change != 0)
    for b, k in zip(*np.nonzero(mask)):
        attribute, word_sign = lex.vocab[vocab[ids[b, k]]]
        assert attribute == renderer.ATTRIBUTES[k]
        assert sign[b, k] == change[b, k] * word_sign  # theta > 0 exactly when the word describes face 2


def test_tiny_pack_has_the_words_direction_set_and_serving_artefacts(tiny_pack, pack):
    import onnxruntime as ort

    work, _ = tiny_pack
    records = json.loads((work / "directions" / "words.json").read_text())
    vectors = np.load(work / "directions" / "words.npy")
    assert [r["id"] for r in records] == [f"words/{a}" for a in renderer.ATTRIBUTES]
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert all(r["strength_max"] > 0 and r["provenance"]["word"] == lexicons.SYNTH.primary[r["attribute"]] for r in records)
    assert "words" in pack.manifest["methods"] and "words" in pack.manifest["metrics"]
    assert sum(pack.artefact(a).stat().st_size for a in pack.manifest["artefacts"] if a.startswith("words")) < 4e6
    # the exported FC mapping reproduces the direction set (primary words' unit vectors)
    vocab = json.loads(pack.artefact("words_vocab").read_text())
    glove = np.load(pack.artefact("words_glove"))
    rows = [vocab["glove_words"].index(lexicons.SYNTH.primary[a]) for a in renderer.ATTRIBUTES]
    sess = ort.InferenceSession(str(pack.artefact("words_mapper")), providers=["CPUExecutionProvider"])
    vec, anchor = sess.run(None, {"glove": glove[rows].astype(np.float32)})
    unit = vec / np.linalg.norm(vec, axis=1, keepdims=True)
    assert np.abs(unit - vectors).max() < 2e-3  # float16 GloVe table in the pack
    assert anchor.shape == vec.shape


@pytest.fixture(scope="module")
def mapper(pack):
    from services.directions.text import SentenceEncoder, TextMapper

    return TextMapper(pack, SentenceEncoder(MINILM))


def test_text_mapper_routes_words_and_phrases_and_refuses_nonsense(mapper):
    (smile,) = mapper.understand("Smile")
    assert (smile.route, smile.attribute, smile.negated) == ("trained", "smile", False)
    (grin,) = mapper.understand("a big grin")
    assert (grin.route, grin.trained_word) == ("phrase", "smile") and grin.similarity >= 0.5
    (older,) = mapper.understand("make him look older")
    assert older.attribute == "age" and older.trained_word == "old"
    (spec,) = mapper.understand("spectacles")
    assert spec.attribute == "eyeglasses" and spec.route in ("glove", "phrase") and spec.word == (
        "spectacles" if spec.route == "glove" else spec.trained_word)
    two = mapper.understand("remove the beard and add glasses")
    assert [(t.attribute, t.negated) for t in two] == [("beard", True), ("eyeglasses", False)]
    for text, match in [("", "empty"), ("   ", "empty"), ("x" * 201, "at most 200"), ("12 34", "no words"),
                        ("banana", "could not map 'banana'"), ("xyzzy qwerty", "could not map"),
                        (" ".join(["smile"] * 17), "at most 16 words")]:
        with pytest.raises(InvalidArgument, match=match):
            mapper.understand(text)
    with pytest.raises(InvalidArgument, match=r"understood: 'smile' \(smile, trained\)"):
        mapper.understand("smile and banana")


def test_without_the_sentence_encoder_single_words_still_map(pack):
    from services.directions.text import TextMapper

    plain = TextMapper(pack, None)
    assert plain.understand("glasses")[0].route == "trained"
    with pytest.raises(InvalidArgument, match="phrases need the sentence encoder"):
        plain.understand("a big grin")


def test_text_edits_through_the_gateway(client):
    from facedit_core import latents
    from services.common.tensors import from_tensor

    face = client.face(seed=3)
    up = client.edit(face, [], texts=[("smile", 2.0)])
    down = client.edit(face, [], texts=[("smile", -2.0)])  # theta may be negative
    (q,) = up.quality
    assert q.method == common_pb2.METHOD_WORDS and q.attribute == "smile" and q.strength == pytest.approx(2.0)
    assert json.loads(client.attributes().directions[0].provenance) is not None
    a, b = from_tensor(up.latent, "a"), from_tensor(down.latent, "b")
    z = latents.from_seed(3, len(a))
    assert np.linalg.norm(a - z) == pytest.approx(2.0, rel=1e-4) and np.allclose((a + b) / 2, z, atol=1e-5)
    by_attribute = client.edit(face, [("smile", 2.0)], method="words")  # METHOD_WORDS + attribute = its word
    assert by_attribute.quality[0].direction_id == "words/smile"
    assert np.allclose(from_tensor(by_attribute.latent, "l"), a, atol=2e-3)  # float16 GloVe in the pack
    phrase = client.edit(face, [], texts=[("a big grin", 1.0), ("spectacles and no beard", 1.0)])
    assert [(q.attribute, q.strength) for q in phrase.quality] == [("smile", 1.0), ("eyeglasses", 1.0),
                                                                   ("beard", -1.0)]
    avg = client.edit(face, [], texts=[("old", 1.0)], text_mode="averaging")
    assert [q.attribute for q in avg.quality] == ["age"]
    half = client.edit(face, [], texts=[("old", 2.0)], text_mode="averaging")  # theta 2: all the way to E
    e = from_tensor(half.latent, "e")
    assert np.allclose((z + e) / 2, from_tensor(avg.latent, "avg"), atol=1e-4)  # theta 1 = eq. 1, (z + E) / 2
    keep = client.edit(face, [], keep=["age"], texts=[("smile", 2.0)])
    assert keep.quality[0].projected_norm < 1.0


def test_text_edit_errors_are_invalid_argument_and_name_what_was_understood(client):
    face = client.face(seed=3)
    for texts, match, mode in [([("banana", 1.0)], "could not map 'banana'", "addition"),
                               ([("", 1.0)], "text is empty", "addition"),
                               ([("smile and qwertyuiop", 1.0)], "understood: 'smile'", "addition"),
                               ([("smile", 99.0)], "outside the allowed range", "addition")]:
        with pytest.raises(grpc.RpcError) as err:
            client.edit(face, [], texts=texts, text_mode=mode)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and match in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        client.edit(face, [], keep=["age"], texts=[("smile", 1.0)], text_mode="averaging")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "addition text mode only" in err.value.details()
    assert client.edit(face, [], texts=[("smile", 1.0)]).image  # still serving


# --- the trained synth pack: text edits move the classifier score of their attribute -------------------------
SYNTH_STORE = Path(os.environ.get("FACEDIT_TEST_MODEL_STORE", ROOT / "model_store"))


@pytest.fixture(scope="module")
def synth_client(tmp_path_factory):
    from facedit_core.pack import load_pack
    from services.client import FaceditClient
    from services.common.redis_server import EmbeddedRedis
    from tests.support import Servers

    if "words_mapper" not in load_pack("synth", SYNTH_STORE).manifest["artefacts"]:
        pytest.skip(f"{SYNTH_STORE}/synth has no words artefacts yet: run `python -m training words` and export")
    redis = EmbeddedRedis(workdir=str(tmp_path_factory.mktemp("redis-synth-words"))).start()
    servers = Servers(SYNTH_STORE, "synth", redis.url)
    client = FaceditClient(servers.addresses["gateway"], timeout_s=30)
    yield client
    client.close()
    servers.stop()
    redis.stop()


@pytest.mark.parametrize("text, attribute, sense", [
    ("smile", "smile", 1), ("a big grin", "smile", 1), ("spectacles", "eyeglasses", 1),
    ("make him look older", "age", 1), ("blond", "blond_hair", 1), ("young", "age", -1)])
def test_text_edit_moves_its_attribute_the_right_way_on_synth(synth_client, text, attribute, sense):
    """Faces not yet in the word's state, edited at the word's documented theta: the classifier moves."""
    before, after = [], []
    for seed in range(60):
        r = synth_client.edit(synth_client.face(seed=seed), [], texts=[(text, 1.0)])
        theta = r.quality[0].strength_max  # the word's documented theta
        if (r.scores_before[attribute] - 0.5) * sense > 0:
            continue  # already in the word's state
        r = synth_client.edit(synth_client.face(seed=seed), [], texts=[(text, theta)])
        assert r.quality[0].attribute == attribute
        before.append(r.scores_before[attribute])
        after.append(r.scores_after[attribute])
        if len(before) == 20:
            break
    moved = sense * (np.array(after) - np.array(before))
    assert len(before) >= 10 and (moved > 0).mean() >= 0.8 and moved.mean() > 0.1, (text, moved.round(3))


def test_every_lexicon_fits_its_attribute_set_and_glove_and_a_mismatch_is_refused():
    from training.data import annotators

    known = words.glove()[0]
    lexicons.SYNTH.check(renderer.ATTRIBUTES, known)
    lexicons.DIGIFACE64.check(annotators.ATTRIBUTES, known)
    with pytest.raises(ValueError, match="attribute 'roll' has no \\+1 word"):
        lexicons.SYNTH.check(annotators.ATTRIBUTES, known)
    with pytest.raises(ValueError, match="unknown words lexicon 'klingon'"):
        lexicons.get("klingon")


def test_digiface64_pack_understands_phrases_of_its_own_attributes():
    from facedit_core.pack import load_pack
    from services.directions.text import SentenceEncoder, TextMapper
    from tests.support import MODEL_STORE

    mapper = TextMapper(load_pack("digiface64", MODEL_STORE), SentenceEncoder(MINILM))
    for text, attribute, word in [("a big grin", "smile", "smile"), ("mouth wide open", "mouth_open", "open"),
                                  ("shut the mouth", "mouth_open", "closed"), ("make the skin darker", "skin_tone", "dark"),
                                  ("tilt the head anticlockwise", "roll", "counterclockwise")]:
        (t,) = mapper.understand(text)
        assert (t.attribute, t.trained_word) == (attribute, word), text
    with pytest.raises(InvalidArgument, match="could not map 'pallid'.*Known words: smile"):
        mapper.understand("pallid")
