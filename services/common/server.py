"""Server bootstrap shared by every service.

One call, `serve(...)`, builds a gRPC server with:
- an interceptor that turns a domain error (facedit_core.errors) into its status code (INVALID_ARGUMENT
  with the message for bad input), any other exception into INTERNAL (logged
  with its traceback; the server keeps serving), and logs each call with its
  duration and status;
- grpc.health.v1 (the overall "" service and each named service) and server
  reflection;
- explicit message size limits;
- graceful shutdown on SIGTERM/SIGINT: health turns NOT_SERVING, in-flight
  calls get `grace_s` to finish.
"""
from __future__ import annotations

import logging
import signal
import threading
import time
from concurrent import futures
from typing import Callable, Iterable

import grpc
import redis
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from facedit_core.errors import FaceditError
from services.common import config
from services.common.errors import status_code
from services.common.logs import log

MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class ErrorAndLogInterceptor(grpc.ServerInterceptor):
    """Maps exceptions to statuses and logs every call (method, status, ms)."""

    def __init__(self, logger: logging.Logger):
        self.logger = logger
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}  # a server's handlers never change

    def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is not None:
            return wrapped
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        if handler.unary_unary:
            wrapped = grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(handler.unary_unary, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        elif handler.unary_stream:
            wrapped = grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(handler.unary_stream, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        else:
            wrapped = handler
        self._wrapped[method] = wrapped
        return wrapped

    def _fail(self, context, method: str, err: Exception, t0: float):
        ms = round((time.perf_counter() - t0) * 1e3, 2)
        if isinstance(err, FaceditError):
            log(self.logger, "call failed", logging.INFO, method=method, code=err.status, ms=ms, error=str(err))
            context.abort(status_code(err), str(err))
        if isinstance(err, (redis.ConnectionError, redis.TimeoutError)):
            log(self.logger, "redis unavailable", logging.WARNING, method=method, ms=ms, error=str(err))
            context.abort(grpc.StatusCode.UNAVAILABLE, f"Redis is unavailable ({err}); retry later")
        self.logger.exception("call crashed", extra={"fields": {"method": method, "ms": ms}})
        context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method}: {type(err).__name__}: {err}")

    def _wrap_unary(self, behaviour, method: str):
        def wrapped(request, context):
            t0 = time.perf_counter()
            try:
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
                yield from behaviour(request, context)
            except Exception as err:  # noqa: BLE001
                if _is_abort(err, context):
                    raise
                self._fail(context, method, err, t0)
        return wrapped


def _is_abort(err: Exception, context) -> bool:
    """context.abort() raises a bare Exception after setting the status."""
    return type(err) is Exception and context.code() is not None


def create_server(name: str, register: Iterable[Callable[[grpc.Server], None]], service_names: Iterable[str],
                  logger: logging.Logger,
                  max_workers: int = config.DEFAULT_WORKERS) -> tuple[grpc.Server, health.HealthServicer]:
    """A server with the interceptor, health and reflection; not yet bound or started."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=name),
        interceptors=[ErrorAndLogInterceptor(logger)],
        options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                 ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                 ("grpc.so_reuseport", 0)],
        maximum_concurrent_rpcs=max_workers * 8,
    )
    for add in register:
        add(server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = list(service_names)
    reflection.enable_server_reflection(names + [health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    for service in ["", *names]:
        health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    return server, health_servicer


def serve(name: str, host: str, port: int, register: Iterable[Callable[[grpc.Server], None]],
          service_names: Iterable[str], logger: logging.Logger, max_workers: int = config.DEFAULT_WORKERS,
          grace_s: float = 5.0) -> None:
    """Start the server, block until SIGTERM/SIGINT, then stop gracefully.

    register: functions that add servicers to the server.
    service_names: full names (e.g. "facedit.v1.Gateway") for health and reflection.
    """
    names = list(service_names)
    server, health_servicer = create_server(name, register, names, logger, max_workers)
    address = f"{host}:{port}"
    if server.add_insecure_port(address) == 0:
        raise SystemExit(f"{name}: cannot listen on {address} (port in use?)")
    server.start()
    log(logger, "serving", address=address, services=names)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    log(logger, "shutting down", grace_s=grace_s)
    health_servicer.enter_graceful_shutdown()
    server.stop(grace_s).wait()
    log(logger, "stopped")
