"""MTCNN's three networks (facenet-pytorch's P-Net, R-Net, O-Net) as ONNX files, for serving without torch.

Source: the `facenet-pytorch` 2.6.0 wheel (MIT) ships the weights as `facenet_pytorch/data/{pnet,rnet,onet}.pt`
(state dicts, checked against the sha256 below); its own modules (`facenet_pytorch.models.mtcnn`) carry them
and are exported as they are. Every network takes images normalised as MTCNN does,
(pixels - 127.5) * 0.0078125, NCHW float32:

  mtcnn_pnet.onnx  image (1, 3, H, W), H, W >= 12 -> regression (1, 4, h, w), probability (1, 2, h, w)
                   with h = ceil((H - 2) / 2) - 4 (and w alike): one cell per 12x12 window, stride 2
  mtcnn_rnet.onnx  image (N, 3, 24, 24) -> regression (N, 4), probability (N, 2)
  mtcnn_onet.onnx  image (N, 3, 48, 48) -> regression (N, 4), landmarks (N, 10), probability (N, 2)

`probability[:, 1]` is the face probability; `landmarks` are five x then five y, as fractions of the box.
`write(out)` exports the three files and `mtcnn.json` beside them: each file's sha256 (the encoder service
checks them at start, facedit_faces/detect.py), what it computes and the wheel it comes from. The pipeline
around the networks (pyramid, NMS, box regression) is facedit_faces/mtcnn.py.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from facedit_core.pack import sha256
from facedit_faces.detect import FORMAT, MANIFEST
from training.onnx_io import strip_metadata
from training.third_party.wheels import _wheel_file

WEIGHTS_SHA256 = {
    "pnet": "a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f",
    "rnet": "bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86",
    "onet": "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d",
}
SOURCE = {
    "package": "facenet-pytorch==2.6.0 (PyPI)",
    "files": "facenet_pytorch/data/pnet.pt, rnet.pt, onet.pt (state dicts)",
    "sha256": WEIGHTS_SHA256,
    "licence": "MIT (the facenet-pytorch wheel, Timothy Esler); MTCNN by Zhang et al. 2016",
}
NETS = {  # name -> (file, outputs, input example shape, what it computes)
    "pnet": ("mtcnn_pnet.onnx", ["regression", "probability"], (1, 3, 64, 48),
             "image (1, 3, H, W) float32 normalised -> regression (1, 4, h, w), probability (1, 2, h, w)"),
    "rnet": ("mtcnn_rnet.onnx", ["regression", "probability"], (2, 3, 24, 24),
             "image (N, 3, 24, 24) float32 normalised -> regression (N, 4), probability (N, 2)"),
    "onet": ("mtcnn_onet.onnx", ["regression", "landmarks", "probability"], (2, 3, 48, 48),
             "image (N, 3, 48, 48) float32 normalised -> regression (N, 4), landmarks (N, 10), probability (N, 2)"),
}


def networks() -> dict[str, torch.nn.Module]:
    """facenet-pytorch's PNet, RNet and ONet (eval mode, no grad) with the wheel's checked weights."""
    from facenet_pytorch.models.mtcnn import ONet, PNet, RNet

    nets = {}
    for name, cls in (("pnet", PNet), ("rnet", RNet), ("onet", ONet)):
        net = cls(pretrained=False)
        path = _wheel_file("facenet_pytorch", f"data/{name}.pt", WEIGHTS_SHA256[name])
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        nets[name] = net.eval().requires_grad_(False)
    return nets


def export(name: str, net: torch.nn.Module, path: Path) -> None:
    """One network to ONNX (opset 18, no exporter metadata): P-Net with a dynamic height and width,
    R-Net and O-Net with a dynamic batch."""
    _, outputs, shape, _ = NETS[name]
    if name == "pnet":
        dims = {2: torch.export.Dim("height", min=12, max=8192), 3: torch.export.Dim("width", min=12, max=8192)}
    else:
        dims = {0: torch.export.Dim("batch", min=1, max=4096)}
    torch.onnx.export(net, (torch.zeros(shape),), str(path), dynamo=True, opset_version=18, verbose=False,
                      input_names=["image"], output_names=outputs, dynamic_shapes=(dims,),
                      external_data=False)
    strip_metadata(path)


def paths(out: Path) -> dict[str, Path]:
    """{"mtcnn_pnet": path, "mtcnn_rnet": path, "mtcnn_onet": path, "mtcnn_manifest": path} in `out`."""
    return {**{f"mtcnn_{name}": out / file for name, (file, *_) in NETS.items()}, "mtcnn_manifest": out / MANIFEST}


def write(out: Path) -> dict[str, Path]:
    """Export the three networks into `out` (through temporary files) and write mtcnn.json with their
    sha256 last; returns paths(out)."""
    out.mkdir(parents=True, exist_ok=True)
    entries = {}
    for name, net in networks().items():
        file, _, _, computes = NETS[name]
        tmp = out / (file + ".tmp")
        export(name, net, tmp)
        tmp.replace(out / file)
        entries[name] = {"path": file, "sha256": sha256(out / file), "computes": computes}
    manifest = {"format": FORMAT, "source": SOURCE, "normalisation": "(pixels - 127.5) * 0.0078125, RGB, NCHW",
                "built_by": "make setup (python -m training.third_party), not in git", "nets": entries}
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(out / MANIFEST)
    return paths(out)
