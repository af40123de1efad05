"""Models of one fused operator (docs/FORMAT.md §8) and their references (DecodeWeights' output as
a plain initializer + the standard op, in onnxruntime), for the fused-kernel tests and fuzzer."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import hyperonnx
from hyperonnx import format as fmt
from hyperonnx.codec import lattice, trellis
from runtime_models import ONNX_OPSET, make_model

FLOAT32_EPS = 2.0 ** -23


def fused_model(op: str, seed: hyperonnx.Seed, x_shape, attrs: dict | None = None, extra: np.ndarray | None = None,
                x_type: int = TensorProto.FLOAT, seed_name: str = "w.seed", accuracy_level: int | None = None):
    """Input "x" -> ai.hyperonnx.<op>(x, seed, scales | "", [extra]) -> "y" (`attrs`: the standard
    op's, prefixed op_; `accuracy_level`: the operator's own, when given)."""
    inits = [numpy_helper.from_array(np.asarray(seed.payload, np.uint8), seed_name)]
    inputs = ["x", seed_name, ""]
    if seed.scales is not None:
        inits.append(numpy_helper.from_array(np.asarray(seed.scales, np.float16), "w.scales"))
        inputs[2] = "w.scales"
    if extra is not None:
        inits.append(numpy_helper.from_array(extra, "extra"))
        inputs.append("extra")
    while inputs[-1] == "":
        inputs.pop()
    node = helper.make_node(op, inputs, ["y"], domain=fmt.OP_DOMAIN, name="fused")
    values = seed.node_attributes()
    for name, kind in fmt.attribute_types(seed.codec).items():
        node.attribute.append(helper.make_attribute(name, values[name], attr_type=kind))
    for name, value in (attrs or {}).items():
        node.attribute.append(helper.make_attribute(fmt.FUSED_ATTRIBUTE_PREFIX + name, value))
    if accuracy_level is not None:
        node.attribute.append(helper.make_attribute(fmt.ACCURACY_LEVEL, accuracy_level))
    graph = helper.make_graph([node], "fused", [helper.make_tensor_value_info("x", x_type, list(x_shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET),
                                            helper.make_opsetid(fmt.OP_DOMAIN, fmt.FUSED_VERSION)])


def stock_model(op: str, weight: np.ndarray, x_shape, attrs: dict | None = None, extra: np.ndarray | None = None,
                x_type: int = TensorProto.FLOAT):
    """The same computation with the standard op and `weight` as a plain initializer."""
    standard, position = fmt.FUSED_OPS[op]
    inputs = ["x"]
    inputs.insert(position, "w")
    inits = [numpy_helper.from_array(weight, "w")]
    if extra is not None:
        inits.append(numpy_helper.from_array(extra, "extra"))
        inputs.append("extra")
    node = helper.make_node(standard, inputs, ["y"], **(attrs or {}))
    graph = helper.make_graph([node], "stock", [helper.make_tensor_value_info("x", x_type, list(x_shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)])


def run(model, x, threads: int = 0, library: bool = True, packing: str | None = None):
    """The model's output on x; `packing`: the fused kernels' hyperonnx.packing entry (None: absent)."""
    so = ort.SessionOptions()
    if packing is not None:
        so.add_session_config_entry("hyperonnx.packing", packing)
    if library:
        so.register_custom_ops_library(hyperonnx.get_library_path())
    so.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def reference(op: str, seed: hyperonnx.Seed, x, attrs=None, extra=None):
    """(output, bound): DecodeWeights' weight + the standard op, and the float32 summation error
    bound K * eps * (|x| op |W|) (plus |extra|'s share) that a fused output must stay within."""
    weight = hyperonnx.decode(seed)
    x_type = TensorProto.FLOAT if x.dtype == np.float32 else TensorProto.INT64
    out = run(stock_model(op, weight, x.shape, attrs, extra, x_type), x, library=False)
    if op == "DecodeGather":
        return out, np.zeros_like(out)
    magnitude = run(stock_model(op, np.abs(weight), x.shape, attrs, None if extra is None else np.abs(extra), x_type),
                    np.abs(x), library=False)
    depth = {"DecodeMatMul": weight.shape[0], "DecodeGemm": max(weight.shape),
             "DecodeConv": int(np.prod(weight.shape[1:]))}[op]
    return out, (depth + 2) * FLOAT32_EPS * magnitude + 1e-30


INT8_BLOCK = 32  # docs/FORMAT.md §8.2: activations rounded to int8 in aligned blocks of (at most) 32


def int8_bound(op: str, seed: hyperonnx.Seed, x, attrs=None, extra=None):
    """(output, bound) for accuracy_level 4 (docs/FORMAT.md §8.2): DecodeWeights' weight + the
    standard op, and (V/127) * sum_k a_k * s_k (a_k, s_k: the largest |x_j| and group scale S_j
    over k's aligned 32-block and the output's column) plus the float32 summation bound on
    |x| op |W| and on that."""
    out, float_bound = reference(op, seed, x, attrs, extra)
    values = seed.node_attributes()
    if seed.codec == fmt.CODEC_TRELLIS:
        v = trellis.values(values["window"])
    else:
        v = lattice._trajectory(values["bits"], values["alpha"], values["beta"]).table
    unit = float(np.abs(v).max()) / 127
    scales = lattice.decode_scales(np.asarray(seed.scales, np.float16), values["scale_unit"]).astype(np.float64)
    per_element = np.repeat(scales, values["group"])[:int(np.prod(seed.shape))].reshape(seed.shape)
    trans = bool((attrs or {}).get("transB", 0))
    s = per_element.T if trans else per_element  # [K, N]
    depth = s.shape[0]
    rows = np.abs(np.asarray(x, np.float64)).reshape(-1, depth)
    blocks = -(-depth // INT8_BLOCK)
    padded = blocks * INT8_BLOCK
    a = np.pad(rows, ((0, 0), (0, padded - depth))).reshape(len(rows), blocks, INT8_BLOCK).max(axis=2)
    sb = np.pad(s, ((0, padded - depth), (0, 0))).reshape(blocks, INT8_BLOCK, -1).max(axis=1)
    counts = np.minimum(INT8_BLOCK, depth - INT8_BLOCK * np.arange(blocks))
    b8 = unit * (a * counts) @ sb * abs((attrs or {}).get("alpha", 1.0))
    b8 = b8.reshape(out.shape)
    return out, float_bound + b8 * (1 + (depth + 2) * FLOAT32_EPS) + 1e-30
