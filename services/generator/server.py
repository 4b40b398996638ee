"""Generator service: latents -> pixels with ONNX Runtime and a dynamic batcher,
or (--backend torchserve) forwarded to TorchServe, which batches (torchserve_backend.py).

    python -m services.generator.server --port 50053 --packs synth --max-batch 64 --max-delay-ms 2
    python -m services.generator.server --packs synth --backend torchserve --torchserve-address 127.0.0.1:7070
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from facedit.v1 import common_pb2, generator_pb2, generator_pb2_grpc
from facedit_core import latents
from facedit_core.errors import InvalidArgument
from facedit_core.inversion import modulated_rows
from facedit_core.pack import Pack, load_verified
from services.common import config, deadlines, logs, metrics, onnx, security
from services.common.loading import Loading
from services.common.server import Service, service_main
from services.common.tensors import from_tensor, to_tensor
from services.common.tracing import Tracing


class OnnxGenerator:
    """One pack's generator.onnx behind a dynamic batcher, and its generator_modulated.onnx behind a second
    one when the pack has it (faces of a faithful inversion). z (N, D) float32 -> (N, R, R, 3) uint8."""

    def __init__(self, pack: Pack, threading: onnx.Threading, max_batch: int, max_delay_s: float, max_queue: int,
                 io_binding: str = "auto", workers: int = 1):
        self.pack = pack
        self.batcher = onnx.batched(pack.artefact("generator"), threading, io_binding, max_batch, max_delay_s,
                                    max_queue, workers, name=f"gen-{pack.name}")
        self.modulation_size = modulation_size(pack)
        self.modulated = None
        if self.modulation_size:
            self.modulated = onnx.batched(pack.artefact("generator_modulated"), threading, io_binding, max_batch,
                                          max_delay_s, max_queue, workers, name=f"genmod-{pack.name}")

    def generate(self, z: np.ndarray, timeout_s: float, modulations: np.ndarray | None = None) -> tuple[np.ndarray, int]:
        """z (N, D), modulations None or (N, M) -> (pixels, batch size), within timeout_s (DeadlineExceeded
        after it). Rows with modulations go through the modulated generator, batched with each other."""
        if modulations is None:
            return self.batcher.call(z, timeout_s)
        return self.modulated.call(modulated_rows(z, modulations), timeout_s)

    def close(self) -> None:
        self.batcher.close()
        if self.modulated is not None:
            self.modulated.close()


def modulation_size(pack: Pack) -> int:
    """M of the pack's generator_modulated artefact; 0 when it has none."""
    return int(pack.manifest["artefacts"].get("generator_modulated", {}).get("modulation_size", 0))


def check_modulations(request, gen, n: int) -> np.ndarray | None:
    """The request's modulations as (n, M) float32, or None when it has none; INVALID_ARGUMENT otherwise."""
    if not request.modulations.shape:
        return None
    size = gen.modulation_size
    if not size:
        raise InvalidArgument(f"modulations: pack {gen.pack.name!r} has no modulated generator on this "
                              "backend (faithful inversion); send latents alone")
    m = from_tensor(request.modulations, "modulations")
    if m.dtype != np.float32 or m.shape != (n, size):
        raise InvalidArgument(f"modulations: expected ({n}, {size}) float32 (one row per latent), "
                              f"got {list(m.shape)} {m.dtype}")
    if not np.isfinite(m).all() or np.abs(m).max() > MAX_MODULATION:
        raise InvalidArgument(f"modulations: values must be finite and within +-{MAX_MODULATION}")
    return np.ascontiguousarray(m)


MAX_MODULATION = 10.0  # |scale|, |shift| of one channel; inversions stay well below 1


class GeneratorServicer(generator_pb2_grpc.GeneratorServicer):
    def __init__(self, generators: dict, default_pack: str, default_deadline_s: float = deadlines.DEFAULT_DEADLINE_S):
        # name -> OnnxGenerator or TorchServeGenerator: anything with .pack, .modulation_size (0: none) and
        # .generate(z, timeout_s[, modulations])
        self.generators, self.default_pack = generators, default_pack
        self.default_deadline_s = default_deadline_s

    def GenerateImages(self, request, context):
        name = request.pack or self.default_pack
        gen = self.generators.get(name)
        if gen is None:
            raise InvalidArgument(f"unknown pack {name!r}; this generator serves {sorted(self.generators)}")
        z = latents.check(from_tensor(request.latents, "latents"), gen.pack.latent_dim, "latents")
        modulations = check_modulations(request, gen, len(z))
        timeout_s = deadlines.remaining(context, self.default_deadline_s)
        if modulations is None:
            pixels, batch = gen.generate(np.ascontiguousarray(z), timeout_s)
        else:
            pixels, batch = gen.generate(np.ascontiguousarray(z), timeout_s, modulations)
        return generator_pb2.GenerateImagesResponse(
            pack=common_pb2.PackRef(name=gen.pack.name, version=gen.pack.version),
            pixels=to_tensor(pixels), batch_size=batch)


def parser() -> argparse.ArgumentParser:
    p = config.parser("generator", 50053)
    p.add_argument("--packs", default=config.env("packs", "digiface64"), help="comma-separated packs (first = default)")
    config.add_batching_flags(p)
    p.add_argument("--backend", choices=["onnx", "torchserve"], default=config.env("backend", "onnx"),
                   help="onnx: ONNX Runtime in this process; torchserve: forward to TorchServe "
                        "(model <pack>-generator, made by the training package's TorchServe export)")
    p.add_argument("--torchserve-address", default=config.env("torchserve_address", "127.0.0.1:7070"),
                   help="TorchServe's gRPC inference address (--backend torchserve)")
    return p


USES = ("generator", "generator_modulated")  # the pack artefacts it reads (checked against their sha256 at start)


def create(args: argparse.Namespace, logger: logging.Logger) -> Service:
    """The generator servicer over every pack of --packs, on the backend of --backend (NOT_SERVING while
    their files are not valid: services/common/loading.py)."""
    sec = security.from_args(args, "generator", logger)  # refuses an unsafe address before loading models
    packs = [n for n in args.packs.split(",") if n]

    def build():
        loaded = load_verified(packs, Path(args.model_store), USES)
        if args.backend == "torchserve":
            from services.generator.torchserve_backend import TorchServeGenerator

            generators = {p.name: TorchServeGenerator(p, args.torchserve_address) for p in loaded}
            logs.log(logger, "loaded", packs=packs, backend="torchserve", address=args.torchserve_address)
        else:
            generators = {p.name: OnnxGenerator(p, onnx.Threading.from_flags(args), args.max_batch,
                                                args.max_delay_ms / 1e3, args.max_queue, args.io_binding,
                                                args.batch_workers)
                          for p in loaded}
            logs.log(logger, "loaded", packs=packs, backend="onnx", providers=onnx.providers())
        metrics.set_build_info("generator", {p.name: p.version for p in loaded})

        def close() -> None:
            for g in generators.values():
                g.close()
        return GeneratorServicer(generators, packs[0], args.default_deadline_s), close

    loading = Loading("generator", build, logger, args.pack_retry_s)
    # --backend torchserve: ready only while TorchServe renders for every pack (torchserve_backend.py);
    # until the packs are loaded the loading reason keeps the service NOT_SERVING on its own
    checks = {"torchserve": _torchserve_ready(loading)} if args.backend == "torchserve" else {}
    return Service("generator", loading.servicer, generator_pb2_grpc.add_GeneratorServicer_to_server,
                   "facedit.v1.Generator", loading.close, sec, loading=loading, checks=checks,
                   tracing=Tracing.from_args(args, "generator"))


def _torchserve_ready(loading: Loading):
    def check(timeout_s: float) -> None:
        if loading.ready:
            for gen in loading.servicer.generators.values():
                gen.check(timeout_s)
    return check


def main(argv: list[str] | None = None) -> None:
    service_main("generator", parser(), create, argv)


if __name__ == "__main__":
    main()
