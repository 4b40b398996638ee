"""The served parts of `python -m bench`: the generator service and the gateway of a real stack
(services.stack.Stack), and TorchServe behind a generator service. Every load level runs once per
repetition (--repeats), interleaved (bench/harness.py), with two load clients one after the other:
the Python one (bench/clients.py) and the compiled one, h2load (bench/h2load.py); the levels a
target compares are then followed right away by their reference, measured in this process while
the services idle."""
from __future__ import annotations

import contextlib
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from bench import h2load
from bench.clients import gateway_client, generator_client, h2load_targets, rpc_round_trip_ms
from bench.harness import Series, interleave, level_rows, reference_rows, run_load
from bench.inprocess import InProcessEditor, RawGenerator, peer_editor, peer_edits
from bench.workload import EDIT_KINDS, edit_choice
from facedit_core.pack import Pack
from services.stack import SERVICES, Stack

# the levels the targets compare (bench/ratios.py): the generator service at concurrency 64 against raw
# ONNX Runtime at batch 64, the gateway at concurrency 32 against the in-process pipeline at batch 32
# and the peer, p99/p50 at concurrency 8, and concurrency 1 against a single in-process call + round trips
SERVICE_BIG, EDIT_BIG, TAIL, SINGLE = 64, 32, 8, 1
# series name -> results key of its level rows (the Python client's; the compiled client's get "_h2load")
SERIES_KEYS = {"generator": "generator_service_onnx", "gateway_lean": "gateway_lean_edits",
               "gateway_full": "gateway_full_edits"}
COMPILED = "h2load"  # the compiled load client (bench/h2load.py); --skip h2load leaves it out


def uses_h2load(args) -> bool:
    return COMPILED not in {s for s in args.skip.split(",") if s}


def stack_logs(stack: Stack) -> list[Path]:
    """The log file of every service of a stack (failed calls leave lines there)."""
    return [stack.log_dir / f"{service}.log" for service in stack.services]


def short_seconds(args) -> float:
    """How long a latency reference (a single call's p50) runs: 1 s, or --seconds if shorter."""
    return min(1.0, args.seconds)


def _printed(label: str, client: str, c: int, r: dict) -> dict:
    cpu = r.get("cpu_ms_per_request") or {}
    print(f"  {label} c{c} [{client}]: {r['throughput']:.1f}/s p50 {r['latency_ms_p50']:.2f} ms "
          f"p99 {r['latency_ms_p99']:.2f} ms; CPU ms/request: services {r['service_cpu_ms_per_request'] or 0:.2f} ("
          + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items() if v is not None)
          + f"), client {r['client_cpu_ms_per_request'] or 0:.2f}"
          + (f" errors {r['errors']}" if r["errors"] else ""), flush=True)
    return r


def load_series(name: str, label: str, make_client, args, stop: threading.Event, pids: dict[str, int],
                references: dict[int, Callable[[], dict]], compiled: h2load.Level | None = None) -> Series:
    """A Series of the Python client's levels (and, with `compiled`, h2load's right after each)."""
    def measure(c: int) -> dict:
        return _printed(label, "python", c, run_load(make_client, c, args.seconds, args.max_requests, stop=stop,
                                                     pids=pids))

    def measure_compiled(c: int) -> dict:
        return _printed(label, COMPILED, c, compiled.measure(c))

    def announced(c: int, reference: Callable[[], dict]) -> Callable[[], dict]:
        def run() -> dict:
            figures = reference()
            print(f"    next to c{c}: " + ", ".join(f"{k} {v:.2f}" for k, v in figures.items()), flush=True)
            return figures
        return run

    return Series(name, list(args.concurrency), measure,
                  {c: announced(c, ref) for c, ref in references.items() if c in args.concurrency},
                  also={COMPILED: measure_compiled} if compiled is not None else {})


def compiled_level(targets: dict[str, h2load.Target], name: str, args, pids: dict[str, int], logs: list[Path],
                   stop: threading.Event, work: Path) -> h2load.Level | None:
    """h2load's levels of targets[name] (None when h2load is skipped: no targets)."""
    if name not in targets:
        return None
    return h2load.Level(targets[name], args.seconds, args.max_requests, pids, logs, work, stop)


def round_trips(address: str, health: h2load.Target | None, work: Path) -> dict:
    """One empty call's round trip (ms, p50) to a service with the Python client and, given a
    health target, with h2load."""
    out = {"rpc_round_trip_ms": rpc_round_trip_ms(address)}
    if health is not None:
        out["h2load_round_trip_ms"] = h2load.round_trip_ms(health, work)
    return out


def generator_references(raw: RawGenerator, address: str, args, single: bool = True,
                         health: h2load.Target | None = None, work: Path | None = None) -> dict[int, Callable]:
    """The generator service's references: raw ORT batch-1 p50 + an empty call to the service (Python,
    and h2load with `health`) next to c1 (`single`), raw ORT images/s at batch 64 next to c64 (the
    faster of spinning off and on)."""
    def single_call() -> dict:
        return {"reference_p50_ms": raw.measure(SINGLE, short_seconds(args), warmup=1)["latency_ms_p50"],
                **round_trips(address, health, work)}

    def big_batch() -> dict:
        r = raw.measure(SERVICE_BIG, args.seconds, warmup=1)
        return {"raw_images_per_s": r["images_per_s"], "raw_images_per_cpu_s": r["images_per_cpu_s"],
                "raw_batch": SERVICE_BIG}

    return {SINGLE: single_call, SERVICE_BIG: big_batch} if single else {SERVICE_BIG: big_batch}


def gateway_references(editor: InProcessEditor, peer, pack: Pack, pngs: list[bytes], address: str, args,
                       kind: str, health: h2load.Target | None = None, work: Path | None = None) -> dict[int, Callable]:
    """The gateway's references: a single in-process edit of the same kind (p50) + an empty call to the
    gateway (Python, and h2load with `health`) next to c1; the in-process pipeline at batch 32 (and,
    for lean edits, the peer) next to c32."""
    scores = kind == "full"

    def single_edit() -> dict:
        return {"reference_p50_ms": editor.timed(pngs, SINGLE, short_seconds(args), scores, warmup=1).p50_ms(),
                **round_trips(address, health, work)}

    def big_batch() -> dict:
        t = editor.timed(pngs, EDIT_BIG, args.seconds, scores, warmup=1)
        out = {"inprocess_edits_per_s": t.rate(EDIT_BIG), "inprocess_edits_per_cpu_s": t.per_cpu_s(EDIT_BIG)}
        if kind == "lean":
            out["peer_edits_per_s"] = peer_edits(peer, pack, pngs, args.seconds, warmup=1).rate()
        return out

    return {SINGLE: single_edit, EDIT_BIG: big_batch}


def collect(measured: dict[str, dict], keys: dict[str, str]) -> dict:
    """interleave()'s measurements -> results keys: the level rows of each series (the Python client's
    under keys[name], each other client's under keys[name] + "_" + client), and its references."""
    out: dict = {"references": {}}
    for name, m in measured.items():
        out[keys[name]] = level_rows(m["levels"])
        for client, levels in m["also"].items():
            out[f"{keys[name]}_{client}"] = level_rows(levels)
        out["references"][name] = reference_rows(m["references"])
    return out


def services_part(pack: Pack, store: Path, pngs: list[bytes], args, cleanup: contextlib.ExitStack,
                  stop: threading.Event, log_dir: Path) -> dict:
    """The generator service and, for a pack that can edit (`pngs` given), the gateway's lean and full
    Edit, of a real stack (Redis + the four services; the generator service alone for a pack with
    only a generator), every level --repeats times, interleaved with its references."""
    stack = Stack.on_free_ports(store, [pack.name], log_dir / "stack", extra_env=dict(args.env),
                                services=SERVICES if pngs else ("generator",))
    t0 = time.perf_counter()
    print(f"starting {'the stack (Redis + 4 services' if pngs else 'the generator service (alone'}; logs in "
          f"{stack.log_dir}) ...", flush=True)
    cleanup.callback(stack.stop)
    stack.start()
    print(f"  up in {time.perf_counter() - t0:.1f}s: pids "
          + ", ".join(f"{s} {pid}" for s, pid in stack.pids().items()), flush=True)
    pids, logs = stack.pids(), stack_logs(stack)
    served = ("generator", "gateway") if pngs else ("generator",)
    addresses = {s: stack.address(s) for s in served}
    edit, keep = edit_choice(pack) if pngs else (None, None)
    h2 = log_dir / COMPILED  # frames, h2load's output and per-request logs
    targets = h2load_targets(addresses, pack, pngs, edit, keep, h2) if uses_h2load(args) else {}
    health = {s: h2load.health_target(a, h2) for s, a in addresses.items()} if targets else {}
    out: dict = {"stack_env": dict(args.env),
                 "rpc_round_trip_ms": {s: rpc_round_trip_ms(a) for s, a in addresses.items()}}
    if targets:
        out["h2load_round_trip_ms"] = {s: h2load.round_trip_ms(t, h2) for s, t in health.items()}
        out["h2load_answer_bytes"] = {name: t.answer_bytes for name, t in targets.items()}
    raw = RawGenerator(pack, args.threads)
    series = [load_series("generator", "generator service (onnx)", generator_client(addresses["generator"], pack),
                          args, stop, pids,
                          generator_references(raw, addresses["generator"], args, health=health.get("generator"),
                                               work=h2),
                          compiled_level(targets, "generator", args, pids, logs, stop, h2))]
    if pngs:
        editor = InProcessEditor(pack, args.threads)
        peer, _, _ = peer_editor(pack)
        for kind in EDIT_KINDS:
            client = gateway_client(addresses["gateway"], pngs, edit, keep, skip_scores=kind == "lean")
            refs = gateway_references(editor, peer, pack, pngs, addresses["gateway"], args, kind,
                                      health=health.get("gateway"), work=h2)
            series.append(load_series(f"gateway_{kind}", f"gateway Edit ({kind})", client, args, stop, pids, refs,
                                      compiled_level(targets, f"gateway_{kind}", args, pids, logs, stop, h2)))
    measured = interleave(series, args.repeats, stop, announce=lambda r: print(
        f"repetition {r + 1} of {args.repeats}", flush=True))
    out.update(collect(measured, SERIES_KEYS))
    stack.stop()
    out["stack_exit_codes"] = dict(stack.exit_codes)
    return out


def torchserve_part(pack: Pack, store: Path, args, cleanup: contextlib.ExitStack, stop: threading.Event,
                    work: Path) -> dict:
    """A real TorchServe with the pack's .mar, and a stack whose generator service forwards to it
    (--backend torchserve, given as FACEDIT_BACKEND to the stack); the levels interleaved with raw
    ONNX Runtime at batch 64 next to c64."""
    if shutil.which("java") is None:
        return {"skipped": "TorchServe needs Java (`java` is not on PATH)"}
    from services.generator.torchserve_runner import TorchServe
    from training.packs.torchserve_export import build_mar

    t0 = time.perf_counter()
    mar = build_mar(pack.root, work / "mar", batch_size=args.ts_batch, max_batch_delay_ms=args.ts_delay_ms)
    print(f"starting TorchServe with {mar.name} (batchSize {args.ts_batch}, maxBatchDelay "
          f"{args.ts_delay_ms} ms; logs in {work / 'run' / 'logs'}) ...", flush=True)
    ts = TorchServe(mar, work / "run")
    cleanup.callback(ts.stop)
    ts.start()
    env = {**dict(args.env), "FACEDIT_BACKEND": "torchserve", "FACEDIT_TORCHSERVE_ADDRESS": ts.address}
    stack = Stack.on_free_ports(store, [pack.name], work / "stack", extra_env=env, services=("generator",))
    cleanup.callback(stack.stop)
    stack.start()
    generator = stack.pids()["generator"]
    # the CPU of the serving path only: the generator service, the JVM and its Python worker(s)
    pids = {"generator": generator}
    if ts.pid:
        pids["torchserve"] = ts.pid
        for k, child in enumerate(psutil.Process(ts.pid).children(recursive=True)):
            pids[f"torchserve_worker_{k}"] = child.pid
    print(f"  up in {time.perf_counter() - t0:.1f}s: TorchServe JVM pid {ts.pid}, generator pid {generator}",
          flush=True)
    address = stack.address("generator")
    out = {"mar": {"batch_size": args.ts_batch, "max_batch_delay_ms": args.ts_delay_ms},
           "rpc_round_trip_ms": rpc_round_trip_ms(address)}
    h2 = work / COMPILED
    targets = h2load_targets({"generator": address}, pack, [], None, None, h2) if uses_h2load(args) else {}
    logs = stack_logs(stack)  # a failed forward to TorchServe is a failed call of the generator service
    raw = RawGenerator(pack, args.threads)
    series = load_series("torchserve", "generator service (torchserve)", generator_client(address, pack), args,
                         stop, pids, generator_references(raw, address, args, single=False),
                         compiled_level(targets, "generator", args, pids, logs, stop, h2))
    measured = interleave([series], args.repeats, stop)["torchserve"]
    out["levels"] = level_rows(measured["levels"])
    for client, levels in measured["also"].items():
        out[f"levels_{client}"] = level_rows(levels)
    out["references"] = reference_rows(measured["references"])
    stack.stop()
    ts.stop()
    return out
