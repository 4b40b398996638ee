"""The `restore` step: a training work folder from a built pack, so that later steps run without
retraining.

    python -m training restore --config training/configs/digiface64.json \\
        [--pack model_store/digiface64] [--work runs/digiface64] [--force]

A pack holds ONNX files, directions and the figures of its training run; its PyTorch
checkpoints stay in the work folder of the machine that trained it. On a fresh clone that folder
is gone, and the digiface64 encoder alone is 1.5 hours on 2 cores. Restoring puts back:

- encoder.pt, oracle.pt (and gan.pt for a trained generator): the ONNX weights in the
  `training.models` networks (training/packs/onnx_weights.py), checked against ONNX Runtime on
  random faces / latents (max |difference| printed; more than 1e-3, or one pixel level, is an error);
- words/mapper.pt and words/vocab.json (when the pack has the words method): both FC mappings
  from words.onnx, the trained words from words_vocab.json; istrc.pt (when it has ISTRC): the
  mapping from istrc_mapping.onnx, the classifiers from istrc_classifiers.npy and istrc.json
  (checked against ONNX Runtime like the others);
- report.json: the manifest's `metrics` and evaluation.json (the figures of every step), plus
  `restored` (which pack version, when);
- directions/<method>.json/.npy: the pack's directions, per method, in the pack's order.

Then e.g. `python -m training words`, `istrc`, `evaluate`, `export` run on it; exporting a
restored folder gives the pack's artefacts again. Not restorable (the pack does not hold them):
the annotations of packs with measured attributes (steps `annotate`, `oracle`, `crg` redo them),
the ground-truth evaluation's identity regressor (`evaluate` retrains it), ISTRC's MLP classifiers
and FaceNet pairs (`istrc` redoes them). An existing file in the work folder is never overwritten
unless --force is given.
"""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import torch

from facedit_core.pack import Pack, load_pack
from training import checkpoints
from training.config import PackConfig
from training.encoders import crg_encoder, istrc_mapping
from training.generators import gan
from training.labels import oracle, source
from training.methods import direction_sets, istrc, words
from training.models import GeneratorExport, PixelsIn
from training.onnx_io import session
from training.packs.export import EVALUATION
from training.packs.onnx_weights import load_from_onnx, onnx_layers, torch_encoder, torch_generator, torch_oracle

TOLERANCE = 1e-3  # max |torch - ONNX Runtime| of the encoder (z units) and the classifier (probabilities)
PIXEL_TOLERANCE = 1  # of the generator, in uint8 pixel levels (rounding may differ by one)


def _check(name: str, torch_out: np.ndarray, onnx_out: np.ndarray, tolerance: float = TOLERANCE) -> float:
    diff = float(np.abs(torch_out.astype(np.float64) - onnx_out.astype(np.float64)).max())
    if diff > tolerance:
        raise RuntimeError(f"restore: {name} restored from ONNX differs from ONNX Runtime by {diff:.2e} "
                           f"(> {tolerance}); the pack's network is not the architecture of this config")
    print(f"[restore] {name}: max |torch - ONNX Runtime| = {diff:.2e}", flush=True)
    return diff


def _write(path: Path, force: bool, save) -> bool:
    if path.exists() and not force:
        print(f"[restore] {path} exists, kept (--force replaces it)", flush=True)
        return False
    save(path)
    return True


def restore(cfg: PackConfig, pack_dir: Path, work: Path, force: bool = False) -> dict:
    """Write the work folder `work` from the pack at `pack_dir`; returns the checks' figures."""
    pack = load_pack(pack_dir.name, pack_dir.parent)
    if pack.latent_dim != cfg.latent_dim or pack.resolution != cfg.resolution:
        raise ValueError(f"{pack_dir}: latent {pack.latent_dim} / {pack.resolution} px, config {cfg.latent_dim} / "
                         f"{cfg.resolution} px: not this config's pack")
    if list(pack.attributes) != list(source.attributes(cfg)):
        raise ValueError(f"{pack_dir}: attributes {list(pack.attributes)}, config {list(source.attributes(cfg))}")
    work.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    r, d = cfg.resolution, cfg.latent_dim
    pixels = rng.integers(0, 256, (8, r, r, 3), dtype=np.uint8)
    checks = {}
    # the networks
    e = torch_encoder(pack.artefact("encoder"), d, r)
    o = torch_oracle(pack.artefact("classifier"), len(pack.attributes), r)
    with torch.no_grad():
        x = torch.from_numpy(pixels)
        checks["encoder"] = _check("encoder", PixelsIn(e)(x).numpy(),
                                   session(pack.artefact("encoder")).run(None, {"pixels": pixels})[0])
        checks["oracle"] = _check("oracle", PixelsIn(o, sigmoid=True)(x).numpy(),
                                  session(pack.artefact("classifier")).run(None, {"pixels": pixels})[0])
    encoder_steps = pack.manifest["metrics"].get("encoder", {}).get("steps", cfg.encoder_steps)
    _write(work / crg_encoder.CHECKPOINT, force, lambda p: checkpoints.save(p, {
        "encoder": e.state_dict(), "step": encoder_steps, "seconds": 0.0, "restored_from": pack.version}))
    _write(work / oracle.CHECKPOINT, force, lambda p: checkpoints.save(p, {
        "oracle": o.state_dict(), "resolution": r, "width": cfg.oracle_width,
        "attributes": list(pack.attributes), "restored_from": pack.version}))
    if cfg.generator == "trained":
        g = torch_generator(pack.artefact("generator"), d, r)
        z = rng.standard_normal((8, d)).astype(np.float32)
        with torch.no_grad():
            ours = GeneratorExport(g)(torch.from_numpy(z)).numpy()
        checks["generator"] = _check("generator (pixel levels)", ours,
                                     session(pack.artefact("generator")).run(None, {"z": z})[0], PIXEL_TOLERANCE)
        _write(work / gan.CHECKPOINT, force, lambda p: checkpoints.save(p, {
            "generator": g.state_dict(), "restored_from": pack.version}))
    artefacts = pack.manifest["artefacts"]
    if "words_mapper" in artefacts:
        checks["words"] = _restore_words(cfg, pack, work, force)
    if "istrc_mapping" in artefacts:
        checks["istrc"] = _restore_istrc(cfg, pack, work, force)
    # the directions, per method
    records = json.loads(pack.artefact("directions").read_text())
    vectors = np.load(pack.artefact("direction_vectors"), allow_pickle=False)
    for method in sorted({x["method"] for x in records}):
        mine = [x for x in records if x["method"] == method]
        if (work / "directions" / f"{method}.json").exists() and not force:
            print(f"[restore] directions/{method} exist, kept", flush=True)
            continue
        direction_sets.save(work, method, [{k: v for k, v in x.items() if k != "row"} for x in mine],
                            vectors[[x["row"] for x in mine]])
    # the figures of every step
    report = checkpoints.read_report(work)
    for step, figures in _figures(pack).items():
        if step not in report or force:
            checkpoints.record(work, step, figures)
    report = checkpoints.read_report(work)  # as just written: a step's figures are not replaced by its time
    for step, seconds in pack.manifest.get("training", {}).get("timings_s", {}).items():
        if step not in report:  # steps whose only figure in the manifest is their time (synth: gan, encoder)
            checkpoints.record(work, step, {"seconds": seconds})
    restored = {"pack": pack.name, "version": pack.version, "from": str(pack_dir),
                "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "max_difference_to_onnx": checks}
    checkpoints.record(work, "restored", restored)
    print(f"[restore] {work} holds {pack.name} {pack.version}: networks, {len(records)} directions, figures", flush=True)
    return restored


def _figures(pack: Pack) -> dict:
    """The figures of every step: the manifest's metrics and the evaluation's (evaluation.json, which
    packs exported before it moved out of the manifest have as metrics["evaluation"])."""
    figures = dict(pack.manifest.get("metrics", {}))
    path = pack.root / EVALUATION
    if "evaluation" not in figures and path.exists():
        figures["evaluation"] = json.loads(path.read_text())
    return figures


def _restore_words(cfg: PackConfig, pack: Pack, work: Path, force: bool) -> float:
    """words/mapper.pt (both FC mappings of words.onnx) and words/vocab.json (the trained words)."""
    path = pack.artefact("words_mapper")
    hidden = int(onnx_layers(path)[0][1]["weight"].shape[0])  # FC(50, hidden) first
    mappers = words.PackMapper(words.WordMapper(cfg.latent_dim, hidden), words.WordMapper(cfg.latent_dim, hidden))
    load_from_onnx(mappers, path)
    g = np.random.default_rng(1).standard_normal((8, words.GLOVE_DIM)).astype(np.float32)
    with torch.no_grad():
        ours = np.concatenate([t.numpy() for t in mappers(torch.from_numpy(g))], axis=1)
    diff = _check("words mapper", ours, np.concatenate(session(path).run(None, {"glove": g}), axis=1))
    folder = work / words.METHOD
    _write(folder / "mapper.pt", force, lambda p: checkpoints.save(p, {
        "addition": mappers.addition.state_dict(), "averaging": mappers.averaging.state_dict(), "hidden": hidden,
        "latent_dim": cfg.latent_dim, "restored_from": pack.version}))
    trained = json.loads(pack.artefact("words_vocab").read_text())["trained"]
    _write(folder / "vocab.json", force, lambda p: p.write_text(json.dumps(trained, indent=2)))
    return diff


def _restore_istrc(cfg: PackConfig, pack: Pack, work: Path, force: bool) -> float:
    """istrc.pt: the mapping of istrc_mapping.onnx, the logistic classifiers of the pack."""
    path = pack.artefact("istrc_mapping")
    mapping = load_from_onnx(istrc_mapping.build(cfg), path)
    e = np.random.default_rng(2).standard_normal((8, istrc.EMBEDDING)).astype(np.float32)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    with torch.no_grad():
        ours = mapping(torch.from_numpy(e)).numpy()
    diff = _check("ISTRC mapping", ours, session(path).run(None, {"embedding": e})[0])
    meta = json.loads(pack.artefact("istrc").read_text())
    if meta["attributes"] != list(source.attributes(cfg)):
        raise ValueError(f"{pack.root}: ISTRC attributes {meta['attributes']}, config {list(source.attributes(cfg))}")
    weights = np.load(pack.artefact("istrc_classifiers"), allow_pickle=False)
    biases = np.asarray(meta["biases"], np.float32)
    _write(work / istrc.CHECKPOINT, force, lambda p: checkpoints.save(p, {
        "mapping": mapping.state_dict(), "weights": torch.from_numpy(weights), "biases": torch.from_numpy(biases),
        "restored_from": pack.version}))
    return diff


def run(cfg: PackConfig, work: Path, pack_dir: Path | None = None, force: bool = False) -> dict:
    """The CLI's `restore` step: from --pack (default model_store/<pack>) into the work folder."""
    return restore(cfg, pack_dir or Path("model_store") / cfg.pack, work, force)
