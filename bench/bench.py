"""`make bench`: the serving path against its ceiling and its alternatives, in one run, on one pack.

    python -m bench.bench [--pack synth] [--model-store model_store] [--seconds 3]

Parts, in this order (the in-process ones first, with no service running):
  flops          FLOPs per image of generator/encoder/classifier (bench/flops.py)
  matmul         reference: 2048x2048 float32 torch matmul, GFLOP/s (the machine's practical peak)
  raw_ort        generator.onnx in ONNX Runtime at batch 1, 8, 32, 64 (the ceiling)
  inprocess      edits without RPC, batched, both kinds the gateway serves: lean (decode PNG, encoder,
                 compose, generator on the edited latent, encode PNG: Edit with skip_scores) and full
                 (also the original rendered and both scored by the classifier: a default Edit);
                 batch 1 and 32
  peer           eager PyTorch, one face at a time (bench/peer.py): decode, encoder, z + delta,
                 generator, encode
  service        the generator service (ONNX backend) of a real stack (services.stack.Stack:
                 Redis + the four services as processes), concurrency 1, 8, 32, 64
  gateway        Edit through the gateway of that stack: a PNG of a rendered face in, the
                 edited PNG out (one edit + one kept attribute), concurrency 1, 8, 32, 64; once lean
                 (skip_scores: the peer's work) and once full (scores before/after: the default)
  torchserve     a real TorchServe serving the pack's .mar and a generator service process with
                 --backend torchserve, under the same load as `service`

Load: each client is a thread with its own channel; every thread makes a few warm-up
calls, then all start together and call back to back for --seconds (or until
--max-requests). Requests are synchronous, so when the last thread returns nothing is
in flight; throughput = completed requests / (last completion - start).

Writes --out (bench/results.json) and --plot (bench/results.png, needs matplotlib: the
`bench` extra) and prints a table. The issue-4 targets are reported as ratios, never
asserted. Everything started is stopped by pid at the end, also on error or Ctrl-C.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import gc
import itertools
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import numpy as np  # noqa: E402

from bench.flops import count_flops  # noqa: E402
from facedit_core import images  # noqa: E402
from facedit_core.compose import compose  # noqa: E402
from facedit_core.pack import Pack, load_pack  # noqa: E402
from services.common import onnx  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BATCHES = (1, 8, 32, 64)
CONCURRENCY = (1, 8, 32, 64)
INPROCESS_BATCHES = (1, 32)
EDIT_STRENGTH = 1.5
# the edited and the kept attribute: the first of these a pack has (any pack: else its first two)
EDIT_PREFERENCE, KEEP_PREFERENCE = ("smile", "eyeglasses", "beard"), ("age", "yaw")
# RPCs of one gateway Edit with an image: client->gateway, encoder.EncodeImages, generator.GenerateImages
# and, in a full edit, encoder.ScoreImages; plus directions.Compose (overlapping the encode) when the
# gateway's compose memo is off (--compose-memo 0: with it on, the bench's repeated edit is composed once
# and then answered from the memo after one Redis MGET). ListDirections is cached by the gateway.
EDIT_HOPS = {"full": ("client->gateway", "encode", "generate", "score"),
             "lean": ("client->gateway", "encode", "generate")}
# the two kinds of edit: full = a default Edit (render original + edited, score both), lean = Edit with
# skip_scores (render the edited latent only: the peer's work)
EDIT_KINDS = ("lean", "full")
TARGETS = {
    "service_c64_over_raw_b64": (">=", 0.8),
    "gateway_lean_c32_over_inprocess_lean_b32": (">=", 0.5),
    "gateway_c32_over_inprocess_b32": (">=", 0.5),
    "gateway_lean_c32_over_peer": (">=", 2.0),
    "service_p99_over_p50_c8": ("<=", 3.0),
    "gateway_lean_p99_over_p50_c8": ("<=", 3.0),
    "gateway_p99_over_p50_c8": ("<=", 3.0),
    "service_c1_excess_ms": ("<=", 2.0),
    "gateway_lean_c1_excess_ms": ("<=", 2.0),
    "gateway_c1_excess_ms": ("<=", 2.0),
}


# --------------------------------------------------------------------------- helpers

def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else float("nan")


def cpu_seconds(pids=()) -> float:
    """CPU time (user + system) of this process and of `pids` (other live processes), in seconds."""
    total = time.process_time()
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _timed_loop(step: Callable[[], object], seconds: float, min_iters: int = 3, max_iters: int = 100_000,
                warmup: int = 3, cpu: list[float] | None = None) -> tuple[int, float, list[float]]:
    """Warm up, then call `step` until `seconds` (at least min_iters, at most max_iters times).

    Returns (iterations, elapsed seconds, per-call seconds). `step` must be synchronous.
    `cpu`, when given, gets the CPU seconds this process spent in the measured calls appended.
    """
    for _ in range(warmup):
        step()
    per_call = []
    c0 = time.process_time()
    t0 = time.perf_counter()
    end = t0 + seconds
    n = 0
    while n < max_iters and (n < min_iters or time.perf_counter() < end):
        t = time.perf_counter()
        step()
        per_call.append(time.perf_counter() - t)
        n += 1
    if cpu is not None:
        cpu.append(time.process_time() - c0)
    return n, time.perf_counter() - t0, per_call


def machine_info() -> dict:
    import onnxruntime

    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    info = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_model": model,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnxruntime": onnxruntime.__version__,
        "providers": onnx.providers(),
        "load_average_at_start": list(os.getloadavg()),
    }
    with contextlib.suppress(ImportError):
        import torch
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    with contextlib.suppress(ImportError):
        import grpc
        info["grpcio"] = grpc.__version__
    return info


def _cpu_snapshot() -> tuple[float, float, float]:
    """(wall, CPU seconds of the whole machine, CPU seconds of this process and its reaped children)."""
    busy = float("nan")
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        # user + nice + system: what processes use (irq/softirq time, e.g. loopback traffic, is nobody's)
        busy = sum(fields[:3]) / os.sysconf("SC_CLK_TCK")
    t = os.times()
    return time.perf_counter(), busy, t.user + t.system + t.children_user + t.children_system


def other_load(start: tuple[float, float, float]) -> dict:
    """CPU that other processes of the machine used since `start`, in cores: the run's noise.

    Every process the benchmark starts is a (reaped) child, so its CPU time counts as ours."""
    wall, busy, own = (b - a for a, b in zip(start, _cpu_snapshot()))
    return {"seconds": round(wall, 1), "machine_busy_cores": round(busy / wall, 3),
            "this_run_cores": round(own / wall, 3), "other_processes_cores": round(max(busy - own, 0.0) / wall, 3)}


def pack_info(pack: Pack) -> dict:
    return {"name": pack.name, "version": pack.version, "resolution": pack.resolution,
            "latent_dim": pack.latent_dim, "root": str(pack.root)}


EDITING_ARTEFACTS = ("encoder", "classifier", "directions", "direction_vectors")


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


def matmul_gflops(n: int = 2048, seconds: float = 2.0) -> dict:
    """Reference peak: n x n float32 torch matmul (synchronous on the CPU; cuda is synchronised)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    sync = torch.cuda.synchronize if a.is_cuda else (lambda: None)

    def step():
        torch.mm(a, b)
        sync()

    iters, elapsed, _ = _timed_loop(step, seconds, min_iters=2, warmup=2)
    return {"n": n, "iterations": iters, "seconds": round(elapsed, 3),
            "gflops": 2 * n ** 3 * iters / elapsed / 1e9, "threads": torch.get_num_threads()}


def face_pngs(pack: Pack, count: int = 64, seed: int = 1234) -> list[bytes]:
    """PNG files of rendered faces (training.renderer) at the pack's resolution."""
    from training.renderer import render_seed

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
    composed with services.directions.compose."""
    vectors = default_directions(pack)
    edit, keep = edit_choice(pack)
    delta, _ = compose([vectors[edit]], [EDIT_STRENGTH], vectors[keep][None])
    return delta


# --------------------------------------------------------------------------- in-process parts

def raw_ort(pack: Pack, batches=BATCHES, seconds: float = 2.0, threads: int = 0) -> list[dict]:
    """generator.onnx in ONNX Runtime, back-to-back calls at each batch size, once with a session
    whose idle threads sleep (the services' default) and once with spinning threads; the faster
    of the two is the ceiling (`images_per_s`, `spinning` says which), both are kept;
    `images_per_cpu_s` is the better of the two."""
    rng = np.random.default_rng(0)
    latents = {b: rng.standard_normal((b, pack.latent_dim), dtype=np.float32) for b in batches}
    runs: dict[bool, dict[int, dict]] = {}
    for spinning in (False, True):
        session = onnx.session(pack.artefact("generator"), onnx.Threading(threads, spinning=spinning))
        name = session.get_inputs()[0].name
        runs[spinning] = {}
        for b, z in latents.items():
            cpu: list[float] = []
            iters, elapsed, per_call = _timed_loop(lambda: session.run(None, {name: z}), seconds, cpu=cpu)
            runs[spinning][b] = {"iterations": iters, "seconds": round(elapsed, 3), "images_per_s": b * iters / elapsed,
                                 "latency_ms_p50": _percentile(per_call, 50) * 1e3,
                                 "images_per_cpu_s": b * iters / cpu[0] if cpu[0] > 0 else None}
        del session
    out = []
    for b in batches:
        best = max((False, True), key=lambda sp: runs[sp][b]["images_per_s"])
        per_cpu = [runs[sp][b]["images_per_cpu_s"] for sp in (False, True) if runs[sp][b]["images_per_cpu_s"]]
        out.append({"batch": b, **runs[best][b], "spinning": best,
                    "images_per_s_spinning_off": runs[False][b]["images_per_s"],
                    "images_per_s_spinning_on": runs[True][b]["images_per_s"],
                    # the most CPU-efficient of the two (spinning burns CPU without making images)
                    "images_per_cpu_s": max(per_cpu, default=None)})
    return out


def raw_ort_concurrent(pack: Pack, batches=BATCHES, seconds: float = 2.0, threads: int = 0,
                       workers: int = 2) -> list[dict]:
    """generator.onnx as the services run it under load (--batch-workers): `workers` threads calling one
    session of `Threading(threads).shared(workers)` intra-op threads back to back, at each batch size.
    Another reading of the ceiling, beside raw_ort's one call at a time on every thread."""
    threading_ = onnx.Threading(threads).shared(workers)
    session = onnx.session(pack.artefact("generator"), threading_)
    name = session.get_inputs()[0].name
    rng = np.random.default_rng(0)
    out = []
    for b in batches:
        z = rng.standard_normal((b, pack.latent_dim), dtype=np.float32)
        for _ in range(2):
            session.run(None, {name: z})
        counts = [0] * workers
        start = threading.Barrier(workers + 1)

        def loop(k: int):
            start.wait()
            end = time.perf_counter() + seconds
            while time.perf_counter() < end or counts[k] == 0:
                session.run(None, {name: z})
                counts[k] += 1

        pool = [threading.Thread(target=loop, args=(k,), daemon=True) for k in range(workers)]
        for t in pool:
            t.start()
        c0, t0 = time.process_time(), time.perf_counter()
        start.wait()
        for t in pool:
            t.join()
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
        images = b * sum(counts)
        out.append({"batch": b, "workers": workers, "intra_op_threads": threading_.intra_op,
                    "iterations": sum(counts), "seconds": round(elapsed, 3), "images_per_s": images / elapsed,
                    "images_per_cpu_s": images / cpu if cpu > 0 else None})
    del session
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


def inprocess_edits(pack: Pack, pngs: list[bytes], batches=INPROCESS_BATCHES, seconds: float = 2.0,
                    threads: int = 0, scores: bool = True, editor: InProcessEditor | None = None) -> list[dict]:
    """Edits/s of InProcessEditor at each batch size: full edits (scores) or lean ones (scores=False)."""
    editor = editor or InProcessEditor(pack, threads)
    out = []
    for b in batches:
        chunks = itertools.cycle([pngs[i:i + b] for i in range(0, len(pngs) - b + 1, b)] or [pngs[:b]])
        cpu: list[float] = []
        iters, elapsed, per_call = _timed_loop(lambda: editor.edit(next(chunks), scores), seconds, cpu=cpu)
        out.append({"batch": b, "iterations": iters, "seconds": round(elapsed, 3),
                    "edits_per_s": b * iters / elapsed, "latency_ms_p50": _percentile(per_call, 50) * 1e3,
                    "edits_per_cpu_s": b * iters / cpu[0] if cpu[0] > 0 else None})
    return out


def peer_editor(pack: Pack):
    """The peer's networks in eager PyTorch, checked against ONNX Runtime on a few faces (the baseline
    computes the same function) -> (PeerEditor, its generator module, parity figures)."""
    import torch

    from bench.peer import PeerEditor
    from training.models import images_to_pixels, pixels_to_images
    from training.onnx_weights import torch_encoder, torch_generator

    gen = torch_generator(pack.artefact("generator"), pack.latent_dim, pack.resolution)
    enc = torch_encoder(pack.artefact("encoder"), pack.latent_dim, pack.resolution)
    session = onnx.session(pack.artefact("generator"))
    z = np.random.default_rng(1).standard_normal((8, pack.latent_dim), dtype=np.float32)
    with torch.no_grad():
        torch_pixels = images_to_pixels(gen(torch.from_numpy(z))).numpy()
    ort_pixels = session.run(None, {session.get_inputs()[0].name: z})[0]
    gen_diff = int(np.abs(torch_pixels.astype(np.int16) - ort_pixels.astype(np.int16)).max())
    enc_session = onnx.session(pack.artefact("encoder"))
    with torch.no_grad():
        torch_z = enc(pixels_to_images(torch.from_numpy(ort_pixels))).numpy()
    enc_diff = float(np.abs(torch_z - enc_session.run(None, {"pixels": ort_pixels})[0]).max())
    parity = {"parity_generator_max_pixel_diff": gen_diff, "parity_encoder_max_abs_diff": enc_diff}
    return PeerEditor(gen, enc, edit_delta(pack)), gen, parity


def peer_edits(editor, pack: Pack, pngs: list[bytes], seconds: float) -> tuple[int, float, list[float]]:
    """The peer script's loop, one face at a time: decode, edit, encode -> (edits, seconds, per-edit s)."""
    faces = itertools.cycle(pngs)

    def one():
        pixels = images.resize(images.decode(next(faces)), pack.resolution)
        return images.encode(editor(pixels))

    return _timed_loop(one, seconds)


def peer_baseline(pack: Pack, pngs: list[bytes], seconds: float = 2.0) -> dict:
    """Eager PyTorch, torch.no_grad, one face at a time: decode, encoder, z + delta, generator, encode."""
    import torch

    editor, gen, parity = peer_editor(pack)
    iters, elapsed, per_call = peer_edits(editor, pack, pngs, seconds)
    # the generator alone, eager, batch 1 (for GFLOP/s next to raw ONNX Runtime)
    z1 = torch.from_numpy(np.random.default_rng(1).standard_normal((1, pack.latent_dim), dtype=np.float32))

    def gen_only():
        with torch.no_grad():
            gen(z1)

    g_iters, g_elapsed, _ = _timed_loop(gen_only, seconds / 2)
    return {"iterations": iters, "seconds": round(elapsed, 3), "edits_per_s": iters / elapsed,
            "latency_ms_p50": _percentile(per_call, 50) * 1e3,
            "generator_only_images_per_s": g_iters / g_elapsed, **parity,
            "torch_threads": torch.get_num_threads()}


# --------------------------------------------------------------------------- load over gRPC

@dataclasses.dataclass
class Client:
    """What one load thread needs: call(i) makes request i (synchronously) and returns an int
    worth averaging (e.g. the batch size that served it) or None; close() ends the channel."""
    call: Callable[[int], int | None]
    close: Callable[[], None]


def run_load(make_client: Callable[[int], Client], concurrency: int, seconds: float, max_requests: int,
             warmup_calls: int = 2, stop: threading.Event | None = None, pids=()) -> dict:
    """`concurrency` threads, each with its own Client, calling back to back (see module doc).
    `pids`: the serving processes; their CPU time and this process's during the run give
    `per_cpu_s` (requests per CPU second of client + servers)."""
    import grpc

    stop = stop or threading.Event()
    counter = itertools.count()
    start: dict[str, float] = {}

    def mark():
        start["cpu0"] = cpu_seconds(pids)
        start["t0"] = time.perf_counter()
        start["end"] = start["t0"] + seconds

    barrier = threading.Barrier(concurrency, action=mark)
    results: list[dict] = [{} for _ in range(concurrency)]

    def worker(k: int):
        res = results[k]
        lat, info, errors, last = [], [], {}, None
        client = None
        try:
            client = make_client(k)
            for w in range(warmup_calls):
                client.call(-1 - w)
        except Exception as err:  # noqa: BLE001 - reported, and the barrier must not hang
            res["setup_error"] = f"{type(err).__name__}: {err}"
            barrier.abort()
            return
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            client.close()
            return
        end = start["end"]
        while not stop.is_set():
            i = next(counter)
            if i >= max_requests or time.perf_counter() >= end:
                break
            t = time.perf_counter()
            try:
                v = client.call(i)
            except grpc.RpcError as err:
                errors[err.code().name] = errors.get(err.code().name, 0) + 1
                last = time.perf_counter()
                continue
            last = time.perf_counter()
            lat.append(last - t)
            if v is not None:
                info.append(v)
        client.close()
        res.update(lat=lat, info=info, errors=errors, last=last)

    threads = [threading.Thread(target=worker, args=(k,), daemon=True, name=f"load-{k}")
               for k in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(0.5)
    cpu_s = cpu_seconds(pids) - start["cpu0"] if "cpu0" in start else float("nan")
    setup_errors = [r["setup_error"] for r in results if "setup_error" in r]
    if setup_errors:
        raise RuntimeError(f"load clients failed to start: {setup_errors[0]}")
    lat = [x for r in results for x in r.get("lat", [])]
    info = [x for r in results for x in r.get("info", [])]
    errors: dict[str, int] = {}
    for r in results:
        for code, n in r.get("errors", {}).items():
            errors[code] = errors.get(code, 0) + n
    lasts = [r["last"] for r in results if r.get("last") is not None]
    elapsed = (max(lasts) - start["t0"]) if lasts else float("nan")
    return {"concurrency": concurrency, "requests": len(lat), "errors": errors, "seconds": round(elapsed, 3),
            "throughput": len(lat) / elapsed if lat else 0.0,
            "latency_ms_p50": _percentile(lat, 50) * 1e3, "latency_ms_p90": _percentile(lat, 90) * 1e3,
            "latency_ms_p99": _percentile(lat, 99) * 1e3, "latency_ms_mean": float(np.mean(lat)) * 1e3 if lat else None,
            "mean_batch": float(np.mean(info)) if info else None,
            "cpu_s": round(cpu_s, 3), "per_cpu_s": len(lat) / cpu_s if lat and cpu_s > 0 else None}


def _channel(address: str):
    import grpc

    return grpc.insecure_channel(address, options=[("grpc.max_receive_message_length", 64 << 20),
                                                   ("grpc.max_send_message_length", 64 << 20)])


def generator_client(address: str, pack: Pack) -> Callable[[int], Client]:
    """One latent per GenerateImages request; returns the batch size that served it."""
    from facedit.v1 import generator_pb2, generator_pb2_grpc
    from services.common.tensors import to_tensor

    def make(k: int) -> Client:
        channel = _channel(address)
        stub = generator_pb2_grpc.GeneratorStub(channel)
        rng = np.random.default_rng(k)
        requests = [generator_pb2.GenerateImagesRequest(
            pack=pack.name, latents=to_tensor(rng.standard_normal((1, pack.latent_dim), dtype=np.float32)))
            for _ in range(16)]
        expected = [1, pack.resolution, pack.resolution, 3]

        def call(i: int) -> int:
            resp = stub.GenerateImages(requests[i % len(requests)], timeout=30)
            if list(resp.pixels.shape) != expected:
                raise RuntimeError(f"generator answered shape {list(resp.pixels.shape)}, expected {expected}")
            return resp.batch_size

        return Client(call, channel.close)

    return make


def gateway_client(address: str, pngs: list[bytes], edit: str, keep: str,
                   skip_scores: bool = False) -> Callable[[int], Client]:
    """Edit with FaceSource.image (a PNG), one edit and one kept attribute, full (scores) or lean
    (skip_scores); returns None."""
    from facedit.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc

    def make(k: int) -> Client:
        channel = _channel(address)
        stub = gateway_pb2_grpc.GatewayStub(channel)
        requests = [gateway_pb2.EditRequest(
            face=gateway_pb2.FaceSource(image=png),
            edits=[common_pb2.EditOp(attribute=edit, strength=EDIT_STRENGTH)],
            keep=[keep], skip_scores=skip_scores) for png in pngs]

        def call(i: int) -> None:
            resp = stub.Edit(requests[(k + i) % len(requests)], timeout=30)
            if not resp.image.startswith(b"\x89PNG"):
                raise RuntimeError("gateway answered an Edit without a PNG")
            if bool(resp.scores_after) == skip_scores:
                raise RuntimeError(f"gateway answered an Edit with skip_scores={skip_scores} with "
                                   f"{len(resp.scores_after)} scores")
            return None

        return Client(call, channel.close)

    return make


def rpc_round_trip_ms(address: str, calls: int = 300) -> float:
    """p50 of an empty unary RPC (grpc.health.v1 Check) to a service: one hop's fixed cost."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with _channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        req = health_pb2.HealthCheckRequest()
        _, _, per_call = _timed_loop(lambda: stub.Check(req, timeout=10), 0.0, min_iters=calls, warmup=20)
    return _percentile(per_call, 50) * 1e3


def load_levels(make_client, levels, seconds: float, max_requests: int, stop: threading.Event,
                label: str, pids=()) -> list[dict]:
    out = []
    for c in levels:
        r = run_load(make_client, c, seconds, max_requests, stop=stop, pids=pids)
        print(f"  {label} c{c}: {r['throughput']:.1f}/s p50 {r['latency_ms_p50']:.2f} ms "
              f"p99 {r['latency_ms_p99']:.2f} ms" + (f" errors {r['errors']}" if r["errors"] else ""), flush=True)
        out.append(r)
        if stop.is_set():
            break
    return out


# --------------------------------------------------------------------------- processes

def wait_healthy(address: str, proc: subprocess.Popen, timeout_s: float, log: Path) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"process exited with {proc.returncode}; see {log}")
            with contextlib.suppress(grpc.RpcError):
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == \
                        health_pb2.HealthCheckResponse.SERVING:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{address} not healthy after {timeout_s}s; see {log}")
            time.sleep(0.1)


class GeneratorProcess:
    """`python -m services.generator.server ...` as a child process on a free port; stop() by pid."""

    def __init__(self, store: Path, pack: str, log: Path, extra: list[str], env: dict[str, str]):
        from services.common.redis_server import free_port

        self.port = free_port()
        self.log = log
        cmd = [sys.executable, "-m", "services.generator.server", "--host", "127.0.0.1", "--port", str(self.port),
               "--model-store", str(store), "--packs", pack, *extra]
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                         env={**os.environ, "ORT_DISABLE_TELEMETRY": "1", **env})

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        from services.common.processes import terminate

        terminate(self.proc, 10)


def bracketed_levels(make_client, args, stop: threading.Event, label: str, pids,
                     references: dict[int, Callable[[], dict]]) -> tuple[list[dict], dict]:
    """load_levels, with each level in `references` bracketed: right before and right after it,
    references[level]() measures the same work done another way (in this process, or the peer) and
    returns {figure: value}. This machine's speed drifts by up to 1.5x within minutes, so a ratio is
    taken against references of the same minute: the mean of before and after.
    -> (rows of every level, {level: {before, after, <figure>: mean}} for the bracketed levels run)."""
    rows, brackets = [], {}
    for c in args.concurrency:
        reference = references.get(c)
        before = reference() if reference else None
        rows += load_levels(make_client, [c], args.seconds, args.max_requests, stop, label, pids)
        if reference:
            after = reference()
            brackets[c] = {"before": before, "after": after, **{k: (before[k] + after[k]) / 2 for k in before}}
            print(f"  c{c} references of the same minute: " + ", ".join(
                f"{k} {v:.2f}" for k, v in brackets[c].items() if k not in ("before", "after")), flush=True)
        if stop.is_set():
            break
    return rows, brackets


def reference_seconds(args) -> float:
    """How long each c1 reference runs: 1 s, or --seconds if shorter."""
    return min(1.0, args.seconds)


def generator_references(pack: Pack, args, address: str) -> dict[int, Callable[[], dict]]:
    """The generator service's references: raw ORT at batch 1 beside its c1 level (raw_b1_reference) and
    raw ORT at batch 64 beside its c64 level (images/s, the faster of spinning off and on)."""
    big = max(args.batches)
    return {1: raw_b1_reference(pack, args, address),
            64: lambda: {"raw_images_per_s": raw_ort(pack, [big], reference_seconds(args), args.threads)[0]
                         ["images_per_s"], "raw_batch": big}}


def raw_b1_reference(pack: Pack, args, address: str) -> Callable[[], dict]:
    """The generator service's c1 reference: raw ORT at batch 1 (spinning off and on, the faster) p50 and
    an empty RPC to `address`, both in ms."""
    return lambda: {"reference_p50_ms": raw_ort(pack, [1], reference_seconds(args), args.threads)[0]["latency_ms_p50"],
                    "rpc_round_trip_ms": rpc_round_trip_ms(address)}


def adjacent_raw(pack: Pack, args) -> dict:
    """Raw ORT at the largest batch again, right after the generator service's load with the services
    idle: the ceiling under the same load of the shared machine as the service's figures."""
    return raw_ort(pack, [max(args.batches)], args.seconds, args.threads)[0]


def generator_only_part(pack: Pack, store: Path, args, cleanup: contextlib.ExitStack, stop: threading.Event,
                        log_dir: Path) -> dict:
    """The generator service alone (a pack without encoder or directions): one process, default flags."""
    gen = GeneratorProcess(store, pack.name, log_dir / "generator.log", [], dict(args.env))
    cleanup.callback(gen.stop)
    wait_healthy(gen.address, gen.proc, 60, gen.log)
    out = {"stack_env": dict(args.env), "rpc_round_trip_ms": {"generator": rpc_round_trip_ms(gen.address)}}
    out["generator_service_onnx"], brackets = bracketed_levels(
        generator_client(gen.address, pack), args, stop, "generator service (onnx)", [gen.proc.pid],
        generator_references(pack, args, gen.address))
    out["c1_references"] = {"generator": brackets.get(1)}
    out["raw_next_to_service_c64"] = brackets.get(64)
    out["raw_ort_adjacent"] = adjacent_raw(pack, args)
    gen.stop()
    return out


def services_parts(pack: Pack, store: Path, pngs: list[bytes], args, cleanup: contextlib.ExitStack,
                   stop: threading.Event, log_dir: Path) -> dict:
    """The generator service and the gateway of a real stack (Redis + four processes)."""
    from services.stack import Stack

    stack = Stack.on_free_ports(store, [pack.name], log_dir / "stack", extra_env=dict(args.env))
    t0 = time.perf_counter()
    print(f"starting the stack (Redis + 4 services; logs in {stack.log_dir}) ...", flush=True)
    cleanup.callback(stack.stop)
    stack.start()
    print(f"  up in {time.perf_counter() - t0:.1f}s: pids "
          + ", ".join(f"{s} {p.pid}" for s, p in stack.procs.items()), flush=True)
    out = {"stack_env": dict(args.env)}
    out["rpc_round_trip_ms"] = {s: rpc_round_trip_ms(stack.address(s)) for s in ("generator", "gateway")}
    pids = [p.pid for p in stack.procs.values()] + ([stack.redis.proc.pid] if stack.redis else [])
    out["generator_service_onnx"], brackets = bracketed_levels(
        generator_client(stack.address("generator"), pack), args, stop, "generator service (onnx)", pids,
        generator_references(pack, args, stack.address("generator")))
    out["c1_references"] = {"generator": brackets.get(1)}
    out["raw_next_to_service_c64"] = brackets.get(64)
    out["raw_ort_adjacent"] = adjacent_raw(pack, args)
    editor = InProcessEditor(pack, args.threads)
    peer, _, _ = peer_editor(pack)

    def single_edit(kind: str) -> dict:  # the gateway's c1 reference
        return {"reference_p50_ms": inprocess_edits(pack, pngs, [1], reference_seconds(args), scores=kind == "full",
                                                    editor=editor)[0]["latency_ms_p50"],
                "rpc_round_trip_ms": rpc_round_trip_ms(stack.address("gateway"))}

    def peer_rate() -> dict:  # the lean gateway's c32 reference
        iters, elapsed, _ = peer_edits(peer, pack, pngs, 2 * reference_seconds(args))
        return {"peer_edits_per_s": iters / elapsed}

    for kind in EDIT_KINDS:
        references = {1: lambda kind=kind: single_edit(kind), **({32: peer_rate} if kind == "lean" else {})}
        out[f"gateway_{kind}_edits"], brackets = bracketed_levels(
            gateway_client(stack.address("gateway"), pngs, *edit_choice(pack), skip_scores=kind == "lean"),
            args, stop, f"gateway Edit ({kind})", pids, references)
        out["c1_references"][f"gateway_{kind}"] = brackets.get(1)
        if 32 in brackets:
            out["peer_next_to_gateway_c32"] = brackets[32]
    del editor, peer
    stack.stop()
    out["stack_exit_codes"] = dict(stack.exit_codes)
    return out


def torchserve_part(pack: Pack, store: Path, args, cleanup: contextlib.ExitStack, stop: threading.Event,
                    work: Path) -> dict:
    """A real TorchServe with the pack's .mar, and a generator service forwarding to it."""
    if shutil.which("java") is None:
        return {"skipped": "TorchServe needs Java (`java` is not on PATH)"}
    from services.generator.torchserve_runner import TorchServe
    from training.torchserve_export import build_mar

    t0 = time.perf_counter()
    mar = build_mar(pack.root, work / "mar", batch_size=args.ts_batch, max_batch_delay_ms=args.ts_delay_ms)
    print(f"starting TorchServe with {mar.name} (batchSize {args.ts_batch}, maxBatchDelay "
          f"{args.ts_delay_ms} ms; logs in {work / 'run' / 'logs'}) ...", flush=True)
    ts = TorchServe(mar, work / "run")
    cleanup.callback(ts.stop)
    ts.start()
    gen = GeneratorProcess(store, pack.name, work / "generator.log",
                           ["--backend", "torchserve", "--torchserve-address", ts.address], dict(args.env))
    cleanup.callback(gen.stop)
    wait_healthy(gen.address, gen.proc, 60, gen.log)
    print(f"  up in {time.perf_counter() - t0:.1f}s: TorchServe JVM pid {ts.pid}, generator pid {gen.proc.pid}",
          flush=True)
    out = {"mar": {"batch_size": args.ts_batch, "max_batch_delay_ms": args.ts_delay_ms},
           "rpc_round_trip_ms": rpc_round_trip_ms(gen.address)}
    out["levels"] = load_levels(generator_client(gen.address, pack), args.concurrency, args.seconds,
                                args.max_requests, stop, "generator service (torchserve)")
    gen.stop()
    ts.stop()
    return out


# --------------------------------------------------------------------------- summary

def _level(rows: list[dict] | None, key: str, value: int) -> dict | None:
    for r in rows or []:
        if r.get(key) == value:
            return r
    return None


def add_gflops(results: dict) -> None:
    """GFLOP/s next to every throughput (FLOPs per image or per edit x rate)."""
    f = results.get("flops") or {}
    g, peer = f.get("generator_per_image"), f.get("peer_edit")
    per_edit = {"full": f.get("edit_per_request"), "lean": f.get("lean_edit_per_request")}

    def put(rows, rate_key, flops):
        for r in rows or []:
            if flops and r.get(rate_key) is not None:
                r["gflops"] = r[rate_key] * flops / 1e9

    put(results.get("raw_ort_generator"), "images_per_s", g)
    put(results.get("raw_ort_generator_concurrent"), "images_per_s", g)
    put([results["raw_ort_adjacent"]] if results.get("raw_ort_adjacent") else None, "images_per_s", g)
    for kind in EDIT_KINDS:
        put(results.get(f"inprocess_{kind}_edits"), "edits_per_s", per_edit[kind])
        put(results.get(f"gateway_{kind}_edits"), "throughput", per_edit[kind])
    put(results.get("generator_service_onnx"), "throughput", g)
    put((results.get("generator_service_torchserve") or {}).get("levels"), "throughput", g)
    p = results.get("peer_baseline")
    if p and peer:
        p["gflops"] = p["edits_per_s"] * peer / 1e9
        p["generator_only_gflops"] = p["generator_only_images_per_s"] * g / 1e9


def ratios(results: dict) -> dict:
    """The issue-4 targets, as measured: {name: {value, target, met, how}}; value None when a part is missing."""
    raw = results.get("raw_ort_generator")
    svc, peer = results.get("generator_service_onnx"), results.get("peer_baseline")
    gw = {k: results.get(f"gateway_{k}_edits") for k in EDIT_KINDS}
    inproc = {k: results.get(f"inprocess_{k}_edits") for k in EDIT_KINDS}
    rtt = results.get("rpc_round_trip_ms") or {}

    def get(rows, key, value, field):
        r = _level(rows, key, value)
        return None if r is None else r.get(field)

    def div(a, b):
        return None if a is None or b in (None, 0) else a / b

    refs = results.get("c1_references") or {}

    def c1_refs(name: str, start_of_run_ms, start_of_run_rtt) -> tuple:
        """(in-process p50 ms, empty-RPC ms, where from) for a c1 excess: those bracketing the c1 level
        when measured, else the start-of-run figures."""
        bracket = refs.get(name)
        if bracket:
            return (bracket["reference_p50_ms"], bracket["rpc_round_trip_ms"],
                    "measured right before and after the c1 level")
        return start_of_run_ms, start_of_run_rtt, "measured at the start of the run"

    peer_next = results.get("peer_next_to_gateway_c32")
    raw_next = results.get("raw_next_to_service_c64")
    if raw_next and raw_next.get("raw_batch") != 64:
        raw_next = None
    svc1 = get(svc, "concurrency", 1, "latency_ms_p50")
    raw1_ms, rtt_gen, gen_when = c1_refs("generator", get(raw, "batch", 1, "latency_ms_p50"), rtt.get("generator"))
    values = {
        "service_c64_over_raw_b64": (
            div(get(svc, "concurrency", 64, "throughput"), raw_next["raw_images_per_s"] if raw_next
                else get(raw, "batch", 64, "images_per_s")),
            "generator service images/s at c64 / raw ONNX Runtime images/s at batch 64 " +
            ("measured right before and after the c64 level" if raw_next else "measured at the start of the run")),
        "service_p99_over_p50_c8": (div(get(svc, "concurrency", 8, "latency_ms_p99"),
                                        get(svc, "concurrency", 8, "latency_ms_p50")),
                                    "generator service p99 / p50 latency at c8"),
        "service_c1_excess_ms": (None if None in (svc1, raw1_ms, rtt_gen) else svc1 - (raw1_ms + rtt_gen),
                                 f"generator service p50 at c1 - (raw ONNX Runtime batch-1 p50 + 1 empty-RPC "
                                 f"round trip; both {gen_when})"),
        "gateway_lean_c32_over_peer": (
            div(get(gw["lean"], "concurrency", 32, "throughput"), peer_next["peer_edits_per_s"] if peer_next
                else (peer or {}).get("edits_per_s")),
            "lean gateway edits/s at c32 (Edit with skip_scores: encode 1 + generate 1, the peer's work) / "
            "eager PyTorch one-at-a-time edits/s " + ("measured right before and after the c32 level" if peer_next
                                                      else "measured at the start of the run")),
    }
    memo = ((results.get("settings") or {}).get("service_flags") or {}).get("compose_memo", 0)
    hops = {k: v if memo else (*v[:2], "compose", *v[2:]) for k, v in EDIT_HOPS.items()}
    for kind in EDIT_KINDS:
        name = "gateway" if kind == "full" else "gateway_lean"
        label = "full gateway Edit (scores)" if kind == "full" else "lean gateway Edit (skip_scores)"
        gw1 = get(gw[kind], "concurrency", 1, "latency_ms_p50")
        in1_ms, rtt_gw, gw_when = c1_refs(f"gateway_{kind}", get(inproc[kind], "batch", 1, "latency_ms_p50"),
                                          rtt.get("gateway"))
        values[f"{name}_c32_over_inprocess{'_lean' if kind == 'lean' else ''}_b32"] = (
            div(get(gw[kind], "concurrency", 32, "throughput"), get(inproc[kind], "batch", 32, "edits_per_s")),
            f"{label} edits/s at c32 / in-process {kind} edits/s at batch 32 (the same work)")
        values[f"{name}_p99_over_p50_c8"] = (div(get(gw[kind], "concurrency", 8, "latency_ms_p99"),
                                                 get(gw[kind], "concurrency", 8, "latency_ms_p50")),
                                             f"{label} p99 / p50 latency at c8")
        values[f"{name}_c1_excess_ms"] = (
            None if None in (gw1, in1_ms, rtt_gw) else gw1 - (in1_ms + len(hops[kind]) * rtt_gw),
            f"{label} p50 at c1 - (in-process single {kind} edit p50 + {len(hops[kind])} empty-RPC round trips: "
            f"{', '.join(hops[kind])}{'; Compose answered by the gateway memo' if memo else ''}; references "
            f"{gw_when})")
    best_gw = max((r["throughput"] for r in gw["lean"] or []), default=None)
    out = {}
    for name, (value, how) in values.items():
        op, target = TARGETS[name]
        met = None if value is None else (value >= target if op == ">=" else value <= target)
        out[name] = {"value": value, "target": f"{op} {target}", "met": met, "how": how}
    if refs:  # the same excesses against the references of the run's start, to show the machine's drift
        start = {"service_c1_excess_ms": (svc1, get(raw, "batch", 1, "latency_ms_p50"), 1, rtt.get("generator"))}
        for kind in EDIT_KINDS:
            start[f"gateway{'_lean' if kind == 'lean' else ''}_c1_excess_ms"] = (
                get(gw[kind], "concurrency", 1, "latency_ms_p50"), get(inproc[kind], "batch", 1, "latency_ms_p50"),
                len(hops[kind]), rtt.get("gateway"))
        if raw_next:
            out["service_c64_over_raw_b64_start_of_run"] = {
                "value": div(get(svc, "concurrency", 64, "throughput"), get(raw, "batch", 64, "images_per_s")),
                "target": None, "met": None,
                "how": "as service_c64_over_raw_b64, with raw ORT batch 64 measured at the start of the run"}
        if peer_next:
            out["gateway_lean_c32_over_peer_start_of_run"] = {
                "value": div(get(gw["lean"], "concurrency", 32, "throughput"), (peer or {}).get("edits_per_s")),
                "target": None, "met": None,
                "how": "as gateway_lean_c32_over_peer, with the peer measured at the start of the run"}
        for name, (p50, ref, n, rtt_ms) in start.items():
            out[f"{name}_start_of_run"] = {
                "value": None if None in (p50, ref, rtt_ms) else p50 - (ref + n * rtt_ms), "target": None,
                "met": None, "how": f"as {name}, with the in-process p50 and empty-RPC round trip measured at the "
                                   f"start of the run (minutes earlier)"}
    adjacent = results.get("raw_ort_adjacent") or {}
    out["service_c64_over_adjacent_raw_b64"] = {
        "value": div(get(svc, "concurrency", 64, "throughput"), adjacent.get("images_per_s")
                     if adjacent.get("batch") == 64 else None),
        "target": None, "met": None,
        "how": "generator service images/s at c64 / raw ORT batch 64 measured right after the service's load "
               "(same machine load; the shared machine drifts between the parts)"}
    raw_cpu = (_level(raw, "batch", 64) or {}).get("images_per_cpu_s")
    out["service_c64_over_raw_b64_per_cpu"] = {
        "value": div(get(svc, "concurrency", 64, "per_cpu_s"), raw_cpu), "target": None, "met": None,
        "how": "images per CPU second at c64 (generator service + Redis + services + load client) / images per "
               "CPU second of raw ORT at batch 64: what the throughput ratio would be on two idle cores, "
               "robust to other processes taking CPU"}
    for kind in EDIT_KINDS:
        name = "gateway" if kind == "full" else "gateway_lean"
        out[f"{name}_c32_over_inprocess{'_lean' if kind == 'lean' else ''}_b32_per_cpu"] = {
            "value": div(get(gw[kind], "concurrency", 32, "per_cpu_s"),
                         get(inproc[kind], "batch", 32, "edits_per_cpu_s")),
            "target": None, "met": None,
            "how": f"{kind} edits per CPU second at c32 (gateway, encoder, directions, generator, Redis, load "
                   f"client) / {kind} edits per CPU second of the in-process pipeline at batch 32"}
    out["gateway_full_c32_over_peer"] = {
        "value": div(get(gw["full"], "concurrency", 32, "throughput"), (peer or {}).get("edits_per_s")),
        "target": None, "met": None,
        "how": "full gateway edits/s at c32 (encode 1 + generate 2 + score 2) / peer edits/s (encode 1 + "
               "generate 1): not the same work, for reference"}
    out["gateway_lean_best_over_peer"] = {
        "value": div(best_gw, (peer or {}).get("edits_per_s")), "target": None, "met": None,
        "how": "best lean gateway edits/s over all concurrencies / peer"}
    conc = results.get("raw_ort_generator_concurrent")
    out["service_c64_over_concurrent_raw_b64"] = {
        "value": div(get(svc, "concurrency", 64, "throughput"), get(conc, "batch", 64, "images_per_s")),
        "target": None, "met": None,
        "how": "generator service images/s at c64 / raw ORT at batch 64 run as the service runs it under load "
               "(2 calls at once, one intra-op thread each: raw_ort_generator_concurrent)"}
    out["service_c64_over_concurrent_raw_b64_per_cpu"] = {
        "value": div(get(svc, "concurrency", 64, "per_cpu_s"), get(conc, "batch", 64, "images_per_cpu_s")),
        "target": None, "met": None,
        "how": "as service_c64_over_raw_b64_per_cpu, against raw_ort_generator_concurrent at batch 64"}
    ts = (results.get("generator_service_torchserve") or {}).get("levels")
    out["torchserve_c64_over_raw_b64"] = {
        "value": div(get(ts, "concurrency", 64, "throughput"), get(raw, "batch", 64, "images_per_s")),
        "target": None, "met": None, "how": "TorchServe-backed generator service images/s at c64 / raw batch 64"}
    return out


def _fmt(v, digits=1) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def table(results: dict) -> str:
    rows = [("part", "setting", "throughput", "unit", "GFLOP/s", "p50 ms", "p99 ms", "batch", "errors")]
    m = results.get("reference_matmul")
    if m:
        rows.append(("matmul (torch)", f"{m['n']}x{m['n']} f32", "-", "", _fmt(m["gflops"]), "", "", "", ""))
    for r in results.get("raw_ort_generator") or []:
        spin = {True: ", spinning", False: ""}.get(r.get("spinning"), "")
        rows.append(("raw ORT generator", f"batch {r['batch']}{spin}", _fmt(r["images_per_s"]), "img/s",
                     _fmt(r.get("gflops"), 2), _fmt(r["latency_ms_p50"], 2), "", str(r["batch"]), ""))

    for r in results.get("raw_ort_generator_concurrent") or []:
        rows.append(("raw ORT, 2 at once", f"batch {r['batch']}, {r['intra_op_threads']} thr", _fmt(r["images_per_s"]),
                     "img/s", _fmt(r.get("gflops"), 2), "", "", str(r["batch"]), ""))

    a = results.get("raw_ort_adjacent")
    if a:
        rows.append(("raw ORT, after svc", f"batch {a['batch']}" + (", spinning" if a.get("spinning") else ""),
                     _fmt(a["images_per_s"]), "img/s", _fmt(a.get("gflops"), 2), _fmt(a["latency_ms_p50"], 2), "",
                     str(a["batch"]), ""))

    def load_rows(label, levels, unit):
        for r in levels or []:
            errs = sum(r["errors"].values()) if r.get("errors") else 0
            rows.append((label, f"conc {r['concurrency']}", _fmt(r["throughput"]), unit, _fmt(r.get("gflops"), 2),
                         _fmt(r["latency_ms_p50"], 2), _fmt(r["latency_ms_p99"], 2),
                         _fmt(r.get("mean_batch")), str(errs)))

    load_rows("generator service", results.get("generator_service_onnx"), "img/s")
    ts = results.get("generator_service_torchserve") or {}
    load_rows("gen. svc TorchServe", ts.get("levels"), "img/s")
    for kind in EDIT_KINDS:
        load_rows(f"gateway Edit ({kind})", results.get(f"gateway_{kind}_edits"), "edit/s")
    for kind in EDIT_KINDS:
        for r in results.get(f"inprocess_{kind}_edits") or []:
            rows.append((f"in-process ({kind})", f"batch {r['batch']}", _fmt(r["edits_per_s"]), "edit/s",
                         _fmt(r.get("gflops"), 2), _fmt(r["latency_ms_p50"], 2), "", str(r["batch"]), ""))
    p = results.get("peer_baseline")
    if p:
        rows.append(("peer eager PyTorch", "batch 1", _fmt(p["edits_per_s"]), "edit/s", _fmt(p.get("gflops"), 2),
                     _fmt(p["latency_ms_p50"], 2), "", "1", ""))
        rows.append(("peer generator only", "batch 1", _fmt(p["generator_only_images_per_s"]), "img/s",
                     _fmt(p.get("generator_only_gflops"), 2), "", "", "1", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i < 2 or i == 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    f = results.get("flops")
    if f:
        mflop = {k: _fmt(None if v is None else v / 1e6, 2) for k, v in f.items() if k.endswith(("_image", "edit",
                                                                                                   "_request"))}
        lines.append(f"FLOPs: generator {mflop['generator_per_image']} MFLOP/image, encoder "
                     f"{mflop['encoder_per_image']}, classifier {mflop['classifier_per_image']}; "
                     f"full Edit {mflop['edit_per_request']} MFLOP, lean Edit (skip_scores) "
                     f"{mflop['lean_edit_per_request']}, peer edit {mflop['peer_edit']}")
    cpu = (results.get("machine") or {}).get("cpu_during_run")
    if cpu:
        lines.append(f"CPU during the run: this benchmark and its processes {cpu['this_run_cores']:.2f} cores, "
                     f"other processes of the machine {cpu['other_processes_cores']:.2f} cores (noise)")
    rtt = results.get("rpc_round_trip_ms")
    if rtt:
        lines.append("empty-RPC round trip p50: " + ", ".join(f"{k} {v:.3f} ms" for k, v in rtt.items()))
    lines.append("")
    lines.append("issue-4 targets (reported, not asserted):")
    for name, r in (results.get("ratios") or {}).items():
        mark = "" if r["met"] is None else ("  met" if r["met"] else "  MISSED")
        lines.append(f"  {name:<42} {_fmt(r['value'], 3):>9}  {r['target'] or '':<7}{mark}")
    return "\n".join(lines)


def _legend(ax, size: int) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=size)


def plot(results: dict, path: Path) -> Path | None:
    """Four panels: generator images/s, edits/s, latency, GFLOP/s. None when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    ax = axes[0][0]
    raw = results.get("raw_ort_generator") or []
    if raw:
        ax.plot([r["batch"] for r in raw], [r["images_per_s"] for r in raw], "o-", label="raw ORT (x = batch)")
    conc = results.get("raw_ort_generator_concurrent") or []
    if conc:
        ax.plot([r["batch"] for r in conc], [r["images_per_s"] for r in conc], "o--",
                label="raw ORT, 2 calls at once (x = batch)")
    for label, rows in (("generator service, ONNX (x = concurrency)", results.get("generator_service_onnx")),
                        ("generator service, TorchServe (x = concurrency)",
                         (results.get("generator_service_torchserve") or {}).get("levels"))):
        if rows:
            ax.plot([r["concurrency"] for r in rows], [r["throughput"] for r in rows], "s-", label=label)
    p = results.get("peer_baseline")
    if p:
        ax.axhline(p["generator_only_images_per_s"], color="grey", ls=":", label="eager PyTorch, batch 1")
    ax.set(xscale="log", yscale="log", xlabel="batch / concurrency", ylabel="images/s", title="generator")
    ax.set_xticks(list(BATCHES), [str(b) for b in BATCHES])
    _legend(ax, 8)
    ax = axes[0][1]
    for k, kind in enumerate(EDIT_KINDS):
        rows = results.get(f"gateway_{kind}_edits") or []
        if rows:
            ax.plot([r["concurrency"] for r in rows], [r["throughput"] for r in rows], "s-", color=f"C{k}",
                    label=f"gateway Edit ({kind})")
        for r in results.get(f"inprocess_{kind}_edits") or []:
            if r["batch"] > 1:
                ax.axhline(r["edits_per_s"], ls="--", color=f"C{k}", label=f"in-process {kind}, batch {r['batch']}")
    if p:
        ax.axhline(p["edits_per_s"], ls=":", color="grey", label="peer: eager PyTorch, one at a time")
    ax.set(xscale="log", yscale="log", xlabel="concurrency", ylabel="edits/s",
           title="edits, PNG in -> PNG out (lean: skip_scores; full: + original, scores)")
    ax.set_xticks(list(CONCURRENCY), [str(c) for c in CONCURRENCY])
    _legend(ax, 8)
    ax = axes[1][0]
    for label, rows in (("generator service (ONNX)", results.get("generator_service_onnx")),
                        ("generator service (TorchServe)",
                         (results.get("generator_service_torchserve") or {}).get("levels")),
                        ("gateway Edit (lean)", results.get("gateway_lean_edits")),
                        ("gateway Edit (full)", results.get("gateway_full_edits"))):
        if rows:
            c = [r["concurrency"] for r in rows]
            line, = ax.plot(c, [r["latency_ms_p50"] for r in rows], "o-", label=f"{label} p50")
            ax.plot(c, [r["latency_ms_p99"] for r in rows], "o--", color=line.get_color(), label=f"{label} p99")
    ax.set(xscale="log", yscale="log", xlabel="concurrency", ylabel="ms", title="latency")
    ax.set_xticks(list(CONCURRENCY), [str(c) for c in CONCURRENCY])
    _legend(ax, 7)
    ax = axes[1][1]
    bars = []
    m = results.get("reference_matmul")
    if m:
        bars.append(("matmul 2048", m["gflops"]))
    for r in raw:
        bars.append((f"raw b{r['batch']}", r.get("gflops") or 0))
    for label, rows in (("svc", results.get("generator_service_onnx")),
                        ("ts", (results.get("generator_service_torchserve") or {}).get("levels"))):
        for r in rows or []:
            if r["concurrency"] == max(CONCURRENCY):
                bars.append((f"{label} c{r['concurrency']}", r.get("gflops") or 0))
    if p:
        bars.append(("eager b1", p.get("generator_only_gflops") or 0))
    if bars:
        ax.bar([b[0] for b in bars], [b[1] for b in bars], color=["grey"] + ["C0"] * (len(bars) - 1))
        ax.tick_params(axis="x", rotation=45, labelsize=8)
    ax.set(ylabel="GFLOP/s", title="achieved GFLOP/s (generator)")
    machine = results.get("machine", {})
    fig.suptitle(f"facedit bench, pack {results.get('pack', {}).get('name')} "
                 f"({results.get('pack', {}).get('version')}), {machine.get('cores')} cores "
                 f"{machine.get('cpu_model', '')}, {machine.get('date', '')}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o).__name__)


def write_results(results: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=_json_default) + "\n")
    return path


def offline_parts(pack: Pack, pngs: list[bytes], seconds: float, batches=BATCHES,
                  inprocess_batches=INPROCESS_BATCHES, matmul_n: int = 2048, threads: int = 0) -> dict:
    """Everything that runs inside this process: FLOPs, matmul, raw ORT, in-process edits, peer
    (the last two only for a pack that can edit, i.e. when `pngs` are given)."""
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
    if not pngs:
        gc.collect()
        return out
    editor = InProcessEditor(pack, threads)
    for kind in EDIT_KINDS:
        rows = inprocess_edits(pack, pngs, inprocess_batches, seconds, scores=kind == "full", editor=editor)
        out[f"inprocess_{kind}_edits"] = rows
        print(f"in-process {kind} edits: " + ", ".join(f"b{r['batch']} {r['edits_per_s']:.0f} edit/s"
                                                       for r in rows), flush=True)
    del editor
    out["peer_baseline"] = peer_baseline(pack, pngs, seconds)
    print(f"peer baseline: {out['peer_baseline']['edits_per_s']:.0f} edit/s", flush=True)
    gc.collect()  # drop this process's ONNX Runtime sessions before the services start
    return out


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM raises KeyboardInterrupt in the main thread, so cleanup runs as on Ctrl-C."""
    def handler(*_):
        raise KeyboardInterrupt("SIGTERM")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def service_flags(env: dict[str, str]) -> dict:
    """The flags the started ONNX services run with: their defaults under this process's environment
    (which they inherit), with `env` (--env FACEDIT_...=) on top."""
    from services.common import config
    from services.gateway.compose_memo import ComposeMemo

    p = config.parser("generator", 0)
    config.add_batching_flags(p)
    flags = vars(p.parse_args([]))
    flags["compose_memo"] = int(config.env("compose_memo", str(ComposeMemo.DEFAULT_SIZE)))  # the gateway's flag
    out = {}
    for k in ("workers", "max_batch", "max_delay_ms", "max_queue", "threads", "inter_op_threads", "spinning",
              "io_binding", "compose_memo"):
        given = env.get(f"FACEDIT_{k.upper()}")
        out[k] = flags[k] if given is None else type(flags[k])(given)
    return out


def _env_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pack", default="synth")
    p.add_argument("--model-store", default=str(ROOT / "model_store"))
    p.add_argument("--seconds", type=float, default=3.0, help="measured time per batch size / concurrency level")
    p.add_argument("--max-requests", type=int, default=50_000, help="cap of requests per load level")
    p.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=list(CONCURRENCY))
    p.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")], default=list(BATCHES))
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads in this process (0: auto)")
    p.add_argument("--ts-batch", type=int, default=64, help="TorchServe batchSize of the .mar")
    p.add_argument("--ts-delay-ms", type=int, default=5, help="TorchServe maxBatchDelay of the .mar")
    p.add_argument("--env", type=_env_pair, action="append", default=[], metavar="KEY=VALUE",
                   help="environment of the started services, e.g. FACEDIT_WORKERS=64 (repeatable)")
    p.add_argument("--skip", default="", help="comma-separated parts to skip: services, torchserve")
    p.add_argument("--work", default=str(ROOT / "out" / "bench"), help="logs and the .mar go here")
    p.add_argument("--out", default=str(ROOT / "bench" / "results.json"))
    p.add_argument("--plot", default=str(ROOT / "bench" / "results.png"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    t_start = time.perf_counter()
    cpu_start = _cpu_snapshot()
    store = Path(args.model_store).resolve()
    pack = load_pack(args.pack, store)
    skip = {s for s in args.skip.split(",") if s}
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    results: dict = {"machine": machine_info(), "pack": pack_info(pack),
                     "settings": {"seconds_per_level": args.seconds, "max_requests_per_level": args.max_requests,
                                  "concurrency": args.concurrency, "batches": args.batches,
                                  "inprocess_batches": list(INPROCESS_BATCHES), "ort_threads": args.threads,
                                  "edit": None if missing_for_edits(pack) else dict(
                                      zip(("attribute", "keep"), edit_choice(pack)), strength=EDIT_STRENGTH),
                                  "skipped": sorted(skip), "service_env": dict(args.env),
                                  "service_flags": service_flags(dict(args.env))}}
    print(f"bench: pack {pack.name} {pack.version} ({pack.resolution}px, z {pack.latent_dim}), "
          f"{results['machine']['cores']} cores, {args.seconds}s per level", flush=True)
    stop = threading.Event()
    errors: dict[str, str] = {}
    missing = missing_for_edits(pack)
    if missing:
        results["generator_only"] = f"pack {pack.name} has no {', '.join(missing)}: generator parts only"
        print(results["generator_only"], flush=True)
    pngs = [] if missing else face_pngs(pack)
    try:
        with _sigterm_as_interrupt(), contextlib.ExitStack() as cleanup:
            cleanup.callback(stop.set)  # first thing on the way out: load threads stop calling
            results.update(offline_parts(pack, pngs, args.seconds, args.batches, INPROCESS_BATCHES,
                                         threads=args.threads))
            # a part that fails is reported (results["errors"]) and the others still run
            if "services" not in skip:
                try:
                    if missing:
                        svc = generator_only_part(pack, store, args, cleanup, stop, work / "logs")
                    else:
                        svc = services_parts(pack, store, pngs, args, cleanup, stop, work / "logs")
                    results["rpc_round_trip_ms"] = svc.pop("rpc_round_trip_ms")
                    results.update(svc)
                except Exception as err:  # noqa: BLE001
                    errors["services"] = f"{type(err).__name__}: {err}"
                    print(f"services part failed: {err}", flush=True)
            if "torchserve" not in skip:
                try:
                    results["generator_service_torchserve"] = torchserve_part(pack, store, args, cleanup, stop,
                                                                              work / "torchserve")
                except Exception as err:  # noqa: BLE001
                    errors["torchserve"] = f"{type(err).__name__}: {err}"
                    print(f"TorchServe part failed: {err}", flush=True)
    except KeyboardInterrupt:
        print("\ninterrupted: everything started was stopped; partial results follow", flush=True)
        results["interrupted"] = True
    if errors:
        results["errors"] = errors
    results["machine"]["load_average_at_end"] = list(os.getloadavg())
    results["machine"]["cpu_during_run"] = other_load(cpu_start)
    add_gflops(results)
    results["ratios"] = ratios(results)
    results["duration_s"] = round(time.perf_counter() - t_start, 1)
    out = write_results(results, Path(args.out))
    png = plot(results, Path(args.plot))
    print()
    print(table(results))
    print(f"\nwrote {out}" + (f" and {png}" if png else " (no plot: matplotlib is not installed; `pip install "
                                                        "-e '.[bench]'`)") + f" in {results['duration_s']}s")
    if errors:
        print("FAILED parts: " + "; ".join(f"{k}: {v}" for k, v in errors.items()), flush=True)
    return results


if __name__ == "__main__":
    r = main()
    sys.exit(1 if r.get("errors") or r.get("interrupted") else 0)
