"""Small synthetic models for the graph-pass tests: initializers, Constant-node weights, nested
If/Loop bodies, shared tensors."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def weights(rng, *shape, scale=0.3, dtype=np.float32):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def mlp(seed=0, opset=17, dtype=np.float32) -> onnx.ModelProto:
    """x[b,64] -> MatMul W1 -> Relu -> MatMul W2 (+ bias, a small int shape tensor)."""
    rng = np.random.default_rng(seed)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h"]), helper.make_node("Relu", ["h"], ["hr"]),
             helper.make_node("MatMul", ["hr", "W2"], ["y0"]), helper.make_node("Add", ["y0", "b2"], ["y1"]),
             helper.make_node("Reshape", ["y1", "shape"], ["y"])]
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", elem, ["batch", 64])],
        [helper.make_tensor_value_info("y", elem, ["batch", 32])],
        [numpy_helper.from_array(weights(rng, 64, 128, dtype=dtype), "W1"),
         numpy_helper.from_array(weights(rng, 128, 32, dtype=dtype), "W2"),
         numpy_helper.from_array(weights(rng, 32, dtype=dtype), "b2"),
         numpy_helper.from_array(np.array([-1, 32], np.int64), "shape")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def nested(seed=0) -> onnx.ModelProto:
    """Weights everywhere exporters put them: a main-graph initializer shared by two MatMuls, a
    second initializer with the same bytes, a Constant-node weight, an If whose then-branch holds a
    Constant weight and whose else-branch holds a Loop whose body holds an initializer weight."""
    rng = np.random.default_rng(seed)
    # scale 0.15: each 32x32 layer has gain < 1, so the 3-trip Loop does not amplify errors
    W = weights(rng, 32, 32, scale=0.15)
    Wc = weights(rng, 32, 32, scale=0.15)
    Wthen = weights(rng, 32, 32, scale=0.15)
    Wloop = weights(rng, 32, 32, scale=0.15)
    loop_body = helper.make_graph(
        [helper.make_node("MatMul", ["acc_in", "Wloop"], ["mm"]), helper.make_node("Tanh", ["mm"], ["acc_out"]),
         helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "loop_body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(Wloop, "Wloop")])
    else_branch = helper.make_graph(
        [helper.make_node("Loop", ["trips", "", "z"], ["looped"], body=loop_body),
         helper.make_node("MatMul", ["looped", "W"], ["o_else"])],  # outer-scope weight
        "else_branch", [], [helper.make_tensor_value_info("o_else", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array(3, np.int64), "trips")])
    then_branch = helper.make_graph(
        [helper.make_node("Constant", [], ["Wthen"], value=numpy_helper.from_array(Wthen, "Wthen")),
         helper.make_node("MatMul", ["z", "Wthen"], ["o_then"])],
        "then_branch", [], [helper.make_tensor_value_info("o_then", TensorProto.FLOAT, None)])
    nodes = [helper.make_node("MatMul", ["x", "W"], ["a"]), helper.make_node("Tanh", ["a"], ["at"]),
             helper.make_node("MatMul", ["at", "W_copy"], ["b"]),
             helper.make_node("Constant", [], ["Wc"], value=numpy_helper.from_array(Wc, "Wc")),
             helper.make_node("MatMul", ["b", "Wc"], ["c"]), helper.make_node("MatMul", ["c", "W"], ["z"]),
             helper.make_node("If", ["flag"], ["y"], then_branch=then_branch, else_branch=else_branch)]
    graph = helper.make_graph(
        nodes, "nested",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 32]),
         helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 32])],
        [numpy_helper.from_array(W, "W"), numpy_helper.from_array(W.copy(), "W_copy")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def zoo(opset: int = 17, reduce_mean: bool = False) -> onnx.ModelProto:
    """Every reader the form quantizes: Gemm (transB=1, with bias), MatMul, Gather (a table whose
    rows are summed in), Conv (8 input channels: per output channel; 32: blocked), and a weight
    read by an Add (stays float)."""
    rng = np.random.default_rng(0)
    w = lambda *shape: (rng.standard_normal(shape) * 0.2).astype(np.float32)  # noqa: E731
    inits = {"W1": w(96, 64), "b1": w(96), "W2": w(96, 40), "E": w(300, 40), "B": w(4, 40),
             "C1": w(16, 8, 3, 3), "C2": w(8, 32, 1, 1)}
    nodes = [helper.make_node("Gemm", ["x", "W1", "b1"], ["h1"], transB=1),
             helper.make_node("Relu", ["h1"], ["r1"]),
             helper.make_node("MatMul", ["r1", "W2"], ["h2"]),
             helper.make_node("Gather", ["E", "ids"], ["e"]),
             helper.make_node("Add", ["h2", "e"], ["h3"]),
             helper.make_node("Add", ["h3", "B"], ["y"]),
             helper.make_node("Conv", ["img", "C1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["c1r"]),
             helper.make_node("Concat", ["c1r", "c1r"], ["c1c"], axis=1),
             helper.make_node("Conv", ["c1c", "C2"], ["z0"])]
    if reduce_mean:  # an operator whose meaning changed since (axes attribute -> input at 18)
        nodes.append(helper.make_node("ReduceMean", ["z0"], ["z"], axes=[1], keepdims=1))
    else:
        nodes.append(helper.make_node("Identity", ["z0"], ["z"]))
    graph = helper.make_graph(
        nodes, "zoo",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 64]),
         helper.make_tensor_value_info("ids", TensorProto.INT64, [4]),
         helper.make_tensor_value_info("img", TensorProto.FLOAT, [1, 8, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 40]),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, None, 6, 6])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model
