"""The compiled load client of `python -m bench`: h2load (Debian's `nghttp2-client`), which sends a
prepared HTTP/2 body over h2c to a gRPC method, beside the Python client (bench/clients.py).

A prepared request is one gRPC frame in a file: 1 byte 0 (not compressed), the message's length as
4 bytes big-endian, the serialised protobuf. h2load POSTs it with `content-type: application/grpc`,
`te: trailers` and `grpc-timeout` (the Python client's 30 s), `-c` connections of one stream each
(`-m 1`: as the Python client's threads, one channel each), on one thread (`-t 1`).

h2load counts HTTP statuses, not `grpc-status`: a failed gRPC call is an HTTP 200 whose trailers say
so, with no message. So every level is checked three ways: h2load's own counts (failed, errored,
timed out streams, non-2xx statuses), the DATA bytes it received against a real answer to the same
request made once with the Python client (`answer_bytes`: N answers must be exactly N x that many
bytes; a failed call has none), and the services' logs, where every failed, refused or crashed
call leaves a line.

A level: a warm-up of 2 calls per connection (as the Python client's threads), then exactly N
requests (`-n`), N sized to last about `seconds` from the last measured rate of that level (in the
first repetition from short calibration runs); every one of them completes, so the services' CPU
before and after (from /proc) is theirs. Latency percentiles come from h2load's per-request log (--log-file).
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
import resource
import shutil
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from bench.harness import cpu_by_process, cpu_figures, percentile

HEADERS = ("content-type: application/grpc", "te: trailers", "grpc-timeout: 30S")
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
# the log lines of a call that did not succeed (services/common/server.py, admission.py, security.py)
FAILED_CALL_MESSAGES = ("call failed", "call crashed", "call refused", "redis unavailable")
MISSING = ("h2load is not installed: `make bench` installs it (Debian's nghttp2-client: "
           "apt-get install -y nghttp2-client); or leave the compiled client out with --skip h2load")


class H2loadMissing(RuntimeError):
    pass


def executable() -> str:
    """The path of h2load; H2loadMissing (with what to do) when it is not on PATH."""
    path = shutil.which("h2load")
    if path is None:
        raise H2loadMissing(MISSING)
    return path


def version() -> str:
    """`h2load --version`, e.g. "h2load nghttp2/1.52.0"."""
    return subprocess.run([executable(), "--version"], capture_output=True, text=True, check=True).stdout.strip()


def grpc_frame(message: bytes) -> bytes:
    """A gRPC message as sent on the wire: flag 0 (not compressed), length (4 bytes, big-endian), message."""
    return b"\0" + struct.pack(">I", len(message)) + message


@dataclasses.dataclass
class Target:
    """One prepared request: where it goes, the file of its frame, and the size in bytes of a real
    answer's frame (what h2load counts as DATA for one successful call)."""
    name: str
    address: str  # host:port, plaintext (h2c)
    method: str  # e.g. /facedit.v1.Generator/GenerateImages
    frame: Path
    answer_bytes: int

    @property
    def url(self) -> str:
        return f"http://{self.address}{self.method}"


def prepare(name: str, address: str, method: str, request, call: Callable, work: Path) -> Target:
    """Write `request` (a protobuf message) as a frame file in `work`, and make the same request once
    with the Python client (`call(request)` -> the answer message, checked by the caller's client) to
    learn the size of a real answer."""
    work.mkdir(parents=True, exist_ok=True)
    frame = work / f"{name}.frame"
    frame.write_bytes(grpc_frame(request.SerializeToString()))
    answer = call(request)
    return Target(name, address, method, frame, len(grpc_frame(answer.SerializeToString())))


def health_target(address: str, work: Path) -> Target:
    """An empty grpc.health.v1 Check (empty request; the answer SERVING is 2 bytes)."""
    work.mkdir(parents=True, exist_ok=True)
    frame = work / f"health_{address.replace(':', '_')}.frame"
    frame.write_bytes(grpc_frame(b""))
    return Target("health", address, HEALTH_CHECK, frame, len(grpc_frame(b"\x08\x01")))


# --------------------------------------------------------------------------- h2load's output

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def _seconds(text: str) -> float:
    """"263us" / "2.36ms" / "1.59s" -> seconds."""
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not m:
        raise ValueError(f"not an h2load duration: {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_output(text: str) -> dict:
    """h2load's summary -> {requests, started, done, succeeded, failed, errored, timeout, status_2xx ..
    status_5xx, bytes_total, bytes_headers, bytes_data, req_per_s, finished_s, latency_ms_min/max/mean/sd}."""
    out: dict = {}
    m = re.search(r"finished in (\S+), ([\d.]+) req/s", text)
    if not m:
        raise ValueError(f"no summary in h2load's output:\n{text[-2000:]}")
    out["finished_s"], out["req_per_s"] = _seconds(m.group(1)), float(m.group(2))
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                  r"(\d+) errored, (\d+) timeout", text)
    for key, value in zip(("requests", "started", "done", "succeeded", "failed", "errored", "timeout"), m.groups()):
        out[key] = int(value)
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    for key, value in zip(("status_2xx", "status_3xx", "status_4xx", "status_5xx"), m.groups()):
        out[key] = int(value)
    m = re.search(r"traffic: .*?\((\d+)\) total, .*?\((\d+)\) headers.*?, .*?\((\d+)\) data", text)
    out["bytes_total"], out["bytes_headers"], out["bytes_data"] = (int(x) for x in m.groups())
    m = re.search(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)", text)
    for key, value in zip(("min", "max", "mean", "sd"), m.groups()):
        out[f"latency_ms_{key}"] = _seconds(value) * 1e3
    return out


def parse_log(path: Path) -> dict:
    """h2load's --log-file (per request: start in us since the epoch, HTTP status or -1 for a failed
    stream, us until the end of the response) -> {latencies_s, statuses, first_start_s, last_end_s}."""
    starts, ends, lat, statuses = [], [], [], {}
    for line in path.read_text().splitlines():
        start_us, status, duration_us = line.split("\t")[:3]
        starts.append(int(start_us) * 1e-6)
        lat.append(int(duration_us) * 1e-6)
        ends.append(starts[-1] + lat[-1])
        statuses[status] = statuses.get(status, 0) + 1
    return {"latencies_s": lat, "statuses": statuses, "first_start_s": min(starts, default=math.nan),
            "last_end_s": max(ends, default=math.nan)}


# --------------------------------------------------------------------------- runs

def _log_sizes(logs: list[Path]) -> dict[Path, int]:
    return {p: p.stat().st_size if p.exists() else 0 for p in logs}


def failed_calls_logged(since: dict[Path, int]) -> int:
    """Lines of failed, refused or crashed calls the services logged after the offsets `since`."""
    n = 0
    for path, offset in since.items():
        if not path.exists():
            continue
        with path.open("rb") as f:
            f.seek(offset)
            for line in f.read().decode(errors="replace").splitlines():
                try:
                    msg = json.loads(line).get("msg")
                except (ValueError, AttributeError):
                    continue
                n += msg in FAILED_CALL_MESSAGES
    return n


def run(target: Target, concurrency: int, requests: int, log_file: Path, stop: threading.Event | None = None,
        timeout_s: float = 600.0) -> dict:
    """One h2load run of `requests` calls on `concurrency` connections -> parse_output's figures, the
    per-request log (parse_log) and `client_cpu_s` (h2load's user + system CPU, from the children's
    rusage: nothing else of this process is reaped meanwhile)."""
    cmd = [executable(), "-n", str(requests), "-c", str(concurrency), "-m", "1", "-t", "1",
           "-d", str(target.frame), f"--log-file={log_file}"]
    for header in HEADERS:
        cmd += ["-H", header]
    cmd.append(target.url)
    out_file = log_file.with_suffix(".out")
    log_file.unlink(missing_ok=True)  # h2load appends to its log file
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with out_file.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        try:
            while proc.poll() is None:
                if stop is not None and stop.is_set():
                    raise RuntimeError("h2load stopped: the bench is stopping")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"h2load stopped: no end after {timeout_s:.0f} s: {' '.join(cmd)}")
                time.sleep(0.01)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    text = out_file.read_text(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"h2load exited with {proc.returncode}: {' '.join(cmd)}\n{text[-2000:]}")
    figures = parse_output(text)
    figures["log"] = parse_log(log_file)
    if len(figures["log"]["latencies_s"]) != figures["requests"]:
        raise RuntimeError(f"h2load logged {len(figures['log']['latencies_s'])} requests of {figures['requests']} "
                           f"in {log_file}")
    figures["client_cpu_s"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return figures


def errors_of(figures: dict, target: Target, failures_logged: int) -> dict[str, int]:
    """Every sign of a call that did not succeed: h2load's failed / errored / timed out streams and
    non-2xx statuses, answers whose bytes are not N real answers, and failed calls in the services' logs."""
    errors = {k: figures[k] for k in ("failed", "errored", "timeout", "status_3xx", "status_4xx", "status_5xx")
              if figures[k]}
    if figures["done"] != figures["requests"]:
        errors["not_done"] = figures["requests"] - figures["done"]
    if figures["bytes_data"] != figures["requests"] * target.answer_bytes:
        errors["answer_bytes_mismatch"] = 1
    if failures_logged:
        errors["failed_calls_logged"] = failures_logged
    return errors


def answered(figures: dict, target: Target, failures_logged: int) -> int:
    """The calls known to have succeeded: HTTP successes less the failed calls the services logged,
    and no more than the real answers the received bytes hold."""
    good = max(figures["succeeded"] - failures_logged, 0)
    if figures["bytes_data"] != figures["requests"] * target.answer_bytes:
        good = min(good, figures["bytes_data"] // target.answer_bytes)
    return good


@dataclasses.dataclass
class Level:
    """A load level of h2load against one target, repeatable: measure(c) -> a row shaped as
    harness.run_load's, with h2load's own figures beside. `pids`: the serving processes (name -> pid);
    `logs`: their log files (failed calls)."""
    target: Target
    seconds: float
    max_requests: int
    pids: dict[str, int]
    logs: list[Path]
    work: Path
    stop: threading.Event | None = None
    rates: dict[int, float] = dataclasses.field(default_factory=dict)  # last measured requests/s per level

    def calibrate(self, concurrency: int, log_file: Path) -> float:
        """Requests/s at `concurrency`, from runs of 2, 8, 32 ... calls per connection until one lasts a
        quarter of `seconds` (at most 0.25 s) or reaches max_requests."""
        n = 2 * concurrency
        while True:
            log = run(self.target, concurrency, n, log_file, self.stop)["log"]
            span = log["last_end_s"] - log["first_start_s"]
            if span >= min(0.25, self.seconds / 4) or n >= self.max_requests:
                return n / span
            n = min(4 * n, self.max_requests)

    def measure(self, concurrency: int) -> dict:
        self.work.mkdir(parents=True, exist_ok=True)
        base = self.work / f"{self.target.name}_c{concurrency}"
        warm = run(self.target, concurrency, 2 * concurrency, base.with_suffix(".warmup.log"), self.stop)
        if concurrency not in self.rates:
            self.rates[concurrency] = self.calibrate(concurrency, base.with_suffix(".calibration.log"))
        n = max(2 * concurrency, min(self.max_requests, round(self.rates[concurrency] * self.seconds)))
        logs_at = _log_sizes(self.logs)
        cpu0 = cpu_by_process(self.pids)
        r = run(self.target, concurrency, n, base.with_suffix(".log"), self.stop)
        cpu1 = cpu_by_process(self.pids)
        log = r["log"]
        elapsed = log["last_end_s"] - log["first_start_s"]
        lat = log["latencies_s"]
        self.rates[concurrency] = len(lat) / elapsed if elapsed > 0 else self.rates[concurrency]
        services_cpu = {name: cpu1[name] - cpu0[name] for name in cpu0 if name in cpu1}
        failures = failed_calls_logged(logs_at)
        errors = errors_of(r, self.target, failures)
        ok = answered(r, self.target, failures)
        return {"concurrency": concurrency, "requests": ok, "errors": errors, "seconds": round(elapsed, 3),
                "throughput": ok / elapsed if ok and elapsed > 0 else 0.0,
                "latency_ms_p50": percentile(lat, 50) * 1e3, "latency_ms_p90": percentile(lat, 90) * 1e3,
                "latency_ms_p99": percentile(lat, 99) * 1e3, "latency_ms_mean": r["latency_ms_mean"],
                "latency_ms_sd": r["latency_ms_sd"], "latency_ms_max": r["latency_ms_max"], "mean_batch": None,
                **cpu_figures(r["done"], services_cpu, r["client_cpu_s"]),
                "h2load": {"requests": r["requests"], "succeeded": r["succeeded"], "req_per_s": r["req_per_s"],
                           "finished_s": r["finished_s"], "bytes_data": r["bytes_data"],
                           "bytes_data_per_request": r["bytes_data"] / r["requests"] if r["requests"] else None,
                           "answer_bytes": self.target.answer_bytes, "warmup_requests": warm["done"]}}


def round_trip_ms(target: Target, work: Path, calls: int = 300) -> float:
    """p50 of an empty call (a health_target) made by h2load on one connection: one hop's fixed cost
    with a compiled client. Raises when any call failed."""
    work.mkdir(parents=True, exist_ok=True)
    r = run(target, 1, calls, work / f"rtt_{target.address.replace(':', '_')}.log")
    errors = errors_of(r, target, 0)
    if errors:
        raise RuntimeError(f"h2load empty calls to {target.address} failed: {errors}")
    return percentile(r["log"]["latencies_s"], 50) * 1e3
