"""docs/api.md's reference of the public API is generated from the protos (protos/reference.py) and
kept up to date: a changed proto comment or field fails here until `make api-docs` is run."""
from __future__ import annotations

import subprocess
import sys

from facedit.v1 import gateway_pb2
from tests.support import ROOT


def test_the_reference_in_docs_api_md_matches_the_protos():
    done = subprocess.run([sys.executable, str(ROOT / "protos/reference.py"), "--check"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_the_reference_names_every_rpc_and_every_message_of_the_gateway():
    doc = (ROOT / "docs/api.md").read_text()
    reference = doc[doc.index("## Reference"):]
    service = gateway_pb2.DESCRIPTOR.services_by_name["Gateway"]
    for method in service.methods:
        assert f"| `{method.name}` | [{method.input_type.name}]" in reference, method.name
    for name in (*gateway_pb2.DESCRIPTOR.message_types_by_name, "Tensor", "EditOp", "Direction", "PackRef"):
        assert f"#### `{name}`" in reference, name
