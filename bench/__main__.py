"""`make bench`: the serving path against its ceiling and its alternatives, in one run, on one pack.

    python -m bench [--pack synth] [--model-store model_store] [--seconds 3] [--repeats 3] [--quick]

Parts, in this order (the in-process ones first, with no service running; bench/inprocess.py):
  flops          FLOPs per image of generator/encoder/classifier (bench/flops.py)
  matmul         reference: 2048x2048 float32 torch matmul, GFLOP/s (the machine's practical peak)
  raw_ort        generator.onnx in ONNX Runtime at batch 1, 8, 32, 64 (the ceiling)
  inprocess      edits without RPC, batched, both kinds the gateway serves: lean (decode PNG, encoder,
                 compose, generator on the edited latent, encode PNG: Edit with skip_scores) and full
                 (also the original rendered and both scored by the classifier: a default Edit);
                 batch 1 and 32
  peer           eager PyTorch, one face at a time (bench/peer.py): decode, encoder, z + delta,
                 generator, encode
then the served ones (bench/served.py), on a real stack (services.stack.Stack: Redis + the four
services as processes on free ports):
  service        the generator service (ONNX backend), concurrency 1, 8, 32, 64
  gateway        Edit through the gateway: a PNG of a rendered face in, the edited PNG out (one edit +
                 one kept attribute), concurrency 1, 8, 32, 64; once lean (skip_scores: the peer's
                 work) and once full (scores before/after: the default)
  torchserve     a real TorchServe serving the pack's .mar behind a generator service with
                 --backend torchserve, under the same load as `service`

Repetitions: every load level runs --repeats times, interleaved: repetition r runs each level of
service, gateway lean and gateway full once (each with both load clients), and the levels the
targets compare are each followed right away by their reference (raw ORT batch 1 / 64 next to the
service's c1 / c64, the in-process pipeline at batch 1 / 32 and the peer next to the gateway's
c1 / c32). Each ratio is computed per
repetition and reported as the median and [min, max] (bench/ratios.py); verdicts read the median.

Load, by two clients, one right after the other at every level. Python: each client is a thread
with its own channel; every thread makes two warm-up calls, then all start together and call back
to back for --seconds (or until --max-requests). Requests are synchronous, so when the last thread
returns nothing is in flight; throughput = completed requests / (last completion - start).
Compiled: h2load (Debian's nghttp2-client; bench/h2load.py) sends a prepared gRPC frame on as many
connections, 2 warm-up calls each, then as many requests as last about --seconds; every answer is
checked (byte count of real answers, h2load's statuses, the services' logs of failed calls). The
targets are judged on h2load's figures; --skip h2load leaves it out (no verdicts then). Beside each
level: the CPU per request of every serving process (from /proc) and of the load client.

Writes --out (bench/results.json) and --plot (bench/results.png, needs matplotlib: the `bench`
extra) and prints a table (bench/report.py). The targets are reported, never asserted. Everything
started is stopped at the end, also on error, Ctrl-C or SIGTERM.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import time
from pathlib import Path

from bench import h2load, harness, inprocess, ratios, report, served, workload
from facedit_core.pack import load_pack

ROOT = Path(__file__).resolve().parent.parent
QUICK = {"seconds": 0.2, "matmul_n": 256}  # --quick: the smoke test's settings (figures too short to read)
FULL = {"seconds": 3.0, "matmul_n": 2048}


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


def _positive(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive count, got {text!r}")
    return n


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pack", default="synth")
    p.add_argument("--model-store", default=str(ROOT / "model_store"))
    p.add_argument("--seconds", type=float, default=None,
                   help=f"measured time per batch size / concurrency level / reference ({FULL['seconds']}; "
                        f"--quick: {QUICK['seconds']})")
    p.add_argument("--repeats", type=_positive, default=3,
                   help="interleaved repetitions of every load level and its reference (ratios: median, range)")
    p.add_argument("--quick", action="store_true",
                   help=f"short levels ({QUICK['seconds']} s) and a {QUICK['matmul_n']}x{QUICK['matmul_n']} matmul: "
                        "checks the bench works (the smoke test), its figures are too short to read")
    p.add_argument("--max-requests", type=int, default=50_000, help="cap of requests per load level")
    p.add_argument("--concurrency", type=_ints, default=list(workload.CONCURRENCY))
    p.add_argument("--batches", type=_ints, default=list(workload.BATCHES))
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads in this process (0: auto)")
    p.add_argument("--matmul-n", type=int, default=None,
                   help=f"side of the reference matmul ({FULL['matmul_n']}; --quick: {QUICK['matmul_n']})")
    p.add_argument("--ts-batch", type=int, default=64, help="TorchServe batchSize of the .mar")
    p.add_argument("--ts-delay-ms", type=int, default=5, help="TorchServe maxBatchDelay of the .mar")
    p.add_argument("--env", type=_env_pair, action="append", default=[], metavar="KEY=VALUE",
                   help="environment of the started services, e.g. FACEDIT_WORKERS=64 (repeatable)")
    p.add_argument("--skip", default="", help="comma-separated parts to skip: services, torchserve, h2load (the "
                                                 "compiled load client; the targets are judged on its figures)")
    p.add_argument("--work", default=str(ROOT / "out" / "bench"), help="logs and the .mar go here")
    p.add_argument("--out", default=str(ROOT / "bench" / "results.json"))
    p.add_argument("--plot", default=str(ROOT / "bench" / "results.png"))
    args = p.parse_args(argv)
    preset = QUICK if args.quick else FULL
    args.seconds = preset["seconds"] if args.seconds is None else args.seconds
    args.matmul_n = preset["matmul_n"] if args.matmul_n is None else args.matmul_n
    return args


def compiled_client(args) -> str | None:
    """h2load's version when the served parts will use it (None: --skip h2load, or no served part);
    SystemExit with what to do when it is missing."""
    skip = {s for s in args.skip.split(",") if s}
    if not served.uses_h2load(args) or {"services", "torchserve"} <= skip:
        return None
    try:
        return h2load.version()
    except h2load.H2loadMissing as err:
        raise SystemExit(f"python -m bench: {err}") from None


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    compiled = compiled_client(args)  # before anything starts: a missing h2load fails at once
    t_start = time.perf_counter()
    cpu_start = harness.cpu_snapshot()
    store = Path(args.model_store).resolve()
    pack = load_pack(args.pack, store)
    skip = {s for s in args.skip.split(",") if s}
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    missing = workload.missing_for_edits(pack)
    results: dict = {
        "machine": harness.machine_info(), "pack": workload.pack_info(pack),
        "settings": {"seconds_per_level": args.seconds, "repeats": args.repeats, "quick": args.quick,
                     "max_requests_per_level": args.max_requests, "concurrency": args.concurrency,
                     "batches": args.batches, "inprocess_batches": list(workload.INPROCESS_BATCHES),
                     "ort_threads": args.threads, "matmul_n": args.matmul_n,
                     "reference_seconds": {"single_call_p50": served.short_seconds(args), "throughput": args.seconds},
                     "edit": None if missing else dict(zip(("attribute", "keep"), workload.edit_choice(pack)),
                                                       strength=workload.EDIT_STRENGTH),
                     "skipped": sorted(skip), "service_env": dict(args.env),
                     "load_clients": {"python": "threads of this process, one channel each (bench/clients.py)",
                                      served.COMPILED: compiled or "skipped"},
                     "service_flags": service_flags(dict(args.env))}}
    print(f"bench: pack {pack.name} {pack.version} ({pack.resolution}px, z {pack.latent_dim}), "
          f"{results['machine']['cores']} cores, {args.seconds}s per level, {args.repeats} repetitions"
          + (" (quick)" if args.quick else ""), flush=True)
    stop = threading.Event()
    errors: dict[str, str] = {}
    if missing:
        results["generator_only"] = f"pack {pack.name} has no {', '.join(missing)}: generator parts only"
        print(results["generator_only"], flush=True)
    pngs = [] if missing else workload.face_pngs(pack)
    try:
        with _sigterm_as_interrupt(), contextlib.ExitStack() as cleanup:
            cleanup.callback(stop.set)  # first thing on the way out: load threads stop calling
            results.update(inprocess.offline_parts(pack, pngs, args.seconds, args.batches, workload.INPROCESS_BATCHES,
                                                   matmul_n=args.matmul_n, threads=args.threads))
            # a part that fails is reported (results["errors"]) and the others still run
            if "services" not in skip:
                try:
                    svc = served.services_part(pack, store, pngs, args, cleanup, stop, work / "logs")
                    results["rpc_round_trip_ms"] = svc.pop("rpc_round_trip_ms")
                    results.update(svc)
                except Exception as err:  # noqa: BLE001
                    errors["services"] = f"{type(err).__name__}: {err}"
                    print(f"services part failed: {err}", flush=True)
            if "torchserve" not in skip:
                try:
                    results["generator_service_torchserve"] = served.torchserve_part(
                        pack, store, args, cleanup, stop, work / "torchserve")
                except Exception as err:  # noqa: BLE001
                    errors["torchserve"] = f"{type(err).__name__}: {err}"
                    print(f"TorchServe part failed: {err}", flush=True)
    except KeyboardInterrupt:
        print("\ninterrupted: everything started was stopped; partial results follow", flush=True)
        results["interrupted"] = True
    if errors:
        results["errors"] = errors
    results["machine"]["load_average_at_end"] = list(os.getloadavg())
    results["machine"]["cpu_during_run"] = harness.other_load(cpu_start)
    ratios.add_gflops(results)
    results.update(ratios.all_ratios(results))
    results["duration_s"] = round(time.perf_counter() - t_start, 1)
    out = report.write_results(results, Path(args.out))
    png = report.plot(results, Path(args.plot))
    print()
    print(report.table(results))
    print(f"\nwrote {out}" + (f" and {png}" if png else " (no plot: matplotlib is not installed; `pip install "
                                                        "-e '.[bench]'`)") + f" in {results['duration_s']}s")
    if errors:
        print("FAILED parts: " + "; ".join(f"{k}: {v}" for k, v in errors.items()), flush=True)
    return results


if __name__ == "__main__":
    r = main()
    sys.exit(1 if r.get("errors") or r.get("interrupted") else 0)
