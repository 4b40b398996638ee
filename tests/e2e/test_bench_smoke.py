"""Smoke test of `make bench` (bench/): its in-process parts on the tiny pack with very short
durations, its load harness with a fake client, and its FLOP counter against hand counts.

Timings are never asserted: only that the figures exist, are positive and are shaped
as results.json promises, and that the FLOP counts equal the hand computations.
"""
from __future__ import annotations

import json

import grpc
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from bench import bench
from bench.flops import count_flops
from facedit_core import images


@pytest.fixture(scope="module")
def pngs(pack):
    return bench.face_pngs(pack, count=8)


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
    flops = bench.model_flops(pack)
    assert flops["generator_per_image"] == hand
    assert flops["generator_by_op"] == {"ConvTranspose": hand}
    assert flops["encoder_per_image"] > 0 and flops["classifier_per_image"] > 0
    assert flops["edit_per_request"] == flops["encoder_per_image"] + 2 * hand + 2 * flops["classifier_per_image"]
    assert flops["lean_edit_per_request"] == flops["peer_edit"] == flops["encoder_per_image"] + hand


def test_in_process_editor_edits_pngs(pack, pngs):
    editor = bench.InProcessEditor(pack)
    edited, scores = editor.edit(pngs[:3])
    assert len(edited) == 3
    for png in edited:
        assert images.decode(png).shape == (pack.resolution, pack.resolution, 3)
    assert scores.shape == (6, len(pack.attributes))  # before and after, for each face
    assert np.all((scores >= 0) & (scores <= 1))
    assert np.abs(bench.edit_delta(pack)).sum() > 0
    # the lean edit (the gateway's skip_scores) renders the same edited faces, without scores
    lean, none = editor.edit(pngs[:3], scores=False)
    assert none is None
    for a, b in zip(lean, edited):
        assert np.abs(images.decode(a).astype(int) - images.decode(b).astype(int)).max() <= 1


def test_offline_parts_and_results_file(pack, pngs, tmp_path):
    results = {"machine": bench.machine_info(), "pack": bench.pack_info(pack)}
    results.update(bench.offline_parts(pack, pngs, seconds=0.02, batches=(1, 8), inprocess_batches=(1, 4),
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

    cpu = bench.other_load(bench._cpu_snapshot())
    assert set(cpu) == {"seconds", "machine_busy_cores", "this_run_cores", "other_processes_cores"}
    assert cpu["other_processes_cores"] >= 0

    bench.add_gflops(results)
    assert all(r["gflops"] > 0 for r in raw + inproc)
    results["ratios"] = bench.ratios(results)
    assert set(bench.TARGETS) <= set(results["ratios"])
    # no services ran: their ratios are reported as unknown, not as a pass or a failure
    assert results["ratios"]["service_c64_over_raw_b64"] == {
        "value": None, "target": ">= 0.8", "met": None,
        "how": results["ratios"]["service_c64_over_raw_b64"]["how"]}
    text = bench.table(results)
    assert "raw ORT generator" in text and "peer eager PyTorch" in text
    path = bench.write_results(results, tmp_path / "results.json")
    loaded = json.loads(path.read_text())
    assert loaded["flops"]["generator_per_image"] == 737280
    assert loaded["raw_ort_generator"][1]["batch"] == 8
    png = bench.plot(results, tmp_path / "results.png")
    if png is not None:  # matplotlib is the optional `bench` extra
        assert png.read_bytes().startswith(b"\x89PNG")


class _Unavailable(grpc.RpcError):
    def code(self):
        return grpc.StatusCode.UNAVAILABLE


def test_load_harness_counts_requests_and_errors():
    closed = []

    def make(k: int) -> bench.Client:
        def call(i: int):
            if i >= 0 and i % 5 == 4:
                raise _Unavailable()
            return 2

        return bench.Client(call, lambda: closed.append(k))

    # the request cap (50) ends the run long before the time limit: requests 0..49, every fifth fails
    r = bench.run_load(make, concurrency=4, seconds=30, max_requests=50)
    assert sorted(closed) == [0, 1, 2, 3]
    assert r["requests"] == 40 and r["errors"] == {"UNAVAILABLE": 10}
    assert r["throughput"] > 0 and r["mean_batch"] == 2.0
    assert 0 < r["latency_ms_p50"] <= r["latency_ms_p99"]


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
    results = bench.main(["--model-store", str(tmp_path / "store"), "--pack", "genonly", "--seconds", "0.05",
                          "--concurrency", "1,2", "--batches", "1,2", "--skip", "torchserve",
                          "--work", str(tmp_path / "work"), "--out", str(tmp_path / "r.json"),
                          "--plot", str(tmp_path / "r.png")])
    assert "errors" not in results and "encoder" in results["generator_only"]
    assert results["flops"]["generator_per_image"] == 737280 and results["flops"]["edit_per_request"] is None
    assert [r["concurrency"] for r in results["generator_service_onnx"]] == [1, 2]
    assert all(r["throughput"] > 0 and not r["errors"] and r["per_cpu_s"] > 0 for r in results["generator_service_onnx"])
    assert all(r["images_per_cpu_s"] > 0 for r in results["raw_ort_generator"])
    assert not any(k.startswith(("inprocess_", "gateway_")) for k in results)
    assert results["ratios"]["service_c1_excess_ms"]["value"] is not None
    # the c1 excess is taken against references measured right before and after the c1 level
    bracket = results["c1_references"]["generator"]
    assert all(bracket[k]["reference_p50_ms"] > 0 and bracket[k]["rpc_round_trip_ms"] > 0 for k in ("before", "after"))
    assert "right before and after" in results["ratios"]["service_c1_excess_ms"]["how"]
    assert results["ratios"]["service_c1_excess_ms_start_of_run"]["value"] is not None
    # the ceiling measured again next to the service's load, under the same machine load
    assert results["raw_ort_adjacent"]["batch"] == 2 and results["raw_ort_adjacent"]["images_per_s"] > 0
    assert results["ratios"]["gateway_lean_c32_over_peer"]["value"] is None
    assert results["settings"]["service_flags"]["spinning"] == 0
