"""ONNX files of training: exporting a network, stripping the exporter's metadata, running one.

    export_onnx(model, example, path, input_name, output_name)   torch -> ONNX, dynamic batch axis, no metadata
    strip_metadata(path)                                         same weights -> same bytes anywhere
    session(path, threads=1)                                     an ONNX Runtime CPU session

ORT_DISABLE_TELEMETRY is set by the Makefile and by `python -m training`.
"""
from __future__ import annotations

from pathlib import Path

import torch


def export_onnx(model: torch.nn.Module, example: torch.Tensor, path: Path, input_name: str,
                output_name: str | list[str]) -> None:
    """One model with a dynamic batch axis, weights inside the file (torch.export based exporter),
    without the exporter's metadata. output_name: one name, or a list for a model with several outputs."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    names = [output_name] if isinstance(output_name, str) else list(output_name)
    torch.onnx.export(model.eval(), (example,), str(path), dynamo=True, opset_version=18, verbose=False,
                      input_names=[input_name], output_names=names,
                      dynamic_shapes={input_name: {0: batch}}, external_data=False)
    strip_metadata(path)


def strip_metadata(path: Path) -> None:
    """Drop the exporter's per-node metadata (Python stack traces with absolute file paths, module
    names), so the same weights give the same bytes in any checkout: a manifest's sha256 of a
    file that `make setup` builds must hold on every machine."""
    import onnx  # heavy; only exports need it

    model = onnx.load(str(path))
    for graph in [model.graph, *(f for f in model.functions)]:
        nodes = graph.node
        for node in nodes:
            del node.metadata_props[:]
            node.doc_string = ""
    del model.metadata_props[:]
    model.doc_string = model.graph.doc_string = ""
    onnx.save(model, str(path))


def session(path: Path | str, threads: int = 1):
    """An ONNX Runtime session on the CPU provider with `threads` intra-op threads (0 = its choice)."""
    import onnxruntime as ort  # heavy; only the steps that run ONNX files need it

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
