"""Extract TorchServe's gRPC protos from its jar (they ship only there).

    python -m services.generator.torchserve_protos build/torchserve_protos

Writes <out>/facedit/torchserve/{inference,management,status}.proto. The
google/rpc/status.proto goes along renamed to the private package
facedit.torchserve.rpc (same wire format), so that it cannot clash with
googleapis-common-protos' google.rpc.Status in one process. The Makefile then
compiles them into protos/facedit/torchserve/ (import facedit.torchserve.inference_pb2).
"""
from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import ts


def extract(out: Path) -> None:
    target = out / "facedit" / "torchserve"
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(Path(ts.__file__).parent / "frontend" / "model-server.jar") as jar:
        def text(name: str) -> str:
            return jar.read(name).decode()

        (target / "status.proto").write_text(
            text("google/rpc/status.proto").replace("package google.rpc;", "package facedit.torchserve.rpc;"))
        (target / "management.proto").write_text(text("proto/management.proto"))
        inference = (text("proto/inference.proto")
                     .replace('import "google/rpc/status.proto";', 'import "facedit/torchserve/status.proto";')
                     .replace(" google.rpc.Status ", " facedit.torchserve.rpc.Status "))
    if "facedit.torchserve.rpc.Status" not in inference:
        raise SystemExit("inference.proto no longer uses google.rpc.Status as expected; update this script")
    (target / "inference.proto").write_text(inference)


if __name__ == "__main__":
    extract(Path(sys.argv[1]))
