"""function.py: the standard-ops DecodeWeights function decodes exactly what the reference decoder
decodes (FORMAT.md §3-4), for every bit width, dtype and opset path, in onnxruntime without the
hyperonnx library, and passes the full ONNX checker."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import hyperonnx
from hyperonnx import format as fmt
from hyperonnx.graph.function import build_function

ort = pytest.importorskip("onnxruntime")


def run_function(seeds: dict, opset: int):
    """Decode seeds through the function body alone (no library registered)."""
    nodes, inits, outputs = [], [], []
    for name, seed in seeds.items():
        nodes.append(fmt.make_node(seed, f"{name}.seed", f"{name}.w"))
        inits.append(numpy_helper.from_array(seed.payload, f"{name}.seed"))
        # bfloat16 has no numpy type in onnxruntime's Python API: compare it as float32 (exact)
        out_type = TensorProto.FLOAT if seed.dtype == TensorProto.BFLOAT16 else seed.dtype
        nodes.append(helper.make_node("Cast", [f"{name}.w"], [name], to=out_type))
        outputs.append(helper.make_tensor_value_info(name, out_type, list(seed.shape)))
    graph = helper.make_graph(nodes, "decode", [], outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset),
                                                    helper.make_opsetid(fmt.OP_DOMAIN, fmt.OP_VERSION)],
                              functions=[build_function(opset)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip(seeds, sess.run(list(seeds), {})))


def reference(seed):
    out = hyperonnx.decode(seed)
    return out.astype(np.float32) if seed.dtype == TensorProto.BFLOAT16 else out


def assert_same_bits(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert np.array_equal(a.view(np.uint8), b.view(np.uint8))


@pytest.mark.parametrize("opset", [13, 17, 18, 21])
def test_encoded_tensors_every_dtype(opset):
    rng = np.random.default_rng(opset)
    seeds = {}
    for i, (shape, dtype, preset) in enumerate([
            ((37,), np.float32, "paper"), ((64, 33), np.float16, "paper"), ((5, 7, 9), np.float32, "paper-unet"),
            ((128,), "bfloat16", "paper"), ((3, 3, 16, 8), np.float32, "paper")]):
        seed = hyperonnx.encode((rng.standard_normal(shape) * 0.5).astype(dtype), preset, min_elements=1)
        assert seed.codec == "winding"
        seeds[f"t{i}"] = seed
    out = run_function(seeds, opset)
    for name, seed in seeds.items():
        assert_same_bits(out[name], reference(seed))


@pytest.mark.parametrize("opset", [17, 18])
def test_every_bit_width_and_random_indices(opset):
    """Hand-made seeds: every b in 1..24, random valid indices (so all codebook entries, the
    centroid and every ring occur), odd and even element counts, padding bits in the last byte."""
    rng = np.random.default_rng(1)
    seeds = {}
    for bits in range(1, fmt.MAX_BITS + 1):
        # a codebook that fits b bits (b may exceed what the indices need: FORMAT.md allows it);
        # kept below ~20k entries so the test stays fast
        entries_max = min(1 << bits, 20000)
        points = int(rng.integers(1, min(entries_max, 4000) + 1))
        rings = int(rng.integers(0, min(8, entries_max // (points + 1) - 1) + 1)) if entries_max // (points + 1) >= 1 else 0
        if (points + 1) * (rings + 1) > entries_max:
            points, rings = entries_max - 1, 0
        entries = (points + 1) * (rings + 1)
        count = int(rng.integers(1, 300))
        pairs = fmt.num_pairs(count)
        idx = rng.integers(0, entries, size=pairs)
        idx[0] = entries - 1  # the largest index: the last ring's centroid
        from hyperonnx.codec import bitpack
        payload = bitpack.pack(idx, bits)
        attrs = {"bits": bits, "points": points, "rings": rings,
                 "center": [float(np.float32(rng.normal())), float(np.float32(rng.normal()))],
                 "side": float(np.float32(rng.uniform(0.05, 2))),
                 "ring_scales": [float(np.float32(s)) for s in np.sort(rng.uniform(1, 4, rings))]}
        dtype = [TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16][bits % 3]
        seed = hyperonnx.Seed("winding", (count,), dtype, payload, attrs)
        fmt.validate(seed)
        seeds[f"b{bits}"] = seed
    out = run_function(seeds, opset)
    for name, seed in seeds.items():
        assert_same_bits(out[name], reference(seed))


def test_worked_example_of_format_md():
    seed = hyperonnx.Seed("winding", (3,), TensorProto.FLOAT, np.array([0x93], np.uint8),
                          {"bits": 4, "points": 4, "rings": 1, "center": [1.0, -1.0], "side": 2.0,
                           "ring_scales": [2.0]})
    out = run_function({"w": seed}, 18)["w"]
    assert out.tolist() == [1.5, -1.0, 1.0]


def test_out_of_range_index_is_an_error_not_garbage():
    seed = hyperonnx.Seed("winding", (2,), TensorProto.FLOAT, np.array([0x0F], np.uint8),
                          {"bits": 4, "points": 4, "rings": 0, "center": [0.0, 0.0], "side": 1.0,
                           "ring_scales": []})  # index 15 >= (4+1)*(0+1)
    with pytest.raises(Exception):
        run_function({"w": seed}, 18)


def test_refuses_old_opsets():
    with pytest.raises(ValueError):
        build_function(12)
