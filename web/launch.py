"""Start the web service as its own process (services/stack.py, tests). Imports nothing of
facedit_client: when the SDK is not installed, its sources are staged with freshly generated stubs
(clients/python/build_wheel.py's stage) and put on the process's PYTHONPATH alone.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def client_path(work: Path) -> Path | None:
    """A folder holding an importable facedit_client (None when the SDK is installed already)."""
    if importlib.util.find_spec("facedit_client") is not None:
        return None
    src = work / "facedit-client"
    if not (src / "facedit_client" / "v1" / "gateway_pb2.py").exists():
        shutil.rmtree(src, ignore_errors=True)
        sys.path.insert(0, str(ROOT / "clients" / "python"))
        try:
            import build_wheel
        finally:
            sys.path.pop(0)
        build_wheel.stage(work)
    return src


def start(gateway: str, port: int, work: Path, log_file: Path, extra_args: list[str] = ()) -> subprocess.Popen:
    """python -m web on 127.0.0.1:port for the gateway; stderr (JSON logs) to log_file."""
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    path = [str(ROOT)] + ([str(p)] if (p := client_path(work)) else [])
    env["PYTHONPATH"] = os.pathsep.join(path)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "web", "--port", str(port), "--address", gateway,
                                 *extra_args], env=env, cwd=ROOT, stdout=log, stderr=log)


def wait_healthy(url: str, proc: subprocess.Popen, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the web service exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "healthz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"the web service at {url} was not healthy within {timeout_s}s")
