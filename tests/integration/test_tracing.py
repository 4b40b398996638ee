"""Traces across hops (services/common/tracing.py): the four services export to a real OTLP/gRPC
receiver on loopback (the collector's own TraceService protocol); one Edit is one trace, from the
client's traceparent through the gateway's steps to the spans of the services it called."""
from __future__ import annotations

import json
import logging
import threading
import time
from concurrent import futures

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from facedit.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc
from services.common.logs import JsonFormatter
from services.common.redis_server import EmbeddedRedis
from services.common.tracing import TRACE_ID_KEY, Tracing
from tests.integration.test_services_integration import rendered_png
from tests.support import Servers

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP trace receiver: keeps every span it is sent, with its service's name."""

    def __init__(self):
        self.spans: list[dict] = []
        self.lock = threading.Lock()

    def Export(self, request, context):
        with self.lock:
            for resource_spans in request.resource_spans:
                service = next(a.value.string_value for a in resource_spans.resource.attributes
                               if a.key == "service.name")
                for scope in resource_spans.scope_spans:
                    for s in scope.spans:
                        self.spans.append({"service": service, "name": s.name, "trace": s.trace_id.hex(),
                                           "id": s.span_id.hex(), "parent": s.parent_span_id.hex(),
                                           "error": s.status.code == 2})
        return trace_service_pb2.ExportTraceServiceResponse()

    def of_trace(self, trace_id: str) -> list[dict]:
        with self.lock:
            return [s for s in self.spans if s["trace"] == trace_id]


@pytest.fixture(scope="module")
def traced(tiny_pack, tmp_path_factory):
    collector = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    endpoint = ["--otlp-endpoint", f"http://127.0.0.1:{port}"]
    redis = EmbeddedRedis(workdir=str(tmp_path_factory.mktemp("redis-traced"))).start()
    servers = Servers(tiny_pack[1], "tiny", redis.url,
                      extra={s: endpoint for s in ("gateway", "encoder", "directions", "generator")})
    with grpc.insecure_channel(servers.addresses["gateway"]) as channel:
        yield gateway_pb2_grpc.GatewayStub(channel), collector
    servers.stop()
    redis.stop()
    server.stop(0)


def wait_for(collector: Collector, trace_id: str, names: set[str], within_s: float = 10) -> list[dict]:
    give_up = time.monotonic() + within_s
    while True:
        spans = collector.of_trace(trace_id)
        if names <= {s["name"] for s in spans} or time.monotonic() > give_up:
            return spans
        time.sleep(0.1)


def test_one_edit_is_one_trace_across_every_hop(traced):
    gateway, collector = traced
    request = gateway_pb2.EditRequest(face=gateway_pb2.FaceSource(image=rendered_png(4)),
                                      edits=[common_pb2.EditOp(attribute="smile", strength=1.0)])
    _, call = gateway.Edit.with_call(request, timeout=30,
                                     metadata=[("traceparent", f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01")])
    assert dict(call.trailing_metadata())[TRACE_ID_KEY] == CLIENT_TRACE
    wanted = {"facedit.v1.Gateway/Edit", "encode", "compose", "generate", "score", "facedit.v1.Encoder/EncodeImages",
              "decode", "facedit.v1.Directions/Compose", "facedit.v1.Generator/GenerateImages",
              "facedit.v1.Encoder/ScoreImages"}
    spans = wait_for(collector, CLIENT_TRACE, wanted)
    by_name = {s["name"]: s for s in spans}
    assert wanted <= set(by_name), sorted(by_name)
    root = by_name["facedit.v1.Gateway/Edit"]
    assert root["parent"] == CLIENT_SPAN and root["service"] == "facedit-gateway"
    for step in ("encode", "compose", "generate", "score"):  # the gateway's steps are children of its call
        assert by_name[step]["parent"] == root["id"] and by_name[step]["service"] == "facedit-gateway"
    for step, server_span, service in (("encode", "facedit.v1.Encoder/EncodeImages", "facedit-encoder"),
                                       ("compose", "facedit.v1.Directions/Compose", "facedit-directions"),
                                       ("generate", "facedit.v1.Generator/GenerateImages", "facedit-generator"),
                                       ("score", "facedit.v1.Encoder/ScoreImages", "facedit-encoder")):
        assert by_name[server_span]["parent"] == by_name[step]["id"], server_span
        assert by_name[server_span]["service"] == service
    assert by_name["decode"]["parent"] == by_name["facedit.v1.Encoder/EncodeImages"]["id"]


def test_a_failed_call_carries_its_trace_id_and_its_span_says_error(traced):
    gateway, collector = traced
    with pytest.raises(grpc.RpcError) as info:
        gateway.Edit(gateway_pb2.EditRequest(face=gateway_pb2.FaceSource(seed=1)), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    trace_id = dict(info.value.trailing_metadata())[TRACE_ID_KEY]
    assert len(trace_id) == 32 and trace_id != "0" * 32
    [span] = wait_for(collector, trace_id, {"facedit.v1.Gateway/Edit"})
    assert span["error"] and span["parent"] == ""  # no traceparent sent: the gateway started the trace


def test_log_lines_written_in_a_span_carry_its_trace_id():
    tracing = Tracing("test")
    record = logging.LogRecord("gateway", logging.INFO, __file__, 1, "call failed", None, None)
    assert "trace_id" not in json.loads(JsonFormatter().format(record))
    with tracing.span("work") as span:
        line = json.loads(JsonFormatter().format(record))
    assert line["trace_id"] == format(span.get_span_context().trace_id, "032x")
    tracing.close()
