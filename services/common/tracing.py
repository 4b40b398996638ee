"""Traces across hops (OpenTelemetry): one trace per request, from the client through the gateway to
every service it calls.

- Each service has a Tracing (from --otlp-endpoint): its own TracerProvider named after the service.
  With an endpoint, finished spans are batched to that OTLP/gRPC collector; without one, spans are
  still made (they carry the trace id that logs and answers show) but nothing is recorded or sent.
- TracingInterceptor (outermost on every server): continues the caller's trace from the W3C
  `traceparent` metadata (or starts one), makes a SERVER span "<Service>/<Method>" with the status
  code, and returns the trace id to the caller in the trailing metadata `x-trace-id`, on errors too.
- Calls to other services carry the current span's `traceparent` (`outgoing_metadata()`);
  the gateway makes a span per step (decode, encode, compose, generate, score, blend).
- Every log line written while a span is current has its `trace_id` (services/common/logs.py), so
  a user's failed request can be found from the id its answer carried.
"""
from __future__ import annotations

import contextlib
import contextvars
import logging

import grpc
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider, sampling
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from services.common.interceptors import WrappingInterceptor

TRACE_ID_KEY = "x-trace-id"
_PROPAGATOR = TraceContextTextMapPropagator()
_UNTRACED = ("/grpc.health.v1.Health/", "/grpc.reflection.")
_serving: contextvars.ContextVar["Tracing | None"] = contextvars.ContextVar("facedit_tracing", default=None)


class Tracing:
    """One service's tracer. endpoint: an OTLP/gRPC collector ("http://collector:4317"), None = export
    nothing; exporter: any SpanExporter instead (tests collect spans in memory)."""

    def __init__(self, service: str, endpoint: str | None = None, exporter: SpanExporter | None = None,
                 insecure: bool = True):
        self.service = service
        if exporter is None and endpoint:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=endpoint, insecure=insecure)
        self.exporting = exporter is not None
        # not exporting: spans are not recorded (ALWAYS_OFF) but still carry valid trace and span ids
        self.provider = TracerProvider(resource=Resource.create({"service.name": f"facedit-{service}"}),
                                       sampler=sampling.ParentBased(sampling.ALWAYS_ON) if self.exporting
                                       else sampling.ALWAYS_OFF)
        if exporter is not None:
            self.provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=500))
        self.tracer = self.provider.get_tracer("facedit")

    @classmethod
    def from_args(cls, args, service: str) -> "Tracing":
        """From a service's --otlp-endpoint (services/common/config.py)."""
        return cls(service, getattr(args, "otlp_endpoint", "") or None)

    def span(self, name: str, **attributes):
        """A span of one step inside a call (a context manager)."""
        return self.tracer.start_as_current_span(name, attributes=attributes or None)

    def close(self) -> None:
        """Send what is left (at most a few seconds) and stop."""
        self.provider.shutdown()


def step(name: str, **attributes):
    """A span of one step of the call being served (a context manager; nothing outside a traced call)."""
    serving = _serving.get()
    return serving.span(name, **attributes) if serving is not None else contextlib.nullcontext()


def trace_id() -> str | None:
    """The current trace id (32 hex digits), or None outside any span."""
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


def outgoing_metadata() -> tuple[tuple[str, str], ...]:
    """Metadata that continues the current trace in a call to another service (empty outside a span)."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return tuple(carrier.items())


def add_trailing_metadata(context, pairs) -> None:
    """Add to a call's trailing metadata, keeping what was set before."""
    context.set_trailing_metadata(tuple(context.trailing_metadata() or ()) + tuple(pairs))


class TracingInterceptor(WrappingInterceptor):
    """A SERVER span per call (but health and reflection), continuing the caller's trace."""

    def __init__(self, tracing: Tracing, logger: logging.Logger):
        super().__init__()
        self.tracing, self.logger = tracing, logger

    def wrap(self, kind: str, behaviour, method: str):
        if method.startswith(_UNTRACED):
            return None
        name = method.lstrip("/")

        @contextlib.contextmanager
        def traced(context):
            parent = _PROPAGATOR.extract({k: v for k, v in (context.invocation_metadata() or ())
                                          if isinstance(v, str)})
            with self.tracing.tracer.start_as_current_span(name, context=parent, kind=SpanKind.SERVER,
                                                           record_exception=False,
                                                           set_status_on_exception=False) as span:
                add_trailing_metadata(context, ((TRACE_ID_KEY, trace_id()),))
                serving = _serving.set(self.tracing)
                try:
                    yield
                finally:
                    _serving.reset(serving)
                    code = context.code()
                    if code is not None and code != grpc.StatusCode.OK:
                        span.set_status(Status(StatusCode.ERROR, code.name))
                    span.set_attribute("rpc.grpc.status_code", (code or grpc.StatusCode.OK).value[0])

        def unary(request, context):
            with traced(context):
                return behaviour(request, context)

        def stream(request, context):
            with traced(context):
                yield from behaviour(request, context)
        return stream if kind.endswith("_stream") else unary
