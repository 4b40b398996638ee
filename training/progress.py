"""Progress lines for long jobs: step, losses, rate and time left, to stderr."""
from __future__ import annotations

import sys
import time


class Progress:
    """Prints `every` steps: '[name] step i/n loss=... 12.3 it/s eta 1m20s'."""

    def __init__(self, name: str, total: int, every: int = 100, start: int = 0):
        self.name, self.total, self.every = name, total, every
        self.start_step, self.t0 = start, time.perf_counter()

    def update(self, step: int, **values: float) -> None:
        done = step + 1
        if done % self.every and done != self.total:
            return
        elapsed = time.perf_counter() - self.t0
        rate = (done - self.start_step) / max(elapsed, 1e-9)
        eta = (self.total - done) / max(rate, 1e-9)
        figures = " ".join(f"{k}={v:.4f}" for k, v in values.items())
        print(f"[{self.name}] step {done}/{self.total} {figures} {rate:.1f} it/s eta {eta:.0f}s",
              file=sys.stderr, flush=True)

    def seconds(self) -> float:
        return time.perf_counter() - self.t0
