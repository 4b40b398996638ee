"""Command-line flags with environment-variable defaults (FACEDIT_<FLAG>)."""
from __future__ import annotations

import argparse
import os


def env(name: str, default: str) -> str:
    return os.environ.get(f"FACEDIT_{name.upper().replace('-', '_')}", default)


def parser(service: str, default_port: int) -> argparse.ArgumentParser:
    """Flags every service has; each flag also reads FACEDIT_<FLAG> from the environment."""
    p = argparse.ArgumentParser(prog=f"python -m services.{service}.server",
                                description=f"facedit {service} service")
    p.add_argument("--host", default=env("host", "127.0.0.1"), help="address to listen on (0.0.0.0 in a pod)")
    p.add_argument("--port", type=int, default=int(env(f"{service}_port", str(default_port))))
    p.add_argument("--model-store", default=env("model_store", "model_store"), help="folder of packs")
    p.add_argument("--workers", type=int, default=int(env("workers", "16")), help="RPC handler threads")
    p.add_argument("--log-level", default=env("log_level", "INFO"))
    return p
