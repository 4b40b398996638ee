"""The client package (clients/python/facedit_client) stands alone: it imports only the standard
library, grpc, protobuf, its own modules and (optionally, for GIFs and grids) Pillow; the server never
imports it. tests/e2e/test_client_package.py proves the same by installing its wheel alone."""
from __future__ import annotations

import ast
import sys

from tests.support import ROOT

CLIENT = ROOT / "clients" / "python" / "facedit_client"
ALLOWED = {"facedit_client", "grpc", "google", "PIL"}


def imported(path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_client_imports_only_the_standard_library_grpc_and_protobuf():
    found = {}
    for path in CLIENT.rglob("*.py"):
        if path.name.endswith(("_pb2.py", "_pb2_grpc.py")):
            continue
        extra = {m for m in imported(path) if m not in sys.stdlib_module_names and m not in ALLOWED}
        if extra:
            found[str(path.relative_to(ROOT))] = sorted(extra)
    assert not found, found
    pillow = [str(p.relative_to(ROOT)) for p in CLIENT.rglob("*.py") if "PIL" in imported(p)]
    assert pillow == ["clients/python/facedit_client/cli/images.py"]  # the optional extra, in one place


def test_no_server_code_imports_the_client_package():
    offenders = [str(p.relative_to(ROOT)) for top in ("services", "facedit_core", "facedit_faces", "training", "bench")
                 for p in (ROOT / top).rglob("*.py") if "facedit_client" in imported(p)]
    assert not offenders, offenders
