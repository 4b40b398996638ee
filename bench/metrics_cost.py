"""What the metrics cost: the gateway's Edit throughput with every service recording and serving its
Prometheus metrics, against the same stack with them off (--metrics-port 0: nothing recorded).

    python -m bench.metrics_cost [--pack digiface64] [--seconds 5] [--repeats 4] [--concurrency 32]

Two stacks of the pack (services.stack.Stack: Redis and the four services as processes), one with a
metrics port per service and one without, run side by side; this process loads one at a time with
the gateway's default Edit (a PNG in: encode, compose, render before and after, score both) at
--concurrency for --seconds, in pairs (off then on, then on then off, ...: --repeats pairs). Each pair
gives the ratio on / off of the throughput and of the Edits per CPU second (this process and the
stack's); printed as the median and range of the pairs, and written to --out.

On a small shared machine two runs of the same stack differ by more than the metrics cost, so the
ratios are noisy. A steadier figure is also printed: the recording's own CPU time per Edit, from
what the stack with metrics counted (every service's /metrics, scraped at the end: RPCs, downstream
calls, batcher observations and cache lookups per Edit) times what each of these costs, timed here
with the real interceptor, Downstream wrapper and metric children; over the CPU time per Edit.
"""
from __future__ import annotations

import argparse
import json
import time
import urllib.request
from pathlib import Path

from bench.clients import gateway_client
from bench.harness import machine_info, run_load, spread
from bench.served import stack_pids
from bench.workload import edit_choice, face_pngs
from facedit_core.pack import load_pack
from services.stack import SERVICES, Stack


def _totals(stack: Stack) -> dict[str, float]:
    """Every service's /metrics page, summed: Edits OK (gateway), RPCs handled, downstream calls, batcher
    observations (rows, queue waits and executions) and cache lookups."""
    from prometheus_client.parser import text_string_to_metric_families

    out = dict.fromkeys(("edits", "rpcs", "hops", "batcher_observations", "counter_increments"), 0.0)
    for service in SERVICES:
        with urllib.request.urlopen(stack.metrics_url(service), timeout=10) as resp:
            text = resp.read().decode()
        for s in (s for f in text_string_to_metric_families(text) for s in f.samples):
            if s.name == "facedit_grpc_server_handled_total" and s.labels.get("grpc_method") == "Edit" \
                    and s.labels.get("grpc_code") == "OK":
                out["edits"] += s.value
            key = {"facedit_grpc_server_handling_seconds_count": "rpcs",
                   "facedit_downstream_call_seconds_count": "hops",
                   "facedit_batcher_batch_rows_count": "batcher_observations",
                   "facedit_batcher_queue_wait_seconds_count": "batcher_observations",
                   "facedit_batcher_execution_seconds_count": "batcher_observations",
                   "facedit_cache_lookups_total": "counter_increments"}.get(s.name)
            if key:
                out[key] += s.value
    return out


def _per_call_us(fn, calls: int = 200_000) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls * 1e6


def recording_costs_us() -> dict[str, float]:
    """What each recorded thing costs, in microseconds of CPU: an RPC through metrics.RpcMetrics and a call
    through metrics.instrument_downstream (each over the same call unwrapped), a batcher observation (a
    histogram observe and a perf_counter), a counter increment."""
    import types

    from services.common import metrics

    context = types.SimpleNamespace(code=lambda: None)
    bare = lambda request, ctx: request  # noqa: E731
    wrapped = metrics.RpcMetrics().wrap("unary_unary", bare, "/bench.Cost/Noop")
    rpc = _per_call_us(lambda: wrapped(1, context)) - _per_call_us(lambda: bare(1, context))
    down = types.SimpleNamespace(call=lambda hop, method, request, budget: request,
                                 **{hop: types.SimpleNamespace(Noop=object()) for hop in metrics.HOPS})
    method, bare_call = down.encoder.Noop, down.call
    metrics.instrument_downstream(down)
    hop = _per_call_us(lambda: down.call("encoder", method, 1, None)) - \
        _per_call_us(lambda: bare_call("encoder", method, 1, None))
    observe = metrics.QUEUE_WAIT.labels("bench-cost").observe
    counter = metrics.CACHE_LOOKUPS.labels("latent", "hit")
    return {"rpc": rpc, "hop": hop,
            "batcher_observation": _per_call_us(lambda: observe(time.perf_counter() - 1.0)),
            "counter_increment": _per_call_us(counter.inc)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench.metrics_cost", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pack", default="digiface64")
    p.add_argument("--model-store", default="model_store")
    p.add_argument("--seconds", type=float, default=5.0, help="load per run")
    p.add_argument("--repeats", type=int, default=4, help="pairs of runs (off and on)")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--out", default="out/metrics_cost.json")
    args = p.parse_args(argv)
    store = Path(args.model_store).resolve()
    pack = load_pack(args.pack, store)
    attribute, keep = edit_choice(pack)
    pngs = face_pngs(pack)
    work = Path("out/metrics_cost")
    stacks = {"off": Stack.on_free_ports(store, [pack.name], work / "off", metrics=False),
              "on": Stack.on_free_ports(store, [pack.name], work / "on")}
    runs: dict[str, list[dict]] = {"off": [], "on": []}
    t0 = time.perf_counter()
    try:
        for stack in stacks.values():
            stack.start(timeout_s=120)
        for r in range(args.repeats):
            for kind in (("off", "on") if r % 2 == 0 else ("on", "off")):
                stack = stacks[kind]
                run = run_load(gateway_client(stack.address("gateway"), pngs, attribute, keep), args.concurrency,
                               args.seconds, 10 ** 9, pids=stack_pids(stack))
                if run["errors"]:
                    raise RuntimeError(f"metrics {kind}: failed Edits {run['errors']}")
                runs[kind].append(run)
                print(f"  pair {r + 1} metrics {kind:>3}: {run['throughput']:.1f} Edits/s, "
                      f"{run['per_cpu_s']:.1f} Edits per CPU s, p50 {run['latency_ms_p50']:.1f} ms", flush=True)
        totals = _totals(stacks["on"])
    finally:
        for stack in stacks.values():
            stack.stop()
    served = sum(run["requests"] for run in runs["on"])
    pairs = list(zip(runs["on"], runs["off"]))
    costs = recording_costs_us()
    edits = totals["edits"]
    per_edit = {k: totals[k] / edits for k in ("rpcs", "hops", "batcher_observations", "counter_increments")}
    recording_us = (per_edit["rpcs"] * costs["rpc"] + per_edit["hops"] * costs["hop"]
                    + per_edit["batcher_observations"] * costs["batcher_observation"]
                    + per_edit["counter_increments"] * costs["counter_increment"])
    cpu_us_per_edit = 1e6 / spread([run["per_cpu_s"] for run in runs["on"]])["median"]
    result = {
        "pack": pack.name, "concurrency": args.concurrency, "seconds": args.seconds, "repeats": args.repeats,
        "machine": machine_info(),
        "throughput_on_over_off": spread([on["throughput"] / off["throughput"] for on, off in pairs]),
        "per_cpu_s_on_over_off": spread([on["per_cpu_s"] / off["per_cpu_s"] for on, off in pairs]),
        "throughput": {k: [round(run["throughput"], 2) for run in v] for k, v in runs.items()},
        "per_cpu_s": {k: [round(run["per_cpu_s"], 2) for run in v] for k, v in runs.items()},
        "edits_counted_by_the_gateway": edits, "edits_timed_with_metrics_on": served,
        "recorded_per_edit": per_edit, "cost_us": costs, "recording_us_per_edit": recording_us,
        "cpu_us_per_edit": cpu_us_per_edit, "recording_share_of_cpu": recording_us / cpu_us_per_edit,
        "duration_s": round(time.perf_counter() - t0, 1),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    tp, cpu = result["throughput_on_over_off"], result["per_cpu_s_on_over_off"]
    print(f"{pack.name}, concurrency {args.concurrency}, {args.repeats} pairs of {args.seconds:g} s: metrics on / off "
          f"throughput {tp['median']:.3f} [{tp['range'][0]:.3f}, {tp['range'][1]:.3f}], Edits per CPU s "
          f"{cpu['median']:.3f} [{cpu['range'][0]:.3f}, {cpu['range'][1]:.3f}]; the gateway counted {edits:.0f} "
          f"Edits OK (including warm-ups; {served} timed).\nRecorded per Edit: "
          + ", ".join(f"{v:.2f} {k}" for k, v in per_edit.items())
          + f"; at {costs['rpc']:.2f} / {costs['hop']:.2f} / {costs['batcher_observation']:.2f} / "
          f"{costs['counter_increment']:.2f} us each: {recording_us:.1f} us of the {cpu_us_per_edit:.0f} us of CPU "
          f"per Edit ({100 * recording_us / cpu_us_per_edit:.2f} %). Wrote {out}")
    return result


if __name__ == "__main__":
    main()
