"""The service images' HEALTHCHECK: grpc.health.v1 Check on this container's plaintext health port.

    python /opt/facedit/healthcheck.py [service]     (service: "" = readiness (default), "liveness")

Asks 127.0.0.1:$FACEDIT_HEALTH_PORT (8081 in the images: health only, plaintext, so it works with
TLS and mTLS on the service's own port; Kubernetes' native gRPC probes use the same port). Exit 0
when SERVING, 1 otherwise, within 3 s. Needs only grpcio and grpcio-health-checking.
"""
from __future__ import annotations

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def main() -> int:
    port = os.environ.get("FACEDIT_HEALTH_PORT", "8081")
    service = sys.argv[1] if len(sys.argv) > 1 else ""
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=3)
    except grpc.RpcError as err:
        print(f"health {service!r} on port {port}: {err.code().name}", file=sys.stderr)
        return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"health {service!r} on port {port}: {status}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main())
