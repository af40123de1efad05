"""decompress --to int8 / int4 (graph/decompress.py): the standard-ops form of a compressed model.

What it ensures, checked in stock onnxruntime without the library: no ai.hyperonnx node, function
or opset import left; MatMul / Gemm / Conv weights and Gather tables as blocked DequantizeLinear
initializers (opset 21) computed from the decoded weights, every other tensor float; outputs close
to the compressed model's; onnxruntime fuses DequantizeLinear -> MatMul into MatMulNBits."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import hyperonnx
from hyperonnx import format as fmt
from hyperonnx.cli import main
from hyperonnx.graph.decompress import quantize_blocks
from hyperonnx.graph.walk import scopes

from graph_models import nested, zoo


def feeds():
    rng = np.random.default_rng(1)
    return {"x": rng.standard_normal((4, 64)).astype(np.float32), "ids": np.array([0, 299, 7, 150]),
            "img": rng.standard_normal((1, 8, 6, 6)).astype(np.float32)}


def stock(model: onnx.ModelProto, optimized: str | None = None):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if optimized:
        so.optimized_model_filepath = optimized
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def assert_standard(model: onnx.ModelProto) -> None:
    assert not any(n.domain == fmt.OP_DOMAIN for s in scopes(model) for n in s.graph.node)
    assert not model.functions
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 21)]
    onnx.checker.check_model(model, full_check=True)


@pytest.fixture(scope="module")
def compressed():
    return hyperonnx.compress(zoo(), "lattice", min_elements=64)


@pytest.mark.parametrize("to, min_cos", [("int8", 0.9999), ("int4", 0.99)])
def test_standard_form_runs_in_stock_onnxruntime(compressed, to, min_cos):
    model = hyperonnx.decompress(compressed, to=to)
    assert_standard(model)
    inits = {t.name: t for t in model.graph.initializer}
    dq = {n.output[0]: n for n in model.graph.node if n.op_type == "DequantizeLinear"}
    qtype = TensorProto.INT8 if to == "int8" else TensorProto.INT4
    # MatMul / Gemm weights [K, N] in blocks of 32 along K (the Gemm's transposed: transB=0)
    for name, k in (("W1", 64), ("W2", 96)):
        node = dq[name]
        assert inits[node.input[0]].data_type == qtype and list(inits[node.input[0]].dims)[0] == k
        assert list(inits[node.input[1]].dims) == [-(-k // 32), list(inits[node.input[0]].dims)[1]]
        assert {a.name: helper.get_attribute_value(a) for a in node.attribute} == {"axis": 0, "block_size": 32}
    gemm = next(n for n in model.graph.node if n.op_type == "Gemm")
    assert helper.get_attribute_value(next(a for a in gemm.attribute if a.name == "transB")) == 0
    # Conv: 8 input channels -> per output channel; 32 -> blocks along the channels
    assert {a.name: helper.get_attribute_value(a) for a in dq["C1"].attribute} == {"axis": 0}
    assert {a.name: helper.get_attribute_value(a) for a in dq["C2"].attribute} == {"axis": 1, "block_size": 32}
    # the table: rows gathered as int8 with their scales, then dequantized (no float table)
    assert "E" not in inits and "E" not in dq
    gathers = [n for n in model.graph.node if n.op_type == "Gather"]
    assert len(gathers) == 2 and inits[gathers[0].input[0]].data_type == TensorProto.INT8
    assert dq["e"].input == [gathers[0].output[0], gathers[1].output[0]]
    # the rest stays float, as the compressed model has it
    assert inits["b1"].data_type == TensorProto.FLOAT and inits["B"].data_type == TensorProto.FLOAT
    want = hyperonnx.InferenceSession(compressed, mode="load").run(None, feeds())
    got = stock(model).run(None, feeds())
    for a, b in zip(got, want):
        assert cosine(a, b) >= min_cos


def test_weights_are_the_decoded_weights_requantized(compressed):
    plain = {t.name: numpy_helper.to_array(t) for t in hyperonnx.decompress(compressed).graph.initializer}
    for to, bits in (("int8", 8), ("int4", 4)):
        model = hyperonnx.decompress(compressed, to=to)
        inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        node = next(n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.output[0] == "W2")
        q, scale = inits[node.input[0]].astype(np.float32), inits[node.input[1]]
        w = q * np.repeat(scale, 32, axis=0)[:q.shape[0]]
        error = np.sqrt(np.mean((w - plain["W2"]) ** 2) / np.mean(plain["W2"] ** 2))
        assert error < (0.01 if bits == 8 else 0.12), (to, error)


@pytest.mark.parametrize("to", ["int8", "int4"])
def test_onnxruntime_fuses_the_matmul_weights(tmp_path, to):
    """A transformer's MatMul weights (3-D activations): every DequantizeLinear -> MatMul becomes
    MatMulNBits. (onnxruntime 1.32 leaves some unfused, correct but slower: a MatMul followed by
    Relu, and 2-D activations meeting its MatMul + Add -> Gemm and Gemm + Relu fusions first.)"""
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "Wa"], ["h"]), helper.make_node("Tanh", ["h"], ["r"]),
         helper.make_node("MatMul", ["r", "Wb"], ["y"])], "mlp3d",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 32])],
        [numpy_helper.from_array((rng.standard_normal((64, 96)) * 0.2).astype(np.float32), "Wa"),
         numpy_helper.from_array((rng.standard_normal((96, 32)) * 0.2).astype(np.float32), "Wb")])
    compressed = hyperonnx.compress(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)],
                                                      ir_version=8), "lattice", min_elements=64)
    optimized = tmp_path / "optimized.onnx"
    model = hyperonnx.decompress(compressed, to=to)
    stock(model, str(optimized))
    ops = [n.op_type for n in onnx.load(str(optimized)).graph.node]
    assert ops.count("MatMulNBits") == 2 and "DequantizeLinear" not in ops, ops
    x = {"x": rng.standard_normal((1, 8, 64)).astype(np.float32)}
    want = hyperonnx.InferenceSession(compressed, mode="load").run(None, x)[0]
    assert cosine(stock(model).run(None, x)[0], want) >= (0.999 if to == "int8" else 0.98)


def test_quantize_blocks():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((70, 5)).astype(np.float32)
    q, s = quantize_blocks(w, 0, 32, 8)
    assert q.dtype == np.int8 and q.shape == w.shape and s.shape == (3, 5) and np.abs(q).max() == 127
    assert np.abs(q * np.repeat(s, 32, axis=0)[:70] - w).max() <= s.max() / 2 + 1e-7
    q4, s4 = quantize_blocks(w, 1, 2, 4)
    assert s4.shape == (70, 3) and q4.min() >= -8 and q4.max() <= 7 and (s4 > 0).all()
    assert np.array_equal(quantize_blocks(np.zeros((4, 4), np.float32), 0, 2, 4)[0], np.zeros((4, 4), np.int8))


def test_opset_upgrade_bumps_or_converts():
    for reduce_mean, opset in ((False, 13), (True, 13), (False, 18)):
        compressed = hyperonnx.compress(zoo(opset, reduce_mean), "lattice", min_elements=64)
        model = hyperonnx.decompress(compressed, to="int8")
        assert_standard(model)
        if reduce_mean and opset < 18:  # converted: axes became an input
            reduce = next(n for n in model.graph.node if n.op_type == "ReduceMean")
            assert len(reduce.input) == 2 and "axes" not in [a.name for a in reduce.attribute]
        want = hyperonnx.InferenceSession(compressed, mode="load").run(None, feeds())
        for a, b in zip(stock(model).run(None, feeds()), want):
            assert cosine(a, b) >= 0.9999


def test_subgraphs_and_shared_weights():
    """Weights in If / Loop bodies, a weight read by a subgraph from outside (stays float)."""
    compressed = hyperonnx.compress(nested(), "lattice", min_elements=64)
    model = hyperonnx.decompress(compressed, to="int8")
    assert_standard(model)
    x = np.random.default_rng(0).standard_normal((2, 32)).astype(np.float32)
    library = hyperonnx.InferenceSession(compressed, mode="load")
    for flag in (True, False):
        feed = {"x": x, "flag": np.array(flag)}
        assert cosine(stock(model).run(None, feed)[0], library.run(None, feed)[0]) >= 0.999
    assert "W" in {t.name for t in model.graph.initializer}  # read inside the else branch too


def test_cli(tmp_path, compressed, capsys):
    source = tmp_path / "m.hc.onnx"
    hyperonnx.save(compressed, str(source))
    assert main(["decompress", str(source), "--to", "int8"]) == 0
    assert_standard(onnx.load(str(tmp_path / "m.hc.int8.onnx")))
    out = tmp_path / "four.onnx"
    assert main(["decompress", str(source), "--to", "int4", "-o", str(out), "-q"]) == 0
    model = onnx.load(str(out))
    assert_standard(model)
    assert any(t.data_type == TensorProto.INT4 for t in model.graph.initializer)
    assert main(["decompress", str(source), "--to", "int2"]) == 2
    assert "invalid choice" in capsys.readouterr().err
    assert main(["decompress", str(source), "--to", "int8", "--block-size", "1"]) == 2
