"""function.py: the standard-ops DecodeWeights function decodes exactly what the reference decoder
decodes (FORMAT.md §3-4 winding, §7 lattice, §9 trellis), for every bit width, dtype and opset path, in
onnxruntime without the hyperonnx library, and passes the full ONNX checker."""

import dataclasses

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import hyperonnx
from hyperonnx import format as fmt
from hyperonnx.codec import LatticeConfig, TrellisConfig, bitpack
from hyperonnx.format import Seed
from hyperonnx.graph.function import (LATTICE_MIN_OPSET, build_function, build_function_for, build_trellis_function,
                                      decodes, decodes_lattice)
from runtime_models import make_model

ort = pytest.importorskip("onnxruntime")


def decode_model(seeds: dict, opset: int) -> onnx.ModelProto:
    """A model whose outputs are the seeds' DecodeWeights outputs, with the function."""
    nodes, inits, outputs = [], [], []
    for name, seed in seeds.items():
        scales = None
        if seed.scales is not None:
            scales = f"{name}.scales"
            inits.append(numpy_helper.from_array(seed.scales, scales))
        nodes.append(fmt.make_node(seed, f"{name}.seed", f"{name}.w", scales))
        inits.append(numpy_helper.from_array(seed.payload, f"{name}.seed"))
        # bfloat16 has no numpy type in onnxruntime's Python API: compare it as float32 (exact)
        out_type = TensorProto.FLOAT if seed.dtype == TensorProto.BFLOAT16 else seed.dtype
        nodes.append(helper.make_node("Cast", [f"{name}.w"], [name], to=out_type))
        outputs.append(helper.make_tensor_value_info(name, out_type, list(seed.shape)))
    graph = helper.make_graph(nodes, "decode", [], outputs, inits)
    version = max(seed.version for seed in seeds.values())
    model = make_model(graph, opset_imports=[helper.make_opsetid("", opset),
                                             helper.make_opsetid(fmt.OP_DOMAIN, version)],
                       functions=[build_function(opset)])
    return model


def run_function(seeds: dict, opset: int, options=None):
    """Decode seeds through the function body alone (no library registered)."""
    model = decode_model(seeds, opset)
    onnx.checker.check_model(model, full_check=True)
    sess = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
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


# --- lattice (FORMAT.md §7) ------------------------------------------------------------------


def lattice_seed(rng, bits, count, group, dtype=TensorProto.FLOAT, generator=None):
    """A hand-made lattice seed: random valid steps (the first, middle and last step included)
    and random finite float16 scales (+-0, subnormals and the largest included)."""
    points = (1 << bits) - 1
    steps = rng.integers(0, points, size=fmt.num_pairs(count))
    steps[:3] = [points - 1, 0, points // 2][:steps.size]
    h = rng.integers(0, 1 << 16, size=fmt.scale_count(count, group), dtype=np.uint16)
    h[(h & 0x7C00) == 0x7C00] &= 0xBFFF  # NaN/Inf exponent field 31 -> a finite value
    h[:4] = [0x0000, 0x8000, 0x0001, 0x7BFF][:h.size]
    if generator is None:
        generator = int(rng.integers(0, max(1, points // 2))) * 2 + 1
    attrs = {"bits": bits, "generator": generator, "group": group,
             "alpha": float(np.float32(rng.uniform(0.1, 1))), "beta": float(np.float32(rng.uniform(0, 1))),
             "scale_unit": float(np.float32(2.0 ** rng.integers(-30, 5)))}
    seed = hyperonnx.Seed("lattice", (count,), dtype, bitpack.pack(steps, bits), attrs, scales=h.view(np.float16))
    fmt.validate(seed)
    return seed


@pytest.mark.filterwarnings("ignore:overflow encountered in cast")  # float16 +-Inf, as §3 says
@pytest.mark.parametrize("opset", [17, 18, 21])
def test_lattice_every_bit_width_group_and_dtype(opset):
    """Every b in 2..16; groups that divide the size or not, below and above 16 pairs; odd counts."""
    rng = np.random.default_rng(opset)
    seeds = {}
    for bits in range(2, 17):
        group = [2, 6, 16, 128, 130, 1024][bits % 6]
        count = int(rng.integers(1, 1500)) | (bits & 1)  # odd for odd b
        dtype = [TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16][bits % 3]
        seeds[f"b{bits}"] = lattice_seed(rng, bits, count, group, dtype)
    out = run_function(seeds, opset)
    for name, seed in seeds.items():
        assert_same_bits(out[name], reference(seed))


@pytest.mark.parametrize("index_bits,group", [(4, 128), (8, 128), (11, 32), (16, 10)])
def test_lattice_encoded_tensors_and_winding_in_one_model(index_bits, group):
    """Encoder output of several shapes and dtypes, next to winding seeds in the same model."""
    rng = np.random.default_rng(index_bits)
    config = LatticeConfig(index_bits=index_bits, group=group)
    seeds = {}
    for i, (shape, dtype) in enumerate([((1001,), np.float32), ((37, 29), np.float16),
                                        ((3, 5, 7), ml_dtypes.bfloat16), ((300, 257), np.float32),
                                        ((64, 128), np.float32)]):  # pairs fill the last one exactly
        seeds[f"l{i}"] = hyperonnx.encode((rng.standard_normal(shape) * 0.05).astype(dtype), config, min_elements=1)
        assert seeds[f"l{i}"].codec == "lattice"
    seeds["w0"] = hyperonnx.encode((rng.standard_normal((65, 3)) * 0.5).astype(np.float32), "paper", min_elements=1)
    seeds["w1"] = hyperonnx.encode((rng.standard_normal((128,)) * 0.5).astype(np.float16), "paper", min_elements=1)
    assert seeds["w0"].codec == seeds["w1"].codec == "winding"
    out = run_function(seeds, 18)
    for name, seed in seeds.items():
        assert_same_bits(out[name], reference(seed))


def test_lattice_worked_example_of_format_md():
    seed = hyperonnx.Seed("lattice", (5,), TensorProto.FLOAT, np.array([0x2B, 0x00], np.uint8),
                          {"bits": 3, "generator": 3, "group": 4, "alpha": 0.5, "beta": 0.5, "scale_unit": 0.5},
                          scales=np.array([2.0, 3.0], np.float16))
    out = run_function({"w": seed}, LATTICE_MIN_OPSET)["w"]
    assert out.tobytes().hex() == "00000000" "00000000" "710dc23e" "373a1ebe" "94bd8ebf"


def test_decodes_the_same_unoptimised():
    """Without constant folding (every operation, the If on the codec included, at run time) the
    bits are the same."""
    rng = np.random.default_rng(7)
    seeds = {"a": lattice_seed(rng, 9, 999, 64), "b": lattice_seed(rng, 16, 300, 6, TensorProto.FLOAT16),
             "w": hyperonnx.encode((rng.standard_normal(99) * 0.5).astype(np.float32), "paper", min_elements=1)}
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    out = run_function(seeds, 18, options)
    for name, seed in seeds.items():
        assert_same_bits(out[name], reference(seed))


def test_body_is_folded_to_constants(tmp_path):
    """onnxruntime folds the whole body at session creation (load mode): nothing of it is left to
    run per inference (an operation it cannot fold would leave its whole chain behind)."""
    rng = np.random.default_rng(3)
    seeds = {"a": lattice_seed(rng, 8, 1000, 128),
             "w": hyperonnx.encode((rng.standard_normal(99) * 0.5).astype(np.float32), "paper", min_elements=1)}
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(decode_model(seeds, 18).SerializeToString(), options, providers=["CPUExecutionProvider"])
    optimized = onnx.load(options.optimized_model_filepath)
    assert [n.op_type for n in optimized.graph.node] == []  # even the output Casts fold


@pytest.mark.parametrize("fault", ["step", "nan", "inf", "alpha", "beta", "unit", "zero unit", "nan unit"])
def test_lattice_bad_seed_is_an_error_not_garbage(fault):
    """Rule 7 (a step >= N), rule 6 (a NaN or Inf scale) and rule 2's bounds of alpha, beta and
    scale_unit (2^100: every intermediate finite) stop the decode."""
    seed = lattice_seed(np.random.default_rng(0), 4, 10, 4)
    if fault == "step":
        seed.payload[1] |= 0x0F  # step 2 = 15 = N
    elif fault in ("nan", "inf"):
        seed.scales[1] = np.float16(np.nan if fault == "nan" else -np.inf)
    else:
        name, value = {"alpha": ("alpha", 3e38), "beta": ("beta", -2.0 ** 101), "unit": ("scale_unit", 2.0 ** 101),
                       "zero unit": ("scale_unit", 0.0), "nan unit": ("scale_unit", float("nan"))}[fault]
        seed.attrs[name] = value
    with pytest.raises(Exception, match="out of"):
        run_function({"w": seed}, 18)


def test_lattice_needs_opset_17():
    assert not decodes_lattice(16) and decodes_lattice(LATTICE_MIN_OPSET)
    assert [i for i in build_function(16).input] == ["seed"]
    assert [i for i in build_function(LATTICE_MIN_OPSET).input] == ["seed", "scales"]


def trellis_seed(rng, k, window, group, count, dtype=np.float32):
    config = TrellisConfig(index_bits=k, window=window, memory=window - k, group=group)
    seed = hyperonnx.encode((rng.standard_normal(count) * 0.3).astype(dtype), config, min_elements=1)
    assert seed.codec == fmt.CODEC_TRELLIS and seed.attrs["window"] == window
    return seed


def run_trellis_function(seeds: dict, opset: int, options=None):
    model = decode_model(seeds, opset)
    model.functions[0].CopyFrom(build_trellis_function(opset))
    onnx.checker.check_model(model, full_check=True)
    sess = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return dict(zip(seeds, sess.run(list(seeds), {})))


@pytest.mark.filterwarnings("ignore:overflow encountered in cast")
@pytest.mark.parametrize("opset", [13, 18, 21])
def test_trellis_every_rate_window_group_and_dtype(opset):
    """FORMAT.md §9 bit for bit: k 1..8, windows from k to 16 (streams of 1 and 2 bytes per group
    wrap inside the 3 bytes a window is read from), groups whose last one is partial."""
    rng = np.random.default_rng(opset)
    cases = [(1, 8, 8, 13), (2, 4, 8, 10), (3, 14, 24, 100), (4, 12, 128, 1000), (5, 13, 128, 700),
             (6, 16, 16, 64), (7, 15, 32, 33), (8, 16, 64, 300), (1, 1, 8, 20), (2, 16, 8, 17)]
    dtypes = [np.float32, np.float16, ml_dtypes.bfloat16]
    seeds = {f"t{i}": trellis_seed(rng, *case, dtype=dtypes[i % 3]) for i, case in enumerate(cases)}
    out = run_trellis_function(seeds, opset)
    for name, seed in seeds.items():
        assert_same_bits(out[name], reference(seed))


def test_trellis_worked_example_of_format_md():
    seed = Seed(fmt.CODEC_TRELLIS, (10,), TensorProto.FLOAT, np.array([0x1B, 0xE4, 0xFF, 0x00], np.uint8),
                {"bits": 2, "window": 4, "group": 8, "scale_unit": 0.5}, scales=np.array([2.0, 4.0], np.float16))
    assert_same_bits(run_trellis_function({"w": seed}, 18)["w"], reference(seed))


def test_trellis_body_is_folded_to_constants(tmp_path):
    seeds = {"t": trellis_seed(np.random.default_rng(1), 4, 12, 128, 1000)}
    model = decode_model(seeds, 18)
    model.functions[0].CopyFrom(build_trellis_function(18))
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    assert [n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node] == []


@pytest.mark.parametrize("fault", ["nan", "inf", "zero unit", "unit", "seed length"])
def test_trellis_bad_seed_is_an_error_not_garbage(fault):
    seed = trellis_seed(np.random.default_rng(2), 4, 12, 32, 100)
    if fault in ("nan", "inf"):
        seed.scales[1] = np.float16(np.nan if fault == "nan" else np.inf)
    elif fault == "seed length":
        seed = dataclasses.replace(seed, payload=seed.payload[:-1])
    else:
        seed.attrs["scale_unit"] = 0.0 if fault == "zero unit" else 2.0 ** 101
    with pytest.raises(Exception, match="out of|reshape|Reshape"):
        run_trellis_function({"w": seed}, 18)


def test_one_body_per_codec_set():
    assert decodes({fmt.CODEC_TRELLIS}, 13) and not decodes({fmt.CODEC_TRELLIS}, 12)
    assert not decodes({fmt.CODEC_TRELLIS, fmt.CODEC_LATTICE}, 21)
    assert [i for i in build_function_for({fmt.CODEC_TRELLIS}, 13).input] == ["seed", "scales"]
    assert not decodes({fmt.CODEC_LATTICE}, 16) and decodes({fmt.CODEC_LATTICE, fmt.CODEC_WINDING}, 17)
