"""The words of the words method, per attribute set (a pack's config names one: `words_lexicon`).

A lexicon says which English words describe a change of which attribute:

- vocab: word -> (attribute, sign); sign +1 = the word says the attribute is gained (face 2 has
  it), -1 = lost. These are the words of the training pairs (every attribute needs a +1 word).
- primary: attribute -> the word whose vector is the direction `words/<attribute>`.
- synonyms: unseen words (never in a training pair) -> the trained word they should land near;
  the report measures how close they land.
- concepts: trained word -> phrases for the sentence encoder (MiniLM): a request's phrase is
  routed to the trained word of its nearest concept phrase. Antonyms share templates, so that
  the attribute word, not the template, decides.

Every word must be in GloVe 6B (lower case); `check` says which are not.
"""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Lexicon:
    vocab: dict[str, tuple[str, int]]
    primary: dict[str, str]
    synonyms: dict[str, str]
    concepts: dict[str, list[str]]

    def check(self, attributes: tuple[str, ...] | list[str], known_words=None) -> None:
        """Raise ValueError when the lexicon does not fit the pack's attributes (or GloVe)."""
        problems = []
        for a in attributes:
            if not any(aa == a and s > 0 for aa, s in self.vocab.values()):
                problems.append(f"attribute {a!r} has no +1 word in vocab")
            if self.primary.get(a) not in self.vocab or self.vocab[self.primary[a]][0] != a:
                problems.append(f"attribute {a!r}: primary word {self.primary.get(a)!r} is not one of its vocab words")
        for w, (a, _) in self.vocab.items():
            if a not in attributes:
                problems.append(f"word {w!r} names {a!r}, not an attribute of this pack {list(attributes)}")
        for u, t in self.synonyms.items():
            if t not in self.vocab or u in self.vocab:
                problems.append(f"synonym {u!r} -> {t!r}: the target must be a trained word and {u!r} unseen")
        for w in self.concepts:
            if w not in self.vocab:
                problems.append(f"concept {w!r} is not a trained word")
        if known_words is not None:
            missing = [w for w in [*self.vocab, *self.synonyms] if w not in known_words]
            if missing:
                problems.append(f"not in GloVe 6B: {missing}")
        if problems:
            raise ValueError("lexicon: " + "; ".join(problems))


SYNTH = Lexicon(
    vocab={
        "smile": ("smile", 1), "smiling": ("smile", 1), "frown": ("smile", -1),
        "glasses": ("eyeglasses", 1), "eyeglasses": ("eyeglasses", 1),
        "beard": ("beard", 1), "bearded": ("beard", 1), "shaven": ("beard", -1),
        "blond": ("blond_hair", 1), "blonde": ("blond_hair", 1), "brunette": ("blond_hair", -1),
        "right": ("yaw", 1), "left": ("yaw", -1),
        "old": ("age", 1), "young": ("age", -1),
    },
    primary={"smile": "smile", "eyeglasses": "glasses", "beard": "beard", "blond_hair": "blond",
             "yaw": "right", "age": "old"},
    synonyms={"grin": "smile", "grinning": "smile", "laughing": "smile", "spectacles": "glasses",
              "sunglasses": "glasses", "moustache": "beard", "mustache": "beard", "stubble": "beard",
              "blondes": "blonde", "older": "old", "elderly": "old", "younger": "young", "youthful": "young"},
    concepts={
        "smile": ["smile", "a smiling face", "make him smile", "a happy face with a smile"],
        "frown": ["frown", "a serious face without a smile", "make him frown", "stop smiling"],
        "glasses": ["glasses", "wearing glasses", "a face with eyeglasses", "add glasses"],
        "beard": ["beard", "a man with a beard", "facial hair", "add a beard"],
        "shaven": ["clean shaven", "a shaved face without a beard", "shave the beard"],
        "blond": ["blond hair", "a blonde person", "light yellow hair", "make the hair blond"],
        "brunette": ["brunette", "dark brown hair", "black hair", "make the hair dark"],
        "right": ["head turned to the right", "looking right", "turn the head right"],
        "left": ["head turned to the left", "looking left", "turn the head left"],
        "old": ["old", "older", "an old person", "make him older", "make her older", "elderly, aged face with wrinkles"],
        "young": ["young", "younger", "a young person", "make him younger", "make her younger", "a youthful face"],
    },
)

# digiface64's measured attributes (training/data/annotators.py): yaw + = nose towards the image's
# right; roll + = eye line turned clockwise in the image; smile = mouth width; mouth_open =
# darkness between the lips; skin_tone + = lighter cheeks (lighting counts too).
DIGIFACE64 = Lexicon(
    vocab={
        "smile": ("smile", 1), "smiling": ("smile", 1), "frown": ("smile", -1),
        "right": ("yaw", 1), "left": ("yaw", -1),
        "clockwise": ("roll", 1), "counterclockwise": ("roll", -1),
        "open": ("mouth_open", 1), "gaping": ("mouth_open", 1), "closed": ("mouth_open", -1),
        "pale": ("skin_tone", 1), "fair": ("skin_tone", 1), "dark": ("skin_tone", -1), "tanned": ("skin_tone", -1),
    },
    primary={"yaw": "right", "roll": "clockwise", "smile": "smile", "mouth_open": "open", "skin_tone": "pale"},
    synonyms={"grin": "smile", "grinning": "smile", "laughing": "smile", "frowning": "frown",
              "anticlockwise": "counterclockwise", "opened": "open", "yawning": "open", "shut": "closed",
              "pallid": "pale", "darker": "dark", "tan": "tanned"},
    concepts={
        "smile": ["smile", "a smiling face", "make him smile", "a happy face with a smile"],
        "frown": ["frown", "a serious face without a smile", "make him frown", "stop smiling"],
        "right": ["head turned to the right", "looking right", "turn the head right"],
        "left": ["head turned to the left", "looking left", "turn the head left"],
        "clockwise": ["head tilted clockwise", "tilt the head clockwise", "rotate the face clockwise"],
        "counterclockwise": ["head tilted counterclockwise", "tilt the head anticlockwise",
                             "rotate the face counterclockwise"],
        "open": ["open mouth", "a face with the mouth open", "open the mouth", "mouth wide open"],
        "closed": ["closed mouth", "a face with the lips together", "close the mouth", "mouth shut"],
        "pale": ["pale skin", "a face with light skin", "lighter skin", "make the skin lighter"],
        "dark": ["dark skin", "a face with dark skin", "darker skin", "make the skin darker"],
    },
)

LEXICONS = {"synth": SYNTH, "digiface64": DIGIFACE64}


def get(name: str) -> Lexicon:
    if name not in LEXICONS:
        raise ValueError(f"unknown words lexicon {name!r}: use one of {sorted(LEXICONS)} (training/data/lexicons.py)")
    return LEXICONS[name]
