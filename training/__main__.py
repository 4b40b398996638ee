"""Training CLI, one for every pack: `python -m training <step> --config training/configs/<pack>.json`.

Steps (each reads what the earlier ones wrote to the work folder, runs/<pack>/ by default):
  gan           DCGAN on rendered faces (generator "trained"; none for an imported generator) -> gan.pt
  encoder       CRG encoder against the frozen generator                                       -> encoder.pt
  annotate      detect and measure generated faces (attributes.source "annotators")           -> annotations.npz
  oracle        attribute classifier on the renderer's ground truth or on the annotations     -> oracle.pt
  interfacegan  InterFaceGAN SVM direction per attribute                   -> directions/interfacegan.*
  crg           CRG direction per attribute from encoded references        -> directions/crg.*
  tlgan         TL-GAN regression axis per attribute                       -> directions/tlgan.*
  sefa          SeFa components, labelled by the oracle                    -> directions/sefa.*
  words         GloVe -> FC word vectors (vector addition)                 -> directions/words.*, words/
  istrc         FaceNet -> latent mapping + embedding classifiers          -> istrc.pt
  evaluate      every method against the renderer's ground truth, or (measured attributes) reconstruction of
                generated and real faces and edit success scored by the classifier -> report.json
  export        ONNX + directions + manifest + model card + evaluation.json -> <out>/
  pack          the config's `steps` in order (by default all of the above that apply, then export)
  restore       a work folder from a built pack (--pack, default model_store/<pack>), to rerun single steps
  evaluate-real the built pack (--out, default model_store/<pack>) on the real photos of `make real-faces`
                (--fidelity fast|...): reconstruction, edits measured on the returned photo, contact sheets
                -> <out>/real_faces/, the model card's "Real faces" section (not part of `pack`)

Long steps report progress, checkpoint every 500 steps and resume when run again.
"""
from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import torch

from training.config import PackConfig
from training.encoders import crg_encoder
from training.evaluation import ground_truth, measured, real_faces, real_faces_report
from training.generators import gan
from training.labels import annotate, oracle, source
from training.methods import crg_directions, interfacegan, istrc, refine, sefa, tlgan, words
from training.packs import export, restore


def evaluate(cfg: PackConfig, work: Path) -> dict:
    """Against the renderer's ground truth when the pack has it, else what can be measured."""
    return (ground_truth if source.has_ground_truth(cfg) else measured).evaluate(cfg, work)


STEPS = {
    "gan": gan.train,
    "encoder": crg_encoder.train,
    "annotate": annotate.annotate,
    "oracle": oracle.train,
    "interfacegan": interfacegan.train,
    "refine": refine.train,
    "crg": crg_directions.train,
    "tlgan": tlgan.train,
    "sefa": sefa.train,
    "words": words.train,
    "istrc": istrc.train,
    "evaluate": evaluate,
}
PACK_STEPS = (*STEPS, "export")  # what a config's `steps` may list


def default_steps(cfg: PackConfig) -> tuple[str, ...]:
    """Every step that applies to the pack's generator and attribute source, then export."""
    skip = {"gan"} if cfg.generator != "trained" else set()
    if source.has_ground_truth(cfg):
        skip |= {"annotate", "refine"}  # no alignment template: no photos to paste into
    return tuple(s for s in PACK_STEPS if s not in skip)


def pack_steps(cfg: PackConfig) -> tuple[str, ...]:
    steps = cfg.steps or default_steps(cfg)
    unknown = [s for s in steps if s not in PACK_STEPS]
    if unknown:
        raise SystemExit(f"config {cfg.pack}: unknown step(s) {unknown} in `steps`; valid: {list(PACK_STEPS)}")
    return steps


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=[*PACK_STEPS, "pack", "restore", "evaluate-real"])
    parser.add_argument("--config", default="training/configs/synth.json", help="pack config (JSON)")
    parser.add_argument("--work", help="checkpoint folder (default runs/<pack>)")
    parser.add_argument("--out", help="model store folder to export to (default model_store/<pack>)")
    parser.add_argument("--fresh", action="store_true", help="delete the work folder first (no resume)")
    parser.add_argument("--pack", type=Path, help="restore: the built pack (default model_store/<pack>)")
    parser.add_argument("--force", action="store_true", help="restore: replace files that exist in the work folder")
    real = parser.add_argument_group("evaluate-real")
    real.add_argument("--fidelity", default="fast", help="the inversion (training.evaluation.real_faces.INVERSIONS)")
    real.add_argument("--methods", default=",".join(real_faces.METHODS), help="comma-separated direction methods")
    real.add_argument("--paste", default="delta", choices=real_faces.PASTE_MODES, help="EditPhoto's paste mode")
    real.add_argument("--photos", type=Path, default=Path("build/real_faces"), help="the folder of `make real-faces`")
    real.add_argument("--sheets", type=Path, default=None,
                      help="also contact sheets of every face (any licence) here (default out/real_faces/<pack>)")
    args = parser.parse_args(argv)

    cfg = PackConfig.load(args.config)
    torch.set_num_threads(cfg.threads)
    work = Path(args.work or f"runs/{cfg.pack}")
    out = Path(args.out or f"model_store/{cfg.pack}")
    if args.step == "evaluate-real":  # the built pack, not the work folder
        real_faces_report.run(out, args.fidelity, args.photos, args.paste, tuple(args.methods.split(",")),
                              cfg.threads, args.sheets or Path("out/real_faces") / cfg.pack)
        export.rewrite_card(out)
        return
    if args.fresh and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    steps = pack_steps(cfg) if args.step == "pack" else (args.step,)
    t0 = time.perf_counter()
    for step in steps:
        print(f"== {step} ({cfg.pack}) ==", flush=True)
        if step == "export":
            export.export(cfg, work, out)
        elif step == "restore":
            restore.run(cfg, work, args.pack, args.force)
        else:
            STEPS[step](cfg, work)
    print(f"done in {time.perf_counter() - t0:.1f}s", flush=True)


if __name__ == "__main__":
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    main()
