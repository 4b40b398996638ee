"""What `python -m bench` writes: results.json, results.png and the printed table with the verdicts."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bench.workload import BATCHES, CONCURRENCY, EDIT_KINDS


def _fmt(v, digits=1) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _range(r, digits=1) -> str:
    return "" if not r else f"{_fmt(r[0], digits)}-{_fmt(r[1], digits)}"


LOAD_SERIES = (("generator service", "generator_service_onnx", "img/s"),
               ("gateway Edit (lean)", "gateway_lean_edits", "edit/s"),
               ("gateway Edit (full)", "gateway_full_edits", "edit/s"))
CLIENT_SUFFIX = {"python": "", "h2load": "_h2load"}  # as bench/ratios.py ROW_SUFFIX
STYLE = {"python": "s-", "h2load": "d--"}  # plot lines of each load client


def _load_series(results: dict):
    """(label, client, rows, unit) of every load series that ran, the Python client's first."""
    ts = results.get("generator_service_torchserve") or {}
    for label, key, unit in LOAD_SERIES[:1] + (("gen. svc TorchServe", None, "img/s"),) + LOAD_SERIES[1:]:
        for client, x in CLIENT_SUFFIX.items():
            rows = ts.get(f"levels{x}") if key is None else results.get(f"{key}{x}")
            if rows:
                yield label, client, rows, unit


def table(results: dict) -> str:
    """One row per measurement (a repeated level: its median, and its [min, max] as `range`; its load
    client, and the CPU per request of the serving processes and of the client), then the CPU per
    request by process, the FLOPs, the machine's noise and the targets with the verdicts."""
    rows = [("part", "client", "setting", "throughput", "range", "unit", "GFLOP/s", "p50 ms", "p99 ms", "batch",
             "svc CPU ms/req", "client CPU ms/req", "errors")]

    def plain(part, setting, rate, unit, gflops, p50, batch):
        rows.append((part, "", setting, rate, "", unit, gflops, p50, "", batch, "", "", ""))

    m = results.get("reference_matmul")
    if m:
        plain("matmul (torch)", f"{m['n']}x{m['n']} f32", "-", "", _fmt(m["gflops"]), "", "")
    for r in results.get("raw_ort_generator") or []:
        spin = {True: ", spinning", False: ""}.get(r.get("spinning"), "")
        plain("raw ORT generator", f"batch {r['batch']}{spin}", _fmt(r["images_per_s"]), "img/s",
              _fmt(r.get("gflops"), 2), _fmt(r["latency_ms_p50"], 2), str(r["batch"]))
    for r in results.get("raw_ort_generator_concurrent") or []:
        plain("raw ORT, 2 at once", f"batch {r['batch']}, {r['intra_op_threads']} thr", _fmt(r["images_per_s"]),
              "img/s", _fmt(r.get("gflops"), 2), "", str(r["batch"]))
    for label, client, levels, unit in _load_series(results):
        for r in levels:
            errs = sum(r["errors"].values()) if r.get("errors") else 0
            rows.append((label, client, f"conc {r['concurrency']} x{r.get('repeats', 1)}", _fmt(r["throughput"]),
                         _range(r.get("throughput_range")), unit, _fmt(r.get("gflops"), 2),
                         _fmt(r["latency_ms_p50"], 2), _fmt(r["latency_ms_p99"], 2), _fmt(r.get("mean_batch")),
                         _fmt(r.get("service_cpu_ms_per_request"), 2), _fmt(r.get("client_cpu_ms_per_request"), 2),
                         str(errs)))
    for kind in EDIT_KINDS:
        for r in results.get(f"inprocess_{kind}_edits") or []:
            plain(f"in-process ({kind})", f"batch {r['batch']}", _fmt(r["edits_per_s"]), "edit/s",
                  _fmt(r.get("gflops"), 2), _fmt(r["latency_ms_p50"], 2), str(r["batch"]))
    p = results.get("peer_baseline")
    if p:
        plain("peer eager PyTorch", "batch 1", _fmt(p["edits_per_s"]), "edit/s", _fmt(p.get("gflops"), 2),
              _fmt(p["latency_ms_p50"], 2), "1")
        plain("peer generator only", "batch 1", _fmt(p["generator_only_images_per_s"]), "img/s",
              _fmt(p.get("generator_only_gflops"), 2), "", "1")
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i in (0, 1, 2, 4, 5) else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.append("")
    lines.append("CPU per request (ms, median over the repetitions; user + system time from /proc):")
    for label, client, levels, _ in _load_series(results):
        for r in levels:
            by = ", ".join(f"{k} {_fmt(v, 2)}" for k, v in (r.get("cpu_ms_per_request") or {}).items())
            lines.append(f"  {label} [{client}] c{r['concurrency']}: {by}; load client "
                         f"{_fmt(r.get('client_cpu_ms_per_request'), 2)}")
    f = results.get("flops")
    if f:
        mflop = {k: _fmt(None if v is None else v / 1e6, 2) for k, v in f.items()
                 if k.endswith(("_image", "edit", "_request"))}
        lines.append(f"FLOPs: generator {mflop['generator_per_image']} MFLOP/image, encoder "
                     f"{mflop['encoder_per_image']}, classifier {mflop['classifier_per_image']}; "
                     f"full Edit {mflop['edit_per_request']} MFLOP, lean Edit (skip_scores) "
                     f"{mflop['lean_edit_per_request']}, peer edit {mflop['peer_edit']}")
    cpu = (results.get("machine") or {}).get("cpu_during_run")
    if cpu:
        lines.append(f"CPU during the run: this benchmark and its processes {cpu['this_run_cores']:.2f} cores, "
                     f"other processes of the machine {cpu['other_processes_cores']:.2f} cores (noise)")
    for key, label in (("rpc_round_trip_ms", "Python client"), ("h2load_round_trip_ms", "h2load")):
        rtt = results.get(key)
        if rtt:
            lines.append(f"empty-call round trip p50 at the start, {label}: "
                         + ", ".join(f"{k} {v:.3f} ms" for k, v in rtt.items()))
    repeats = (results.get("settings") or {}).get("repeats")
    lines.append("")
    lines.append("targets (reported, not asserted): median [min, max] over the repetitions"
                 + (f" (--repeats {repeats})" if repeats else "") + "; the verdict reads h2load's median")
    found = results.get("ratios") or {}
    python = results.get("ratios_python_client") or {}
    width = max(map(len, found), default=0)
    lines.append(f"  {'':<{width}} {'h2load':>9} {'':<24} {'python':>9} {'':<24} target")
    for name, r in found.items():
        mark = "" if r["met"] is None else ("  met" if r["met"] else "  MISSED")
        py = python.get(name) or {"median": None, "range": None, "repetitions": 0}
        lines.append(f"  {name:<{width}} {_fmt(r['median'], 3):>9} {_spread(r['range']):<19} n={r['repetitions']:<2} "
                     f"{_fmt(py['median'], 3):>9} {_spread(py['range']):<19} n={py['repetitions']:<2} "
                     f"{r['target'] or '':<7}{mark}")
    return "\n".join(lines)


def _spread(r) -> str:
    return f"[{_fmt(r[0], 3)}, {_fmt(r[1], 3)}]" if r else ""


def _legend(ax, size: int) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=size)


def _load_line(ax, rows, y: str, fmt: str, **kw):
    """A repeated level's median, with its [min, max] over the repetitions as an error bar."""
    x = [r["concurrency"] for r in rows]
    med = [r[y] for r in rows]
    err = [[max(m - (r.get(f"{y}_range") or (m, m))[0], 0) for m, r in zip(med, rows)],
           [max((r.get(f"{y}_range") or (m, m))[1] - m, 0) for m, r in zip(med, rows)]]
    return ax.errorbar(x, med, yerr=err, fmt=fmt, capsize=3, **kw)


def plot(results: dict, path: Path) -> Path | None:
    """Four panels: generator images/s, edits/s, latency, GFLOP/s. None when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    ax = axes[0][0]
    raw = results.get("raw_ort_generator") or []
    if raw:
        ax.plot([r["batch"] for r in raw], [r["images_per_s"] for r in raw], "o-", label="raw ORT (x = batch)")
    conc = results.get("raw_ort_generator_concurrent") or []
    if conc:
        ax.plot([r["batch"] for r in conc], [r["images_per_s"] for r in conc], "o--",
                label="raw ORT, 2 calls at once (x = batch)")
    series = list(_load_series(results))
    for label, client, rows, unit in series:
        if unit == "img/s":
            _load_line(ax, rows, "throughput", STYLE[client], label=f"{label} [{client}] (x = concurrency)")
    p = results.get("peer_baseline")
    if p:
        ax.axhline(p["generator_only_images_per_s"], color="grey", ls=":", label="eager PyTorch, batch 1")
    ax.set(xscale="log", yscale="log", xlabel="batch / concurrency", ylabel="images/s",
           title="generator (bars: min-max over the repetitions)")
    ax.set_xticks(list(BATCHES), [str(b) for b in BATCHES])
    _legend(ax, 8)
    ax = axes[0][1]
    for k, kind in enumerate(EDIT_KINDS):
        for label, client, rows, _ in series:
            if label == f"gateway Edit ({kind})":
                _load_line(ax, rows, "throughput", STYLE[client], color=f"C{k}", label=f"{label} [{client}]")
        for r in results.get(f"inprocess_{kind}_edits") or []:
            if r["batch"] > 1:
                ax.axhline(r["edits_per_s"], ls="--", color=f"C{k}", label=f"in-process {kind}, batch {r['batch']}")
    if p:
        ax.axhline(p["edits_per_s"], ls=":", color="grey", label="peer: eager PyTorch, one at a time")
    ax.set(xscale="log", yscale="log", xlabel="concurrency", ylabel="edits/s",
           title="edits, PNG in -> PNG out (lean: skip_scores; full: + original, scores)")
    ax.set_xticks(list(CONCURRENCY), [str(c) for c in CONCURRENCY])
    _legend(ax, 8)
    ax = axes[1][0]
    colors = {}
    for label, client, rows, _ in series:
        color = colors.setdefault(label, f"C{len(colors)}")
        _load_line(ax, rows, "latency_ms_p50", STYLE[client], color=color, label=f"{label} [{client}] p50")
        if client == "h2load":
            _load_line(ax, rows, "latency_ms_p99", "x:", color=color, label=f"{label} [{client}] p99")
    ax.set(xscale="log", yscale="log", xlabel="concurrency", ylabel="ms", title="latency")
    ax.set_xticks(list(CONCURRENCY), [str(c) for c in CONCURRENCY])
    _legend(ax, 7)
    ax = axes[1][1]
    bars = []
    m = results.get("reference_matmul")
    if m:
        bars.append((f"matmul {m['n']}", m["gflops"]))
    for r in raw:
        bars.append((f"raw b{r['batch']}", r.get("gflops") or 0))
    for label, client, rows, unit in series:
        for r in rows if unit == "img/s" else []:
            if r["concurrency"] == max(CONCURRENCY):
                name = "ts" if "TorchServe" in label else "svc"
                bars.append((f"{name} c{r['concurrency']} {client}", r.get("gflops") or 0))
    if p:
        bars.append(("eager b1", p.get("generator_only_gflops") or 0))
    if bars:
        ax.bar([b[0] for b in bars], [b[1] for b in bars], color=["grey"] + ["C0"] * (len(bars) - 1))
        ax.tick_params(axis="x", rotation=45, labelsize=8)
    ax.set(ylabel="GFLOP/s", title="achieved GFLOP/s (generator)")
    machine = results.get("machine", {})
    fig.suptitle(f"facedit bench, pack {results.get('pack', {}).get('name')} "
                 f"({results.get('pack', {}).get('version')}), {machine.get('cores')} cores "
                 f"{machine.get('cpu_model', '')}, {machine.get('date', '')}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o).__name__)


def write_results(results: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=_json_default) + "\n")
    return path
