"""services/common/metrics.py: a batcher's histograms, queue gauge and dropped requests, recording
turned off, Redis error kinds; the Grafana dashboard and docs/operations.md against the metrics
that module defines."""
import json
import re
import threading
import time
import uuid

import numpy as np
import prometheus_client
import pytest
import redis

from facedit_core.errors import DeadlineExceeded, ResourceExhausted
from services.common import metrics
from services.common.batcher import DynamicBatcher
from tests.support import ROOT, local_metrics, sample

DASHBOARD = ROOT / "docs" / "grafana" / "facedit.json"
OPERATIONS = ROOT / "docs" / "operations.md"


def _batcher_name() -> str:
    """A batcher name of its own, so its series start at zero in this process's registry."""
    return f"test-{uuid.uuid4().hex[:8]}"


def _rows(n: int) -> np.ndarray:
    return np.zeros((n, 1), np.float32)


def test_a_batcher_reports_batch_rows_queue_waits_execution_and_its_queue():
    """One request held in the model while ten more (2 rows each) queue: the gauge shows the ten, and
    afterwards two batches (1 row, then 20 rows) with eleven queue waits and two executions."""
    gate, name = threading.Event(), _batcher_name()
    b = DynamicBatcher(lambda x: gate.wait(5) and x, max_batch=64, max_delay_s=0.05, name=name)
    try:
        first = b.submit(_rows(1))
        time.sleep(0.05)  # the first request is in the model, held by the gate
        rest = [b.submit(_rows(2)) for _ in range(10)]
        queued = sample(local_metrics(), "facedit_batcher_queued_requests", batcher=name)
        time.sleep(0.05)  # every queued request waits at least this long
        gate.set()
        assert [f.result(5)[1] for f in [first, *rest]] == [1] + [20] * 10
        after = local_metrics()
    finally:
        b.close()
    assert queued == 10
    assert sample(after, "facedit_batcher_queued_requests", batcher=name) == 0
    assert sample(after, "facedit_batcher_batch_rows_count", batcher=name) == 2
    assert sample(after, "facedit_batcher_batch_rows_sum", batcher=name) == 21
    assert [sample(after, "facedit_batcher_batch_rows_bucket", batcher=name, le=le)
            for le in ("1.0", "16.0", "32.0")] == [1, 1, 2]
    assert sample(after, "facedit_batcher_queue_wait_seconds_count", batcher=name) == 11
    assert sample(after, "facedit_batcher_queue_wait_seconds_sum", batcher=name) >= 10 * 0.05
    assert sample(after, "facedit_batcher_execution_seconds_count", batcher=name) == 2
    assert sample(after, "facedit_batcher_execution_seconds_sum", batcher=name) >= 0.1  # the first held twice 0.05 s


def test_an_inline_request_counts_as_one_batch_with_no_queue_wait():
    name = _batcher_name()
    b = DynamicBatcher(lambda x: x, max_batch=8, name=name, inline=True)
    try:
        b.submit(_rows(3)).result(0)
        s = local_metrics()
    finally:
        b.close()
    assert sample(s, "facedit_batcher_batch_rows_sum", batcher=name) == 3
    assert sample(s, "facedit_batcher_queue_wait_seconds_count", batcher=name) == 1
    assert sample(s, "facedit_batcher_queue_wait_seconds_sum", batcher=name) == 0
    assert sample(s, "facedit_batcher_execution_seconds_count", batcher=name) == 1


def test_dropped_requests_by_reason():
    gate, name = threading.Event(), _batcher_name()
    b = DynamicBatcher(lambda x: gate.wait(5) and x, max_batch=1, max_delay_s=0, max_queue=1, name=name)
    try:
        b.submit(_rows(1))
        time.sleep(0.05)  # the worker holds the first one
        late = b.submit(_rows(1), deadline=time.monotonic() + 0.02)  # fills the queue, expires there
        with pytest.raises(ResourceExhausted):
            b.submit(_rows(1))
        time.sleep(0.05)
        gate.set()
        with pytest.raises(DeadlineExceeded):
            late.result(5)
        s = local_metrics()
    finally:
        gate.set()
        b.close()
    assert sample(s, "facedit_batcher_dropped_requests_total", batcher=name, reason="queue_full") == 1
    assert sample(s, "facedit_batcher_dropped_requests_total", batcher=name, reason="expired") == 1


def test_nothing_is_recorded_for_what_is_made_while_recording_is_off():
    name = _batcher_name()
    metrics.enable(False)
    try:
        b = DynamicBatcher(lambda x: x, name=name)
        hit, miss = metrics.cache_counters("latent")
    finally:
        metrics.enable(True)
    try:
        b.submit(_rows(2)).result(5)
    finally:
        b.close()
    assert hit is metrics.OFF and miss is metrics.OFF
    assert not [key for key in local_metrics() if ("batcher", name) in key[1]]


def test_redis_errors_by_kind():
    before = local_metrics()
    for err in (redis.TimeoutError("slow"), redis.ConnectionError("refused"), redis.ConnectionError("again"),
                redis.ResponseError("WRONGTYPE")):
        metrics.redis_error(err)
    after = local_metrics()
    moved = {kind: sample(after, "facedit_redis_errors_total", kind=kind) -
             sample(before, "facedit_redis_errors_total", kind=kind) for kind in ("timeout", "connection", "other")}
    assert moved == {"timeout": 1, "connection": 2, "other": 1}


# -- the dashboard and the docs ------------------------------------------------------------------
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
                "offset"}
TARGET_LABELS = {"job", "instance"}  # added by Prometheus to every series it scrapes


def _defined() -> dict[str, tuple[str, set[str]]]:
    """Every sample name the metrics of metrics.py expose -> (its family name, its label names)."""
    out = {}
    for m in vars(metrics).values():
        if isinstance(m, prometheus_client.metrics.MetricWrapperBase):
            family = m.describe()[0]
            labels = set(m._labelnames)  # prometheus-client has no public accessor for them
            for suffix in SUFFIXES[family.type]:
                out[family.name + suffix] = (family.name, labels | ({"le"} if suffix == "_bucket" else set()))
    return out


def _exprs(panels: list) -> list[tuple[str, str]]:
    """(panel title, expr) of every query of every panel, rows included."""
    out = []
    for p in panels:
        out += [(p["title"], t["expr"]) for t in p.get("targets", [])]
        out += _exprs(p.get("panels", []))
    return out


def _references(expr: str) -> tuple[dict[str, set[str]], set[str]]:
    """A PromQL expression -> ({metric name: label names its matchers use}, label names of by/without)."""
    e = re.sub(r'"[^"]*"', '""', expr)
    grouping = set()
    for labels in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", e):
        grouping |= {x.strip() for x in labels.split(",") if x.strip()}
    e = re.sub(r"\b(?:by|without)\s*\([^)]*\)", " ", e)
    names: dict[str, set[str]] = {}
    for name, matchers in re.findall(r"([a-zA-Z_:][\w:]*)\s*\{([^}]*)\}", e):
        names.setdefault(name, set()).update(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers))
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    for m in re.finditer(r"(?<![\w.$])([a-zA-Z_:][\w:]*)(?!\w)(\s*\()?", e):
        if not m.group(2) and m.group(1) not in PROMQL_WORDS:
            names.setdefault(m.group(1), set())
    return names, grouping


def test_every_dashboard_query_reads_only_metrics_and_labels_that_metrics_py_defines():
    dashboard = json.loads(DASHBOARD.read_text())
    defined, exprs = _defined(), _exprs(dashboard["panels"])
    assert len(exprs) >= 10
    used = set()
    for title, expr in exprs:
        names, grouping = _references(expr)
        assert names, f"{title}: no metric in {expr!r}"
        for name, labels in names.items():
            assert name in defined, f"{title}: {name} is not a metric of services/common/metrics.py ({expr!r})"
            assert labels <= defined[name][1] | TARGET_LABELS, f"{title}: {name} has no label {labels} ({expr!r})"
            used.add(defined[name][0])
        known = set().union(*(defined[n][1] for n in names)) | TARGET_LABELS
        assert grouping <= known, f"{title}: groups by {grouping - known}, which none of {sorted(names)} has"
    assert used == {family for family, _ in defined.values()}, "metrics no panel shows"


def test_the_dashboard_query_parser_catches_unknown_metrics_and_labels():
    names, grouping = _references('histogram_quantile(0.99, sum by (le, grpc_method) '
                                  '(rate(facedit_nope_seconds_bucket{hop="x"}[$__rate_interval]))) / up')
    assert names == {"facedit_nope_seconds_bucket": {"hop"}, "up": set()} and grouping == {"le", "grpc_method"}


def test_operations_doc_lists_every_metric():
    text = OPERATIONS.read_text()
    missing = sorted(family for family, _ in _defined().values() if f"`{family}" not in text)
    assert not missing, f"docs/operations.md does not list {missing}"
