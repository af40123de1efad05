"""The fused CPU kernels (docs/FORMAT.md §8) through onnxruntime against DecodeWeights' weight +
the standard op: every path (few rows / panel, transB, odd sizes, groups, depthwise, padding,
strides, dilations, both codecs), outputs within K * 2^-23 * (|x| op |W|) (float32 summation
error; Gather: bit for bit); and every bad input refused with a clear error."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import hyperonnx
from hyperonnx import format as fmt
from fused_models import fused_model, int8_bound, reference, run

CONFIGS = {"lattice": "lattice-4.25", "winding": "paper", "lattice-5b": hyperonnx.LatticeConfig(index_bits=5, group=6)}


def encode(shape, config, seed=0):
    """A seed of N(0, 0.05) weights; `config`: a CONFIGS name, a preset or a codec config."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal(shape) * 0.05).astype(np.float32)
    try:
        return hyperonnx.encode(w, CONFIGS.get(config, config) if isinstance(config, str) else config, min_elements=1)
    except ValueError:  # a tensor too small for the rate target: the fixed-width preset
        return hyperonnx.encode(w, "lattice", min_elements=1)


def check(op, seed, x, attrs=None, extra=None, threads=0):
    got = run(fused_model(op, seed, x.shape, attrs, extra, TensorProto.FLOAT if x.dtype == np.float32
                          else TensorProto.INT64), x, threads)
    want, bound = reference(op, seed, x, attrs, extra)
    assert got.shape == want.shape
    if op == "DecodeGather":
        assert got.tobytes() == want.tobytes()
    else:
        excess = np.abs(got - want) - bound
        assert excess.max(initial=-1) <= 0, f"max error above the bound: {excess.max()}"


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("rows,k,n", [(1, 64, 48), (3, 33, 17), (8, 300, 520), (9, 64, 48), (40, 301, 129),
                                      (1, 1, 1), (7, 5, 1)])
def test_matmul(config, rows, k, n):
    seed = encode((k, n), config)
    x = np.random.default_rng(1).standard_normal((rows, k)).astype(np.float32)
    check("DecodeMatMul", seed, x)


@pytest.mark.parametrize("shape", [(2, 3, 64), (64,), (1, 1, 5, 64)])
def test_matmul_batched_and_vector(shape):
    seed = encode((64, 40), "lattice")
    check("DecodeMatMul", seed, np.random.default_rng(2).standard_normal(shape).astype(np.float32))


@pytest.mark.parametrize("config", ["lattice", "winding"])
@pytest.mark.parametrize("rows", [1, 5, 30])
@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("c_shape", [None, (1,), (37,), (1, 37), (None, 1), (None, 37)])
def test_gemm(config, rows, trans_b, c_shape):
    k, n = 70, 37
    seed = encode((n, k) if trans_b else (k, n), config)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((rows, k)).astype(np.float32)
    c = None if c_shape is None else rng.standard_normal([rows if d is None else d for d in c_shape]).astype(np.float32)
    check("DecodeGemm", seed, x, {"transB": trans_b, "alpha": 0.5, "beta": 2.0}, c)


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("ids", [[0, 5, -1, 3, 3], [[1, 2], [0, 99]], [7]])
@pytest.mark.parametrize("shape", [(100, 24), (100, 3, 3), (100, 1)])
def test_gather_bit_exact(config, ids, shape):
    seed = encode(shape, config)
    check("DecodeGather", seed, np.array(ids, np.int64))


@pytest.mark.parametrize("config", ["lattice", "winding"])
@pytest.mark.parametrize("case", [
    dict(w=(8, 3, 3, 3), x=(1, 3, 10, 12), attrs={"pads": [1, 1, 1, 1]}),
    dict(w=(16, 8, 1, 1), x=(2, 8, 7, 5), attrs={}),
    dict(w=(12, 2, 3, 3), x=(1, 6, 9, 9), attrs={"group": 3, "strides": [2, 1], "pads": [0, 2, 1, 0]}),
    dict(w=(6, 1, 3, 3), x=(1, 6, 11, 8), attrs={"group": 6, "pads": [1, 1, 1, 1]}),  # depthwise
    dict(w=(12, 1, 5, 3), x=(2, 6, 13, 9), attrs={"group": 6, "strides": [2, 3], "dilations": [2, 1],
                                                  "pads": [2, 0, 1, 3]}),  # depthwise, multiplier 2
    dict(w=(5, 4, 3, 2), x=(1, 4, 8, 6), attrs={"auto_pad": "SAME_UPPER"}),
    dict(w=(5, 4, 3, 3), x=(1, 4, 8, 7), attrs={"strides": [2, 2], "auto_pad": "SAME_LOWER"}),
    dict(w=(40, 30, 3, 3), x=(1, 30, 20, 40), attrs={"pads": [1, 1, 1, 1]}),
    dict(w=(4, 2, 2, 2), x=(1, 2, 3, 3), attrs={"auto_pad": "VALID"}),
    dict(w=(130, 16, 1, 1), x=(2, 16, 4, 5), attrs={}),  # one tile: output channels split into blocks
    dict(w=(200, 24, 3, 1), x=(1, 48, 5, 4), attrs={"group": 2, "pads": [1, 0, 1, 0]}),
])
@pytest.mark.parametrize("bias", [False, True])
def test_conv(config, case, bias):
    seed = encode(case["w"], config)
    rng = np.random.default_rng(4)
    x = rng.standard_normal(case["x"]).astype(np.float32)
    b = rng.standard_normal(case["w"][0]).astype(np.float32) if bias else None
    check("DecodeConv", seed, x, case["attrs"], b)


def test_threads_agree():
    seed = encode((257, 300), "lattice")
    x = np.random.default_rng(5).standard_normal((33, 257)).astype(np.float32)
    model = fused_model("DecodeMatMul", seed, x.shape)
    assert np.array_equal(run(model, x, threads=1), run(model, x, threads=2))


def test_portable_loops_in_child():
    """HYPERONNX_NO_AVX2=1 forces the portable loops: the same tests pass through them."""
    if os.environ.get("HYPERONNX_NO_AVX2"):
        pytest.skip("already in the child")
    env = {**os.environ, "HYPERONNX_NO_AVX2": "1"}
    child = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k",
                            "matmul or gemm or conv or gather"],
                           capture_output=True, text=True, env=env, cwd=os.path.dirname(__file__), timeout=600)
    assert child.returncode == 0, child.stdout[-3000:]


# --- int8 compute (accuracy_level 4, docs/FORMAT.md §8.2) ----------------------------------------

INT8_CONFIGS = {"lattice": "lattice-4.25", "lattice-5b-g64": hyperonnx.LatticeConfig(index_bits=5, group=64),
                "lattice-12b": hyperonnx.LatticeConfig(index_bits=12), "trellis": hyperonnx.TrellisConfig(),
                "trellis-k3-g32": hyperonnx.TrellisConfig(index_bits=3, window=10, group=32)}
INT8_RMS = 0.02  # the int8 output's error, relative to its RMS (measured: lattice ~0.9 %, trellis ~1.5 %)


def check_int8(op, seed, x, attrs=None, extra=None, threads=0):
    """accuracy_level 4 within FORMAT.md §8.2's bound of DecodeWeights + the standard op, and its
    error against the float32 kernel below INT8_RMS of the output's RMS; returns that error."""
    got = run(fused_model(op, seed, x.shape, attrs, extra, accuracy_level=4), x, threads)
    want, bound = int8_bound(op, seed, x, attrs, extra)
    assert got.shape == want.shape
    excess = np.abs(got - want) - bound
    assert excess.max(initial=-1) <= 0, f"max error above the bound: {excess.max()}"
    exact = run(fused_model(op, seed, x.shape, attrs, extra), x, threads)
    error = float(np.sqrt(np.mean((got - exact) ** 2) / max(np.mean(exact ** 2), 1e-30)))
    assert error <= INT8_RMS, error
    # int8 where the groups line up with the kernel's 16 columns / 32-blocks (§8.2), else float32
    trans = bool((attrs or {}).get("transB", 0))
    group, (k, n) = seed.node_attributes()["group"], (seed.shape[::-1] if trans else seed.shape)
    lined_up = (group % k == 0 or math.gcd(k, group) % 32 == 0) if trans else \
        (group % n == 0 or math.gcd(n, group) % 16 == 0)
    assert (error > 0) == lined_up, (error, lined_up)
    return error


@pytest.mark.parametrize("config", list(INT8_CONFIGS))
@pytest.mark.parametrize("rows,k,n", [(1, 64, 128), (3, 100, 256), (8, 300, 400), (64, 257, 80), (9, 40, 2048),
                                      (1, 768, 2304), (3, 64, 100), (5, 33, 17)])
def test_int8_matmul(config, rows, k, n):
    """Few rows (<= 8) and more; K not a multiple of the block; N not a multiple of the group
    (400, 80: int8, groups in 16-column classes) or not lining up at all (100, 17: float32)."""
    seed = encode((k, n), INT8_CONFIGS[config])
    x = np.random.default_rng(1).standard_normal((rows, k)).astype(np.float32)
    check_int8("DecodeMatMul", seed, x)


@pytest.mark.parametrize("shape", [(2, 3, 64), (64,), (1, 1, 5, 64), (4, 2, 64)])
def test_int8_matmul_batched_and_vector(shape):
    seed = encode((64, 128), INT8_CONFIGS["lattice"])
    check_int8("DecodeMatMul", seed, np.random.default_rng(2).standard_normal(shape).astype(np.float32))


@pytest.mark.parametrize("config", ["lattice", "trellis", "lattice-5b-g64"])
@pytest.mark.parametrize("rows", [1, 3, 8, 64])
@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("k,n", [(128, 48), (300, 96), (64, 1000)])
def test_int8_gemm(config, rows, trans_b, k, n):
    seed = encode((n, k) if trans_b else (k, n), INT8_CONFIGS[config])
    rng = np.random.default_rng(3)
    x = rng.standard_normal((rows, k)).astype(np.float32)
    c = rng.standard_normal(n).astype(np.float32)
    check_int8("DecodeGemm", seed, x, {"transB": trans_b, "alpha": 0.5, "beta": 2.0}, c)


def test_int8_paths_agree():
    """AVX-512 VNNI, AVX2 and the portable loops sum the same integers: their outputs differ only by
    float32 rounding (HYPERONNX_NO_AVX512 / HYPERONNX_NO_AVX2 in children)."""
    script = (
        "import sys\n"
        "sys.path.insert(0, sys.argv[2])  # the fixtures' folder, whatever the cwd and PYTHONSAFEPATH\n"
        "import numpy as np, hyperonnx\n"
        "from fused_models import fused_model, run\n"
        "out = []\n"
        "for cfg, shape, op, t in (('lattice-4.25', (300, 400), 'DecodeMatMul', 0), ('lattice-4.25', (96, 256), 'DecodeGemm', 1),\n"
        "                          (hyperonnx.TrellisConfig(), (96, 256), 'DecodeMatMul', 0)):\n"
        "    w = (np.random.default_rng(0).standard_normal(shape) * 0.05).astype(np.float32)\n"
        "    seed = hyperonnx.encode(w, cfg, min_elements=1)\n"
        "    for rows in (1, 5, 13):\n"
        "        x = np.random.default_rng(rows).standard_normal((rows, shape[1] if t else shape[0])).astype(np.float32)\n"
        "        out.append(run(fused_model(op, seed, x.shape, {'transB': 1} if t else None, accuracy_level=4), x).ravel())\n"
        "np.save(sys.argv[1], np.concatenate(out))\n")
    results = []
    for i, env in enumerate([{}, {"HYPERONNX_NO_AVX512": "1"}, {"HYPERONNX_NO_AVX2": "1"}]):
        path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"hyperonnx-int8-paths-{os.getpid()}-{i}.npy")
        child = subprocess.run([sys.executable, "-c", script, path, os.path.dirname(os.path.abspath(__file__))],
                               capture_output=True, text=True, env={**os.environ, **env}, timeout=300)
        assert child.returncode == 0, child.stderr[-3000:]
        results.append(np.load(path))
        os.remove(path)
    scale = np.abs(results[0]).max()
    for other in results[1:]:
        assert np.abs(other - results[0]).max() <= 1e-5 * scale


@pytest.mark.parametrize("config,shape,op,trans", [
    ("lattice-4.25", (300, 400), "DecodeMatMul", 0), ("lattice-4.25", (96, 256), "DecodeGemm", 1),
    ("lattice-4.25", (64, 4000), "DecodeMatMul", 0), (hyperonnx.TrellisConfig(), (96, 256), "DecodeMatMul", 0),
    (hyperonnx.LatticeConfig(index_bits=12, group=64), (128, 96), "DecodeGemm", 1),
    (hyperonnx.LatticeConfig(index_bits=5, group=32), (70, 48), "DecodeMatMul", 0)])
def test_int8_packed_matches_seed_path(config, shape, op, trans):
    """packing auto (int8 quads made once at kernel creation) against packing none (decoded from
    the seed every call): the same integer sums, so the same outputs up to the float32 order of
    the blocks' sums (bit for bit where both run the same tile order: more than 8 rows, transB);
    and the packed bytes are counted while the session lives."""
    import ctypes
    seed = encode(shape, config)
    library = ctypes.CDLL(hyperonnx.get_library_path())
    library.HyperonnxPackedBytes.restype = ctypes.c_int64
    before = library.HyperonnxPackedBytes()
    for rows in (1, 3, 8, 9, 40):
        x = np.random.default_rng(rows).standard_normal((rows, shape[1] if trans else shape[0])).astype(np.float32)
        model = fused_model(op, seed, x.shape, {"transB": 1} if trans else None, accuracy_level=4)
        packed, plain = run(model, x, packing="auto"), run(model, x, packing="none")
        if rows > 8 or trans:
            assert packed.tobytes() == plain.tobytes()
        else:
            assert np.abs(packed - plain).max() <= 1e-5 * np.abs(plain).max()
        want, bound = int8_bound(op, seed, x, {"transB": 1} if trans else None)
        assert np.all(np.abs(packed - want) <= bound)
    assert library.HyperonnxPackedBytes() == before  # the sessions are gone, and their packed weights


@pytest.mark.parametrize("config", ["lattice-4.25", hyperonnx.LatticeConfig(index_bits=5, group=128),
                                    hyperonnx.LatticeConfig(index_bits=8, group=64, alpha=1.3, beta=0.1),
                                    hyperonnx.LatticeConfig(index_bits=12, group=64),
                                    hyperonnx.LatticeConfig(index_bits=16, group=128)])
@pytest.mark.parametrize("rows", [1, 2, 3, 8, 9, 40])
@pytest.mark.parametrize("op,k,n", [("DecodeMatMul", 300, 192), ("DecodeMatMul", 7, 64), ("DecodeGemm", 513, 128)])
def test_float_packed(config, rows, op, k, n):
    """Float compute from the layout packed at kernel creation (lattice, groups and N multiples of
    64, a CPU with AVX-512 VBMI: steps <= 8 bits as codes, wider as uint16 steps; elsewhere the
    seed path): within the float32 bound of DecodeWeights + the standard op, as the seed path; the
    packed bytes are counted."""
    import ctypes
    try:
        seed = encode((k, n), config)
    except Exception as error:  # an attribute set the encoder refuses
        pytest.skip(str(error))
    if seed.codec != fmt.CODEC_LATTICE:
        pytest.skip("not a lattice seed")
    x = np.random.default_rng(rows).standard_normal((rows, k)).astype(np.float32)
    model = fused_model(op, seed, x.shape)
    library = ctypes.CDLL(hyperonnx.get_library_path())
    library.HyperonnxPackedBytes.restype = ctypes.c_int64
    before = library.HyperonnxPackedBytes()
    session = hyperonnx.InferenceSession(model, packing="auto")
    vbmi = "avx512vbmi" in open("/proc/cpuinfo").read() and not any(
        os.environ.get(name, "0") not in ("", "0") for name in ("HYPERONNX_NO_AVX2", "HYPERONNX_NO_AVX512"))
    if vbmi and seed.node_attributes()["group"] % 64 == 0:
        assert library.HyperonnxPackedBytes() - before >= k * n  # the codes: a byte a weight
    got = session.run(None, {"x": x})[0]
    want, bound = reference(op, seed, x)
    assert np.all(np.abs(got - want) <= bound)
    plain = hyperonnx.InferenceSession(model, packing="none").run(None, {"x": x})[0]
    assert np.all(np.abs(plain - want) <= bound)
    del session


def test_packing_option():
    """hyperonnx.InferenceSession(packing=...): auto packs (the library counts the bytes), none
    does not; a bad value or a bad config entry is refused."""
    import ctypes
    seed = encode((256, 512), "lattice-4.25")
    model = fused_model("DecodeMatMul", seed, [1, 256], accuracy_level=4)
    library = ctypes.CDLL(hyperonnx.get_library_path())
    library.HyperonnxPackedBytes.restype = ctypes.c_int64
    before = library.HyperonnxPackedBytes()
    x = np.random.default_rng(0).standard_normal((1, 256)).astype(np.float32)
    packed = hyperonnx.InferenceSession(model, packing="auto")
    assert library.HyperonnxPackedBytes() - before >= 256 * 512
    plain = hyperonnx.InferenceSession(model, packing="none")
    assert library.HyperonnxPackedBytes() - before < 2 * 256 * 512
    assert np.abs(packed.run(None, {"x": x})[0] - plain.run(None, {"x": x})[0]).max() < 1e-4
    del packed, plain
    assert library.HyperonnxPackedBytes() == before
    with pytest.raises(ValueError, match="packing must be one of"):
        hyperonnx.InferenceSession(model, packing="fast")
    so = ort.SessionOptions()
    so.add_session_config_entry("hyperonnx.packing", "sometimes")
    with pytest.raises(Exception, match="hyperonnx.packing='sometimes' is not one of auto, packed, none"):
        so.register_custom_ops_library(hyperonnx.get_library_path())


@pytest.mark.parametrize("op", ["DecodeMatMul", "DecodeGemm"])
@pytest.mark.parametrize("level", [1, 2, 3, 5, -1, 1 << 40])
def test_int8_bad_accuracy_level(op, level):
    seed = encode((64, 48), "lattice")
    refused(fused_model(op, seed, [None, None], accuracy_level=level), np.zeros((1, 64), np.float32),
            "accuracy_level .* is not supported: 0 .float32. or 4 .int8 compute.")


def test_int8_validates_activation():
    seed = encode((64, 48), "lattice")
    refused(fused_model("DecodeMatMul", seed, [None, None], accuracy_level=4), np.zeros((2, 63), np.float32),
            "last dimension")
    refused(fused_model("DecodeGemm", seed, [None] * 3, accuracy_level=4), np.zeros((2, 3, 64), np.float32),
            "must be")


def test_int8_tiny_and_non_finite_activations():
    """FORMAT.md §8.2: a block below 2^-120 counts as 0 (finite outputs, no overflowing scale);
    one holding NaN or Inf makes its row's outputs NaN, other rows unchanged."""
    seed = encode((64, 128), "lattice")
    model = fused_model("DecodeMatMul", seed, [3, 64], accuracy_level=4)
    x = np.random.default_rng(7).standard_normal((3, 64)).astype(np.float32)
    reference = run(model, x)
    for scale in (1e-37, 1e-36, 3e-36):
        assert np.isfinite(run(model, x * np.float32(scale))).all()
    for bad in (np.nan, np.inf):
        y = x.copy()
        y[1, 5] = bad
        got = run(model, y)
        assert np.isnan(got[1]).all() and np.array_equal(got[[0, 2]], reference[[0, 2]])


def test_int8_level_0_is_float():
    seed = encode((64, 48), "lattice")
    x = np.random.default_rng(6).standard_normal((3, 64)).astype(np.float32)
    assert np.array_equal(run(fused_model("DecodeMatMul", seed, x.shape, accuracy_level=0), x),
                          run(fused_model("DecodeMatMul", seed, x.shape), x))


# --- bad input: a clear error, never a crash -----------------------------------------------------

def refused(model, x, match):
    with pytest.raises((ort.capi.onnxruntime_pybind11_state.Fail, ort.capi.onnxruntime_pybind11_state.InvalidArgument,
                        ort.capi.onnxruntime_pybind11_state.RuntimeException), match=match):
        run(model, x)


def test_activation_shape_mismatch():
    seed = encode((64, 40), "lattice")
    refused(fused_model("DecodeMatMul", seed, [None, None]), np.zeros((2, 63), np.float32), "last dimension")
    refused(fused_model("DecodeGemm", seed, [None] * 3), np.zeros((2, 3, 64), np.float32), "must be")
    conv = encode((4, 2, 3, 3), "lattice")
    refused(fused_model("DecodeConv", conv, [None] * 4), np.zeros((1, 3, 5, 5), np.float32), "must be")
    refused(fused_model("DecodeConv", conv, [None] * 4), np.zeros((1, 2, 2, 2), np.float32), "smaller than the kernel")


def test_gather_index_out_of_range():
    seed = encode((10, 4), "winding")
    refused(fused_model("DecodeGather", seed, [None], x_type=TensorProto.INT64), np.array([3, 10], np.int64),
            "outside")
    refused(fused_model("DecodeGather", seed, [None], x_type=TensorProto.INT64), np.array([-11], np.int64), "outside")


@pytest.mark.parametrize("fault", ["seed_length", "bad_index", "scale_nan", "dtype", "rank", "conv_attr", "trans_a"])
def test_bad_node_refused_at_creation(fault):
    seed = encode((16, 8), "lattice")
    op, attrs, match = "DecodeMatMul", {}, ""
    payload, scales, dtype, shape = seed.payload.copy(), seed.scales.copy(), seed.dtype, seed.shape
    if fault == "seed_length":
        payload, match = payload[:-1], "rule 4"
    elif fault == "bad_index":
        payload[:] = 0xFF
        match = "rule 7"
    elif fault == "scale_nan":
        scales[0], match = np.float16("nan"), "rule 6"
    elif fault == "dtype":
        dtype, match = TensorProto.FLOAT16, "float32"
    elif fault == "rank":
        shape, match = (128,), "matrix"
    elif fault == "conv_attr":
        op, shape, attrs, match = "DecodeConv", (2, 4, 4, 4), {"group": 3}, "group"
    elif fault == "trans_a":
        op, attrs, match = "DecodeGemm", {"transA": 1}, "transA"
    bad = hyperonnx.Seed(seed.codec, shape, dtype, payload, seed.attrs, scales=scales)
    refused(fused_model(op, bad, [None, None], attrs), np.zeros((1, 16), np.float32), match)


def test_seed_must_be_constant():
    seed = encode((16, 8), "lattice")
    model = fused_model("DecodeMatMul", seed, [1, 16])
    model.graph.input.append(helper.make_tensor_value_info("w.seed", TensorProto.UINT8, [len(seed.payload)]))
    del model.graph.initializer[0]
    so = ort.SessionOptions()
    so.register_custom_ops_library(hyperonnx.get_library_path())
    with pytest.raises(Exception, match="constant initializer"):
        ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def test_fused_needs_version_3():
    assert fmt.FUSED_VERSION == 3 and fmt.FUSED_VERSION in fmt.KNOWN_VERSIONS
