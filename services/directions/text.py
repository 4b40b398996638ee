"""Text -> latent vectors for the words method (training/methods/words.py made the artefacts).

A text is split into clauses (at ',', ';', 'and', 'then'); each clause is understood as one
trained word of the pack's vocabulary, or not at all:

* one word the pack was trained on ("smile", "glasses", "old", ...): route `trained`;
* one other word of the pack's GloVe table ("spectacles", "grin"): route `glove` - its GloVe
  vector through the exported FC mapping (words.onnx) gives its own latent vector (the paper's
  open vocabulary). It is accepted when the sentence encoder agrees that the word is about a
  trained word (MiniLM cosine >= phrase_threshold) and that word's latent vector points the
  same way (cosine > 0); when the two disagree the encoder's word is used (route `phrase`,
  the provenance says so). Without the encoder: GloVe cosine to the nearest trained word
  >= word_threshold;
* anything else ("a big grin", "make him older"): route `phrase` - the MiniLM embedding of the
  clause, nearest concept phrase (cosine >= phrase_threshold) names a trained word, whose
  vector is used. Needs the sentence encoder (build/minilm, made by `make setup`).

A clause with a negation word (no, not, without, remove, ...) moves the other way (theta -> -theta).
Limits: 1-200 characters, at most 16 words. Not understood -> InvalidArgument naming what was.
"""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np

from facedit_core.errors import InvalidArgument
from facedit_core.pack import Pack
from services.common import onnx

MAX_TEXT_CHARS = 200
MAX_TEXT_WORDS = 16
MAX_TOKENS = 32  # sentence-encoder tokens per clause
_WORD = re.compile(r"[a-z]+(?:-[a-z]+)*")
_CLAUSES = re.compile(r"[,;]|\band\b|\bthen\b")


@dataclasses.dataclass(frozen=True)
class Term:
    """One understood clause: its trained word's attribute, the vectors (D,) and how it was found."""

    clause: str
    word: str            # the word whose vector is used (a trained word, or the unseen word itself)
    trained_word: str    # the trained word it stands for (attribute, recommended theta)
    attribute: str
    negated: bool
    route: str           # "trained", "glove" or "phrase"
    similarity: float    # 1 for trained words; the cosine that admitted it otherwise
    vector: np.ndarray   # unit addition vector
    anchor: np.ndarray   # averaging: typical latent of the word

    def understood(self) -> str:
        return f"{'not ' if self.negated else ''}{self.word!r} ({self.attribute}, {self.route})"


class SentenceEncoder:
    """all-MiniLM-L6-v2 as ONNX + its tokenizer: texts -> (N, 384) unit vectors."""

    def __init__(self, folder: Path, threads: int = 1):
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.enable_padding()
        self.session = onnx.session(folder / "model.onnx", onnx.Threading(threads))

    def __call__(self, texts: list[str]) -> np.ndarray:
        enc = self.tokenizer.encode_batch(texts)
        return self.session.run(None, {"input_ids": np.array([e.ids for e in enc], np.int64),
                                       "attention_mask": np.array([e.attention_mask for e in enc], np.int64)})[0]


class TextMapper:
    """The words artefacts of one pack (sha256-checked), and optionally the sentence encoder."""

    def __init__(self, pack: Pack, encoder: SentenceEncoder | None):
        self.pack, self.encoder = pack, encoder
        self.vocab = json.loads(pack.artefact("words_vocab").read_text())
        glove = np.load(pack.artefact("words_glove"), allow_pickle=False).astype(np.float32)
        self.glove_index = {w: i for i, w in enumerate(self.vocab["glove_words"])}
        self.glove = glove
        self.mapper = onnx.session(pack.artefact("words_mapper"), onnx.Threading(1))
        self.concepts = np.load(pack.artefact("words_concepts"), allow_pickle=False)
        self.concept_words = [c["word"] for c in self.vocab["concepts"]]
        self.trained = list(self.vocab["trained"])
        self.trained_vectors, self.trained_anchors = self._map(self.trained)
        if encoder is not None:  # the encoder must be the one the concept table was made with
            got = encoder([self.vocab["concepts"][0]["text"]])[0]
            if float(got @ self.concepts[0]) < 0.999:
                raise RuntimeError("the sentence encoder does not reproduce the pack's concept embeddings "
                                   "(another model?); rebuild it with `python -m training.third_party.minilm_onnx build/minilm` (make setup)")

    def _map(self, words: list[str]) -> tuple[np.ndarray, np.ndarray]:
        g = self.glove[[self.glove_index[w] for w in words]]
        vector, anchor = self.mapper.run(None, {"glove": g})
        return vector / np.linalg.norm(vector, axis=1, keepdims=True), anchor

    def theta(self, term: Term) -> float:
        """The word's recommended theta (strength) from training."""
        return float(self.vocab["trained"][term.trained_word]["theta"])

    def understand(self, text: str) -> list[Term]:
        """A text -> one Term per clause; InvalidArgument (naming what was understood) otherwise."""
        clean = text.strip().lower()
        if not clean:
            raise InvalidArgument("text is empty; give a word such as 'smile' or a phrase such as 'a big grin'")
        if len(clean) > MAX_TEXT_CHARS:
            raise InvalidArgument(f"text is {len(clean)} characters long; at most {MAX_TEXT_CHARS}")
        words = _WORD.findall(clean)
        if not words:
            raise InvalidArgument(f"text {text[:60]!r} has no words (letters a-z)")
        if len(words) > MAX_TEXT_WORDS:
            raise InvalidArgument(f"text has {len(words)} words; at most {MAX_TEXT_WORDS} words")
        terms, missed = [], []
        for clause in (c.strip() for c in _CLAUSES.split(clean)):
            tokens = _WORD.findall(clause)
            negated = any(t in self.vocab["negations"] for t in tokens)
            content = [t for t in tokens if t not in self.vocab["negations"]]
            if not content:
                continue
            term = self._clause(" ".join(content), content, negated)
            (terms if term else missed).append(term or clause)
        if missed or not terms:
            known = ", ".join(self.trained)
            said = "; understood: " + ", ".join(t.understood() for t in terms) if terms else ""
            raise InvalidArgument(f"could not map {', '.join(repr(m) for m in missed) or repr(text)} to a face "
                                  f"attribute{said}. Known words: {known}"
                                  + ("" if self.encoder else "; phrases need the sentence encoder (make setup "
                                                             "builds build/minilm), which this server lacks"))
        return terms

    def _term(self, clause, word, trained_word, negated, route, similarity, vector=None, anchor=None) -> Term:
        i = self.trained.index(trained_word)
        return Term(clause=clause, word=word, trained_word=trained_word,
                    attribute=self.vocab["trained"][trained_word]["attribute"], negated=negated, route=route,
                    similarity=round(float(similarity), 4),
                    vector=self.trained_vectors[i] if vector is None else vector,
                    anchor=self.trained_anchors[i] if anchor is None else anchor)

    def _clause(self, clause: str, content: list[str], negated: bool) -> Term | None:
        if len(content) == 1 and content[0] in self.vocab["trained"]:
            return self._term(clause, content[0], content[0], negated, "trained", 1.0)
        concept, concept_cos = self._nearest_concept(clause)
        if len(content) == 1 and content[0] in self.glove_index:
            (vector,), (anchor,) = self._map(content)
            latent_cos = self.trained_vectors @ vector
            if self.encoder is None:
                g = self.glove[self.glove_index[content[0]]]
                t = self.glove[[self.glove_index[w] for w in self.trained]]
                glove_cos = t @ g / (np.linalg.norm(t, axis=1) * np.linalg.norm(g))
                if glove_cos.max() < self.vocab["word_threshold"]:
                    return None
                nearest = self.trained[int(np.argmax(latent_cos))]
                return self._term(clause, content[0], nearest, negated, "glove", glove_cos.max(), vector, anchor)
            if concept is not None and latent_cos[self.trained.index(concept)] > 0:
                return self._term(clause, content[0], concept, negated, "glove", concept_cos, vector, anchor)
        if concept is None:
            return None
        return self._term(clause, concept, concept, negated, "phrase", concept_cos)

    def _nearest_concept(self, clause: str) -> tuple[str | None, float]:
        if self.encoder is None:
            return None, 0.0
        cos = self.concepts @ self.encoder([clause])[0]
        best = int(np.argmax(cos))
        if cos[best] < self.vocab["phrase_threshold"]:
            return None, float(cos[best])
        return self.concept_words[best], float(cos[best])
