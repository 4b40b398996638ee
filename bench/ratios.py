"""The targets of `python -m bench` as ratios of the results, and GFLOP/s next to every rate.

A ratio is computed once per repetition, from the level's figures of that repetition and the
reference measured right after it (bench/harness.py `interleave`), and reported as the median
and [min, max] over the repetitions; a verdict reads the median. The ratios are computed for each
load client: the targets are judged on the compiled client's figures (h2load, `ratios` in the
JSON); the Python client's are reported beside them without a verdict (`ratios_python_client`).
Everything here reads the results dict only, so a results.json can be re-read with it.
"""
from __future__ import annotations

from collections.abc import Callable

from bench.harness import spread
from bench.workload import EDIT_KINDS

# the targets, judged on the compiled client's medians (make bench PACK=digiface64)
TARGETS = {
    "service_c64_over_raw_b64": (">=", 0.9),
    "service_c64_over_raw_b64_per_cpu": (">=", 0.9),
    "gateway_lean_c32_over_inprocess_lean_b32": (">=", 0.7),
    "gateway_c32_over_inprocess_b32": (">=", 0.5),
    "gateway_lean_c32_over_peer": (">=", 2.5),
    "service_p99_over_p50_c8": ("<=", 3.0),
    "gateway_lean_p99_over_p50_c8": ("<=", 3.0),
    "gateway_p99_over_p50_c8": ("<=", 3.0),
    "service_c1_excess_ms": ("<=", 2.0),
    "gateway_lean_c1_excess_ms": ("<=", 2.0),
    "gateway_c1_excess_ms": ("<=", 2.0),
}
# RPCs of one gateway Edit with an image: client->gateway, encoder.EncodeImages, generator.GenerateImages
# and, in a full edit, encoder.ScoreImages; plus directions.Compose (overlapping the encode) when the
# gateway's compose memo is off (--compose-memo 0: with it on, the bench's repeated edit is composed once
# and then answered from the memo after one Redis MGET). ListDirections is cached by the gateway.
EDIT_HOPS = {"full": ("client->gateway", "encode", "generate", "score"),
             "lean": ("client->gateway", "encode", "generate")}
ADJACENT = "measured right after the level in each repetition"
START = "measured once at the start of the run"
CLIENTS = ("h2load", "python")  # the load clients: compiled (judged), Python
# client -> the suffix of its level rows' keys (bench/served.py; TorchServe's: "levels" + suffix)
ROW_SUFFIX = {"python": "", "h2load": "_h2load"}


def _level(rows: list[dict] | None, key: str, value: int) -> dict | None:
    return next((r for r in rows or [] if r.get(key) == value), None)


def _div(a, b):
    return None if a is None or b in (None, 0) else a / b


def add_gflops(results: dict) -> None:
    """GFLOP/s next to every throughput (FLOPs per image or per edit x rate; the median rate of a
    repeated level)."""
    f = results.get("flops") or {}
    g, peer = f.get("generator_per_image"), f.get("peer_edit")
    per_edit = {"full": f.get("edit_per_request"), "lean": f.get("lean_edit_per_request")}

    def put(rows, rate_key, flops):
        for r in rows or []:
            if flops and r.get(rate_key) is not None:
                r["gflops"] = r[rate_key] * flops / 1e9

    put(results.get("raw_ort_generator"), "images_per_s", g)
    put(results.get("raw_ort_generator_concurrent"), "images_per_s", g)
    for kind in EDIT_KINDS:
        put(results.get(f"inprocess_{kind}_edits"), "edits_per_s", per_edit[kind])
        for x in ROW_SUFFIX.values():
            put(results.get(f"gateway_{kind}_edits{x}"), "throughput", per_edit[kind])
    for x in ROW_SUFFIX.values():
        put(results.get(f"generator_service_onnx{x}"), "throughput", g)
    for x in ROW_SUFFIX.values():
        put((results.get("generator_service_torchserve") or {}).get(f"levels{x}"), "throughput", g)
    p = results.get("peer_baseline")
    if p and peer:
        p["gflops"] = p["edits_per_s"] * peer / 1e9
        p["generator_only_gflops"] = p["generator_only_images_per_s"] * g / 1e9


def entry(values: list, target: tuple[str, float] | None, how: str) -> dict:
    """{median, range, values, repetitions, target, met, how}; met reads the median (None: not measured)."""
    s = spread(values)
    met = None
    if target is not None and s["median"] is not None:
        op, bound = target
        met = s["median"] >= bound if op == ">=" else s["median"] <= bound
    return {"median": s["median"], "range": s["range"], "values": s["values"], "repetitions": len(s["values"]),
            "target": None if target is None else f"{target[0]} {target[1]}", "met": met, "how": how}


class _Run:
    """Per-repetition access to a results dict: a level's repetitions of one load client, each paired
    with its reference."""

    def __init__(self, results: dict, client: str = "python"):
        self.results = results
        x = ROW_SUFFIX[client]
        self.rows = {"generator": results.get(f"generator_service_onnx{x}"),
                     "torchserve": (results.get("generator_service_torchserve") or {}).get(f"levels{x}")}
        self.rows.update({f"gateway_{k}": results.get(f"gateway_{k}_edits{x}") for k in EDIT_KINDS})
        refs = dict(results.get("references") or {})
        refs["torchserve"] = (results.get("generator_service_torchserve") or {}).get("references")
        self.refs = refs

    def reps(self, series: str, level: int) -> list[dict]:
        return (_level(self.rows.get(series), "concurrency", level) or {}).get("repetitions") or []

    def pairs(self, series: str, level: int) -> list[tuple[dict, dict]]:
        """(level's figures, its reference's figures) of each repetition that has both."""
        refs = (_level(self.refs.get(series), "concurrency", level) or {}).get("repetitions") or []
        by_rep = {r["repetition"]: r for r in refs}
        return [(lv, by_rep[lv["repetition"]]) for lv in self.reps(series, level) if lv["repetition"] in by_rep]

    def paired(self, series: str, level: int, f: Callable[[dict, dict], float | None]) -> list:
        return [f(lv, ref) for lv, ref in self.pairs(series, level)]

    def against(self, series: str, level: int, f: Callable[[dict], float | None]) -> list:
        return [f(lv) for lv in self.reps(series, level)]


def _excess(p50, reference_ms, hops: int, rtt_ms, first_hop_ms=None):
    """p50 - (reference + one empty round trip per hop); the first hop (the load client's) costs
    `first_hop_ms` when given (h2load's empty call), every other one `rtt_ms` (Python to Python)."""
    first = rtt_ms if first_hop_ms is None else first_hop_ms
    if None in (p50, reference_ms, rtt_ms, first):
        return None
    return p50 - (reference_ms + first + (hops - 1) * rtt_ms)


def all_ratios(results: dict) -> dict:
    """{"ratios": the compiled client's (judged), "ratios_python_client": the Python client's}."""
    return {"ratios": ratios(results, "h2load"), "ratios_python_client": ratios(results, "python")}


def ratios(results: dict, client: str = "h2load") -> dict:
    """The targets and related readings of one load client's levels: {name: entry()}; an entry with
    no values when a part is missing. Only the compiled client's (h2load) entries carry the targets
    and verdicts."""
    run = _Run(results, client)
    judged = TARGETS if client == "h2load" else {}
    raw, conc = results.get("raw_ort_generator"), results.get("raw_ort_generator_concurrent")
    peer = (results.get("peer_baseline") or {}).get("edits_per_s")
    rtt = results.get("rpc_round_trip_ms") or {}
    first_rtt = (results.get("h2load_round_trip_ms") or {}) if client == "h2load" else {}
    first_key = "h2load_round_trip_ms" if client == "h2load" else "rpc_round_trip_ms"
    memo = ((results.get("settings") or {}).get("service_flags") or {}).get("compose_memo", 0)
    hops = {k: v if memo else (*v[:2], "compose", *v[2:]) for k, v in EDIT_HOPS.items()}
    raw64 = (_level(raw, "batch", 64) or {})
    hop1 = "1 empty call of this client" if client == "h2load" else "1 empty-RPC round trip"
    out = {
        "service_c64_over_raw_b64": entry(
            run.paired("generator", 64, lambda lv, ref: _div(lv["throughput"], ref["raw_images_per_s"])),
            judged.get("service_c64_over_raw_b64"),
            f"generator service images/s at c64 / raw ONNX Runtime images/s at batch 64 {ADJACENT}"),
        "service_c64_over_raw_b64_per_cpu": entry(
            run.paired("generator", 64, lambda lv, ref: _div(lv.get("per_service_cpu_s"), ref["raw_images_per_cpu_s"])),
            judged.get("service_c64_over_raw_b64_per_cpu"),
            "images per CPU second of the serving processes at c64 (their own user + system time from /proc, "
            f"the load client left out) / images per CPU second of raw ORT at batch 64 {ADJACENT}: what the "
            "throughput ratio would be on idle cores, robust to other processes taking CPU"),
        "service_p99_over_p50_c8": entry(
            run.against("generator", 8, lambda lv: _div(lv["latency_ms_p99"], lv["latency_ms_p50"])),
            judged.get("service_p99_over_p50_c8"), "generator service p99 / p50 latency at c8, per repetition"),
        "service_c1_excess_ms": entry(
            run.paired("generator", 1, lambda lv, ref: _excess(lv["latency_ms_p50"], ref["reference_p50_ms"], 1,
                                                               ref["rpc_round_trip_ms"], ref.get(first_key))),
            judged.get("service_c1_excess_ms"),
            f"generator service p50 at c1 - (raw ONNX Runtime batch-1 p50 + {hop1} to the generator; both "
            f"{ADJACENT})"),
        "gateway_lean_c32_over_peer": entry(
            run.paired("gateway_lean", 32, lambda lv, ref: _div(lv["throughput"], ref["peer_edits_per_s"])),
            judged.get("gateway_lean_c32_over_peer"),
            "lean gateway edits/s at c32 (Edit with skip_scores: encode 1 + generate 1, the peer's work) / "
            f"eager PyTorch one-at-a-time edits/s {ADJACENT}"),
    }
    for kind in EDIT_KINDS:
        name = "gateway" if kind == "full" else "gateway_lean"
        series = f"gateway_{kind}"
        label = "full gateway Edit (scores)" if kind == "full" else "lean gateway Edit (skip_scores)"
        b32 = f"{name}_c32_over_inprocess{'_lean' if kind == 'lean' else ''}_b32"
        out[b32] = entry(
            run.paired(series, 32, lambda lv, ref: _div(lv["throughput"], ref["inprocess_edits_per_s"])),
            judged.get(b32),
            f"{label} edits/s at c32 / in-process {kind} edits/s at batch 32 (the same work) {ADJACENT}")
        out[f"{name}_p99_over_p50_c8"] = entry(
            run.against(series, 8, lambda lv: _div(lv["latency_ms_p99"], lv["latency_ms_p50"])),
            judged.get(f"{name}_p99_over_p50_c8"), f"{label} p99 / p50 latency at c8, per repetition")
        n = len(hops[kind])
        out[f"{name}_c1_excess_ms"] = entry(
            run.paired(series, 1, lambda lv, ref, n=n: _excess(lv["latency_ms_p50"], ref["reference_p50_ms"], n,
                                                              ref["rpc_round_trip_ms"], ref.get(first_key))),
            judged.get(f"{name}_c1_excess_ms"),
            f"{label} p50 at c1 - (in-process single {kind} edit p50 + one empty round trip per hop: "
            f"{', '.join(hops[kind])}; the first ({hops[kind][0]}) {hop1}, the others Python to Python"
            f"{'; Compose answered by the gateway memo' if memo else ''}; all {ADJACENT})")
        out[f"{b32}_per_cpu"] = entry(
            run.paired(series, 32, lambda lv, ref: _div(lv.get("per_service_cpu_s"),
                                                        ref["inprocess_edits_per_cpu_s"])),
            None, f"{kind} edits per CPU second of the serving processes at c32 (gateway, encoder, directions, "
                  f"generator, Redis; the load client left out) / {kind} edits per CPU second of the in-process "
                  f"pipeline at batch 32 {ADJACENT}")
        out[f"{b32}_per_cpu_with_client"] = entry(
            run.paired(series, 32, lambda lv, ref: _div(lv["per_cpu_s"], ref["inprocess_edits_per_cpu_s"])), None,
            f"as {b32}_per_cpu, the load client's CPU counted too")
    out["service_c64_over_raw_b64_per_cpu_with_client"] = entry(
        run.paired("generator", 64, lambda lv, ref: _div(lv["per_cpu_s"], ref["raw_images_per_cpu_s"])), None,
        "as service_c64_over_raw_b64_per_cpu, the load client's CPU counted too")

    # the same targets against the references of the run's start, to show how far the machine drifts
    out["service_c64_over_raw_b64_start_of_run"] = entry(
        run.against("generator", 64, lambda lv: _div(lv["throughput"], raw64.get("images_per_s"))), None,
        f"as service_c64_over_raw_b64, with raw ORT batch 64 {START}")
    out["gateway_lean_c32_over_peer_start_of_run"] = entry(
        run.against("gateway_lean", 32, lambda lv: _div(lv["throughput"], peer)), None,
        f"as gateway_lean_c32_over_peer, with the peer {START}")
    starts = {"service_c1_excess_ms": ("generator", (_level(raw, "batch", 1) or {}).get("latency_ms_p50"), 1,
                                       rtt.get("generator"), first_rtt.get("generator"))}
    for kind in EDIT_KINDS:
        single = (_level(results.get(f"inprocess_{kind}_edits"), "batch", 1) or {}).get("latency_ms_p50")
        starts[f"gateway{'_lean' if kind == 'lean' else ''}_c1_excess_ms"] = (
            f"gateway_{kind}", single, len(hops[kind]), rtt.get("gateway"), first_rtt.get("gateway"))
    for name, (series, single, n, rtt_ms, first_ms) in starts.items():
        if client == "h2load" and first_ms is None:  # no empty call of h2load measured: unknown
            rtt_ms = None
        out[f"{name}_start_of_run"] = entry(
            run.against(series, 1, lambda lv, single=single, n=n, rtt_ms=rtt_ms, first_ms=first_ms: _excess(
                lv["latency_ms_p50"], single, n, rtt_ms, first_ms)), None,
            f"as {name}, with the in-process p50 and the empty round trips {START}")

    # readings without a target
    # the peer of each repetition is the one measured next to the lean gateway's c32 level
    peers = {ref["repetition"]: ref["peer_edits_per_s"] for _, ref in run.pairs("gateway_lean", 32)}
    out["gateway_full_c32_over_peer"] = entry(
        run.against("gateway_full", 32, lambda lv: _div(lv["throughput"], peers.get(lv["repetition"]))), None,
        "full gateway edits/s at c32 (encode 1 + generate 2 + score 2) / peer edits/s (encode 1 + generate 1) of "
        "the same repetition: not the same work, for reference")
    lean_levels = [r["concurrency"] for r in run.rows.get("gateway_lean") or []]
    best = {}
    for c in lean_levels:
        for lv in run.reps("gateway_lean", c):
            best[lv["repetition"]] = max(best.get(lv["repetition"], 0.0), lv["throughput"])
    out["gateway_lean_best_over_peer"] = entry(
        [_div(v, peers.get(r)) for r, v in best.items()], None,
        "best lean gateway edits/s over all concurrencies / peer, per repetition")
    conc64 = _level(conc, "batch", 64) or {}
    out["service_c64_over_concurrent_raw_b64"] = entry(
        run.against("generator", 64, lambda lv: _div(lv["throughput"], conc64.get("images_per_s"))), None,
        "generator service images/s at c64 / raw ORT at batch 64 run as the service runs it under load (2 calls "
        f"at once, one intra-op thread each: raw_ort_generator_concurrent, {START})")
    out["service_c64_over_concurrent_raw_b64_per_cpu"] = entry(
        run.against("generator", 64, lambda lv: _div(lv.get("per_service_cpu_s"), conc64.get("images_per_cpu_s"))),
        None, "as service_c64_over_raw_b64_per_cpu, against raw_ort_generator_concurrent at batch 64")
    out["torchserve_c64_over_raw_b64"] = entry(
        run.paired("torchserve", 64, lambda lv, ref: _div(lv["throughput"], ref["raw_images_per_s"])), None,
        f"TorchServe-backed generator service images/s at c64 / raw ORT batch 64 {ADJACENT}")
    return out
