"""Child processes: stop them politely, then firmly."""
from __future__ import annotations

import signal
import subprocess


def terminate(proc: subprocess.Popen, timeout_s: float = 10.0, send: bool = True) -> int:
    """SIGTERM (unless `send` is False: already sent), wait `timeout_s`, then SIGKILL. Returns the exit code."""
    if send and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()
