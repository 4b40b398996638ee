"""The parts of `python -m bench` that run inside its own process, with no service: the machine's
matmul peak, raw ONNX Runtime (the ceiling), the gateway's Edit without RPC, and the eager
PyTorch peer (bench/peer.py). The served parts use the same objects as their references."""
from __future__ import annotations

import functools
import gc
import itertools
import threading
import time

import numpy as np

from bench.harness import Timed, timed_loop
from bench.workload import (
    BATCHES,
    EDIT_KINDS,
    EDIT_STRENGTH,
    INPROCESS_BATCHES,
    default_directions,
    edit_choice,
    edit_delta,
    model_flops,
)
from facedit_core import images
from facedit_core.compose import compose
from facedit_core.pack import Pack
from services.common import onnx


def matmul_gflops(n: int = 2048, seconds: float = 2.0) -> dict:
    """Reference peak: n x n float32 torch matmul (synchronous on the CPU; cuda is synchronised)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    sync = torch.cuda.synchronize if a.is_cuda else (lambda: None)

    def step():
        torch.mm(a, b)
        sync()

    t = timed_loop(step, seconds, min_iters=2, warmup=2)
    return {"n": n, "iterations": t.iterations, "seconds": round(t.seconds, 3),
            "gflops": 2 * n ** 3 * t.iterations / t.seconds / 1e9, "threads": torch.get_num_threads()}


class RawGenerator:
    """generator.onnx in two ONNX Runtime sessions as the services create them: one whose idle
    threads sleep (the services' default) and one whose threads spin."""

    def __init__(self, pack: Pack, threads: int = 0):
        self.pack = pack
        self.sessions = {spinning: onnx.session(pack.artefact("generator"), onnx.Threading(threads, spinning=spinning))
                         for spinning in (False, True)}
        self.input = self.sessions[False].get_inputs()[0].name

    def measure(self, batch: int, seconds: float, warmup: int = 3) -> dict:
        """Back-to-back calls at `batch` in each session; the faster of the two is the ceiling
        (`images_per_s`, `spinning` says which), both rates are kept; `images_per_cpu_s` is the
        better of the two (spinning burns CPU without making images)."""
        z = np.random.default_rng(batch).standard_normal((batch, self.pack.latent_dim), dtype=np.float32)
        runs = {}
        for spinning, session in self.sessions.items():
            t = timed_loop(functools.partial(session.run, None, {self.input: z}), seconds, warmup=warmup)
            runs[spinning] = {"iterations": t.iterations, "seconds": round(t.seconds, 3),
                              "images_per_s": t.rate(batch), "latency_ms_p50": t.p50_ms(),
                              "images_per_cpu_s": t.per_cpu_s(batch)}
        best = max(runs, key=lambda sp: runs[sp]["images_per_s"])
        per_cpu = [r["images_per_cpu_s"] for r in runs.values() if r["images_per_cpu_s"]]
        return {"batch": batch, **runs[best], "spinning": best,
                "images_per_s_spinning_off": runs[False]["images_per_s"],
                "images_per_s_spinning_on": runs[True]["images_per_s"],
                "images_per_cpu_s": max(per_cpu, default=None)}


def raw_ort(pack: Pack, batches=BATCHES, seconds: float = 2.0, threads: int = 0) -> list[dict]:
    """RawGenerator.measure at each batch size: the ceiling."""
    raw = RawGenerator(pack, threads)
    return [raw.measure(b, seconds) for b in batches]


def raw_ort_concurrent(pack: Pack, batches=BATCHES, seconds: float = 2.0, threads: int = 0,
                       workers: int = 2) -> list[dict]:
    """generator.onnx as the services run it under load (--batch-workers): `workers` threads calling one
    session of `Threading(threads).shared(workers)` intra-op threads back to back, at each batch size.
    Another reading of the ceiling, beside raw_ort's one call at a time on every thread."""
    threading_ = onnx.Threading(threads).shared(workers)
    session = onnx.session(pack.artefact("generator"), threading_)
    name = session.get_inputs()[0].name
    rng = np.random.default_rng(0)

    def loop(feed: dict, counts: list[int], k: int, start: threading.Barrier) -> None:
        start.wait()
        end = time.perf_counter() + seconds
        while time.perf_counter() < end or counts[k] == 0:
            session.run(None, feed)
            counts[k] += 1

    out = []
    for b in batches:
        feed = {name: rng.standard_normal((b, pack.latent_dim), dtype=np.float32)}
        for _ in range(2):
            session.run(None, feed)
        counts = [0] * workers
        start = threading.Barrier(workers + 1)
        pool = [threading.Thread(target=loop, args=(feed, counts, k, start), daemon=True) for k in range(workers)]
        for t in pool:
            t.start()
        c0, t0 = time.process_time(), time.perf_counter()
        start.wait()
        for t in pool:
            t.join()
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
        made = b * sum(counts)
        out.append({"batch": b, "workers": workers, "intra_op_threads": threading_.intra_op,
                    "iterations": sum(counts), "seconds": round(elapsed, 3), "images_per_s": made / elapsed,
                    "images_per_cpu_s": made / cpu if cpu > 0 else None})
    return out


class InProcessEditor:
    """The gateway's Edit without RPC, batched: PNG files -> edited PNG files (+ scores of a full edit)."""

    def __init__(self, pack: Pack, threads: int = 0):
        self.pack = pack
        self.encoder = onnx.session(pack.artefact("encoder"), onnx.Threading(threads))
        self.generator = onnx.session(pack.artefact("generator"), onnx.Threading(threads))
        self.classifier = onnx.session(pack.artefact("classifier"), onnx.Threading(threads))
        self.gen_input = self.generator.get_inputs()[0].name
        self.vectors = default_directions(pack)
        self.edited, self.kept = edit_choice(pack)

    def edit(self, pngs: list[bytes], scores: bool = True) -> tuple[list[bytes], np.ndarray | None]:
        """B PNG files -> B edited PNG files and scores (2B, attributes): before, after (a full edit), or
        None with scores=False (a lean edit, the gateway's skip_scores: only the edited latent rendered)."""
        r = self.pack.resolution
        pixels = np.stack([images.resize(images.decode(b), r) for b in pngs])
        z = self.encoder.run(None, {"pixels": pixels})[0]
        kept = self.vectors[self.kept][None]
        # composed per request, as the directions service does for each Edit
        deltas = np.stack([compose([self.vectors[self.edited]], [EDIT_STRENGTH], kept)[0] for _ in pngs])
        edited = (z + deltas).astype(np.float32)
        if not scores:
            out = self.generator.run(None, {self.gen_input: edited})[0]
            return [images.encode(p) for p in out], None
        out = self.generator.run(None, {self.gen_input: np.concatenate([z, edited])})[0]
        probs = self.classifier.run(None, {"pixels": out})[0]  # (2B, attributes): before, after
        n = len(pngs)
        return [images.encode(p) for p in out[n:]], probs

    def timed(self, pngs: list[bytes], batch: int, seconds: float, scores: bool, warmup: int = 3) -> Timed:
        """Back-to-back edits of `batch` faces at a time (cycling through `pngs`)."""
        chunks = itertools.cycle([pngs[i:i + batch] for i in range(0, len(pngs) - batch + 1, batch)]
                                 or [pngs[:batch]])
        return timed_loop(lambda: self.edit(next(chunks), scores), seconds, warmup=warmup)


def inprocess_edits(editor: InProcessEditor, pngs: list[bytes], batches=INPROCESS_BATCHES, seconds: float = 2.0,
                    scores: bool = True) -> list[dict]:
    """Edits/s of `editor` at each batch size: full edits (scores) or lean ones (scores=False)."""
    out = []
    for b in batches:
        t = editor.timed(pngs, b, seconds, scores)
        out.append({"batch": b, "iterations": t.iterations, "seconds": round(t.seconds, 3),
                    "edits_per_s": t.rate(b), "latency_ms_p50": t.p50_ms(), "edits_per_cpu_s": t.per_cpu_s(b)})
    return out


def peer_editor(pack: Pack):
    """The peer's networks in eager PyTorch, checked against ONNX Runtime on a few faces (the baseline
    computes the same function) -> (PeerEditor, its generator module, parity figures)."""
    import torch

    from bench.peer import PeerEditor
    from training.models import images_to_pixels, pixels_to_images
    from training.packs.onnx_weights import torch_encoder, torch_generator

    gen = torch_generator(pack.artefact("generator"), pack.latent_dim, pack.resolution)
    enc = torch_encoder(pack.artefact("encoder"), pack.latent_dim, pack.resolution)
    gen_session = onnx.session(pack.artefact("generator"))
    enc_session = onnx.session(pack.artefact("encoder"))
    z = np.random.default_rng(1).standard_normal((8, pack.latent_dim), dtype=np.float32)
    with torch.no_grad():
        torch_pixels = images_to_pixels(gen(torch.from_numpy(z))).numpy()
    ort_pixels = gen_session.run(None, {gen_session.get_inputs()[0].name: z})[0]
    gen_diff = int(np.abs(torch_pixels.astype(np.int16) - ort_pixels.astype(np.int16)).max())
    with torch.no_grad():
        torch_z = enc(pixels_to_images(torch.from_numpy(ort_pixels))).numpy()
    enc_diff = float(np.abs(torch_z - enc_session.run(None, {"pixels": ort_pixels})[0]).max())
    parity = {"parity_generator_max_pixel_diff": gen_diff, "parity_encoder_max_abs_diff": enc_diff}
    return PeerEditor(gen, enc, edit_delta(pack)), gen, parity


def peer_edits(editor, pack: Pack, pngs: list[bytes], seconds: float, warmup: int = 3) -> Timed:
    """The peer script's loop, one face at a time: decode, edit, encode; at its best of 1 torch thread and
    torch's default (all cores), each for half of `seconds`: eager torch with every core collapses when
    other processes want them (2.8 edits/s with 2 threads against 36.6 with 1 on a shared machine)."""
    import torch

    faces = itertools.cycle(pngs)

    def one():
        pixels = images.resize(images.decode(next(faces)), pack.resolution)
        return images.encode(editor(pixels))

    default, best = torch.get_num_threads(), None
    try:
        for threads in sorted({1, default}):
            torch.set_num_threads(threads)
            t = timed_loop(one, seconds / 2, warmup=warmup)
            if best is None or t.rate() > best.rate():
                best = t
    finally:
        torch.set_num_threads(default)
    return best


def peer_baseline(pack: Pack, pngs: list[bytes], seconds: float = 2.0) -> dict:
    """Eager PyTorch, torch.no_grad, one face at a time: decode, encoder, z + delta, generator, encode."""
    import torch

    editor, gen, parity = peer_editor(pack)
    t = peer_edits(editor, pack, pngs, seconds)
    # the generator alone, eager, batch 1 (for GFLOP/s next to raw ONNX Runtime)
    z1 = torch.from_numpy(np.random.default_rng(1).standard_normal((1, pack.latent_dim), dtype=np.float32))

    def gen_only():
        with torch.no_grad():
            gen(z1)

    g = timed_loop(gen_only, seconds / 2)
    return {"iterations": t.iterations, "seconds": round(t.seconds, 3), "edits_per_s": t.rate(),
            "latency_ms_p50": t.p50_ms(), "generator_only_images_per_s": g.rate(), **parity,
            "torch_threads": torch.get_num_threads()}


def offline_parts(pack: Pack, pngs: list[bytes], seconds: float, batches=BATCHES,
                  inprocess_batches=INPROCESS_BATCHES, matmul_n: int = 2048, threads: int = 0) -> dict:
    """Everything that runs inside this process at the start of the run: FLOPs, matmul, raw ORT,
    in-process edits, peer (the last two only for a pack that can edit, i.e. when `pngs` are given)."""
    out = {"flops": model_flops(pack)}
    print(f"FLOPs: generator {out['flops']['generator_per_image'] / 1e6:.2f} MFLOP/image", flush=True)
    out["reference_matmul"] = matmul_gflops(matmul_n, seconds)
    print(f"reference matmul {matmul_n}: {out['reference_matmul']['gflops']:.1f} GFLOP/s", flush=True)
    out["raw_ort_generator"] = raw_ort(pack, batches, seconds, threads)
    print("raw ORT: " + ", ".join(f"b{r['batch']} {r['images_per_s']:.0f} img/s"
                                  for r in out["raw_ort_generator"]), flush=True)
    out["raw_ort_generator_concurrent"] = raw_ort_concurrent(pack, batches, seconds, threads)
    print("raw ORT, 2 calls at once: " + ", ".join(f"b{r['batch']} {r['images_per_s']:.0f} img/s"
                                                  for r in out["raw_ort_generator_concurrent"]), flush=True)
    if pngs:
        editor = InProcessEditor(pack, threads)
        for kind in EDIT_KINDS:
            rows = inprocess_edits(editor, pngs, inprocess_batches, seconds, scores=kind == "full")
            out[f"inprocess_{kind}_edits"] = rows
            print(f"in-process {kind} edits: " + ", ".join(f"b{r['batch']} {r['edits_per_s']:.0f} edit/s"
                                                           for r in rows), flush=True)
        out["peer_baseline"] = peer_baseline(pack, pngs, seconds)
        print(f"peer baseline: {out['peer_baseline']['edits_per_s']:.0f} edit/s", flush=True)
    gc.collect()  # the sessions above are unreferenced now: freed before the services start
    return out
