"""Keep the served packs published: a Redis that restarted empty (or had its keys deleted) gets
the packs again within about `interval_s`, with no manual LoadPack.

Custom directions are not in the packs: they survive a Redis restart only through Redis's own
persistence (the embedded Redis writes an append-only file; a cluster's Redis must too).
"""
from __future__ import annotations

import logging
import threading

import redis

from facedit_core.pack import Pack
from services.common.logs import log
from services.common.redis_server import read_state
from services.directions.registry import Registry

DEFAULT_INTERVAL_S = 0.5


class Republisher:
    """A daemon thread: every interval_s, one MGET per pack; a pack without an active version is
    published again (the same version, so cached answers elsewhere stay valid)."""

    def __init__(self, registry: Registry, packs: list[Pack], logger: logging.Logger,
                 interval_s: float = DEFAULT_INTERVAL_S):
        self.registry, self.packs, self.logger, self.interval_s = registry, packs, logger, interval_s
        self.republished = 0  # how many times a pack was published again
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="republish", daemon=True)
        self._thread.start()

    def check(self) -> None:
        """Publish every pack whose active version is gone."""
        for pack in self.packs:
            version, _ = read_state(self.registry.r, pack.name)
            if version is None:
                count = self.registry.publish(pack)
                self.republished += 1
                log(self.logger, "registry lost the pack: published it again", logging.WARNING,
                    pack=pack.name, version=pack.version, directions=count)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.check()
            except (redis.ConnectionError, redis.TimeoutError) as err:  # Redis is down: try again next time
                log(self.logger, "redis unavailable", logging.DEBUG, error=str(err))
            except Exception:  # noqa: BLE001 - the thread must outlive any single failure
                self.logger.exception("republishing failed")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
