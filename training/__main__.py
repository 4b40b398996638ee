"""Training CLI: `python -m training <step> --config training/configs/<pack>.json`.

Steps, in order (each reads what the previous ones wrote to the work folder):
  gan         DCGAN on rendered faces                       -> <work>/gan.pt
  encoder     CRG encoder against the frozen generator      -> <work>/encoder.pt
  oracle      attribute classifier on rendered ground truth -> <work>/oracle.pt
  directions  InterFaceGAN SVM direction per attribute      -> <work>/directions/interfacegan.*
  crg         CRG direction per attribute from ref. pairs   -> <work>/directions/crg.*
  tlgan       TL-GAN regression axis per attribute          -> <work>/directions/tlgan.*
  sefa        SeFa components, labelled by the oracle       -> <work>/directions/sefa.*
  words       GloVe -> FC word vectors (vector addition)    -> <work>/directions/words.*, <work>/words/
  istrc       FaceNet -> latent mapping + embedding classifiers -> <work>/istrc.pt
  evaluate    every method vs ground truth (training/evaluate.py) -> <work>/report.json
  export      ONNX + directions + manifest + model card + evaluation.json -> <out>/
  pack        all of the above

Long steps checkpoint every 500 steps and resume when run again.
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
from training.evaluation import ground_truth as evaluate
from training.generators import gan
from training.labels import oracle
from training.methods import crg_directions, interfacegan, istrc, sefa, tlgan, words
from training.packs import export

STEPS = {
    "gan": gan.train,
    "encoder": crg_encoder.train,
    "oracle": oracle.train,
    "directions": interfacegan.train,
    "crg": crg_directions.train,
    "tlgan": tlgan.train,
    "sefa": sefa.train,
    "words": words.train,
    "istrc": istrc.train,
    "evaluate": evaluate.evaluate,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=[*STEPS, "export", "pack"])
    parser.add_argument("--config", default="training/configs/synth.json", help="pack config (JSON)")
    parser.add_argument("--work", help="checkpoint folder (default runs/<pack>)")
    parser.add_argument("--out", help="model store folder to export to (default model_store/<pack>)")
    parser.add_argument("--fresh", action="store_true", help="delete the work folder first (no resume)")
    args = parser.parse_args(argv)

    cfg = PackConfig.load(args.config)
    torch.set_num_threads(cfg.threads)
    work = Path(args.work or f"runs/{cfg.pack}")
    out = Path(args.out or f"model_store/{cfg.pack}")
    if args.fresh and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    steps = list(STEPS) + ["export"] if args.step == "pack" else [args.step]
    t0 = time.perf_counter()
    for step in steps:
        print(f"== {step} ({cfg.pack}) ==", flush=True)
        if step == "export":
            export.export(cfg, work, out)
        else:
            STEPS[step](cfg, work)
    print(f"done in {time.perf_counter() - t0:.1f}s", flush=True)


if __name__ == "__main__":
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    main()
