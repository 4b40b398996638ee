"""Soak: many edits at a steady concurrency against the whole stack, counting every failure and the
services' memory before and after.

    python -m bench.soak --pack digiface64 --edits 10000 --concurrency 32     # make soak

Redis and the four services run as their own processes (services.stack.Stack); this process is
only the load client. The mix cycles through lean Edits (no scores), full Edits, EditPhoto on a
real portrait (packs with an alignment template) and 8-frame EditSweeps. Prints and returns a
summary: calls by kind, failures by status, calls/s, RSS of every service before and after (MB).
"""
from __future__ import annotations

import argparse
import io
import itertools
import json
import threading
import time
from collections import Counter
from pathlib import Path

import grpc

from facedit.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc
from facedit_core.pack import load_pack
from services.stack import Stack

KINDS = ("lean", "full", "photo", "sweep")


def rss_mb(pid: int) -> float:
    """Resident set size of a process, in MB (from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def portrait_png() -> bytes:
    """A real portrait (scikit-image's astronaut), as PNG bytes."""
    from PIL import Image
    from skimage import data

    buf = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buf, format="PNG")
    return buf.getvalue()


def requests_for(pack, kinds: tuple[str, ...]):
    """An endless cycle of (kind, rpc name, request) for the pack's first attribute."""
    attribute, photo = pack.attributes[0], portrait_png() if "photo" in kinds else b""
    edit = [common_pb2.EditOp(attribute=attribute, strength=1.0)]
    made = {
        "lean": ("Edit", gateway_pb2.EditRequest(face=gateway_pb2.FaceSource(seed=1), edits=edit, skip_scores=True)),
        "full": ("Edit", gateway_pb2.EditRequest(face=gateway_pb2.FaceSource(seed=2), edits=edit)),
        "photo": ("EditPhoto", gateway_pb2.EditPhotoRequest(image=photo, edits=edit, max_faces=1)),
        "sweep": ("EditSweep", gateway_pb2.EditSweepRequest(face=gateway_pb2.FaceSource(seed=3), edit=edit[0],
                                                            start=-1.0, stop=1.0, steps=8)),
    }
    return itertools.cycle([(k, *made[k]) for k in kinds])


def soak(address: str, pack, edits: int, concurrency: int, kinds: tuple[str, ...], timeout_s: float = 30.0,
         progress=None, every: int = 1000) -> dict:
    """`edits` calls from `concurrency` threads; returns counts by kind and failures by status.
    progress(finished calls, failed calls, seconds) is called after every `every` finished calls."""
    cycle, lock = requests_for(pack, kinds), threading.Lock()
    done, failures, examples = Counter(), Counter(), {}
    remaining = [edits]
    t0 = time.perf_counter()

    def finished() -> None:  # under the lock
        total = sum(done.values()) + sum(failures.values())
        if progress is not None and total % every == 0:
            progress(total, sum(failures.values()), time.perf_counter() - t0)

    def worker(stub):
        while True:
            with lock:
                if remaining[0] <= 0:
                    return
                remaining[0] -= 1
                kind, rpc, request = next(cycle)
            try:
                answer = getattr(stub, rpc)(request, timeout=timeout_s)
                if rpc == "EditSweep":
                    list(answer)
                with lock:
                    done[kind] += 1
                    finished()
            except grpc.RpcError as err:
                with lock:
                    failures[err.code().name] += 1
                    examples.setdefault(err.code().name, f"{kind}: {err.details()}")
                    finished()

    with grpc.insecure_channel(address) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        threads = [threading.Thread(target=worker, args=(stub,)) for _ in range(concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - t0
    return {"calls": dict(done), "failures": dict(failures), "failure_examples": examples,
            "seconds": round(elapsed, 1), "calls_per_s": round(sum(done.values()) / elapsed, 1)}


def run(store: Path, pack_name: str, edits: int, concurrency: int, log_dir: Path) -> dict:
    """Start the stack, soak it, and report the services' RSS before and after (MB)."""
    pack = load_pack(pack_name, store)
    kinds = KINDS if pack.manifest.get("alignment") else tuple(k for k in KINDS if k != "photo")
    with Stack.on_free_ports(store, [pack_name], log_dir) as stack:
        warm = soak(stack.address("gateway"), pack, 2 * len(kinds), 1, kinds)  # load every model once
        before = {s: round(rss_mb(pid), 1) for s, pid in stack.pids().items()}
        rss_during = []

        def progress(calls: int, failed: int, seconds: float) -> None:
            rss = {s: round(rss_mb(pid), 1) for s, pid in stack.pids().items()}
            rss_during.append({"calls": calls, **rss})
            print(f"  {calls}/{edits} calls, {failed} failed, {calls / seconds:.1f} calls/s; RSS MB {rss}", flush=True)

        result = soak(stack.address("gateway"), pack, edits, concurrency, kinds, progress=progress,
                      every=max(1, min(1000, edits // 10)))
        after = {s: round(rss_mb(pid), 1) for s, pid in stack.pids().items()}
    return {"pack": pack_name, "edits": edits, "concurrency": concurrency, "kinds": list(kinds),
            "warm_failures": warm["failures"], **result, "rss_mb_before": before, "rss_mb_during": rss_during,
            "rss_mb_after": after}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    p.add_argument("--pack", default="digiface64")
    p.add_argument("--model-store", default="model_store")
    p.add_argument("--edits", type=int, default=10_000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--log-dir", default="out/soak")
    p.add_argument("--out", help="also write the summary here (JSON)")
    args = p.parse_args(argv)
    print(f"soaking {args.pack}: {args.edits} calls at concurrency {args.concurrency} ...", flush=True)
    summary = run(Path(args.model_store), args.pack, args.edits, args.concurrency, Path(args.log_dir))
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    if summary["failures"] or summary["warm_failures"]:
        raise SystemExit(f"{sum(summary['failures'].values())} calls failed")


if __name__ == "__main__":
    main()
