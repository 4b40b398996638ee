"""Start and stop a real TorchServe (Java frontend + one Python worker) for one .mar.

    python -m services.generator.torchserve_runner --mar out/torchserve/synth-generator.mar \
        --workdir out/torchserve/run --grpc-port 7070

Everything it writes stays in `workdir`: its own TMPDIR (TorchServe keeps one pid file,
`$TMPDIR/.model_server.pid`, per TMPDIR, so two instances need two TMPDIRs), the
config.properties (every port on 127.0.0.1, token auth off, no config snapshots, no
system metrics), and the logs (`workdir/logs`: ts_log.log, model_log.log, access_log.log,
stdout.log). The model API stays off: the model is loaded at start-up (`--models`).
`start()` returns when the model's worker is READY (gRPC management DescribeModel);
`stop()` stops the JVM by pid, then any worker it left behind.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import psutil

from facedit.torchserve import management_pb2, management_pb2_grpc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass(frozen=True)
class Ports:
    grpc_inference: int
    grpc_management: int
    inference: int
    management: int
    metrics: int

    @classmethod
    def free(cls, grpc_inference: int = 0) -> "Ports":
        """Free ports on 127.0.0.1 (grpc_inference kept when given)."""
        return cls(grpc_inference or free_port(), free_port(), free_port(), free_port(), free_port())


class TorchServeError(RuntimeError):
    """TorchServe did not start, or its model did not become READY."""


class TorchServe:
    """One TorchServe serving one .mar on 127.0.0.1; use as a context manager or start()/stop()."""

    def __init__(self, mar: Path, workdir: Path, ports: Ports | None = None, model_name: str | None = None,
                 jvm_args: str = "-XX:-UsePerfData -Xmx1g -XX:+UseSerialGC"):
        self.mar = Path(mar).resolve()
        if not self.mar.is_file():
            raise FileNotFoundError(f"{self.mar}: no such model archive")
        self.workdir = Path(workdir).resolve()
        self.ports = ports or Ports.free()
        self.model_name = model_name or self.mar.stem
        self.jvm_args = jvm_args
        self.logs = self.workdir / "logs"
        self.tmp = self.workdir / "tmp"
        self.launcher: subprocess.Popen | None = None
        self.pid: int | None = None  # the JVM's

    @property
    def address(self) -> str:
        """gRPC inference address (facedit.torchserve.inference_pb2_grpc)."""
        return f"127.0.0.1:{self.ports.grpc_inference}"

    @property
    def management_address(self) -> str:
        return f"127.0.0.1:{self.ports.grpc_management}"

    def _write_config(self) -> Path:
        p = self.ports
        config = self.workdir / "config.properties"
        config.write_text("\n".join([
            f"inference_address=http://127.0.0.1:{p.inference}",
            f"management_address=http://127.0.0.1:{p.management}",
            f"metrics_address=http://127.0.0.1:{p.metrics}",
            "grpc_inference_address=127.0.0.1",
            f"grpc_inference_port={p.grpc_inference}",
            "grpc_management_address=127.0.0.1",
            f"grpc_management_port={p.grpc_management}",
            "disable_token_authorization=true",
            "disable_system_metrics=true",
            "install_py_dep_per_model=false",
            "default_workers_per_model=1",
            f"vmargs={self.jvm_args}",
            "",
        ]))
        return config

    def start(self, timeout_s: float = 90.0) -> "TorchServe":
        if self.launcher is not None:
            raise TorchServeError("already started")
        for d in (self.workdir, self.logs, self.tmp):
            d.mkdir(parents=True, exist_ok=True)
        pid_file = self.tmp / ".model_server.pid"
        pid_file.unlink(missing_ok=True)
        config = self._write_config()
        env = {**os.environ, "TMPDIR": str(self.tmp), "TEMP": str(self.tmp),
               "LOG_LOCATION": str(self.logs), "METRICS_LOCATION": str(self.logs),
               "ORT_DISABLE_TELEMETRY": "1"}
        env.pop("TS_CONFIG_FILE", None)
        cmd = [sys.executable, "-m", "ts.model_server", "--start", "--foreground", "--ncs",
               "--disable-token-auth", "--ts-config", str(config), "--model-store", str(self.mar.parent),
               "--models", f"{self.model_name}={self.mar.name}"]
        with open(self.logs / "stdout.log", "ab") as out:
            self.launcher = subprocess.Popen(cmd, cwd=self.workdir, env=env, stdout=out,
                                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            self._wait_ready(pid_file, time.monotonic() + timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, pid_file: Path, deadline: float) -> None:
        last = "no answer yet"
        with grpc.insecure_channel(self.management_address) as channel:
            stub = management_pb2_grpc.ManagementAPIsServiceStub(channel)
            while time.monotonic() < deadline:
                if self.launcher.poll() is not None:
                    raise TorchServeError(f"TorchServe exited with {self.launcher.returncode}; "
                                          f"see {self.logs}:\n{self.log_tail()}")
                if self.pid is None and pid_file.exists():
                    text = pid_file.read_text().strip()
                    self.pid = int(text) if text.isdigit() else None
                try:
                    resp = stub.DescribeModel(management_pb2.DescribeModelRequest(model_name=self.model_name),
                                              timeout=2)
                    workers = [w for m in json.loads(resp.msg) for w in m.get("workers", [])]
                    if any(w.get("status") == "READY" for w in workers):
                        return
                    last = f"workers: {[w.get('status') for w in workers]}"
                except grpc.RpcError as err:
                    last = f"{err.code().name}: {err.details()}"
                time.sleep(0.2)
        raise TorchServeError(f"model {self.model_name!r} not READY in time ({last}); see {self.logs}:\n"
                              f"{self.log_tail()}")

    def describe(self) -> list[dict]:
        """The management API's description of the model (workers, batchSize, maxBatchDelay, ...)."""
        with grpc.insecure_channel(self.management_address) as channel:
            resp = management_pb2_grpc.ManagementAPIsServiceStub(channel).DescribeModel(
                management_pb2.DescribeModelRequest(model_name=self.model_name), timeout=5)
        return json.loads(resp.msg)

    def log_tail(self, lines: int = 30) -> str:
        out = []
        for name in ("stdout.log", "model_log.log"):
            path = self.logs / name
            if path.exists():
                out += [f"--- {name}"] + path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(out)

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM the JVM (by pid), wait, SIGKILL if needed; then the workers it left, by pid."""
        if self.launcher is None:
            return
        children: list[psutil.Process] = []
        if self.pid is not None:
            try:
                jvm = psutil.Process(self.pid)
                children = jvm.children(recursive=True)
                jvm.send_signal(signal.SIGTERM)
                try:
                    jvm.wait(timeout_s)
                except psutil.TimeoutExpired:
                    jvm.kill()
                    jvm.wait(5)
            except psutil.NoSuchProcess:
                pass
        try:
            self.launcher.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.launcher.kill()
            self.launcher.wait()
        _, alive = psutil.wait_procs(children, timeout=5)
        for proc in alive:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=5)
        self.launcher, self.pid = None, None

    def __enter__(self) -> "TorchServe":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m services.generator.torchserve_runner", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mar", required=True, help="model archive (python -m training.packs.torchserve_export)")
    p.add_argument("--workdir", default="out/torchserve/run", help="TMPDIR, config and logs go here")
    p.add_argument("--grpc-port", type=int, default=7070, help="gRPC inference port (others: free ports)")
    args = p.parse_args(argv)
    ts = TorchServe(Path(args.mar), Path(args.workdir), Ports.free(args.grpc_port))
    t0 = time.perf_counter()
    ts.start()
    print(f"TorchServe pid {ts.pid} serving {ts.model_name!r} on {ts.address} (READY in "
          f"{time.perf_counter() - t0:.1f}s; logs in {ts.logs}); Ctrl-C stops it", flush=True)
    stop = [False]
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.__setitem__(0, True))
    try:
        while not stop[0] and ts.launcher.poll() is None:
            time.sleep(0.5)
    finally:
        ts.stop()


if __name__ == "__main__":
    main()
