"""Build the facedit-client wheel: `make client-wheel` (= python clients/python/build_wheel.py --out build/dist).

Run with the repository's virtualenv (grpcio-tools, setuptools). Steps, in a temporary copy of
clients/python/:
1. copy protos/facedit/v1/{common,gateway}.proto to facedit_client/v1/ with their `import` lines
   rewritten to facedit_client/v1/..., keeping `package facedit.v1` (the wire names do not change);
2. generate the Python stubs there, so they import `facedit_client.v1` and never collide with the
   server repository's own `facedit` stubs package;
3. check the stubs' runtime floors against pyproject.toml's dependencies;
4. `pip wheel --no-deps --no-build-isolation` into --out.
Prints the wheel's path and size.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PROTOS = ("common.proto", "gateway.proto")  # the public API; the internal services' protos stay out


def stage(work: Path) -> Path:
    """The package sources and its rewritten protos in work/facedit-client; returns that folder."""
    src = work / "facedit-client"
    shutil.copytree(HERE, src, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "dist",
                                                             "build_wheel.py", "*_pb2*.py*"))
    v1 = src / "facedit_client" / "v1"
    v1.mkdir(parents=True, exist_ok=True)
    (v1 / "__init__.py").write_text('"""Generated from protos/facedit/v1 at build time (package facedit.v1)."""\n')
    for name in PROTOS:
        text = (ROOT / "protos" / "facedit" / "v1" / name).read_text()
        text = re.sub(r'^import "facedit/v1/', 'import "facedit_client/v1/', text, flags=re.M)
        (v1 / name).write_text(text)
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{src}", f"--python_out={src}",
                    f"--pyi_out={src}", f"--grpc_python_out={src}", *(str(v1 / n) for n in PROTOS)], check=True)
    for name in PROTOS:
        (v1 / name).unlink()  # the wheel ships the stubs; the protos are in the repository
    return src


def check_floors(src: Path) -> None:
    """The stubs need grpcio >= the generator's version and protobuf >= its gencode version (same
    major): pyproject.toml must say at least that."""
    deps = (src / "pyproject.toml").read_text()
    grpc_gen = re.search(r"GRPC_GENERATED_VERSION = '([\d.]+)'", (src / "facedit_client/v1/gateway_pb2_grpc.py")
                         .read_text()).group(1)
    pb_gen = re.search(r"Protobuf Python Version: ([\d.]+)", (src / "facedit_client/v1/gateway_pb2.py")
                       .read_text()).group(1)
    grpc_floor = re.search(r'"grpcio>=([\d.]+)"', deps).group(1)
    pb_floor, pb_cap = re.search(r'"protobuf>=([\d.]+),<(\d+)"', deps).groups()

    def key(v: str) -> tuple[int, ...]:
        return tuple(int(x) for x in v.split("."))
    problems = []
    if key(grpc_floor) < key(grpc_gen):
        problems.append(f"grpcio>={grpc_floor} but the stubs need grpcio>={grpc_gen}")
    if key(pb_floor) < key(pb_gen) or key(pb_gen)[0] + 1 != int(pb_cap):
        problems.append(f"protobuf>={pb_floor},<{pb_cap} but the stubs need protobuf>={pb_gen},<{key(pb_gen)[0] + 1}")
    if problems:
        raise SystemExit("clients/python/pyproject.toml: " + "; ".join(problems))


def build(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="facedit-client-") as tmp:
        src = stage(Path(tmp))
        check_floors(src)
        before = set(out.glob("facedit_client-*.whl"))
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                        "--disable-pip-version-check", "-w", str(out), str(src)], check=True)
    wheels = sorted(out.glob("facedit_client-*.whl"), key=lambda p: p.stat().st_mtime)
    new = [w for w in wheels if w not in before] or wheels[-1:]
    return new[-1]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "build" / "dist"), help="folder of the wheel")
    wheel = build(Path(p.parse_args(argv).out))
    print(f"{wheel} ({wheel.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
