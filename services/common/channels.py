"""How services call each other: message limits and reconnects, for every channel we open.

A downstream that restarts (a killed pod, a rolling update) is reconnected within
RECONNECT_MAX_S of being back: gRPC's default reconnect backoff grows to 120 s, and a gateway
whose generator was down for a few seconds would answer UNAVAILABLE for seconds after it came
back. Calls made while a downstream is down fail at once with UNAVAILABLE (no wait_for_ready),
so a caller's deadline is not spent waiting for a service that is not there.

Calls are spread over every address a target resolves to (round_robin): a Kubernetes ClusterIP
Service balances connections, not the calls on one HTTP/2 connection, so the gateway reaches
replicas through a headless Service (`dns:///generator:50053` resolves to every ready pod) and
sends each call to the next one. DNS is resolved again when a connection fails and at most every
RESOLVE_MIN_S otherwise.
"""
from __future__ import annotations

from facedit_core import images

MAX_REQUEST_BYTES = images.MAX_IMAGE_BYTES + 1024 * 1024  # what a service accepts: one image file and its fields
MAX_RESPONSE_BYTES = 64 * 1024 * 1024  # what a service sends and its callers accept (images, pixels)
RECONNECT_MIN_S = 0.1
RECONNECT_MAX_S = 1.0
RESOLVE_MIN_S = 5.0


def options(max_send_bytes: int = MAX_REQUEST_BYTES) -> list[tuple[str, int]]:
    """grpc channel options: answers up to MAX_RESPONSE_BYTES, requests up to max_send_bytes (what the
    service called accepts), reconnect attempts RECONNECT_MIN_S to RECONNECT_MAX_S apart, calls spread
    round-robin over the target's addresses."""
    return [("grpc.lb_policy_name", "round_robin"),
            ("grpc.dns_min_time_between_resolutions_ms", int(RESOLVE_MIN_S * 1000)),
            ("grpc.max_receive_message_length", MAX_RESPONSE_BYTES),
            ("grpc.max_send_message_length", max_send_bytes),
            ("grpc.initial_reconnect_backoff_ms", int(RECONNECT_MIN_S * 1000)),
            ("grpc.min_reconnect_backoff_ms", int(RECONNECT_MIN_S * 1000)),
            ("grpc.max_reconnect_backoff_ms", int(RECONNECT_MAX_S * 1000))]
