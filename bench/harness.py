"""Timing for `python -m bench`: timed loops, CPU time from /proc, the gRPC load harness, and
interleaved repetitions of load levels next to their references.

Repetitions: `interleave` runs every series' levels once per repetition, each level followed
right away by its reference (the same work done another way, e.g. raw ONNX Runtime next to the
generator service); the next repetition starts only after every series ran. So the repetitions
of one level lie minutes apart, and each is paired with a reference of its own minute: one slow
minute moves one repetition of a ratio, not its median.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import itertools
import os
import platform
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from services.common import onnx


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else float("nan")


def spread(values: list[float | None]) -> dict:
    """{median, range: [min, max], values} of the repetitions' figures (None ones left out)."""
    kept = [float(v) for v in values if v is not None and np.isfinite(v)]
    if not kept:
        return {"median": None, "range": None, "values": []}
    return {"median": float(np.median(kept)), "range": [min(kept), max(kept)], "values": kept}


def process_cpu_s(pid: int) -> float | None:
    """CPU time (user + system) of a live process in seconds, from /proc/<pid>/stat (None: gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def cpu_by_process(pids: dict[str, int]) -> dict[str, float]:
    """name -> CPU seconds (user + system, from /proc) of each live process of `pids`."""
    out = {}
    for name, pid in pids.items():
        cpu = process_cpu_s(pid)
        if cpu is not None:
            out[name] = cpu
    return out


def cpu_figures(requests: int, services_s: dict[str, float], client_s: float) -> dict:
    """The CPU of one load level: the serving processes' own CPU seconds (`services_s`, by process)
    and the load client's (`client_s`), as totals, requests per CPU second (`per_cpu_s`: servers +
    client; `per_service_cpu_s`: servers only) and milliseconds of CPU per request (by process too)."""
    service_s = sum(services_s.values())
    total = service_s + client_s

    def per_request_ms(s: float) -> float | None:
        return s / requests * 1e3 if requests else None

    return {"cpu_s": round(total, 3), "service_cpu_s": round(service_s, 3), "client_cpu_s": round(client_s, 3),
            "per_cpu_s": requests / total if requests and total > 0 else None,
            "per_service_cpu_s": requests / service_s if requests and service_s > 0 else None,
            "service_cpu_ms_per_request": per_request_ms(service_s),
            "client_cpu_ms_per_request": per_request_ms(client_s),
            "cpu_ms_per_request": {name: per_request_ms(s) for name, s in services_s.items()}}


@dataclasses.dataclass
class Timed:
    """What a timed loop measured: calls, wall seconds, seconds per call, CPU seconds of this process."""
    iterations: int
    seconds: float
    per_call: list[float]
    cpu_s: float

    def rate(self, per_call: int = 1) -> float:
        return per_call * self.iterations / self.seconds

    def per_cpu_s(self, per_call: int = 1) -> float | None:
        return per_call * self.iterations / self.cpu_s if self.cpu_s > 0 else None

    def p50_ms(self) -> float:
        return percentile(self.per_call, 50) * 1e3


def timed_loop(step: Callable[[], object], seconds: float, min_iters: int = 3, max_iters: int = 100_000,
               warmup: int = 3) -> Timed:
    """Warm up, then call `step` (synchronous) until `seconds` (at least min_iters, at most max_iters times)."""
    for _ in range(warmup):
        step()
    per_call = []
    c0 = time.process_time()
    t0 = time.perf_counter()
    end = t0 + seconds
    while len(per_call) < max_iters and (len(per_call) < min_iters or time.perf_counter() < end):
        t = time.perf_counter()
        step()
        per_call.append(time.perf_counter() - t)
    return Timed(len(per_call), time.perf_counter() - t0, per_call, time.process_time() - c0)


def machine_info() -> dict:
    import onnxruntime

    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    info = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
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


def cpu_snapshot() -> tuple[float, float, float]:
    """(wall, CPU seconds of the whole machine from /proc/stat, CPU seconds of this process and its
    reaped children)."""
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
    wall, busy, own = (b - a for a, b in zip(start, cpu_snapshot()))
    return {"seconds": round(wall, 1), "machine_busy_cores": round(busy / wall, 3),
            "this_run_cores": round(own / wall, 3), "other_processes_cores": round(max(busy - own, 0.0) / wall, 3)}


# --------------------------------------------------------------------------- load over gRPC

@dataclasses.dataclass
class Client:
    """What one load thread needs: call(i) makes request i (synchronously) and returns an int
    worth averaging (e.g. the batch size that served it) or None; close() ends the channel."""
    call: Callable[[int], int | None]
    close: Callable[[], None]


def run_load(make_client: Callable[[int], Client], concurrency: int, seconds: float, max_requests: int,
             warmup_calls: int = 2, stop: threading.Event | None = None, pids: dict[str, int] | None = None) -> dict:
    """`concurrency` threads, each with its own Client, make `warmup_calls` calls, then all start
    together and call back to back for `seconds` or until `max_requests`. Calls are synchronous, so
    when the last thread returns nothing is in flight: throughput = completed calls / (last
    completion - start). `pids`: the serving processes (name -> pid); their CPU time during the run
    and this process's (the client's) give cpu_figures()."""
    import grpc

    stop = stop or threading.Event()
    pids = pids or {}
    counter = itertools.count()
    start: dict = {}

    def mark():
        start["cpu0"] = cpu_by_process(pids)
        start["client0"] = time.process_time()
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
            if client is not None:
                client.close()
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
    cpu1, client1 = cpu_by_process(pids), time.process_time()
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
            "latency_ms_p50": percentile(lat, 50) * 1e3, "latency_ms_p90": percentile(lat, 90) * 1e3,
            "latency_ms_p99": percentile(lat, 99) * 1e3, "latency_ms_mean": float(np.mean(lat)) * 1e3 if lat else None,
            "mean_batch": float(np.mean(info)) if info else None,
            **cpu_figures(len(lat), {k: cpu1[k] - v for k, v in start["cpu0"].items() if k in cpu1},
                          client1 - start["client0"])}


# --------------------------------------------------------------------------- interleaved repetitions

@dataclasses.dataclass
class Series:
    """Load levels of one thing under test (e.g. the generator service), with references:
    measure(level) -> a run_load row (the Python client); also[client](level) -> the row of another
    load client (e.g. h2load), measured right after `measure` at the same level; references[level]()
    -> {figure: value} of the same work done another way, measured right after the level's clients
    in every repetition."""
    name: str
    levels: list[int]
    measure: Callable[[int], dict]
    references: dict[int, Callable[[], dict]] = dataclasses.field(default_factory=dict)
    also: dict[str, Callable[[int], dict]] = dataclasses.field(default_factory=dict)


def interleave(series: list[Series], repeats: int, stop: threading.Event | None = None,
               announce: Callable[[int], None] | None = None,
               clock: Callable[[], float] = time.perf_counter) -> dict[str, dict]:
    """Repetition r = every series' levels in order, each level measured by its clients (the Python
    one, then each of `also`) and, if it has a reference, followed right away by it: level, other
    clients, reference, level, ... then repetition r + 1. Returns {series name: {"levels": {level:
    [row of each repetition]}, "also": {client: {level: [row of each repetition]}}, "references":
    {level: [figures of each repetition]}}}; each row and figure dict gets `repetition` and `at_s`
    (seconds since the first measurement)."""
    t0 = clock()
    out = {s.name: {"levels": {c: [] for c in s.levels}, "references": {c: [] for c in s.levels if c in s.references},
                    "also": {client: {c: [] for c in s.levels} for client in s.also}}
           for s in series}
    for r in range(repeats):
        if announce is not None:
            announce(r)
        for s in series:
            for c in s.levels:
                if stop is not None and stop.is_set():
                    return out
                at = clock() - t0
                out[s.name]["levels"][c].append({**s.measure(c), "repetition": r, "at_s": round(at, 2)})
                for client, measure in s.also.items():
                    if stop is not None and stop.is_set():
                        return out
                    at = clock() - t0
                    out[s.name]["also"][client][c].append({**measure(c), "repetition": r, "at_s": round(at, 2)})
                if c in s.references:
                    at = clock() - t0
                    out[s.name]["references"][c].append({**s.references[c](), "repetition": r, "at_s": round(at, 2)})
    return out


# the per-repetition figures a level's row reports as median and [min, max]
SPREAD_FIELDS = ("throughput", "latency_ms_p50", "latency_ms_p90", "latency_ms_p99", "latency_ms_mean",
                 "mean_batch", "per_cpu_s", "per_service_cpu_s", "service_cpu_ms_per_request",
                 "client_cpu_ms_per_request")
SUMMED_FIELDS = ("seconds", "cpu_s", "service_cpu_s", "client_cpu_s")


def level_rows(levels: dict[int, list[dict]]) -> list[dict]:
    """One row per level: the median of each figure over the repetitions (its [min, max] as
    `<figure>_range`; `cpu_ms_per_request` by process: the medians), requests, errors, seconds and
    CPU seconds summed, and every repetition's row under `repetitions`."""
    rows = []
    for c, reps in levels.items():
        if not reps:
            continue
        row: dict = {"concurrency": c, "repeats": len(reps)}
        for field in SPREAD_FIELDS:
            s = spread([r.get(field) for r in reps])
            row[field], row[f"{field}_range"] = s["median"], s["range"]
        row["requests"] = sum(r["requests"] for r in reps)
        row["errors"] = {}
        for r in reps:
            for code, n in r["errors"].items():
                row["errors"][code] = row["errors"].get(code, 0) + n
        for field in SUMMED_FIELDS:
            row[field] = round(sum(r[field] for r in reps if r.get(field) is not None and np.isfinite(r[field])), 3)
        names = sorted({name for r in reps for name in r.get("cpu_ms_per_request") or {}})
        row["cpu_ms_per_request"] = {name: spread([(r.get("cpu_ms_per_request") or {}).get(name)
                                                   for r in reps])["median"] for name in names}
        row["repetitions"] = reps
        rows.append(row)
    return rows


def reference_rows(references: dict[int, list[dict]]) -> list[dict]:
    """One entry per referenced level: the median of each figure and every repetition's figures."""
    out = []
    for c, reps in references.items():
        if not reps:
            continue
        names = [k for k in reps[0] if k not in ("repetition", "at_s") and isinstance(reps[0][k], (int, float))]
        out.append({"concurrency": c, "median": {k: spread([r.get(k) for r in reps])["median"] for k in names},
                    "repetitions": reps})
    return out
