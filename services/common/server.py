"""Server bootstrap shared by every service.

Each service module has `create(args, logger) -> Service` (its servicer wired from its flags):
`main()` serves it with `service_main(name, parser, create)` (flags, logs, metrics, `serve(service, ...)`), and
the tests and tools start it in-process with `start_local(service, ...)`. Both build a gRPC server with:
- an interceptor that counts and times every call (services/common/metrics.py; served over HTTP at
  --metrics-port by `serve`);
- an interceptor that refuses requests holding undefined enum values (services/common/enums.py),
  turns a domain error (facedit_core.errors) into its status code (INVALID_ARGUMENT
  with the message for bad input), any other exception into INTERNAL (logged
  with its traceback; the server keeps serving), and logs each call with its
  duration and status;
- the caller checks of services/common/security.py (TLS / mTLS, bearer tokens, roles) when the
  service has a Security, then per-client rate and concurrency limits (services/common/admission.py)
  when it has client_limits;
- grpc.health.v1 (the overall "" service and each named service: readiness; "liveness"; callable
  without credentials; services/common/readiness.py)
  and server reflection (`--reflection`);
- explicit message size limits: a request of at most Service.max_receive_bytes (by default one
  image file of facedit_core.images.MAX_IMAGE_BYTES and 1 MiB for its other fields), so that
  nobody makes a service hold large messages it will refuse anyway; answers up to 64 MiB;
- graceful shutdown on SIGTERM/SIGINT: health turns NOT_SERVING, in-flight
  calls get `grace_s` to finish.
"""
from __future__ import annotations

import dataclasses
import logging
import signal
import threading
import time
from collections.abc import Callable
from concurrent import futures

import grpc
import redis
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from facedit_core.errors import FaceditError
from services.common import config, logs, metrics
from services.common.admission import AdmissionInterceptor, Limits
from services.common.channels import MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES
from services.common.enums import check_enums
from services.common.errors import status_code
from services.common.interceptors import WrappingInterceptor
from services.common.loading import Loading
from services.common.logs import log
from services.common.memory import Trimmer
from services.common.readiness import Checks, Readiness
from services.common.security import Security, SecurityInterceptor
from services.common.tracing import Tracing, TracingInterceptor

STREAM_IDLE_S = 1.0  # a bidirectional stream (reflection) whose client sent nothing for this long is cancelled


class ErrorAndLogInterceptor(WrappingInterceptor):
    """Maps exceptions to statuses and logs every call (method, status, ms)."""

    def __init__(self, logger: logging.Logger):
        super().__init__()
        self.logger = logger

    def wrap(self, kind: str, behaviour, method: str):
        if kind == "unary_unary":
            return self._wrap_unary(behaviour, method)
        if kind == "unary_stream":
            return self._wrap_stream(behaviour, method)
        if kind == "stream_stream":
            return _idle_cancelled(behaviour)
        return None

    def _fail(self, context, method: str, err: Exception, t0: float):
        ms = round((time.perf_counter() - t0) * 1e3, 2)
        if isinstance(err, FaceditError):
            log(self.logger, "call failed", logging.INFO, method=method, code=err.status, ms=ms, error=str(err))
            context.abort(status_code(err), str(err))
        if isinstance(err, redis.RedisError):
            metrics.redis_error(err)
        if isinstance(err, (redis.ConnectionError, redis.TimeoutError)):
            log(self.logger, "redis unavailable", logging.WARNING, method=method, ms=ms, error=str(err))
            context.abort(grpc.StatusCode.UNAVAILABLE, f"Redis is unavailable ({err}); retry later")
        self.logger.exception("call crashed", extra={"fields": {"method": method, "ms": ms}})
        context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method}: {type(err).__name__}: {err}")

    def _wrap_unary(self, behaviour, method: str):
        def wrapped(request, context):
            t0 = time.perf_counter()
            try:
                check_enums(request)
                response = behaviour(request, context)
            except Exception as err:  # noqa: BLE001 - every error gets a status
                if _is_abort(err, context):
                    raise
                self._fail(context, method, err, t0)
            if self.logger.isEnabledFor(logging.DEBUG):
                log(self.logger, "call", logging.DEBUG, method=method, code="OK",
                    ms=round((time.perf_counter() - t0) * 1e3, 2))
            return response
        return wrapped

    def _wrap_stream(self, behaviour, method: str):
        def wrapped(request, context):
            t0 = time.perf_counter()
            try:
                check_enums(request)
                yield from behaviour(request, context)
            except Exception as err:  # noqa: BLE001
                if _is_abort(err, context):
                    raise
                self._fail(context, method, err, t0)
        return wrapped


def _idle_cancelled(behaviour, idle_s: float | None = None):
    """A bidirectional stream (server reflection) cancelled when its client sends nothing for idle_s.

    A stream holds one of the server's handler threads for its whole life, and a reflection client
    such as grpcurl keeps its stream open until its own call has finished: enough concurrent
    grpcurls would hold every thread in idle reflection streams while their calls wait for one.
    Cancelling idle streams frees the threads (a client that asks again opens a new stream)."""
    def wrapped(request_iterator, context):
        limit = STREAM_IDLE_S if idle_s is None else idle_s

        def requests():
            while True:
                timer = threading.Timer(limit, context.cancel)
                timer.daemon = True
                timer.start()
                try:
                    request = next(request_iterator)
                except StopIteration:
                    return
                finally:
                    timer.cancel()
                yield request
        yield from behaviour(requests(), context)
    return wrapped


def _is_abort(err: Exception, context) -> bool:
    """context.abort() raises a bare Exception after setting the status."""
    return type(err) is Exception and context.code() is not None


@dataclasses.dataclass
class Service:
    """One service's servicer, ready to be added to a gRPC server.

    add_to_server: the generated add_<Name>Servicer_to_server function; full_name: the proto
    service ("facedit.v1.Gateway") for health and reflection; close: releases its threads and
    models (batchers, connections) after the server stopped. security: TLS and caller checks (None:
    plaintext, no checks, loopback only); access: full method name -> the role it needs ("*": every
    other method; no entry: any authenticated caller)."""

    name: str
    servicer: object
    add_to_server: Callable[[object, grpc.Server], None]
    full_name: str
    close: Callable[[], None] = lambda: None
    security: Security | None = None
    access: dict[str, str] = dataclasses.field(default_factory=dict)
    max_receive_bytes: int = MAX_REQUEST_BYTES
    client_limits: Limits | None = None
    loading: Loading | None = None
    checks: Checks = dataclasses.field(default_factory=dict)
    tracing: Tracing | None = None
    readiness: Readiness | None = None  # set by create_server

    def stop(self) -> None:
        """After its server stopped: stop the readiness checks, close the servicer, send the last spans."""
        if self.readiness is not None:
            self.readiness.close()
        self.close()
        if self.tracing is not None:
            self.tracing.close()


def create_server(service: Service, logger: logging.Logger,
                  max_workers: int = config.DEFAULT_WORKERS) -> tuple[grpc.Server, health.HealthServicer]:
    """A server with the interceptors, health and reflection; not yet bound or started."""
    interceptors = [ErrorAndLogInterceptor(logger)]
    security = service.security
    if service.client_limits is not None:  # after the security checks: the client is known
        interceptors.insert(0, AdmissionInterceptor(service.client_limits, logger))
    if security is not None and (security.checks_callers or security.trust_forwarded):
        interceptors.insert(0, SecurityInterceptor(security, service.access, service.name, logger))
    if metrics.enabled():
        interceptors.insert(0, metrics.RpcMetrics())  # outside the caller checks: refused calls count too
    if service.tracing is None:
        service.tracing = Tracing(service.name)
    interceptors.insert(0, TracingInterceptor(service.tracing, logger))  # outermost: refusals are traced too
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=service.name),
        interceptors=interceptors,
        options=[("grpc.max_receive_message_length", service.max_receive_bytes),
                 ("grpc.max_send_message_length", MAX_RESPONSE_BYTES),
                 ("grpc.so_reuseport", 0)],
        maximum_concurrent_rpcs=max_workers * 8,
    )
    service.add_to_server(service.servicer, server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if security is None or security.reflection != "off":
        reflection.enable_server_reflection([service.full_name, health.SERVICE_NAME, reflection.SERVICE_NAME],
                                            server)
    readiness = Readiness(health_servicer, ("", service.full_name), logger, service.checks)
    if service.loading is not None and not service.loading.ready:
        readiness.loading(service.loading.reason)
        service.loading.on_ready(lambda: readiness.loading(None))
    service.readiness = readiness.start()
    return server, health_servicer


def start_local(service: Service, logger: logging.Logger, max_workers: int = 8) -> tuple[grpc.Server, str]:
    """Start `service` on a free port of 127.0.0.1 in this process (tests, tools); returns the
    started server and its address. The caller stops it (server.stop(0)) and calls service.stop()."""
    server, _ = create_server(service, logger, max_workers)
    port = _bind(server, service, "127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"


def _bind(server: grpc.Server, service: Service, address: str) -> int:
    """Listen on `address` with TLS when the service has a certificate, else in plaintext; the port (0: failed)."""
    if service.security is not None and service.security.tls:
        return server.add_secure_port(address, service.security.server_credentials())
    return server.add_insecure_port(address)


def _health_only_server(health_servicer: health.HealthServicer, host: str, port: int, name: str) -> grpc.Server:
    """grpc.health.v1 alone, in plaintext, for probes that cannot do TLS (Kubernetes' own gRPC probe)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix=f"{name}-health"))
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if server.add_insecure_port(f"{host}:{port}") == 0:
        raise SystemExit(f"{name}: cannot listen on {host}:{port} for health checks (port in use?)")
    return server


def service_main(name: str, parser, create: Callable, argv: list[str] | None = None) -> None:
    """A service's main(): its flags, logs and metrics (recorded only with a --metrics-port), then
    create(args, logger) served until SIGTERM."""
    args = parser.parse_args(argv)
    logger = logs.setup(name, args.log_level)
    metrics.enable(args.metrics_port > 0)
    serve(create(args, logger), args.host, args.port, logger, max_workers=args.workers,
          metrics_port=args.metrics_port)


def serve(service: Service, host: str, port: int, logger: logging.Logger,
          max_workers: int = config.DEFAULT_WORKERS, grace_s: float = 5.0, metrics_port: int = 0) -> None:
    """Start the server (and the metrics at http://<host>:<metrics_port>/metrics unless 0), block until
    SIGTERM/SIGINT, then stop gracefully and stop the service.
    Refuses (SystemExit) to listen beyond loopback without TLS and caller checks unless --insecure."""
    security = service.security if service.security is not None else Security()
    security.check_listen(service.name, host)
    server, health_servicer = create_server(service, logger, max_workers)
    address = f"{host}:{port}"
    if _bind(server, service, address) == 0:
        raise SystemExit(f"{service.name}: cannot listen on {address} (port in use?)")
    server.start()
    trimmer = Trimmer()  # freed message buffers go back to the system (services/common/memory.py)
    health_server = metrics_server = None
    if security.health_port:
        health_server = _health_only_server(health_servicer, host, security.health_port, service.name)
        health_server.start()
    if metrics_port:
        try:
            metrics_server = metrics.serve_http(host, metrics_port)
        except OSError as err:
            raise SystemExit(f"{service.name}: cannot serve metrics on {host}:{metrics_port} ({err})") from None
    log(logger, "serving", address=address, services=[service.full_name], tls=security.tls,
        client_certificates=security.client_ca is not None, tokens=security.tokens is not None,
        reflection=security.reflection, health_port=security.health_port or None,
        metrics=f"http://{host}:{metrics_port}/metrics" if metrics_port else None)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    log(logger, "shutting down", grace_s=grace_s)
    health_servicer.enter_graceful_shutdown()  # NOT_SERVING for every name, for good
    server.stop(grace_s).wait()
    if health_server is not None:
        health_server.stop(0)
    if metrics_server is not None:
        metrics_server.shutdown()
    service.stop()
    trimmer.close()
