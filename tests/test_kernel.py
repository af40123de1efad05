"""The CPU kernel of DecodeWeights, run through onnxruntime, against the reference decoder:
bytes equal for every preset, dtype, shape and bit width; every FORMAT.md section 5 rule refused
with an error naming it."""

from __future__ import annotations

import ctypes
import os
import platform
import subprocess
import sys
import zlib

import ml_dtypes
import numpy as np
import onnxruntime as ort
import pytest
from onnx import AttributeProto, TensorProto, helper, numpy_helper

import hyperonnx
from hyperonnx import format as fmt
from hyperonnx.codec import bitpack, lattice
from runtime_models import decode_model, make_model


DTYPES = {TensorProto.FLOAT: np.float32, TensorProto.FLOAT16: np.float16, TensorProto.BFLOAT16: ml_dtypes.bfloat16}


def session(model, threads: int = 0):
    so = ort.SessionOptions()
    so.register_custom_ops_library(hyperonnx.get_library_path())
    so.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def kernel_decode(seed: hyperonnx.Seed, threads: int = 0) -> np.ndarray:
    """The kernel's output, through an IO binding (onnxruntime's run() cannot return bfloat16)."""
    sess = session(decode_model({"w": seed}), threads)
    out = np.full(seed.shape, 0xDEAD if seed.dtype != TensorProto.FLOAT else 0xDEADBEEF,
                  np.float32 if seed.dtype == TensorProto.FLOAT else np.uint16)
    binding = sess.io_binding()
    binding.bind_ortvalue_output("w", ort.OrtValue.ortvalue_from_numpy_with_onnx_type(out, seed.dtype))
    sess.run_with_iobinding(binding)
    return out.view(DTYPES[seed.dtype])


def assert_bytes_equal(seed: hyperonnx.Seed, threads: int = 0):
    expected = hyperonnx.decode(seed)
    got = kernel_decode(seed, threads)
    assert got.shape == expected.shape
    assert got.dtype == expected.dtype, (got.dtype, expected.dtype)
    assert got.tobytes() == expected.tobytes()


def winding_seed(indices, shape, dtype=TensorProto.FLOAT, bits=None, points=1600, rings=2,
                 center=(0.25, -0.5), side=0.8, ring_scales=None) -> hyperonnx.Seed:
    indices = np.asarray(indices, dtype=np.uint64)
    bits = bits or max(1, int(indices.max(initial=0)).bit_length())
    scales = list(ring_scales) if ring_scales is not None else [1.5 + k for k in range(rings)]
    attrs = {"bits": bits, "points": points, "rings": rings, "center": list(center), "side": side,
             "ring_scales": scales}
    return hyperonnx.Seed("winding", tuple(shape), dtype, bitpack.pack(indices, bits), attrs)


def weights(shape, rng, dtype=np.float32):
    array = rng.standard_normal(shape) * 0.05
    if array.size > 8:
        array.flat[rng.integers(0, array.size, 4)] *= 20  # outliers: ring classes
    return array.astype(dtype)


def test_library_exports_and_registers():
    lib = ctypes.CDLL(hyperonnx.get_library_path())
    lib.HyperonnxFormatVersion.restype = ctypes.c_int
    assert lib.HyperonnxFormatVersion() == fmt.OP_VERSION


def test_worked_example():
    """FORMAT.md section 6."""
    attrs = {"bits": 4, "points": 4, "rings": 1, "center": [1.0, -1.0], "side": 2.0, "ring_scales": [2.0]}
    seed = hyperonnx.Seed("winding", (3,), TensorProto.FLOAT, np.array([0x93], np.uint8), attrs)
    assert kernel_decode(seed).tolist() == [1.5, -1.0, 1.0]


@pytest.mark.parametrize("preset", sorted(hyperonnx.PRESETS))
@pytest.mark.parametrize("dtype", [np.float32, np.float16, ml_dtypes.bfloat16], ids=["f32", "f16", "bf16"])
@pytest.mark.parametrize("shape", [(1,), (3,), (17,), (7, 13), (4, 3, 5), (64, 33), (1001,)])
def test_presets_bytes_equal(preset, dtype, shape):
    rng = np.random.default_rng(zlib.crc32(repr((preset, dtype, shape)).encode()))  # hash() of a str varies per run
    try:
        seed = hyperonnx.encode(weights(shape, rng, dtype), preset, min_elements=1)
    except ValueError as error:  # a bits/weight target below what one scale costs a tiny tensor
        pytest.skip(str(error))
    if seed.codec == "raw":
        pytest.skip(f"the preset keeps this tensor raw ({seed.attrs['reason']})")
    assert_bytes_equal(seed)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16])
def test_large_tensor_multithreaded(threads, dtype):
    """Many ParallelFor tasks, an odd length, all three output types."""
    rng = np.random.default_rng(threads)
    array = weights((301, 1117), rng, DTYPES[dtype])
    seed = hyperonnx.encode(array, "paper")
    assert seed.codec == "winding"
    assert_bytes_equal(seed, threads)


@pytest.mark.parametrize("bits", range(1, 25))
def test_every_bit_width(bits):
    """Random indices over the whole codebook at each width, odd and even lengths: the table path."""
    rng = np.random.default_rng(bits)
    size = 1 << bits
    # points, rings such that (n + 1) * (C + 1) is near 2^bits and never above it
    if bits > 20:  # n is at most 2^20: widen with ring classes
        points = 1 << 20
        rings = size // (points + 1) - 1
    else:
        rings = int(rng.integers(0, 4)) if bits > 3 else 0
        points = max(1, size // (rings + 1) - 1)
    codebook = (points + 1) * (rings + 1)
    for pairs in (1, 7, 8, 9, 1000, 70001):
        indices = rng.integers(0, codebook, pairs)
        for count in (2 * pairs, 2 * pairs - 1):
            seed = winding_seed(indices, (count,), bits=bits, points=points, rings=rings)
            assert_bytes_equal(seed)


@pytest.mark.parametrize("dtype", [TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16])
def test_direct_path_large_codebook(dtype):
    """A codebook far larger than the tensor is decoded pair by pair, not through a table."""
    rng = np.random.default_rng(5)
    points, rings = (1 << 20), 3
    indices = rng.integers(0, (points + 1) * (rings + 1), 999)
    indices[:4] = [0, points, points + 1, (points + 1) * (rings + 1) - 1]
    seed = winding_seed(indices, (3, 666), dtype=dtype, points=points, rings=rings, side=3.0)
    assert_bytes_equal(seed)


@pytest.mark.parametrize("dtype", [TensorProto.FLOAT16, TensorProto.BFLOAT16])
def test_conversion_overflow_and_subnormals(dtype):
    """Values that overflow float16 (to inf) and fall in the subnormal range survive unchanged."""
    rng = np.random.default_rng(9)
    indices = rng.integers(0, 101 * 3, 5000)
    for center, side, scales in (((60000.0, -65500.0), 10000.0, [3.0, 1e30]), ((1e-6, -3e-8), 1e-6, [2.0, 7.0]),
                                 ((0.0, 0.0), 1e-39, [1.0, 3.0])):
        seed = winding_seed(indices, (10000,), dtype=dtype, points=100, rings=2, center=center, side=side,
                            ring_scales=scales)
        assert_bytes_equal(seed)


def test_empty_and_scalar():
    empty = winding_seed(np.zeros(0), (0, 5), bits=3)
    assert empty.payload.size == 0
    assert_bytes_equal(empty)
    scalar = winding_seed([7], (), bits=5, points=10, rings=0, ring_scales=[])
    got = kernel_decode(scalar)
    assert got.shape == () and got.tobytes() == hyperonnx.decode(scalar).tobytes()


def test_float_conversions_match_numpy():
    """The kernels' float32 -> float16 / bfloat16 rounding around every rounding boundary."""
    lib = ctypes.CDLL(hyperonnx.get_library_path())
    lib.HyperonnxConvertFloats.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int64, ctypes.c_void_p]
    high = np.arange(1 << 16, dtype=np.uint32) << 16
    low = np.array([0, 1, 0x0FFF, 0x1000, 0x1001, 0x1FFF, 0x2000, 0x3000, 0x7FFF, 0x8000, 0x8001, 0xFFFF],
                   dtype=np.uint32)
    rng = np.random.default_rng(0)
    bits = np.concatenate([(high[:, None] | low[None, :]).ravel(), rng.integers(0, 1 << 32, 1 << 20, dtype=np.uint32)])
    values = bits.view(np.float32)
    for dtype, np_dtype in ((TensorProto.FLOAT16, np.float16), (TensorProto.BFLOAT16, ml_dtypes.bfloat16)):
        out = np.empty(values.size, np.uint16)
        assert lib.HyperonnxConvertFloats(values.ctypes.data, values.size, dtype, out.ctypes.data) == 0
        with np.errstate(over="ignore"):
            expected = values.astype(np_dtype).view(np.uint16)
        nan = np.isnan(values)
        assert np.isnan(out[nan].view(np_dtype).astype(np.float32)).all()
        mismatch = np.flatnonzero(out[~nan] != expected[~nan])
        assert mismatch.size == 0, [hex(int(b)) for b in bits[~nan][mismatch[:5]]]


@pytest.mark.slow
def test_float_conversions_every_float32():
    """Every float32 bit pattern (2^32, in chunks): on aarch64 the NEON conversion (FCVTN) of the
    lattice loop, elsewhere the software one, against numpy (NaN: any quiet NaN)."""
    lib = ctypes.CDLL(hyperonnx.get_library_path())
    lib.HyperonnxConvertFloats.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int64, ctypes.c_void_p]
    chunk = 1 << 24
    out = np.empty(chunk, np.uint16)
    for start in range(0, 1 << 32, chunk):
        values = np.arange(start, start + chunk, dtype=np.uint32).view(np.float32)
        assert lib.HyperonnxConvertFloats(values.ctypes.data, chunk, TensorProto.FLOAT16, out.ctypes.data) == 0
        with np.errstate(over="ignore"):
            expected = values.astype(np.float16).view(np.uint16)
        differ = np.flatnonzero(out != expected)
        nan = ((expected[differ] & 0x7C00) == 0x7C00) & ((out[differ] & 0x7E00) == 0x7E00)  # quiet NaN
        same_sign = (expected[differ] & 0x8000) == (out[differ] & 0x8000)
        assert (nan & same_sign).all(), [hex(int(start + i)) for i in differ[:5]]


def vector_loop_expected() -> bool:
    """Whether the kernels run a vector loop here: NEON always on aarch64; AVX2 + F16C on x86
    unless HYPERONNX_NO_AVX2 is set."""
    if platform.machine().lower() in ("aarch64", "arm64"):
        return True
    if os.environ.get("HYPERONNX_NO_AVX2", "0") not in ("", "0"):
        return False
    flags = open("/proc/cpuinfo").read().split()
    return "avx2" in flags and "f16c" in flags


@pytest.mark.parametrize("codec", ["winding", "lattice"])
@pytest.mark.parametrize("dtype", [TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16])
def test_vector_loop_taken(codec, dtype):
    """HyperonnxVectorPairs() counts the pairs a vector loop decoded: all but the tails, or none."""
    lib = ctypes.CDLL(hyperonnx.get_library_path())  # the handle onnxruntime loads too: one counter
    lib.HyperonnxVectorPairs.restype = ctypes.c_uint64
    rng = np.random.default_rng(dtype)
    seed = hyperonnx.encode(weights((96, 1001), rng, DTYPES[dtype]), "paper" if codec == "winding" else "lattice")
    assert seed.codec == codec
    before = lib.HyperonnxVectorPairs()
    assert_bytes_equal(seed)
    vector = lib.HyperonnxVectorPairs() - before
    pairs = 96 * 1001 // 2
    if vector_loop_expected():
        assert pairs - 64 <= vector <= pairs, (vector, pairs)
    else:
        assert vector == 0


# --- validation: FORMAT.md section 5 -------------------------------------------------------------

ALL_ATTRIBUTE_TYPES = {**fmt.ATTRIBUTE_TYPES, **fmt.LATTICE_ATTRIBUTE_TYPES}


def node_model(attrs: dict, seed_bytes: np.ndarray, version: int = fmt.OP_VERSION, types: dict | None = None,
               scales: np.ndarray | None = None):
    inits = [numpy_helper.from_array(np.asarray(seed_bytes, np.uint8), "s")]
    if scales is not None:
        inits.append(numpy_helper.from_array(np.asarray(scales), "c"))
    node = helper.make_node(fmt.OP_TYPE, ["s", "c"][:len(inits)], ["w"], domain=fmt.OP_DOMAIN, name="bad")
    for name, value in attrs.items():
        kind = (types or {}).get(name, ALL_ATTRIBUTE_TYPES.get(name))
        node.attribute.append(helper.make_attribute(name, value, attr_type=kind))
    graph = helper.make_graph([node], "g", [], [helper.make_tensor_value_info("w", TensorProto.FLOAT, None)], inits)
    return make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(fmt.OP_DOMAIN, version)])


GOOD = {"codec": "winding", "shape": [3], "dtype": 1, "bits": 4, "points": 4, "rings": 1,
        "center": [1.0, -1.0], "side": 2.0, "ring_scales": [2.0]}


def run_node(attrs, seed=(0x93,), **kwargs):
    return session(node_model(attrs, np.array(seed, np.uint8), **kwargs)).run(None, {})[0]


def test_good_node_runs():
    assert run_node(GOOD).tolist() == [1.5, -1.0, 1.0]


@pytest.mark.parametrize("change, message", [
    ({"codec": "spiral"}, "rule 2: codec"),
    ({"dtype": 11}, "rule 2: dtype"),
    ({"bits": 0}, "rule 2: attribute bits"),
    ({"bits": 25}, "rule 2: attribute bits"),
    ({"points": 0}, "rule 2: attribute points"),
    ({"points": (1 << 20) + 1}, "rule 2: attribute points"),
    ({"rings": -1}, "rule 2: attribute rings"),
    ({"rings": 65}, "rule 2: attribute rings"),
    ({"center": [1.0]}, "rule 2: attribute center"),
    ({"center": [1.0, float("nan")]}, "rule 2: attribute center"),
    ({"side": 0.0}, "rule 2: attribute side"),
    ({"side": float("inf")}, "rule 2: attribute side"),
    ({"side": -1.0}, "rule 2: attribute side"),
    ({"ring_scales": []}, "rule 2: attribute ring_scales"),
    ({"ring_scales": [2.0, 3.0]}, "rule 2: attribute ring_scales"),
    ({"ring_scales": [-2.0]}, "rule 2: attribute ring_scales"),
    ({"ring_scales": [float("nan")]}, "rule 2: attribute ring_scales"),
    ({"shape": [-3]}, "rule 2: shape"),
    ({"shape": [1 << 21, 1 << 20]}, "rule 3"),
    ({"shape": [1 << 40, 1 << 40, 0]}, "rule 3"),
    ({"shape": [4]}, None),  # shape [4] needs 1 byte too: valid
    ({"shape": [5]}, "rule 4"),
])
def test_rules_refused(change, message):
    attrs = {**GOOD, **change}
    if message is None:
        run_node(attrs)
        return
    with pytest.raises(Exception, match=message.replace("(", r"\(")):
        run_node(attrs)


@pytest.mark.parametrize("missing", sorted(fmt.ATTRIBUTE_TYPES))
def test_missing_attribute(missing):
    attrs = {k: v for k, v in GOOD.items() if k != missing}
    with pytest.raises(Exception, match=f"rule 2: attribute {missing}|rule 2"):
        run_node(attrs)


@pytest.mark.parametrize("name, value, kind", [
    ("bits", 4.0, AttributeProto.FLOAT), ("shape", 3, AttributeProto.INT), ("center", [1, 2], AttributeProto.INTS),
    ("side", 2, AttributeProto.INT), ("codec", 1, AttributeProto.INT), ("ring_scales", 2.0, AttributeProto.FLOAT),
    ("shape", "3", AttributeProto.STRING), ("shape", [3.0], AttributeProto.FLOATS),
    ("ring_scales", [2], AttributeProto.INTS)])
def test_wrong_attribute_type(name, value, kind):
    with pytest.raises(Exception, match=f"rule 2: attribute {name}"):
        run_node({**GOOD, name: value}, types={name: kind})


def test_seed_length_and_index_range():
    with pytest.raises(Exception, match="rule 4"):
        run_node(GOOD, seed=(0x93, 0))
    with pytest.raises(Exception, match="rule 4"):
        run_node({**GOOD, "bits": 12}, seed=(0x93,))
    with pytest.raises(Exception, match="rule 5"):
        run_node(GOOD, seed=(0xA3,))  # index 10 >= (4 + 1) * (1 + 1)
    # the dropped half of the last pair still has its index checked (it is read)
    with pytest.raises(Exception, match="rule 5"):
        run_node({**GOOD, "shape": [1]}, seed=(0x0F,))


@pytest.mark.parametrize("dtype", [TensorProto.FLOAT, TensorProto.FLOAT16])
@pytest.mark.parametrize("where", [0, 8, 4093, 9998, 9999])
def test_out_of_range_index_in_long_seed(dtype, where):
    """One index past the codebook, anywhere in a long seed (vector loop, tail, dropped half): rule 5."""
    points, rings = 1000, 3  # codebook 4004 < 2^12: 12-bit indices can overflow it
    indices = np.random.default_rng(where).integers(0, (points + 1) * (rings + 1), 10000)
    indices[where] = (points + 1) * (rings + 1) + where % 50
    seed = winding_seed(indices, (19999,), dtype=dtype, bits=12, points=points, rings=rings)
    with pytest.raises(Exception, match="rule 5"):
        kernel_decode(seed)


@pytest.mark.parametrize("switch", ["HYPERONNX_NO_AVX2", "HYPERONNX_NO_AVX512"])
def test_other_loops(switch):
    """HYPERONNX_NO_AVX2=1 forces the portable loops, HYPERONNX_NO_AVX512=1 the AVX2 ones (on a CPU
    with AVX-512): the same tests pass through them."""
    if os.environ.get("HYPERONNX_NO_AVX2") or os.environ.get("HYPERONNX_NO_AVX512"):
        pytest.skip("this run is the child run")
    if platform.machine() != "x86_64":
        pytest.skip("no AVX2 / AVX-512 loop to switch off")
    env = {**os.environ, switch: "1"}
    child = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k",
                            "every_bit_width or large_tensor or out_of_range or presets_bytes_equal or lattice"],
                           capture_output=True, text=True, env=env, cwd=os.path.dirname(__file__), timeout=600)
    assert child.returncode == 0, child.stdout[-3000:]
    assert " passed" in child.stdout


def int8_outputs():
    """DecodeMatMul / DecodeGemm (transB) with accuracy_level 4 on random lattice seeds, packed and
    from the seed, 1, 5 and 12 rows: the outputs, concatenated."""
    from hyperonnx.bench.runtime import random_seed
    out = []
    for k, n, trans in ((96, 64, 0), (70, 160, 0), (64, 48, 1)):
        seed = random_seed(k * n, TensorProto.FLOAT, np.random.default_rng(k), fmt.CODEC_LATTICE)
        seed = fmt.Seed(seed.codec, (n, k) if trans else (k, n), seed.dtype, seed.payload, seed.attrs,
                        scales=seed.scales)
        node = helper.make_node("DecodeGemm" if trans else "DecodeMatMul", ["x", "s", "c"], ["y"], domain=fmt.OP_DOMAIN)
        node.attribute.extend(fmt.make_node(seed, "s", "w", "c").attribute)
        if trans:
            node.attribute.append(helper.make_attribute("op_transB", 1))
        node.attribute.append(helper.make_attribute("accuracy_level", 4))
        graph = helper.make_graph([node], "int8", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, k])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                                  [numpy_helper.from_array(seed.payload, "s"), numpy_helper.from_array(seed.scales, "c")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                        helper.make_opsetid(fmt.OP_DOMAIN, fmt.FUSED_VERSION)])
        model.ir_version = 8
        for packing in ("auto", "none"):
            so = ort.SessionOptions()
            so.add_session_config_entry("hyperonnx.packing", packing)
            so.register_custom_ops_library(hyperonnx.get_library_path())
            session = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
            for rows in (1, 5, 12):
                x = np.random.default_rng(rows).standard_normal((rows, k)).astype(np.float32)
                out.append(session.run(None, {"x": x})[0].ravel())
    return np.concatenate(out)


def test_int8_dot_products_bit_for_bit():
    """accuracy_level 4: the NEON sdot loop (aarch64 with the dot product extension) gives the
    portable loop's bits (HyperonnxForcePortableInt8), packed and from the seed; on x86 the VNNI /
    AVX2 loops the same integer sums (float32 accumulation with FMA: within 1e-5 of the scale)."""
    lib = ctypes.CDLL(hyperonnx.get_library_path())  # the handle onnxruntime loads too
    lib.HyperonnxInt8Loop.restype = ctypes.c_char_p
    loop = lib.HyperonnxInt8Loop().decode()
    arm = platform.machine().lower() in ("aarch64", "arm64")
    if arm and "asimddp" in open("/proc/cpuinfo").read():
        assert loop == "sdot"
    best = int8_outputs()
    lib.HyperonnxForcePortableInt8(1)
    try:
        assert lib.HyperonnxInt8Loop().decode() == "portable"
        portable = int8_outputs()
    finally:
        lib.HyperonnxForcePortableInt8(0)
    assert lib.HyperonnxInt8Loop().decode() == loop
    assert np.isfinite(best).all() and np.abs(best).max() > 0
    if arm or loop == "portable":
        assert best.tobytes() == portable.tobytes()
    else:
        assert np.abs(best - portable).max() <= 1e-5 * np.abs(portable).max()


def test_unknown_opset_version_refused():
    """Rule 1. onnxruntime binds every version of a custom domain to the one kernel and a kernel
    cannot see the model's opsets, so hyperonnx.InferenceSession checks it (both modes)."""
    model = node_model(GOOD, np.array([0x93], np.uint8), version=max(fmt.KNOWN_VERSIONS) + 1)
    for mode in ("load", "stream"):
        with pytest.raises(fmt.FormatError, match="rule 1"):
            hyperonnx.InferenceSession(model, mode=mode)


@pytest.mark.parametrize("version", fmt.KNOWN_VERSIONS)
def test_winding_runs_at_every_version(version):
    """A winding node decodes the same under every format version (plain onnxruntime and both modes)."""
    model = node_model(GOOD, np.array([0x93], np.uint8), version=version)
    assert session(model).run(None, {})[0].tolist() == [1.5, -1.0, 1.0]
    for mode in ("load", "stream"):
        assert hyperonnx.InferenceSession(model, mode=mode).run(None, {})[0].tolist() == [1.5, -1.0, 1.0]


# --- the lattice codec: FORMAT.md section 7 --------------------------------------------------------

LATTICE = {"codec": "lattice", "shape": [5], "dtype": 1, "bits": 3, "generator": 3, "group": 4, "alpha": 0.5,
           "beta": 0.5, "scale_unit": 0.5}
LATTICE_SEED = (0x2B, 0x00)
LATTICE_SCALES = np.array([2.0, 3.0], np.float16)


def run_lattice(attrs=None, seed=LATTICE_SEED, scales=LATTICE_SCALES, **kwargs):
    return run_node(attrs or LATTICE, seed=seed, scales=scales, **kwargs)


def lattice_seed(steps, shape, dtype=TensorProto.FLOAT, bits=8, generator=None, group=128, alpha=0.5, beta=0.5,
                 scale_unit=2.0 ** -14, scales=None, rng=None) -> hyperonnx.Seed:
    count = int(np.prod(shape))
    if scales is None:
        scales = (rng or np.random.default_rng(0)).uniform(0, 30000, fmt.scale_count(count, group))
    generator = generator if generator is not None else lattice.generator(bits)
    attrs = {"bits": bits, "generator": generator, "group": group, "alpha": alpha, "beta": beta,
             "scale_unit": scale_unit}
    return hyperonnx.Seed("lattice", tuple(shape), dtype, bitpack.pack(np.asarray(steps, np.uint64), bits), attrs,
                          scales=np.asarray(scales, np.float16))


def test_lattice_worked_example():
    """FORMAT.md section 7.5, byte by byte."""
    got = run_lattice()
    assert got.tobytes().hex() == "0000000000000000710dc23e373a1ebe94bd8ebf"
    seed = lattice_seed([3, 5, 0], (5,), bits=3, generator=3, group=4, scale_unit=0.5, scales=LATTICE_SCALES)
    assert seed.payload.tolist() == list(LATTICE_SEED)
    assert_bytes_equal(seed)


@pytest.mark.parametrize("bits", range(2, 17))
def test_lattice_every_bit_width(bits):
    """Random steps over the whole trajectory, odd and even lengths, groups that do and do not
    fill a task: the table path at every width."""
    rng = np.random.default_rng(bits)
    points = (1 << bits) - 1
    generators = np.arange(1, points, 2)
    for pairs, group in ((1, 2), (7, 6), (8, 128), (9, 4), (1000, 34), (70001, 128)):
        steps = rng.integers(0, points, pairs)
        steps[:2] = [0, points - 1][:pairs]
        generator = int(rng.choice(generators))
        for count in (2 * pairs, 2 * pairs - 1):
            seed = lattice_seed(steps, (count,), bits=bits, generator=generator, group=group, rng=rng)
            assert_bytes_equal(seed)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16])
def test_lattice_large_tensor_multithreaded(threads, dtype):
    """Many ParallelFor tasks, an odd length, all three output types, the encoder's own seeds."""
    rng = np.random.default_rng(threads)
    seed = hyperonnx.encode(weights((301, 1117), rng, DTYPES[dtype]), "lattice")
    assert seed.codec == "lattice"
    assert_bytes_equal(seed, threads)


@pytest.mark.parametrize("dtype", [TensorProto.FLOAT16, TensorProto.BFLOAT16])
def test_lattice_conversion_overflow_and_subnormals(dtype):
    """Scales that overflow float16 (to inf), subnormal float16 scales and outputs, zero and
    negative scales, and the largest companding and unit rule 2 allows, whose products overflow
    float32 (to ±Inf, never NaN)."""
    rng = np.random.default_rng(4)
    steps = rng.integers(0, 255, 5000)
    tiny = np.array([1, 2, 0x3FF, 0, 0x8001, 0x8000], np.uint16).view(np.float16)  # subnormals, zeros
    for unit, scales, alpha, beta in ((2.0 ** 4, [60000.0, -3.0, 65504.0], 0.5, 0.5),
                                      (2.0 ** -10, tiny, 0.5, 0.5),
                                      (2.0 ** 100, [65504.0, 0.0, -2.0], 2.0 ** 100, -2.0 ** 100)):
        seed = lattice_seed(steps, (10000,), dtype=dtype, bits=8, group=4096, scale_unit=unit, scales=np.resize(
            np.asarray(scales, np.float16), 3), alpha=alpha, beta=beta)
        with np.errstate(over="ignore"):
            assert_bytes_equal(seed)
        assert not np.isnan(kernel_decode(seed).astype(np.float32)).any()


def test_lattice_empty_and_scalar():
    empty = lattice_seed(np.zeros(0), (0, 5), bits=4, group=2, scales=np.zeros(0))
    assert empty.payload.size == 0
    assert_bytes_equal(empty)
    scalar = lattice_seed([9], (), bits=4, group=2, scales=[1.5])
    got = kernel_decode(scalar)
    assert got.shape == () and got.tobytes() == hyperonnx.decode(scalar).tobytes()


@pytest.mark.parametrize("change, message", [
    ({"codec": "Lattice"}, "rule 2: codec"),
    ({"dtype": 11}, "rule 2: dtype"),
    ({"bits": 1}, "rule 2: attribute bits"),
    ({"bits": 17}, "rule 2: attribute bits"),
    ({"generator": 2}, "rule 2: attribute generator"),
    ({"generator": 7}, "rule 2: attribute generator"),  # N = 7: g < N
    ({"generator": -1}, "rule 2: attribute generator"),
    ({"group": 3}, "rule 2: attribute group"),
    ({"group": 0}, "rule 2: attribute group"),
    ({"group": (1 << 16) + 2}, "rule 2: attribute group"),
    ({"alpha": float("nan")}, "rule 2: attribute alpha"),
    ({"beta": float("inf")}, "rule 2: attribute beta"),
    ({"alpha": 3e38}, "rule 2: attribute alpha"),  # finite, but alpha + beta*u^2 could overflow
    ({"beta": -2.0 ** 101}, "rule 2: attribute beta"),
    ({"scale_unit": 0.0}, "rule 2: attribute scale_unit"),
    ({"scale_unit": 2.0 ** 101}, "rule 2: attribute scale_unit"),
    ({"scale_unit": -0.5}, "rule 2: attribute scale_unit"),
    ({"scale_unit": float("inf")}, "rule 2: attribute scale_unit"),
    ({"shape": [-5]}, "rule 2: shape"),
    ({"shape": [1 << 21, 1 << 20]}, "rule 3"),
    ({"shape": [6]}, None),  # 3 pairs of 3 bits in 2 bytes, 2 scales: valid
    ({"shape": [11]}, "rule 4"),
    ({"group": 2}, "rule 6"),  # 3 scales needed
    ({"side": 2.0}, "rule 2: attribute side"),  # a winding attribute
    ({"points": 4}, "rule 2: attribute points"),
])
def test_lattice_rules_refused(change, message):
    attrs = {**LATTICE, **change}
    if message is None:
        run_lattice(attrs)
        return
    with pytest.raises(Exception, match=message.replace("(", r"\(")):
        run_lattice(attrs)


@pytest.mark.parametrize("missing", sorted(fmt.LATTICE_ATTRIBUTE_TYPES))
def test_lattice_missing_attribute(missing):
    with pytest.raises(Exception, match="rule 2"):
        run_lattice({k: v for k, v in LATTICE.items() if k != missing})


@pytest.mark.parametrize("scales, message", [
    (np.array([2.0, np.inf], np.float16), r"rule 6: scales\[1\] is Inf or NaN"),
    (np.array([np.nan, 3.0], np.float16), r"rule 6: scales\[0\] is Inf or NaN"),
    (np.array([2.0, 3.0, 4.0], np.float16), "rule 6: scales holds 3"),
    (np.array([2.0], np.float16), "rule 6: scales holds 1"),
    (np.array([[2.0, 3.0]], np.float16), "rule 6: scales must be a rank-1"),
    (np.array([2.0, 3.0], np.float32), "Type Error"),  # onnxruntime refuses the type
])
def test_lattice_scales_refused(scales, message):
    with pytest.raises(Exception, match=message):
        run_lattice(scales=scales)


def test_lattice_inputs_and_steps():
    with pytest.raises(Exception, match="rule 2: a lattice node has two inputs"):
        run_node(LATTICE, seed=LATTICE_SEED)
    with pytest.raises(Exception, match="rule 2: a winding node has one input"):
        run_node(GOOD, seed=(0x93,), scales=LATTICE_SCALES)
    with pytest.raises(Exception, match="rule 4"):
        run_lattice(seed=(0x2B,))
    with pytest.raises(Exception, match="rule 7"):
        run_lattice(seed=(0x3F, 0x00))  # step 7 = N
    with pytest.raises(Exception, match="rule 7"):
        run_lattice(seed=(0xEB, 0x01))  # the dropped half of the last pair still has its step checked


@pytest.mark.parametrize("dtype", [TensorProto.FLOAT, TensorProto.FLOAT16])
@pytest.mark.parametrize("where", [0, 8, 4093, 9998, 9999])
def test_lattice_out_of_range_step_in_long_seed(dtype, where):
    """One step N = 2^b - 1 anywhere in a long seed (windowed loop, tail, dropped half): rule 7."""
    steps = np.random.default_rng(where).integers(0, 1023, 10000)
    steps[where] = 1023
    seed = lattice_seed(steps, (19999,), dtype=dtype, bits=10, group=64)
    with pytest.raises(Exception, match="rule 7"):
        kernel_decode(seed)


def test_lattice_under_version_1_refused():
    """Rule 8: hyperonnx.InferenceSession checks it (a kernel cannot see the opsets)."""
    model = node_model(LATTICE, np.array(LATTICE_SEED, np.uint8), version=1, scales=LATTICE_SCALES)
    for mode in ("load", "stream"):
        with pytest.raises(fmt.FormatError, match="rule 8"):
            hyperonnx.InferenceSession(model, mode=mode)
    model = node_model(LATTICE, np.array(LATTICE_SEED, np.uint8), version=2, scales=LATTICE_SCALES)
    for mode in ("load", "stream"):
        got = hyperonnx.InferenceSession(model, mode=mode).run(None, {})[0]
        assert got.tobytes().hex() == "0000000000000000710dc23e373a1ebe94bd8ebf"
