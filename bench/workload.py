"""What `python -m bench` measures on a pack: the edit every part applies, the faces it edits,
and the FLOPs of each model (bench/flops.py)."""
from __future__ import annotations

import json

import numpy as np

from bench.flops import count_flops
from facedit_core import images
from facedit_core.compose import compose
from facedit_core.pack import Pack

# levels: batch sizes of raw ONNX Runtime, of the in-process pipeline, concurrency of the load
BATCHES = (1, 8, 32, 64)
INPROCESS_BATCHES = (1, 32)
CONCURRENCY = (1, 8, 32, 64)
EDIT_STRENGTH = 1.5
# the edited and the kept attribute: the first of these a pack has (any pack: else its first two)
EDIT_PREFERENCE, KEEP_PREFERENCE = ("smile", "eyeglasses", "beard"), ("age", "yaw")
# the two kinds of edit: full = a default Edit (render original + edited, score both), lean = Edit with
# skip_scores (render the edited latent only: the peer's work)
EDIT_KINDS = ("lean", "full")
EDITING_ARTEFACTS = ("encoder", "classifier", "directions", "direction_vectors")


def pack_info(pack: Pack) -> dict:
    return {"name": pack.name, "version": pack.version, "resolution": pack.resolution,
            "latent_dim": pack.latent_dim, "root": str(pack.root)}


def missing_for_edits(pack: Pack) -> list[str]:
    """Artefacts an edit needs that the pack's manifest does not list (empty: the pack can edit)."""
    return [a for a in EDITING_ARTEFACTS if a not in pack.manifest["artefacts"]]


def model_flops(pack: Pack) -> dict:
    """FLOPs per image of each model, and per edit of the two edit pipelines (None without an encoder)."""
    names = ("generator",) if missing_for_edits(pack) else ("generator", "encoder", "classifier")
    per = {name: count_flops(pack.artefact(name)) for name in names}
    g, e, c = (per[n]["total"] if n in per else None for n in ("generator", "encoder", "classifier"))
    return {
        "generator_per_image": g, "encoder_per_image": e, "classifier_per_image": c,
        # the gateway's default Edit (and the full in-process pipeline): encode 1, generate 2 (original +
        # edited), score 2
        "edit_per_request": None if e is None else e + 2 * g + 2 * c,
        # Edit with skip_scores (and the lean in-process pipeline): encode 1, generate 1
        "lean_edit_per_request": None if e is None else e + g,
        # the peer script: encode 1, generate 1
        "peer_edit": None if e is None else e + g,
        "generator_by_op": per["generator"]["by_op"],
        "generator_layers": per["generator"]["layers"],
        "convention": "2 FLOPs per multiply-accumulate of Conv/ConvTranspose/Gemm/MatMul; per image (batch 1)",
    }


def face_pngs(pack: Pack, count: int = 64, seed: int = 1234) -> list[bytes]:
    """PNG files of rendered faces (training.data.renderer) at the pack's resolution."""
    from training.data.renderer import render_seed

    pixels, _ = render_seed(seed, count, size=pack.resolution)
    return [images.encode(p) for p in pixels]


def default_directions(pack: Pack) -> dict[str, np.ndarray]:
    """attribute -> unit vector of the pack's default method (directions.json/.npy)."""
    records = json.loads(pack.artefact("directions").read_text())
    vectors = np.load(pack.artefact("direction_vectors"), allow_pickle=False)
    return {r["attribute"]: vectors[r["row"]].astype(np.float32)
            for r in records if r["method"] == pack.default_method}


def edit_choice(pack: Pack) -> tuple[str, str]:
    """(edited attribute, kept attribute) of the benchmark's edit on this pack."""
    have = [a for a in pack.attributes if a in default_directions(pack)]
    if len(have) < 2:
        raise ValueError(f"pack {pack.name!r} needs {pack.default_method} directions for two attributes, "
                         f"has {have}")
    edit = next((a for a in EDIT_PREFERENCE if a in have), have[0])
    keep = next((a for a in KEEP_PREFERENCE if a in have and a != edit), next(a for a in have if a != edit))
    return edit, keep


def edit_delta(pack: Pack) -> np.ndarray:
    """The edit every part applies (edit_choice, at EDIT_STRENGTH, keeping the other attribute),
    composed as the directions service composes it."""
    vectors = default_directions(pack)
    edit, keep = edit_choice(pack)
    delta, _ = compose([vectors[edit]], [EDIT_STRENGTH], vectors[keep][None])
    return delta
