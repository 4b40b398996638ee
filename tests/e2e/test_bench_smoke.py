"""Smoke test of `make bench` (`python -m bench`): the whole bench on the tiny pack in --quick mode
(a real stack, every load level repeated and interleaved with its references), its in-process
parts, its load harness with a fake client, its repetition bookkeeping with fake measurements,
and its FLOP counter against hand counts.

Timings are never asserted: only that the figures exist, are finite and positive where they are
rates or ratios, are shaped as results.json promises (medians, [min, max] ranges, as many
repetitions as asked), and that the FLOP counts equal the hand computations.
"""
from __future__ import annotations

import json

import grpc
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from bench import harness, inprocess, ratios, report, workload
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
    results["ratios"] = ratios.ratios(results)
    assert set(ratios.TARGETS) <= set(results["ratios"])
    # no services ran: their ratios are reported as unknown, not as a pass or a failure
    unknown = results["ratios"]["service_c64_over_raw_b64"]
    assert unknown == {"median": None, "range": None, "values": [], "repetitions": 0, "target": ">= 0.8",
                       "met": None, "how": unknown["how"]}
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
                    "throughput": tp, "latency_ms_p50": 2.0, "latency_ms_p90": 3.0, "latency_ms_p99": 4.0,
                    "latency_ms_mean": 2.5, "mean_batch": None}
        return measure

    def reference(name, c):
        def measure():
            calls.append(f"{name} c{c} reference")
            return {"raw_images_per_s": 100.0, "raw_images_per_cpu_s": 50.0, "raw_batch": 64}
        return measure

    series = [harness.Series("generator", [8, 64], level("generator"), {64: reference("generator", 64)}),
              harness.Series("gateway_lean", [1], level("gateway_lean"))]
    ticks = iter(range(100))
    measured = harness.interleave(series, 3, clock=lambda: float(next(ticks)))
    assert calls == ["generator c8", "generator c64", "generator c64 reference", "gateway_lean c1"] * 3
    refs = measured["generator"]["references"][64]
    lv = measured["generator"]["levels"][64]
    assert [r["repetition"] for r in refs] == [r["repetition"] for r in lv] == [0, 1, 2]
    assert all(a["at_s"] < b["at_s"] for a, b in zip(lv, refs))  # each reference right after its level

    rows = harness.level_rows(measured["generator"]["levels"])
    big = rows[1]
    assert big["concurrency"] == 64 and big["repeats"] == 3 and len(big["repetitions"]) == 3
    assert big["throughput"] == 90.0 and big["throughput_range"] == [40.0, 100.0] and big["requests"] == 15
    results = {"generator_service_onnx": rows,
               "references": {"generator": harness.reference_rows(measured["generator"]["references"])}}
    r = ratios.ratios(results)["service_c64_over_raw_b64"]
    assert r["values"] == [1.0, 0.4, 0.9] and r["repetitions"] == 3
    assert r["median"] == 0.9 and r["range"] == [0.4, 1.0] and r["met"] is True  # 0.4 alone would miss 0.8
    assert ratios.ratios(results)["service_c64_over_raw_b64_per_cpu"]["values"] == [2.0, 0.8, 1.8]


def _check_entry(name: str, entry: dict, repeats: int) -> None:
    assert entry["repetitions"] == repeats == len(entry["values"]), name
    assert all(np.isfinite(v) for v in entry["values"]), name
    lo, hi = entry["range"]
    assert lo <= entry["median"] <= hi and lo == min(entry["values"]) and hi == max(entry["values"]), name
    if not name.endswith(("_excess_ms", "_excess_ms_start_of_run")):  # an excess can be negative
        assert lo > 0, name
    if entry["target"]:
        assert entry["met"] in (True, False), name


def test_the_whole_bench_repeats_every_level_and_reports_medians_and_ranges(tiny_pack, tmp_path):
    _, store = tiny_pack
    results = main(["--model-store", str(store), "--pack", "tiny", "--quick", "--repeats", "3",
                    "--skip", "torchserve", "--work", str(tmp_path / "work"), "--out", str(tmp_path / "r.json"),
                    "--plot", str(tmp_path / "r.png")])
    assert "errors" not in results and "interrupted" not in results
    assert results["settings"]["repeats"] == 3 and results["settings"]["quick"]
    for key in ("generator_service_onnx", "gateway_lean_edits", "gateway_full_edits"):
        rows = results[key]
        assert [r["concurrency"] for r in rows] == [1, 8, 32, 64], key
        for row in rows:
            assert row["repeats"] == 3 and [r["repetition"] for r in row["repetitions"]] == [0, 1, 2], key
            assert not row["errors"] and row["throughput"] > 0, key
            lo, hi = row["throughput_range"]
            assert 0 < lo <= row["throughput"] <= hi, key
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
        _check_entry(name, results["ratios"][name], 3)
    for name, entry in results["ratios"].items():
        if not name.startswith("torchserve"):
            _check_entry(name, entry, 3)
    assert results["ratios"]["torchserve_c64_over_raw_b64"]["median"] is None  # skipped: unknown
    loaded = json.loads((tmp_path / "r.json").read_text())
    assert loaded["ratios"]["service_c64_over_raw_b64"]["values"] == results["ratios"]["service_c64_over_raw_b64"][
        "values"]
    assert "n=3" in report.table(loaded)


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
                    "--concurrency", "1,8,64", "--batches", "1,64", "--skip", "torchserve",
                    "--work", str(tmp_path / "work"), "--out", str(tmp_path / "r.json"),
                    "--plot", str(tmp_path / "r.png")])
    assert "errors" not in results and "encoder" in results["generator_only"]
    assert results["flops"]["generator_per_image"] == 737280 and results["flops"]["edit_per_request"] is None
    assert [r["concurrency"] for r in results["generator_service_onnx"]] == [1, 8, 64]
    assert all(r["throughput"] > 0 and not r["errors"] and r["per_cpu_s"] > 0 and r["repeats"] == 2
               for r in results["generator_service_onnx"])
    assert all(r["images_per_cpu_s"] > 0 for r in results["raw_ort_generator"])
    assert not any(k.startswith(("inprocess_", "gateway_")) for k in results)
    for name in ("service_c64_over_raw_b64", "service_p99_over_p50_c8", "service_c1_excess_ms"):
        _check_entry(name, results["ratios"][name], 2)
    assert all(r["rpc_round_trip_ms"] > 0 for r in results["references"]["generator"][0]["repetitions"])
    assert results["ratios"]["gateway_lean_c32_over_peer"]["median"] is None
    assert results["settings"]["service_flags"]["spinning"] == 0
