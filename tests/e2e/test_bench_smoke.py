"""Smoke test of `make bench` (`python -m bench`): the whole bench on the tiny pack in --quick mode
(a real stack, every load level repeated and interleaved with its references, with both load
clients when h2load is installed), its in-process parts, its load harness with a fake client, the
compiled client (h2load: its output parsed, its answers checked against a real generator service,
failures caught), its repetition bookkeeping with fake measurements, and its FLOP counter against
hand counts.

Timings are never asserted: only that the figures exist, are finite and positive where they are
rates or ratios, are shaped as results.json promises (medians, [min, max] ranges, as many
repetitions as asked), and that the FLOP counts equal the hand computations.
"""
from __future__ import annotations

import json
import shutil
import struct

import grpc
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from bench import clients, h2load, harness, inprocess, ratios, report, workload
from bench.__main__ import main
from bench.flops import count_flops
from facedit_core import images


@pytest.fixture(scope="module")
def pngs(pack):
    return workload.face_pngs(pack, count=8)


def _tiny_graph() -> onnx.ModelProto:
    """x (N, 4, 3, 3) -> ConvTranspose 4->2 k4 s2 p1 -> (N, 2, 6, 6) -> Conv 2->5 k3 p1 -> (N, 5, 6, 6)
    -> Flatten (N, 180) -> Gemm 180->7 (transB) -> MatMul 7->3."""
    rng = np.random.default_rng(0)
    init = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n) for n, s in
            (("wt", (4, 2, 4, 4)), ("wc", (5, 2, 3, 3)), ("bc", (5,)), ("wg", (7, 180)), ("bg", (7,)),
             ("wm", (7, 3)))]
    nodes = [
        helper.make_node("ConvTranspose", ["x", "wt"], ["a"], kernel_shape=[4, 4], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["a", "wc", "bc"], ["b"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Flatten", ["b"], ["c"], axis=1),
        helper.make_node("Gemm", ["c", "wg", "bg"], ["d"], transB=1),
        helper.make_node("MatMul", ["d", "wm"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 3, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def test_flop_counter_matches_hand_count():
    model = _tiny_graph()
    # a real, runnable model (ONNX Runtime agrees on the shapes)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert session.run(None, {"x": np.zeros((2, 4, 3, 3), np.float32)})[0].shape == (2, 3)
    conv_t = 2 * 4 * (3 * 3) * 2 * (4 * 4)   # 2 * Ci * H_in * W_in * Co * K * K
    conv = 2 * 5 * (6 * 6) * 2 * (3 * 3)     # 2 * Co * H_out * W_out * Ci * K * K
    gemm = 2 * 1 * 7 * 180                   # 2 * M * N * K
    matmul = 2 * 1 * 3 * 7
    counted = count_flops(model)
    assert counted["by_op"] == {"ConvTranspose": conv_t, "Conv": conv, "Gemm": gemm, "MatMul": matmul}
    assert counted["total"] == conv_t + conv + gemm + matmul == 11346
    assert [layer["op"] for layer in counted["layers"]] == ["ConvTranspose", "Conv", "Gemm", "MatMul"]
    assert count_flops(model, batch=3)["total"] == 3 * 11346



def test_flop_counter_on_the_tiny_generator(pack):
    # training/configs/tiny.json: z 16, g_width 8, 32x32 -> ConvTranspose 16->32 (1x1 in), 32->16 (4x4),
    # 16->8 (8x8), 8->3 (16x16), all 4x4 kernels
    hand = 2 * 16 * (32 * 16) + 2 * 32 * 16 * (16 * 16) + 2 * 16 * 64 * (8 * 16) + 2 * 8 * 256 * (3 * 16)
    assert hand == 737280
    flops = workload.model_flops(pack)
    assert flops["generator_per_image"] == hand
    assert flops["generator_by_op"] == {"ConvTranspose": hand}
    assert flops["encoder_per_image"] > 0 and flops["classifier_per_image"] > 0
    assert flops["edit_per_request"] == flops["encoder_per_image"] + 2 * hand + 2 * flops["classifier_per_image"]
    assert flops["lean_edit_per_request"] == flops["peer_edit"] == flops["encoder_per_image"] + hand


def test_in_process_editor_edits_pngs(pack, pngs):
    editor = inprocess.InProcessEditor(pack)
    edited, scores = editor.edit(pngs[:3])
    assert len(edited) == 3
    for png in edited:
        assert images.decode(png).shape == (pack.resolution, pack.resolution, 3)
    assert scores.shape == (6, len(pack.attributes))  # before and after, for each face
    assert np.all((scores >= 0) & (scores <= 1))
    assert np.abs(workload.edit_delta(pack)).sum() > 0
    # the lean edit (the gateway's skip_scores) renders the same edited faces, without scores
    lean, none = editor.edit(pngs[:3], scores=False)
    assert none is None
    for a, b in zip(lean, edited):
        assert np.abs(images.decode(a).astype(int) - images.decode(b).astype(int)).max() <= 1


def test_offline_parts_and_results_file(pack, pngs, tmp_path):
    results = {"machine": harness.machine_info(), "pack": workload.pack_info(pack)}
    results.update(inprocess.offline_parts(pack, pngs, seconds=0.02, batches=(1, 8), inprocess_batches=(1, 4),
                                           matmul_n=64, threads=1))
    raw = results["raw_ort_generator"]
    assert [r["batch"] for r in raw] == [1, 8]
    assert all(r["images_per_s"] > 0 and r["iterations"] >= 3 for r in raw)
    conc = results["raw_ort_generator_concurrent"]
    assert [r["batch"] for r in conc] == [1, 8] and all(r["workers"] == 2 and r["intra_op_threads"] == 1 for r in conc)
    assert all(r["images_per_s"] > 0 and r["iterations"] >= 2 for r in conc)
    inproc = results["inprocess_full_edits"] + results["inprocess_lean_edits"]
    assert [r["batch"] for r in inproc] == [1, 4, 1, 4]
    assert all(r["edits_per_s"] > 0 and r["edits_per_cpu_s"] > 0 for r in inproc)
    peer = results["peer_baseline"]
    assert peer["edits_per_s"] > 0 and peer["generator_only_images_per_s"] > 0
    # the eager PyTorch rebuild computes what generator.onnx / encoder.onnx compute
    assert peer["parity_generator_max_pixel_diff"] <= 1
    assert peer["parity_encoder_max_abs_diff"] < 1e-4
    assert results["reference_matmul"]["gflops"] > 0
    for key in ("cores", "cpu_model", "onnxruntime", "torch", "providers", "date"):
        assert results["machine"][key], key

    cpu = harness.other_load(harness.cpu_snapshot())
    assert set(cpu) == {"seconds", "machine_busy_cores", "this_run_cores", "other_processes_cores"}
    assert cpu["other_processes_cores"] >= 0

    ratios.add_gflops(results)
    assert all(r["gflops"] > 0 for r in raw + inproc)
    results.update(ratios.all_ratios(results))
    assert set(ratios.TARGETS) <= set(results["ratios"]) and set(ratios.TARGETS) <= set(results["ratios_python_client"])
    # no services ran: their ratios are reported as unknown, not as a pass or a failure
    unknown = results["ratios"]["service_c64_over_raw_b64"]
    assert unknown == {"median": None, "range": None, "values": [], "repetitions": 0, "target": ">= 0.9",
                       "met": None, "how": unknown["how"]}
    # the targets are judged on the compiled client only
    assert results["ratios_python_client"]["service_c64_over_raw_b64"]["target"] is None
    text = report.table(results)
    assert "raw ORT generator" in text and "peer eager PyTorch" in text
    path = report.write_results(results, tmp_path / "results.json")
    loaded = json.loads(path.read_text())
    assert loaded["flops"]["generator_per_image"] == 737280
    assert loaded["raw_ort_generator"][1]["batch"] == 8
    png = report.plot(results, tmp_path / "results.png")
    if png is not None:  # matplotlib is the optional `bench` extra
        assert png.read_bytes().startswith(b"\x89PNG")


class _Unavailable(grpc.RpcError):
    def code(self):
        return grpc.StatusCode.UNAVAILABLE


def test_load_harness_counts_requests_and_errors():
    closed = []

    def make(k: int) -> harness.Client:
        def call(i: int):
            if i >= 0 and i % 5 == 4:
                raise _Unavailable()
            return 2

        return harness.Client(call, lambda: closed.append(k))

    # the request cap (50) ends the run long before the time limit: requests 0..49, every fifth fails
    r = harness.run_load(make, concurrency=4, seconds=30, max_requests=50)
    assert sorted(closed) == [0, 1, 2, 3]
    assert r["requests"] == 40 and r["errors"] == {"UNAVAILABLE": 10}
    assert r["throughput"] > 0 and r["mean_batch"] == 2.0
    assert 0 < r["latency_ms_p50"] <= r["latency_ms_p99"]


def test_repetitions_interleave_levels_with_their_references_and_verdicts_read_the_median():
    """Fake measurements: the order of the calls, the rows' medians and ranges, and a ratio whose one
    slow repetition does not flip its verdict."""
    calls = []
    throughput = iter([100.0, 40.0, 90.0])  # the generator service at c64; the second repetition is a noisy minute

    def level(name):
        def measure(c):
            calls.append(f"{name} c{c}")
            tp = next(throughput) if (name, c) == ("generator", 64) else 10.0
            return {"concurrency": c, "requests": 5, "errors": {}, "seconds": 1.0, "cpu_s": 1.0, "per_cpu_s": tp,
                    "per_service_cpu_s": tp / 2, "throughput": tp, "latency_ms_p50": 2.0, "latency_ms_p90": 3.0,
                    "latency_ms_p99": 4.0, "latency_ms_mean": 2.5, "mean_batch": None,
                    "cpu_ms_per_request": {"generator": 1000 / tp}}
        return measure

    def reference(name, c):
        def measure():
            calls.append(f"{name} c{c} reference")
            return {"raw_images_per_s": 100.0, "raw_images_per_cpu_s": 50.0, "raw_batch": 64}
        return measure

    series = [harness.Series("generator", [8, 64], level("generator"), {64: reference("generator", 64)},
                             also={"h2load": level("generator h2load")}),
              harness.Series("gateway_lean", [1], level("gateway_lean"))]
    ticks = iter(range(100))
    measured = harness.interleave(series, 3, clock=lambda: float(next(ticks)))
    # every level: the Python client, the other client right after, then the reference
    assert calls == ["generator c8", "generator h2load c8", "generator c64", "generator h2load c64",
                     "generator c64 reference", "gateway_lean c1"] * 3
    assert [r["repetition"] for r in measured["generator"]["also"]["h2load"][64]] == [0, 1, 2]
    refs = measured["generator"]["references"][64]
    lv = measured["generator"]["levels"][64]
    assert [r["repetition"] for r in refs] == [r["repetition"] for r in lv] == [0, 1, 2]
    assert all(a["at_s"] < b["at_s"] for a, b in zip(lv, refs))  # each reference right after its level

    rows = harness.level_rows(measured["generator"]["levels"])
    big = rows[1]
    assert big["concurrency"] == 64 and big["repeats"] == 3 and len(big["repetitions"]) == 3
    assert big["throughput"] == 90.0 and big["throughput_range"] == [40.0, 100.0] and big["requests"] == 15
    assert big["cpu_ms_per_request"] == {"generator": 1000 / 90}
    # the compiled client's rows are where the targets are judged
    results = {"generator_service_onnx_h2load": rows,
               "references": {"generator": harness.reference_rows(measured["generator"]["references"])}}
    r = ratios.ratios(results, "h2load")["service_c64_over_raw_b64"]
    assert r["values"] == [1.0, 0.4, 0.9] and r["repetitions"] == 3
    assert r["median"] == 0.9 and r["range"] == [0.4, 1.0] and r["met"] is True  # 0.4 alone would miss 0.9
    # per CPU second: the serving processes' own CPU, and with the load client's
    assert ratios.ratios(results, "h2load")["service_c64_over_raw_b64_per_cpu"]["values"] == [1.0, 0.4, 0.9]
    assert ratios.ratios(results, "h2load")["service_c64_over_raw_b64_per_cpu_with_client"]["values"] == [
        2.0, 0.8, 1.8]
    assert ratios.ratios(results, "python")["service_c64_over_raw_b64"]["values"] == []


def _check_entry(name: str, entry: dict, repeats: int) -> None:
    assert entry["repetitions"] == repeats == len(entry["values"]), name
    assert all(np.isfinite(v) for v in entry["values"]), name
    lo, hi = entry["range"]
    assert lo <= entry["median"] <= hi and lo == min(entry["values"]) and hi == max(entry["values"]), name
    if not name.endswith(("_excess_ms", "_excess_ms_start_of_run")):  # an excess can be negative
        assert lo > 0, name
    if entry["target"]:
        assert entry["met"] in (True, False), name


HAS_H2LOAD = shutil.which("h2load") is not None
NO_H2LOAD = ("h2load is not installed (Debian's nghttp2-client, which `make bench` installs; make test does not): "
             "the compiled load client is not exercised")
# the whole bench with both load clients where h2load is installed, else with the Python one alone
SKIP = "torchserve" if HAS_H2LOAD else "torchserve,h2load"
JUDGED = "ratios" if HAS_H2LOAD else "ratios_python_client"


def test_the_whole_bench_repeats_every_level_and_reports_medians_and_ranges(tiny_pack, tmp_path):
    _, store = tiny_pack
    results = main(["--model-store", str(store), "--pack", "tiny", "--quick", "--repeats", "3",
                    "--skip", SKIP, "--work", str(tmp_path / "work"), "--out", str(tmp_path / "r.json"),
                    "--plot", str(tmp_path / "r.png")])
    assert "errors" not in results and "interrupted" not in results
    assert results["settings"]["repeats"] == 3 and results["settings"]["quick"]
    keys = ("generator_service_onnx", "gateway_lean_edits", "gateway_full_edits")
    for key in keys + (tuple(f"{k}_h2load" for k in keys) if HAS_H2LOAD else ()):
        rows = results[key]
        assert [r["concurrency"] for r in rows] == [1, 8, 32, 64], key
        for row in rows:
            assert row["repeats"] == 3 and [r["repetition"] for r in row["repetitions"]] == [0, 1, 2], key
            assert not row["errors"] and row["throughput"] > 0, key
            lo, hi = row["throughput_range"]
            assert 0 < lo <= row["throughput"] <= hi, key
            # the CPU per request of every serving process and of the load client, from /proc
            assert set(row["cpu_ms_per_request"]) == {"directions", "encoder", "generator", "gateway", "redis"}, key
            assert row["service_cpu_ms_per_request"] > 0 and row["client_cpu_ms_per_request"] > 0, key
    # the levels the targets compare, each with a reference measured right after it in every repetition
    for series, levels in (("generator", [1, 64]), ("gateway_lean", [1, 32]), ("gateway_full", [1, 32])):
        refs = results["references"][series]
        assert [r["concurrency"] for r in refs] == levels, series
        for ref in refs:
            assert [r["repetition"] for r in ref["repetitions"]] == [0, 1, 2], series
    # repetition 2 of a level comes after repetition 1 of every series (interleaved, not back to back)
    at = {(key, r["repetition"]): r["at_s"] for key in ("generator_service_onnx", "gateway_full_edits")
          for r in results[key][0]["repetitions"]}
    assert at[("generator_service_onnx", 0)] < at[("gateway_full_edits", 0)] < at[("generator_service_onnx", 1)]
    for name in ratios.TARGETS:
        _check_entry(name, results[JUDGED][name], 3)
    for which in ("ratios", "ratios_python_client") if HAS_H2LOAD else ("ratios_python_client",):
        for name, entry in results[which].items():
            if not name.startswith("torchserve"):
                _check_entry(name, entry, 3)
    assert results["ratios"]["torchserve_c64_over_raw_b64"]["median"] is None  # skipped: unknown
    if HAS_H2LOAD:
        # h2load's levels: every answer the size of a real one, its client CPU its own
        assert results["settings"]["load_clients"]["h2load"].startswith("h2load")
        for key in keys:
            for row in results[f"{key}_h2load"]:
                for rep in row["repetitions"]:
                    assert rep["h2load"]["bytes_data_per_request"] == rep["h2load"]["answer_bytes"] > 0, key
        assert all(v > 0 for v in results["h2load_round_trip_ms"].values())
        assert all(r["h2load_round_trip_ms"] > 0 for r in results["references"]["gateway_lean"][0]["repetitions"])
    else:
        assert results["ratios"]["service_c64_over_raw_b64"]["met"] is None  # no compiled client: no verdict
    loaded = json.loads((tmp_path / "r.json").read_text())
    assert loaded[JUDGED]["service_c64_over_raw_b64"]["values"] == results[JUDGED]["service_c64_over_raw_b64"][
        "values"]
    text = report.table(loaded)
    assert "n=3" in text and "CPU per request" in text


def test_h2load_output_and_log_are_parsed():
    """h2load's summary (as h2load 1.52 prints it) and its per-request log; a gRPC frame."""
    out = """finished in 196.45ms, 330.87 req/s, 953.15KB/s
requests: 65 total, 65 started, 64 done, 63 succeeded, 1 failed, 1 errored, 0 timeout
status codes: 63 2xx, 0 3xx, 1 4xx, 0 5xx
traffic: 187.25KB (191744) total, 795B (795) headers (space savings 84.90%), 182.11KB (186485) data
                     min         max         mean         sd        +/- sd
time for request:      263us      1.59s       22.24ms      5.93ms    66.15%
"""
    r = h2load.parse_output(out)
    assert r["finished_s"] == pytest.approx(0.19645) and r["req_per_s"] == 330.87
    assert (r["requests"], r["done"], r["succeeded"], r["failed"], r["errored"]) == (65, 64, 63, 1, 1)
    assert (r["status_2xx"], r["status_4xx"], r["bytes_data"], r["bytes_headers"]) == (63, 1, 186485, 795)
    assert r["latency_ms_min"] == pytest.approx(0.263) and r["latency_ms_max"] == pytest.approx(1590)
    assert r["latency_ms_mean"] == pytest.approx(22.24) and r["latency_ms_sd"] == pytest.approx(5.93)
    target = h2load.Target("t", "127.0.0.1:1", "/x", None, answer_bytes=2900)
    errors = h2load.errors_of(r, target, failures_logged=2)
    assert errors == {"failed": 1, "errored": 1, "status_4xx": 1, "not_done": 1, "answer_bytes_mismatch": 1,
                      "failed_calls_logged": 2}
    assert h2load.answered(r, target, 2) == 61  # 63 HTTP successes less 2 logged failures; bytes for 64
    with pytest.raises(ValueError):
        h2load.parse_output("connect failed")
    assert h2load.grpc_frame(b"abc") == b"\0" + struct.pack(">I", 3) + b"abc"


@pytest.mark.skipif(not HAS_H2LOAD, reason=NO_H2LOAD)
def test_h2load_drives_a_real_generator_service_and_catches_failed_calls(pack, tmp_path):
    """h2load against a real generator service: a real answer's size from one Python call, levels whose
    every answer is checked, the services' CPU per request; a request the service refuses (an unknown
    pack: HTTP 200, grpc-status INVALID_ARGUMENT) is counted as failed, not as served."""
    from services.stack import Stack

    stack = Stack.on_free_ports(pack.root.parent, [pack.name], tmp_path / "logs", services=("generator",))
    with stack:
        targets = clients.h2load_targets({"generator": stack.address("generator")}, pack, [], None, None,
                                         tmp_path / "h2")
        target = targets["generator"]
        assert target.answer_bytes > 3 * pack.resolution ** 2  # one image's pixels and the reply's fields
        logs = [stack.log_dir / "generator.log"]
        level = h2load.Level(target, 0.3, 2000, stack.pids(), logs, tmp_path / "h2")
        for c in (1, 4):
            row = level.measure(c)
            assert not row["errors"] and row["requests"] > 0 and row["throughput"] > 0, row
            assert row["h2load"]["bytes_data"] == row["h2load"]["requests"] * target.answer_bytes
            assert row["latency_ms_p50"] <= row["latency_ms_p99"]
            assert row["cpu_ms_per_request"]["generator"] > 0 and row["client_cpu_ms_per_request"] > 0
            assert row["per_service_cpu_s"] > row["per_cpu_s"] > 0
        assert h2load.round_trip_ms(h2load.health_target(stack.address("generator"), tmp_path / "h2"),
                                    tmp_path / "h2", calls=20) > 0
        request = clients.generator_request(pack, 0)
        request.pack = "no-such-pack"
        bad_frame = tmp_path / "bad.frame"
        bad_frame.write_bytes(h2load.grpc_frame(request.SerializeToString()))
        bad = h2load.Level(h2load.Target("bad", target.address, target.method, bad_frame, target.answer_bytes),
                           0.2, 50, stack.pids(), logs, tmp_path / "h2")
        row = bad.measure(2)
    assert row["requests"] == 0 and row["throughput"] == 0.0
    assert row["errors"]["answer_bytes_mismatch"] == 1 and row["errors"]["failed_calls_logged"] > 0
    assert row["h2load"]["succeeded"] > 0  # h2load itself saw HTTP 200s: why the answers are checked


def test_bench_without_h2load_fails_at_once_with_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setattr(h2load.shutil, "which", lambda name: None)
    with pytest.raises(SystemExit, match="nghttp2-client"):
        main(["--pack", "tiny", "--model-store", str(tmp_path), "--quick", "--out", str(tmp_path / "r.json")])


def test_a_generator_only_pack_gets_the_generator_parts(pack, tmp_path):
    """Any pack: one with only a generator (e.g. a third-party GAN before its encoder exists) gets
    FLOPs, raw ONNX Runtime and a real generator service process, and says what it skipped."""
    import shutil

    root = tmp_path / "store" / "genonly"
    root.mkdir(parents=True)
    entry = pack.manifest["artefacts"]["generator"]
    shutil.copy(pack.artefact("generator"), root / entry["path"])
    manifest = {**pack.manifest, "pack": "genonly", "artefacts": {"generator": entry}}
    (root / "manifest.json").write_text(json.dumps(manifest))
    results = main(["--model-store", str(tmp_path / "store"), "--pack", "genonly", "--quick", "--repeats", "2",
                    "--concurrency", "1,8,64", "--batches", "1,64", "--skip", SKIP,
                    "--work", str(tmp_path / "work"), "--out", str(tmp_path / "r.json"),
                    "--plot", str(tmp_path / "r.png")])
    assert "errors" not in results and "encoder" in results["generator_only"]
    assert results["flops"]["generator_per_image"] == 737280 and results["flops"]["edit_per_request"] is None
    assert [r["concurrency"] for r in results["generator_service_onnx"]] == [1, 8, 64]
    assert all(r["throughput"] > 0 and not r["errors"] and r["per_cpu_s"] > 0 and r["repeats"] == 2
               for r in results["generator_service_onnx"])
    assert all(r["images_per_cpu_s"] > 0 for r in results["raw_ort_generator"])
    assert not any(k.startswith(("inprocess_", "gateway_")) for k in results)
    if HAS_H2LOAD:
        assert [r["concurrency"] for r in results["generator_service_onnx_h2load"]] == [1, 8, 64]
        assert all(r["throughput"] > 0 and not r["errors"] and set(r["cpu_ms_per_request"]) == {"generator"}
                   for r in results["generator_service_onnx_h2load"])
    for name in ("service_c64_over_raw_b64", "service_p99_over_p50_c8", "service_c1_excess_ms"):
        _check_entry(name, results[JUDGED][name], 2)
    assert all(r["rpc_round_trip_ms"] > 0 for r in results["references"]["generator"][0]["repetitions"])
    assert results[JUDGED]["gateway_lean_c32_over_peer"]["median"] is None
    assert results["settings"]["service_flags"]["spinning"] == 0
