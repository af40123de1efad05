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
