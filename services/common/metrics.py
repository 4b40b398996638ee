"""Prometheus metrics of every service (prefix facedit_); docs/operations.md lists each one and
what to alert on.

Each process has prometheus-client's default registry (which also carries its process_* and
python_* metrics), served over HTTP by `serve_http` when the service has a --metrics-port.
Label values are bounded: RPC methods come only from the server's registered handlers, codes from
grpc.StatusCode, batcher names and packs from the configuration, hops and caches from fixed lists.
A metric's children are resolved once per method, batcher, hop or cache, so a call costs a few
prometheus-client increments (about 1 us each) and no lock of ours.

Recording is on unless `enable(False)` was called before the servers, batchers, caches and
Downstreams were made: a service started with --metrics-port 0 records nothing
(services/common/server.py main), and bench/metrics_cost.py measures the cost that way.
"""
from __future__ import annotations

import time
import weakref
from importlib import metadata

import grpc
import prometheus_client
import redis
from prometheus_client import Counter, Gauge, Histogram

from facedit_core.errors import FaceditError
from services.common.interceptors import WrappingInterceptor

prometheus_client.disable_created_metrics()  # no *_created series: half the lines, nothing to alert on

# seconds: RPCs and downstream calls take from a millisecond (a memo hit) to the 30 s default deadline
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# seconds in a batcher's queue: zero for a lone request, up to a full model call under load
QUEUE_WAIT_BUCKETS_S = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# seconds of one batch's model call (or merged RPC)
EXECUTION_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_ROWS_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)  # rows per batch (--max-batch is 64 by default)
HOPS = ("encoder", "directions", "generator")  # the gateway's Downstream stubs, by attribute name
CACHES = ("latent", "compose_memo", "photo")

try:
    VERSION = metadata.version("facedit")
except metadata.PackageNotFoundError:  # run from a checkout that was never pip-installed
    VERSION = "unknown"

BUILD_INFO = Gauge("facedit_build_info", "1 for each pack a service serves, with the facedit version and the "
                   "pack's version (the gateway: its default pack, version empty: it reads versions at run time)",
                   ["service", "version", "pack", "pack_version"])
RPC_HANDLED = Counter("facedit_grpc_server_handled", "RPCs finished by this server, by method and status code",
                      ["grpc_service", "grpc_method", "grpc_code"])
RPC_SECONDS = Histogram("facedit_grpc_server_handling_seconds", "Time from a call's arrival at the handler to "
                        "its last response or error, in seconds", ["grpc_service", "grpc_method"],
                        buckets=LATENCY_BUCKETS_S)
DOWNSTREAM_SECONDS = Histogram("facedit_downstream_call_seconds", "The gateway's calls to the encoder, directions "
                               "and generator services (one per hop and RPC), in seconds, failed ones included",
                               ["hop", "grpc_method"], buckets=LATENCY_BUCKETS_S)
DOWNSTREAM_FAILED = Counter("facedit_downstream_failed", "The gateway's downstream calls that failed, by the "
                            "status the gateway gave the failure", ["hop", "grpc_method", "grpc_code"])
BATCH_ROWS = Histogram("facedit_batcher_batch_rows", "Rows per batch that a dynamic batcher ran",
                       ["batcher"], buckets=BATCH_ROWS_BUCKETS)
QUEUE_WAIT = Histogram("facedit_batcher_queue_wait_seconds", "Time a request waited in a batcher's queue before "
                       "its batch started, in seconds (0 for a request run at once)", ["batcher"],
                       buckets=QUEUE_WAIT_BUCKETS_S)
EXECUTION = Histogram("facedit_batcher_execution_seconds", "Time of one batch's model call (the gateway's merge-* "
                      "batchers: one merged RPC), in seconds", ["batcher"], buckets=EXECUTION_BUCKETS_S)
QUEUED = Gauge("facedit_batcher_queued_requests", "Requests waiting in a batcher's queue, at scrape time",
               ["batcher"])
DROPPED = Counter("facedit_batcher_dropped_requests", "Requests a batcher did not run: reason queue_full "
                  "(answered RESOURCE_EXHAUSTED) or expired (the caller's deadline passed in the queue)",
                  ["batcher", "reason"])
CACHE_LOOKUPS = Counter("facedit_cache_lookups", "Lookups of the gateway's latent cache (by latent id) and compose "
                        "memo, by result hit or miss", ["cache", "result"])
REDIS_ERRORS = Counter("facedit_redis_errors", "Calls that failed on a Redis error, by kind: connection, timeout "
                       "or other", ["kind"])

_enabled = True


def enable(on: bool) -> None:
    """Record (True, the default) or not, for every server, batcher, cache and Downstream made after this."""
    global _enabled
    _enabled = on


def enabled() -> bool:
    return _enabled


class _Off:
    """A metric child that records nothing (recording turned off)."""

    def inc(self, amount: float = 1.0) -> None:
        pass

    def observe(self, amount: float) -> None:
        pass


OFF = _Off()


def set_build_info(service: str, packs: dict[str, str]) -> None:
    """facedit_build_info = 1 for each pack name -> version the service serves."""
    for pack, version in packs.items():
        BUILD_INFO.labels(service, VERSION, pack, version).set(1)


def serve_http(host: str, port: int):
    """prometheus-client's text exposition at http://<host>:<port>/metrics, on a daemon thread; the HTTP
    server (its .shutdown() stops it). OSError when the port is taken."""
    server, _ = prometheus_client.start_http_server(port, addr=host)
    return server


class RpcMetrics(WrappingInterceptor):
    """Counts every unary and server-streaming call by status code and times it (facedit_grpc_server_*).
    It sits outside the caller checks and client limits, so calls they refuse are counted too."""

    def wrap(self, kind: str, behaviour, method: str):
        if kind not in ("unary_unary", "unary_stream"):
            return None
        service, _, name = method[1:].rpartition("/")
        seconds = RPC_SECONDS.labels(service, name)
        handled: dict[grpc.StatusCode, Counter] = {}  # made on a code's first call: no series for codes never seen

        def done(code: grpc.StatusCode, t0: float) -> None:
            seconds.observe(time.perf_counter() - t0)
            child = handled.get(code)
            if child is None:
                child = handled[code] = RPC_HANDLED.labels(service, name, code.name)
            child.inc()

        if kind == "unary_unary":
            def unary(request, context):
                t0 = time.perf_counter()
                try:
                    response = behaviour(request, context)
                except BaseException:
                    done(context.code() or grpc.StatusCode.UNKNOWN, t0)  # aborts set the code before raising
                    raise
                done(context.code() or grpc.StatusCode.OK, t0)
                return response
            return unary

        def stream(request, context):
            t0 = time.perf_counter()
            try:
                yield from behaviour(request, context)
            except GeneratorExit:  # the client went away mid-stream
                done(grpc.StatusCode.CANCELLED, t0)
                raise
            except BaseException:
                done(context.code() or grpc.StatusCode.UNKNOWN, t0)
                raise
            done(context.code() or grpc.StatusCode.OK, t0)
        return stream


def instrument_downstream(down) -> None:
    """Time every down.call(hop, method, ...) of the gateway's Downstream into
    facedit_downstream_call_seconds{hop, grpc_method}, and count its failures by status. Each RPC's name
    is found once: the attribute of the stub down.<hop> that holds `method` (the generated stubs name
    them after the RPC). A method of no stub is called untimed. Nothing happens when recording is off."""
    if not _enabled:
        return
    call = down.call
    timers = {}  # stub method -> (its histogram child, hop, RPC name)
    for hop in HOPS:
        for rpc, method in vars(getattr(down, hop)).items():
            timers[method] = (DOWNSTREAM_SECONDS.labels(hop, rpc), hop, rpc)

    def timed(hop: str, method, *args, **kwargs):
        timer = timers.get(method)
        if timer is None:
            return call(hop, method, *args, **kwargs)
        seconds, hop_name, rpc = timer
        t0 = time.perf_counter()
        try:
            return call(hop, method, *args, **kwargs)
        except FaceditError as err:
            DOWNSTREAM_FAILED.labels(hop_name, rpc, err.status).inc()
            raise
        finally:
            seconds.observe(time.perf_counter() - t0)
    down.call = timed


class BatcherMetrics:
    """One dynamic batcher's children (facedit_batcher_*{batcher=name}); its queue gauge asks
    owner.queued() at each scrape (0 once the owner is gone). Off: every child records nothing."""

    def __init__(self, name: str, owner):
        on = _enabled
        self.rows = BATCH_ROWS.labels(name) if on else OFF
        self.queue_wait = QUEUE_WAIT.labels(name) if on else OFF
        self.execution = EXECUTION.labels(name) if on else OFF
        self.expired = DROPPED.labels(name, "expired") if on else OFF
        self.rejected = DROPPED.labels(name, "queue_full") if on else OFF
        if on:
            ref = weakref.ref(owner)  # the gauge must not keep a closed batcher (and its model) alive

            def queued() -> int:
                batcher = ref()
                return batcher.queued() if batcher is not None else 0
            QUEUED.labels(name).set_function(queued)


def cache_counters(cache: str) -> tuple:
    """(hit, miss) children of facedit_cache_lookups_total for one of CACHES; no-ops when recording is off."""
    if cache not in CACHES:
        raise ValueError(f"unknown cache {cache!r}; one of {CACHES}")
    if not _enabled:
        return OFF, OFF
    return CACHE_LOOKUPS.labels(cache, "hit"), CACHE_LOOKUPS.labels(cache, "miss")


def redis_error(err: redis.RedisError) -> None:
    """Count a call that failed on a Redis error."""
    if not _enabled:
        return
    kind = "timeout" if isinstance(err, redis.TimeoutError) else \
        "connection" if isinstance(err, redis.ConnectionError) else "other"
    REDIS_ERRORS.labels(kind).inc()
