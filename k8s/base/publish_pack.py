"""Publish a pack into the directions registry: LoadPack on the directions service, as the peer
"admin" (docs/security.md: only a client certificate with that role may publish).

The publish-pack Job (k8s/base/publish-pack.yaml) runs it in the directions image:

    python /etc/facedit/publish/publish_pack.py --pack digiface64 --address dns:///directions:50052 \
        --ca /etc/facedit/tls/ca.crt --cert /etc/facedit/tls/tls.crt --key /etc/facedit/tls/tls.key

The directions service reads the pack from its own model store (/models, filled by its pack init
container) and activates that version in Redis for every replica and the gateway's compose memo
(docs/architecture.md: Redis schema). A service that is still loading answers UNAVAILABLE: the
script tries again until --wait-s has passed. Exit codes: 0 published (one JSON line on stdout),
1 refused (bad pack, no admin role: the Job's retries will not help), 2 still unavailable.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import grpc

from facedit.v1 import directions_pb2, directions_pb2_grpc

RETRY = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def channel(args: argparse.Namespace) -> grpc.Channel:
    options = [("grpc.lb_policy_name", "round_robin")]
    if args.plaintext:
        return grpc.insecure_channel(args.address, options)
    creds = grpc.ssl_channel_credentials(root_certificates=Path(args.ca).read_bytes(),
                                         private_key=Path(args.key).read_bytes(),
                                         certificate_chain=Path(args.cert).read_bytes())
    if args.server_name:
        options.append(("grpc.ssl_target_name_override", args.server_name))
    return grpc.secure_channel(args.address, creds, options)


def publish(args: argparse.Namespace) -> int:
    deadline = time.monotonic() + args.wait_s
    with channel(args) as ch:
        stub = directions_pb2_grpc.DirectionsStub(ch)
        while True:
            try:
                got = stub.LoadPack(directions_pb2.LoadPackRequest(pack=args.pack), timeout=args.timeout_s,
                                    wait_for_ready=True)
            except grpc.RpcError as err:
                code, details = err.code(), err.details()
                if code in RETRY and time.monotonic() + args.retry_s < deadline:
                    print(f"directions not ready ({code.name}: {details}); again in {args.retry_s:g} s",
                          file=sys.stderr, flush=True)
                    time.sleep(args.retry_s)
                    continue
                print(f"LoadPack {args.pack!r} failed: {code.name}: {details}", file=sys.stderr, flush=True)
                return 2 if code in RETRY else 1
            print(json.dumps({"pack": got.pack.name, "version": got.pack.version, "directions": got.directions}),
                  flush=True)
            return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pack", required=True, help="a pack folder of the directions service's model store")
    p.add_argument("--address", default="dns:///directions:50052")
    p.add_argument("--ca", help="PEM CA of the directions service's certificate")
    p.add_argument("--cert", help="PEM client certificate whose common name has the admin role")
    p.add_argument("--key", help="PEM key of --cert")
    p.add_argument("--server-name", default="", help="name to check in the certificate instead of the host")
    p.add_argument("--plaintext", action="store_true", help="no TLS (a directions service on loopback)")
    p.add_argument("--timeout-s", type=float, default=60, help="deadline of one LoadPack call")
    p.add_argument("--wait-s", type=float, default=600, help="keep trying this long while UNAVAILABLE")
    p.add_argument("--retry-s", type=float, default=5)
    args = p.parse_args(argv)
    if not args.plaintext and not (args.ca and args.cert and args.key):
        p.error("give --ca, --cert and --key (mTLS as the admin peer), or --plaintext")
    return publish(args)


if __name__ == "__main__":
    sys.exit(main())
