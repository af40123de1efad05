"""Small model builders for the kernel / runtime tests and bench (not the graph pass: that is
hyperonnx.compress's job; these build compressed models directly from encode + make_node)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import hyperonnx
from hyperonnx import format as fmt

ONNX_OPSET = 17
# IR version of the tests' models: onnx's make_model writes its own newest (onnx 1.23: 14), newer
# than onnxruntime reads before 1.2x; 10 loads under every onnxruntime >= 1.21 with any onnx.
IR_VERSION = 10


def make_model(graph: onnx.GraphProto, **kwargs) -> onnx.ModelProto:
    """helper.make_model at IR_VERSION."""
    return helper.make_model(graph, ir_version=IR_VERSION, **kwargs)


def opsets():
    return [helper.make_opsetid("", ONNX_OPSET), helper.make_opsetid(fmt.OP_DOMAIN, fmt.OP_VERSION)]


def add_seed(seed: hyperonnx.Seed, name: str, nodes: list, inits: list) -> None:
    """The initializers (seed, and scales for the lattice codec) and the DecodeWeights node of `name`."""
    scales_name = None
    if seed.scales is not None:
        scales_name = f"{name}.scales"
        inits.append(numpy_helper.from_array(np.asarray(seed.scales, np.float16), scales_name))
    nodes.append(fmt.make_node(seed, f"{name}.seed", name, scales_name))
    inits.append(numpy_helper.from_array(np.asarray(seed.payload, np.uint8), f"{name}.seed"))


def decode_model(seeds: dict[str, hyperonnx.Seed], version: int = fmt.OP_VERSION) -> onnx.ModelProto:
    """A model of only DecodeWeights nodes: no inputs, one output per seed."""
    nodes, inits, outputs = [], [], []
    for name, seed in seeds.items():
        add_seed(seed, name, nodes, inits)
        outputs.append(helper.make_tensor_value_info(name, seed.dtype, list(seed.shape)))
    graph = helper.make_graph(nodes, "decode", [], outputs, inits)
    return make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET),
                                            helper.make_opsetid(fmt.OP_DOMAIN, version)])


def mlp_weights(sizes=(64, 256, 256, 10), seed=0, dtype=np.float32) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    weights = {}
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        weights[f"W{i}"] = (rng.standard_normal((a, b)) / np.sqrt(a)).astype(dtype)
        weights[f"b{i}"] = (0.01 * rng.standard_normal(b)).astype(dtype)
    return weights


def mlp_model(weights: dict[str, np.ndarray], config="paper", compress: bool = False,
              min_elements: int = 1024) -> onnx.ModelProto:
    """x[batch, in] -> (MatMul, Add, Relu)* -> y. With compress=True, every weight that encodes
    (not raw) becomes a seed + a DecodeWeights node placed just before its first consumer."""
    layers = len([k for k in weights if k.startswith("W")])
    dtype = helper.np_dtype_to_tensor_dtype(weights["W0"].dtype)
    nodes, inits = [], []

    def weight(name):
        array = weights[name]
        if compress:
            seed = hyperonnx.encode(array, config, min_elements=min_elements)
            if seed.codec != "raw":
                add_seed(seed, name, nodes, inits)
                return
        inits.append(numpy_helper.from_array(array, name))

    value = "x"
    for i in range(layers):
        weight(f"W{i}")
        nodes.append(helper.make_node("MatMul", [value, f"W{i}"], [f"h{i}"]))
        weight(f"b{i}")
        nodes.append(helper.make_node("Add", [f"h{i}", f"b{i}"], [f"a{i}"]))
        value = f"a{i}"
        if i < layers - 1:
            nodes.append(helper.make_node("Relu", [value], [f"r{i}"]))
            value = f"r{i}"
    n_in, n_out = weights["W0"].shape[0], weights[f"W{layers - 1}"].shape[1]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", dtype, ["batch", n_in])],
                              [helper.make_tensor_value_info(value, dtype, ["batch", n_out])], inits)
    graph.output[0].name = value
    model = make_model(graph, opset_imports=opsets() if compress else opsets()[:1])
    return model


def decoded_weights(weights: dict[str, np.ndarray], config="paper", min_elements: int = 1024):
    """The weights a compressed mlp_model computes with (reference decoder)."""
    return {k: hyperonnx.decode(hyperonnx.encode(v, config, min_elements=min_elements)) for k, v in weights.items()}
