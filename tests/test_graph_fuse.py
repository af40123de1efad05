"""The fusion pass (hyperonnx/graph/fuse.py, docs/FORMAT.md §8): which DecodeWeights become fused
operators and which stay; fused models pass the checker, run with the library (within the float32
summation bound of DecodeWeights + the standard op), run without it through the model-local
functions (bit for bit the decompressed model's outputs), decompress and inspect."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import hyperonnx
from hyperonnx import format as fmt
from hyperonnx.cli import main
from hyperonnx.graph.fuse import unfuse_model
import graph_models


def run(model, feeds, library=True):
    so = ort.SessionOptions()
    if library:
        so.register_custom_ops_library(hyperonnx.get_library_path())
    session = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def mixed(opset=17, seed=0):
    """ids -> Gather(E) -> MatMul(W) (W shared with a second MatMul) -> Gemm(G, transB, C) ...
    + Conv(K) on an image; V read by MatMul and Add (stays DecodeWeights); S in an If branch."""
    rng = np.random.default_rng(seed)
    w = {"E": rng.standard_normal((500, 64)), "W": rng.standard_normal((64, 64)) * 0.1,
         "G": rng.standard_normal((48, 64)) * 0.1, "C": rng.standard_normal(48),
         "K": rng.standard_normal((16, 4, 3, 3)) * 0.2, "D": rng.standard_normal((16, 1, 3, 3)) * 0.2,
         "V": rng.standard_normal((48, 48)) * 0.1}
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in w.items()]
    then = helper.make_graph([helper.make_node("MatMul", ["g", "S"], ["s_out"])], "then", [],
                             [helper.make_tensor_value_info("s_out", TensorProto.FLOAT, [48, 48])],
                             [numpy_helper.from_array((rng.standard_normal((48, 48)) * 0.1).astype(np.float32), "S")])
    other = helper.make_graph([helper.make_node("Identity", ["g"], ["o_out"])], "else", [],
                              [helper.make_tensor_value_info("o_out", TensorProto.FLOAT, [48, 48])])
    nodes = [
        helper.make_node("Gather", ["E", "ids"], ["e"]),
        helper.make_node("MatMul", ["e", "W"], ["h"]),
        helper.make_node("MatMul", ["h", "W"], ["h2"]),
        helper.make_node("Gemm", ["h2", "G", "C"], ["g"], transB=1, alpha=0.5),
        helper.make_node("MatMul", ["g", "V"], ["v"]),
        helper.make_node("Add", ["v", "V"], ["y"]),
        helper.make_node("If", ["flag"], ["z"], then_branch=then, else_branch=other),
        helper.make_node("Conv", ["img", "K"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["c1", "D"], ["c2"], group=16, strides=[2, 2]),
    ]
    graph = helper.make_graph(nodes, "mixed", [
        helper.make_tensor_value_info("ids", TensorProto.INT64, [48]),
        helper.make_tensor_value_info("flag", TensorProto.BOOL, []),
        helper.make_tensor_value_info("img", TensorProto.FLOAT, [1, 4, 9, 9])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape)
         for n, shape in (("y", [48, 48]), ("z", [48, 48]), ("c2", [1, 16, 4, 4]))], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def feeds():
    rng = np.random.default_rng(1)
    return {"ids": rng.integers(0, 500, 48), "flag": np.array(True),
            "img": rng.standard_normal((1, 4, 9, 9)).astype(np.float32)}


def ops(model):
    return sorted(n.op_type for n in model.graph.node)


@pytest.mark.parametrize("preset", ["lattice-4.25", "paper", "trellis"])
def test_fuses_what_only_a_fusable_op_reads(preset):
    model = hyperonnx.compress(mixed(), preset, min_elements=16)
    onnx.checker.check_model(model, full_check=True)
    # V (read by an Add too) stays DecodeWeights, and C (Gemm's bias, not its weight) where the
    # rate allocation compresses it
    kinds = ops(model)
    assert [k for k in kinds if k != "DecodeWeights"] == ["Add", "DecodeConv", "DecodeConv", "DecodeGather",
                                                          "DecodeGemm", "DecodeMatMul", "DecodeMatMul", "If", "MatMul"]
    assert "DecodeWeights" in kinds
    # the fused operators need version 3, trellis seeds 4
    assert next(o.version for o in model.opset_import if o.domain == fmt.OP_DOMAIN) == \
        max(fmt.FUSED_VERSION, fmt.CODEC_VERSION.get(preset.split("-")[0], 1))
    shared = [n for n in model.graph.node if n.op_type == "DecodeMatMul"]
    assert shared[0].input[1] == shared[1].input[1]  # the shared weight: one seed, two readers
    branch = next(a.g for n in model.graph.node if n.op_type == "If" for a in n.attribute if a.name == "then_branch")
    assert [n.op_type for n in branch.node] == ["DecodeMatMul"]  # S lives in the branch: fused there
    assert {f.name for f in model.functions} == {"DecodeWeights", *fmt.FUSED_OPS}
    gemm = next(n for n in model.graph.node if n.op_type == "DecodeGemm")
    assert {a.name: helper.get_attribute_value(a) for a in gemm.attribute if a.name.startswith("op_")} == \
        {"op_transB": 1, "op_alpha": 0.5}


@pytest.mark.parametrize("preset", ["lattice-4.25", "paper", "trellis"])
def test_fused_runs_with_and_without_the_library(preset):
    original = mixed()
    fused = hyperonnx.compress(original, preset, min_elements=16)
    plain = hyperonnx.compress(original, preset, min_elements=16, fuse=False)
    decompressed = hyperonnx.decompress(fused)
    assert not any(n.domain == fmt.OP_DOMAIN for n in decompressed.graph.node) and not decompressed.functions
    reference = run(decompressed, feeds(), library=False)
    # without the library: the functions compute DecodeWeights + the standard op (onnxruntime
    # may pick another Conv kernel for a folded weight than for an initializer: float rounding)
    for got, want in zip(run(fused, feeds(), library=False), reference):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * np.abs(want).max())
    # with it: the fused kernels, within float32 summation error of DecodeWeights + the op
    for got, want, unfused in zip(run(fused, feeds()), reference, run(plain, feeds())):
        np.testing.assert_allclose(got, unfused, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    for mode in ("load", "stream"):
        for got, want in zip(hyperonnx.InferenceSession(fused, mode=mode).run(None, feeds()), reference):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_winding_below_opset_17_still_gets_functions():
    model = hyperonnx.compress(mixed(opset=13), "paper", min_elements=16)
    assert "DecodeMatMul" in {f.name for f in model.functions}
    reference = run(hyperonnx.decompress(model), feeds(), library=False)
    for got, want in zip(run(model, feeds(), library=False), reference):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * np.abs(want).max())


def test_no_function_and_compress_twice():
    model = hyperonnx.compress(mixed(), min_elements=16, function_fallback=False)
    assert not model.functions and "DecodeMatMul" in ops(model)
    twice = hyperonnx.compress(model, min_elements=16)
    # seeds and scales of fused nodes are never weights (a weight the first pass kept exact may be
    # compressed by the second, which measures against the first's outputs)
    fused_ops = [op for op in ops(model) if op.startswith("Decode") and op != "DecodeWeights"]
    assert [op for op in ops(twice) if op in fused_ops] == fused_ops
    coded = {t.name for t in model.graph.initializer if t.name.endswith((".seed", ".scales"))}
    assert coded and coded <= {t.name for t in twice.graph.initializer}


def test_unfuse_restores_decode_weights():
    fused = hyperonnx.compress(mixed(), min_elements=16)
    plain = hyperonnx.compress(mixed(), min_elements=16, fuse=False)
    assert unfuse_model(fused) == 7
    assert ops(fused) == ops(plain)
    onnx.checker.check_model(fused, full_check=True)


def test_inspect_counts_each_seed_once():
    fused = hyperonnx.inspect_model(hyperonnx.compress(mixed(), min_elements=16))["totals"]
    plain = hyperonnx.inspect_model(hyperonnx.compress(mixed(), min_elements=16, fuse=False))["totals"]
    assert fused == plain


def test_external_data(tmp_path):
    path = tmp_path / "ext.onnx"
    onnx.save_model(mixed(), str(path), save_as_external_data=True, location="ext.weights", size_threshold=0)
    model = hyperonnx.compress(path, min_elements=16)
    out = hyperonnx.save(model, tmp_path / "out.onnx", external_data=True)
    for got, want in zip(run(hyperonnx.load(out), feeds()), run(model, feeds())):
        assert np.array_equal(got, want)


def test_cli_no_fuse(tmp_path):
    source = tmp_path / "m.onnx"
    onnx.save(mixed(), str(source))
    for flags, expected in (([], "DecodeMatMul"), (["--no-fuse"], "DecodeWeights")):
        out = tmp_path / f"out{len(flags)}.onnx"
        assert main(["compress", str(source), "-o", str(out), "--min-elements", "16", "-q", *flags]) == 0
        kinds = {n.op_type for n in onnx.load(str(out)).graph.node}
        assert expected in kinds and (flags == [] or not kinds & set(fmt.FUSED_OPS))


def test_int8_accuracy_level(tmp_path, capsys):
    """compress(accuracy_level=4) marks every fused MatMul / Gemm (subgraphs too); the functions
    accept it and compute in float32; the library computes in int8 (close to float32); a session
    can set or clear it; unfusing drops it; the CLI's --accuracy-level says so."""
    original = mixed()
    model, report = hyperonnx.compress(original, min_elements=16, accuracy_level=4, return_report=True)
    onnx.checker.check_model(model, full_check=True)
    assert report.accuracy_level == 4 and report.accuracy_nodes == 4  # 2 MatMul (shared W), Gemm, the branch's
    assert report.to_dict()["accuracy_level"] == 4
    float_model = hyperonnx.compress(original, min_elements=16)
    without = run(float_model, feeds(), library=False)
    for got, want in zip(run(model, feeds(), library=False), without):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * np.abs(want).max())
    int8, exact = run(model, feeds()), run(float_model, feeds())
    for got, want in zip(int8[:2], exact[:2]):  # y and z come through MatMul / Gemm, c2 through Conv only
        assert 0 < np.sqrt(np.mean((got - want) ** 2) / np.mean(want ** 2)) < 0.05
    assert np.array_equal(int8[2], exact[2])
    for got, want in zip(hyperonnx.InferenceSession(model, accuracy_level=0).run(None, feeds()), exact):
        assert np.array_equal(got, want)
    for got, want in zip(hyperonnx.InferenceSession(float_model, accuracy_level=4).run(None, feeds()), int8):
        assert np.array_equal(got, want)
    with pytest.raises(ValueError, match="accuracy_level"):
        hyperonnx.compress(original, min_elements=16, accuracy_level=3)
    with pytest.raises(ValueError, match="accuracy_level"):
        hyperonnx.InferenceSession(model, accuracy_level=2)
    assert unfuse_model(model) == 7
    onnx.checker.check_model(model, full_check=True)
    assert not any(a.name == fmt.ACCURACY_LEVEL for n in model.graph.node for a in n.attribute)
    source, out = tmp_path / "m.onnx", tmp_path / "out.onnx"
    onnx.save(original, str(source))
    assert main(["compress", str(source), "-o", str(out), "--min-elements", "16", "--accuracy-level", "4"]) == 0
    assert "int8 compute (accuracy_level 4) on 4 fused MatMul / Gemm node(s)" in capsys.readouterr().out
    gemm = next(n for n in onnx.load(str(out)).graph.node if n.op_type == "DecodeGemm")
    assert {a.name: helper.get_attribute_value(a) for a in gemm.attribute}[fmt.ACCURACY_LEVEL] == 4
