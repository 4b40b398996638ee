"""A pack's generator as a TorchServe model archive (.mar), built on demand.

    python -m training.packs.torchserve_export --pack-dir model_store/synth --out out/torchserve

writes `<out>/<pack>-generator.mar` (model name `<pack>-generator`, model version = the
pack's version) with:
  generator.onnx      the pack's generator (sha256 checked against its manifest)
  ts_handler.py       services/generator/ts_handler.py (numpy + onnxruntime only)
  manifest.json       the pack's manifest, for provenance
  model-config.yaml   batchSize, maxBatchDelay, one worker, responseTimeout

TorchServe batches only when batchSize/maxBatchDelay are set; the model-config.yaml
inside the archive sets them, so `torchserve --models x=x.mar` batches with no
further configuration. The archive is not committed (out/ is in .gitignore).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from facedit_core.pack import load_pack


def handler_path() -> Path:
    spec = importlib.util.find_spec("services.generator.ts_handler")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("services/generator/ts_handler.py not found (is the project installed?)")
    return Path(spec.origin)


def model_name(pack_name: str) -> str:
    return f"{pack_name}-generator"


def model_config(batch_size: int, max_batch_delay_ms: int, response_timeout_s: int) -> str:
    """model-config.yaml (plain YAML, written by hand: a flat mapping and one nested one)."""
    return (f"minWorkers: 1\nmaxWorkers: 1\nbatchSize: {int(batch_size)}\n"
            f"maxBatchDelay: {int(max_batch_delay_ms)}\nresponseTimeout: {int(response_timeout_s)}\n"
            f"startupTimeout: 120\n"
            f"handler:\n  intra_op_threads: 0\n")


def build_mar(pack_dir: Path, out_dir: Path, batch_size: int = 16, max_batch_delay_ms: int = 5,
              response_timeout_s: int = 60) -> Path:
    """Write `<out_dir>/<pack>-generator.mar` (overwriting) and return its path."""
    pack_dir, out_dir = Path(pack_dir).resolve(), Path(out_dir).resolve()
    if batch_size < 1 or max_batch_delay_ms < 0:
        raise ValueError(f"batch_size must be >= 1 and max_batch_delay_ms >= 0, "
                         f"got {batch_size} and {max_batch_delay_ms}")
    pack = load_pack(pack_dir.name, pack_dir.parent)
    onnx_path = pack.artefact("generator")  # checks the sha256
    name = model_name(pack.name)
    out_dir.mkdir(parents=True, exist_ok=True)
    # The archiver stages files in $TMPDIR/<model name>: a private TMPDIR keeps two builds apart.
    with tempfile.TemporaryDirectory(prefix="mar-") as tmp:
        config = Path(tmp) / "model-config.yaml"
        config.write_text(model_config(batch_size, max_batch_delay_ms, response_timeout_s))
        cmd = [sys.executable, "-m", "model_archiver.model_packaging",
               "--model-name", name, "--version", pack.version,
               "--serialized-file", str(onnx_path), "--handler", str(handler_path()),
               "--extra-files", str(pack.root / "manifest.json"),
               "--config-file", str(config), "--export-path", str(out_dir), "--force"]
        stage = Path(tmp) / "stage"
        stage.mkdir()
        env = {**os.environ, "TMPDIR": str(stage)}
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    mar = out_dir / f"{name}.mar"
    if proc.returncode != 0 or not mar.exists():
        raise RuntimeError(f"torch-model-archiver failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return mar


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m training.packs.torchserve_export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pack-dir", required=True, help="a pack folder, e.g. model_store/synth")
    p.add_argument("--out", default="out/torchserve", help="folder for the .mar")
    p.add_argument("--batch-size", type=int, default=16, help="requests per TorchServe batch")
    p.add_argument("--max-batch-delay-ms", type=int, default=5, help="how long a batch waits to fill")
    p.add_argument("--response-timeout-s", type=int, default=60)
    args = p.parse_args(argv)
    mar = build_mar(Path(args.pack_dir), Path(args.out), args.batch_size, args.max_batch_delay_ms,
                    args.response_timeout_s)
    print(f"[torchserve] wrote {mar} ({mar.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
