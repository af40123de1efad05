"""The fused CUDA kernels (DecodeMatMul / DecodeGemm / DecodeGather: custom_ops/cuda/fused_cuda.cu)
through the library's entry points hyperonnx_cuda_fused_{lattice,trellis,winding} (a weight from
host arrays, validated and copied to the GPU), hyperonnx_cuda_fused_gemm / _gather (device buffers
from torch or CuPy) and hyperonnx_cuda_fused_free.

Products are held to FORMAT.md §8.2's float32 bound against float64 numpy on the reference
decoder's weight: |Y - A W| <= (K + 4) * 2^-23 * (|alpha| |A| |W| + |beta C|), for M = 1, 4, 8 (the
GEMV kernels), 16, 33, 256 (the tiled kernel's two tile heights), shapes whose K and N are and are
not multiples of 8 (whole chunks and element by element), W as [K, N] and transposed (transB),
every codec and kernel path: lattice with its shared-memory table (b <= 13) and without (b = 14),
groups of 6 (a chunk spans several scales), trellis with its table (L = 12) and without (L = 16),
k = 2 with 2-byte group streams (windows wrap), winding. Gather is compared bit for bit, with
repeated, negative and more than 256 indices (several launches). Writes outside the output are
caught by guard words, broken rules and shapes are refused.

The refusals need no GPU: a weight is validated on the host before anything reaches the device,
so those tests run wherever the library was built with CUDA (a valid weight then fails with a CUDA
error instead of being created). The others are marked `cuda` and skipped without a GPU, without torch.cuda / CuPy, or when the library was built without CUDA.
The library is $HYPERONNX_LIBRARY or the installed one. Where hyperonnx cannot be imported (a GPU
machine without onnx), the weights come from a fixture file written beforehand by
`python tests/test_cuda_fused.py --write-fixtures FILE` and named by $HYPERONNX_CUDA_FUSED_FIXTURES.
"""

from __future__ import annotations

import ctypes
import sys

import numpy as np
import pytest

import cuda_fixtures
from test_cuda import Device, library_path

EPS = 2.0 ** -23
ROWS = (1, 4, 8, 16, 33, 256)
GUARD = 64  # guard floats before and after every output

try:  # the encoder and the reference decoder; absent on a bare GPU machine (fixtures then)
    import hyperonnx
except ImportError:  # pragma: no cover - depends on the environment
    hyperonnx = None


# ----------------------------------------------------------------------------- the weights

def make_cases():
    """(name, seed, decoded float32 weight) per codec path, each weight [R, C] used both as
    MatMul's [K, N] and as Gemm transB's [N, K]."""
    rng = np.random.default_rng(17)
    configs = {
        "lattice-b8": hyperonnx.LatticeConfig(index_bits=8),
        "lattice-b14": hyperonnx.LatticeConfig(index_bits=14),  # N > 8192: no table
        "lattice-g6": hyperonnx.LatticeConfig(index_bits=6, group=6),
        "trellis-l12": hyperonnx.TrellisConfig(),
        "trellis-k8-l16": hyperonnx.TrellisConfig(index_bits=8),  # L = 16: no table
        "trellis-k2-g8": hyperonnx.TrellisConfig(index_bits=2, window=10, memory=0, group=8),
        "winding": "paper",
    }
    shapes = [(256, 384), (129, 77), (40, 1000), (1000, 24), (7, 5)]
    cases = []
    for name, config in configs.items():
        for shape in shapes:
            if name in ("lattice-b14", "trellis-k8-l16") and shape[0] * shape[1] > 40000:
                continue  # slow encodes; the small shapes cover these paths
            w = (rng.standard_normal(shape) * 0.05).astype(np.float32)
            seed = hyperonnx.encode(w, config, min_elements=1)
            assert seed.codec == name.split("-")[0], (name, seed.codec)
            decoded = np.asarray(hyperonnx.decode(seed), np.float32)
            case = {"name": f"{name}-{shape[0]}x{shape[1]}", "codec": seed.codec, "shape": list(seed.shape),
                    "attrs": {k: (list(map(float, v)) if isinstance(v, (list, tuple)) else v)
                              for k, v in seed.attrs.items()},
                    "payload": np.ascontiguousarray(seed.payload, np.uint8), "weight": decoded}
            if seed.scales is not None:
                case["scales"] = np.ascontiguousarray(seed.scales, np.float16).view(np.uint16)
            cases.append(case)
    return cases


ARRAYS = ("payload", "scales", "weight")


def write_fixtures(path):
    return cuda_fixtures.save(path, make_cases(), ARRAYS)


_CASES = None


def cases():
    global _CASES
    if _CASES is None:
        _CASES = make_cases() if hyperonnx is not None else cuda_fixtures.load("HYPERONNX_CUDA_FUSED_FIXTURES", ARRAYS)
    return _CASES


# ----------------------------------------------------------------------------- the entry points

class Fused:
    """ctypes declarations of the hyperonnx_cuda_fused_* entry points (fused_cuda_op.cc)."""

    def __init__(self, lib):
        u64, i64, p, f32, i32 = ctypes.c_uint64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_float, ctypes.c_int
        pi64, pf32, pp, msg = ctypes.POINTER(i64), ctypes.POINTER(f32), ctypes.POINTER(p), ctypes.c_char_p
        self.lattice = lib.hyperonnx_cuda_fused_lattice
        self.lattice.argtypes = [p, u64, p, u64, pi64, u64, i64, i64, i64, f32, f32, f32, p, pp, msg, u64]
        self.trellis = lib.hyperonnx_cuda_fused_trellis
        self.trellis.argtypes = [p, u64, p, u64, pi64, u64, i64, i64, i64, f32, p, pp, msg, u64]
        self.winding = lib.hyperonnx_cuda_fused_winding
        self.winding.argtypes = [p, u64, pi64, u64, i64, i64, i64, pf32, u64, f32, pf32, u64, p, pp, msg, u64]
        self.gemm = lib.hyperonnx_cuda_fused_gemm
        self.gemm.argtypes = [p, p, u64, i32, f32, f32, p, i64, i64, p, p, msg, u64]
        self.gather = lib.hyperonnx_cuda_fused_gather
        self.gather.argtypes = [p, pi64, u64, p, p, msg, u64]
        for fn in (self.lattice, self.trellis, self.winding, self.gemm, self.gather):
            fn.restype = ctypes.c_int
        self.free = lib.hyperonnx_cuda_fused_free
        self.free.argtypes = [p]
        self.free.restype = None

    def create(self, case, payload=None, scales=None, shape=None, attrs=None, seed_bytes=None, scales_count=None):
        """(status, message, handle) for a case's weight, parts replaced."""
        payload = case["payload"] if payload is None else payload
        scales = case.get("scales") if scales is None else scales
        shape = case["shape"] if shape is None else shape
        a = dict(case["attrs"], **(attrs or {}))
        handle = ctypes.c_void_p()
        message = ctypes.create_string_buffer(1024)
        shape_arr = (ctypes.c_int64 * max(1, len(shape)))(*shape)
        seed_ptr = payload.ctypes.data_as(ctypes.c_void_p)
        nbytes = payload.size if seed_bytes is None else seed_bytes
        tail = (None, ctypes.byref(handle), message, len(message))
        if case["codec"] == "winding":
            center = (ctypes.c_float * 2)(*a["center"])
            rings = (ctypes.c_float * max(1, len(a["ring_scales"])))(*a["ring_scales"])
            rc = self.winding(seed_ptr, nbytes, shape_arr, len(shape), a["bits"], a["points"], a["rings"], center,
                              len(a["center"]), a["side"], rings, len(a["ring_scales"]), *tail)
        else:
            count = scales.size if scales_count is None else scales_count
            scales_ptr = scales.ctypes.data_as(ctypes.c_void_p)
            if case["codec"] == "lattice":
                rc = self.lattice(seed_ptr, nbytes, scales_ptr, count, shape_arr, len(shape), a["bits"], a["generator"],
                                  a["group"], a["alpha"], a["beta"], a["scale_unit"], *tail)
            else:
                rc = self.trellis(seed_ptr, nbytes, scales_ptr, count, shape_arr, len(shape), a["bits"], a["window"],
                                  a["group"], a["scale_unit"], *tail)
        return rc, message.value.decode(), handle


@pytest.fixture(scope="module")
def fused():
    lib = ctypes.CDLL(library_path())
    if getattr(lib, "hyperonnx_cuda_fused_gemm", None) is None:
        pytest.skip("the library was built without the CUDA kernels")
    return Fused(lib)


@pytest.fixture(scope="module")
def gpu(fused):
    device = Device()
    if not device.available:
        pytest.skip("no CUDA GPU (torch.cuda / CuPy)")
    return device, fused


@pytest.fixture(scope="module")
def weights(gpu):
    """Every case's weight created once on the GPU: {name: handle}."""
    device, fused = gpu
    handles = {}
    for case in cases():
        rc, message, handle = fused.create(case)
        assert rc == 0, (case["name"], message)
        handles[case["name"]] = handle
    yield handles
    for handle in handles.values():
        fused.free(handle)


def upload_floats(device, array):
    """A device copy of float32 `array` with GUARD poison floats on each side; (buffer, pointer of
    the first real float)."""
    host = np.ascontiguousarray(array, np.float32).view(np.uint8).reshape(-1)
    buf, ptr = device.upload(np.concatenate([np.full(4 * GUARD, 0xA5, np.uint8), host,
                                             np.full(4 * GUARD, 0xA5, np.uint8)]))
    return buf, ptr + 4 * GUARD


def output_buffer(device, count):
    return device.empty(4 * (count + 2 * GUARD))


def read_output(device, buf, count):
    """The output's floats, after checking the guards on both sides are untouched."""
    device.synchronize()
    raw = device.download(buf, 4 * (count + 2 * GUARD))
    assert (raw[:4 * GUARD] == 0xA5).all() and (raw[4 * (GUARD + count):] == 0xA5).all(), "wrote outside the output"
    return raw[4 * GUARD:4 * (GUARD + count)].view(np.float32).copy()


def gemm_on_gpu(device, fused, handle, a, trans, alpha=1.0, beta=1.0, c=None, cols=None):
    rows = a.shape[0]
    a_buf, a_ptr = upload_floats(device, a)
    c_buf, c_ptr = upload_floats(device, c) if c is not None else (None, None)
    c_rows, c_cols = (c.shape if c.ndim == 2 else (1, c.shape[-1] if c.ndim else 1)) if c is not None else (1, 1)
    y_buf, y_ptr = output_buffer(device, rows * cols)
    device.synchronize()
    message = ctypes.create_string_buffer(1024)
    rc = fused.gemm(handle, a_ptr, rows, int(trans), alpha, beta, c_ptr, c_rows, c_cols, y_ptr + 4 * GUARD, None,
                    message, len(message))
    assert rc == 0, message.value.decode()
    return read_output(device, y_buf, rows * cols).reshape(rows, cols)


def check_product(got, a, w, alpha=1.0, beta=1.0, c=None):
    """FORMAT.md §8.2: within the float32 summation bound of the exact product."""
    a64, w64 = a.astype(np.float64), w.astype(np.float64)
    want = alpha * (a64 @ w64)
    magnitude = abs(alpha) * (np.abs(a64) @ np.abs(w64))
    if c is not None and beta != 0.0:
        want = want + beta * c.astype(np.float64)
        magnitude = magnitude + np.abs(beta * c.astype(np.float64))
    bound = (a.shape[1] + 4) * EPS * magnitude + 1e-30
    assert np.isfinite(got).all()
    excess = np.abs(got - want) - bound
    assert excess.max(initial=-1.0) <= 0, f"error above the bound by {excess.max()} at {np.unravel_index(excess.argmax(), excess.shape)}"


# ----------------------------------------------------------------------------- the tests

@pytest.mark.cuda
@pytest.mark.parametrize("trans", [False, True], ids=["W_KxN", "transB"])
def test_products_within_float32_bound(gpu, weights, trans):
    device, fused = gpu
    rng = np.random.default_rng(1)
    for case in cases():
        w = case["weight"]
        k, n = (w.shape[1], w.shape[0]) if trans else w.shape
        effective = w.T if trans else w
        for rows in ROWS:
            a = rng.standard_normal((rows, k)).astype(np.float32)
            got = gemm_on_gpu(device, fused, weights[case["name"]], a, trans, cols=n)
            try:
                check_product(got, a, effective)
            except AssertionError as e:
                raise AssertionError(f"{case['name']}, M={rows}, transB={trans}: {e}") from None


@pytest.mark.cuda
@pytest.mark.parametrize("rows", [1, 16])
@pytest.mark.parametrize("trans", [False, True], ids=["W_KxN", "transB"])
@pytest.mark.parametrize("c_shape", ["none", "scalar", "row", "column", "full"])
def test_gemm_alpha_beta_c(gpu, weights, rows, trans, c_shape):
    device, fused = gpu
    rng = np.random.default_rng(2)
    case = next(c for c in cases() if c["name"] == "lattice-b8-129x77")
    w = case["weight"].T if trans else case["weight"]
    k, n = w.shape
    a = rng.standard_normal((rows, k)).astype(np.float32)
    c = {"none": None, "scalar": np.array(0.5, np.float32), "row": rng.standard_normal(n).astype(np.float32),
         "column": rng.standard_normal((rows, 1)).astype(np.float32),
         "full": rng.standard_normal((rows, n)).astype(np.float32)}[c_shape]
    got = gemm_on_gpu(device, fused, weights[case["name"]], a, trans, alpha=-1.5, beta=0.25,
                      c=None if c is None else c.reshape(c.shape if c.ndim else (1, 1)), cols=n)
    check_product(got, a, w, alpha=-1.5, beta=0.25, c=None if c is None else np.broadcast_to(c, (rows, n)))


@pytest.mark.cuda
def test_gather_rows_bit_for_bit(gpu, weights):
    device, fused = gpu
    rng = np.random.default_rng(3)
    for case in cases():
        w = case["weight"]
        rows = w.shape[0]
        for indices in (np.array([0, rows - 1, -1, -rows, 0]), rng.integers(-rows, rows, 300)):
            indices = indices.astype(np.int64)
            count = indices.size * w.shape[1]
            y_buf, y_ptr = output_buffer(device, count)
            device.synchronize()
            message = ctypes.create_string_buffer(1024)
            rc = fused.gather(weights[case["name"]], indices.ctypes.data_as(ctypes.POINTER(ctypes.c_int64)),
                              indices.size, y_ptr + 4 * GUARD, None, message, len(message))
            assert rc == 0, message.value.decode()
            got = read_output(device, y_buf, count).reshape(indices.size, w.shape[1])
            assert got.tobytes() == w[indices].tobytes(), case["name"]


@pytest.mark.cuda
def test_gather_out_of_range_refused(gpu, weights):
    device, fused = gpu
    case = cases()[0]
    rows = case["weight"].shape[0]
    y_buf, y_ptr = output_buffer(device, 4 * case["weight"].shape[1])
    for bad in (rows, -rows - 1):
        indices = np.array([0, 1, bad, 2], np.int64)
        message = ctypes.create_string_buffer(1024)
        rc = fused.gather(weights[case["name"]], indices.ctypes.data_as(ctypes.POINTER(ctypes.c_int64)), 4,
                          y_ptr + 4 * GUARD, None, message, len(message))
        assert rc == 1 and "indices[2]" in message.value.decode(), (rc, message.value)


@pytest.mark.cuda
def test_empty_products(gpu, weights):
    """M = 0 writes nothing; a weight of 0 elements gives alpha * 0 + beta * C."""
    device, fused = gpu
    case = cases()[0]
    message = ctypes.create_string_buffer(1024)
    assert fused.gemm(weights[case["name"]], None, 0, 0, 1.0, 1.0, None, 1, 1, None, None, message, 1024) == 0
    empty = dict(case, shape=[0, 5], payload=np.zeros(0, np.uint8), scales=np.zeros(0, np.uint16))
    rc, text, handle = fused.create(empty)
    assert rc == 0, text
    try:
        c = np.arange(5, dtype=np.float32)
        got = gemm_on_gpu(device, fused, handle, np.zeros((3, 0), np.float32), False, alpha=2.0, beta=0.5,
                          c=c.reshape(1, 5), cols=5)
        assert got.tobytes() == np.broadcast_to(0.5 * c, (3, 5)).astype(np.float32).tobytes()
    finally:
        fused.free(handle)


def _codec_case(codec):
    return next(c for c in cases() if c["codec"] == codec)


@pytest.mark.parametrize("codec", ["lattice", "trellis", "winding"])
def test_wrong_seed_length_refused(fused, codec):
    case = _codec_case(codec)
    for delta in (-1, 1):
        rc, message, handle = fused.create(case, seed_bytes=case["payload"].size + delta)
        assert rc == 1 and "rule 4" in message and not handle.value, (rc, message)


@pytest.mark.parametrize("codec", ["lattice", "trellis"])
def test_bad_scales_refused(fused, codec):
    case = _codec_case(codec)
    rc, message, _ = fused.create(case, scales_count=case["scales"].size - 1)
    assert rc == 1 and "rule 6" in message, (rc, message)
    scales = case["scales"].copy()
    scales[scales.size // 2] = 0x7E00  # NaN
    rc, message, _ = fused.create(case, scales=scales)
    assert rc == 1 and "rule 6" in message, (rc, message)


def test_lattice_step_beyond_trajectory_refused(fused):
    """Rule 7: the all-ones step, found by the host scan before anything reaches the GPU."""
    case = _codec_case("lattice")
    bits = case["attrs"]["bits"]
    payload = case["payload"].copy()
    pair = payload.size * 8 // bits // 2
    for b in range(bits):
        byte, offset = divmod(pair * bits + b, 8)
        payload[byte] |= 1 << offset
    rc, message, _ = fused.create(case, payload=payload)
    assert rc == 1 and "rule 7" in message, (rc, message)


def test_valid_weight_reaches_the_gpu(fused):
    """A weight that passes every rule is created (rc 0) or, without a GPU, fails at the copy (rc
    2, a CUDA error), never refused."""
    for codec in ("lattice", "trellis", "winding"):
        rc, message, handle = fused.create(_codec_case(codec))
        assert rc in (0, 2), (codec, rc, message)
        assert (rc == 0) == bool(handle.value)
        fused.free(handle)


@pytest.mark.cuda
def test_bad_arguments_refused(gpu, weights):
    _, fused = gpu
    case = cases()[0]
    message = ctypes.create_string_buffer(1024)
    assert fused.gemm(None, None, 1, 0, 1.0, 1.0, None, 1, 1, None, None, message, 1024) == 3
    assert fused.gemm(weights[case["name"]], None, 1, 2, 1.0, 1.0, None, 1, 1, None, None, message, 1024) == 3
    assert fused.gemm(weights[case["name"]], None, 1, 0, 1.0, 1.0, None, 1, 1, None, None, message, 1024) == 3


def test_bad_attributes_refused(fused):
    for codec, change in (("lattice", {"bits": 1}), ("trellis", {"window": 17}), ("winding", {"points": 0})):
        rc, text, _ = fused.create(_codec_case(codec), attrs=change)
        assert rc == 1 and "rule 2" in text, (codec, rc, text)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--write-fixtures":
        print(f"{write_fixtures(sys.argv[2])} cases written to {sys.argv[2]}")
    else:
        print(__doc__)
        sys.exit(2)
