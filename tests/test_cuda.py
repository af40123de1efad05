"""The CUDA kernel of DecodeWeights against the reference decoder, through the library's exported
C entry points `hyperonnx_cuda_decode` (winding) and `hyperonnx_cuda_decode_lattice` driven with
torch (or CuPy) device buffers: bytes equal for every preset, dtype, shape (odd lengths included),
bit width (winding 1..24, lattice 2..16), lattice groups that do not divide the size, and both
kernel paths (direct arithmetic, shared-memory table); every FORMAT.md section 5 and 7.4 rule
refused with an error, without a crash or a sticky CUDA error.

Skipped without a GPU, without torch.cuda / CuPy, or when the library was built without CUDA.
The library is $HYPERONNX_LIBRARY or the installed one. Where hyperonnx's own dependencies (onnx,
ml_dtypes) are missing, e.g. on a GPU machine without network, the cases come from a fixture file
written beforehand by `python tests/test_cuda.py --write-fixtures FILE` and named by
$HYPERONNX_CUDA_FIXTURES.
"""

from __future__ import annotations

import ctypes
import math
import os
import sys

import numpy as np
import pytest

import cuda_fixtures

pytestmark = pytest.mark.cuda

FLOAT, FLOAT16, BFLOAT16 = 1, 10, 16
ITEMSIZE = {FLOAT: 4, FLOAT16: 2, BFLOAT16: 2}
MODES = {"auto": 0, "direct": 1, "table": 2}

try:  # the reference decoder and the encoder; absent on a bare GPU machine (fixtures then)
    import hyperonnx
    from hyperonnx.codec import bitpack
except ImportError:  # pragma: no cover - depends on the environment
    hyperonnx = None


# ----------------------------------------------------------------------------- the cases

def _weights(rng, size, scale=0.05, outlier_gain=25.0):
    array = rng.standard_normal(size) * scale
    if size > 8:
        array[rng.integers(0, size, max(4, size // 500))] *= outlier_gain  # outliers: ring classes
    return array


def _case(name, seed, payload=None):
    """A case: codec, attributes, packed seed (and lattice scales, as uint16 bit patterns) and the
    reference decoder's output bytes."""
    payload = seed.payload if payload is None else payload
    expected = hyperonnx.decode(seed)
    case = {"name": name, "codec": seed.codec, "shape": list(seed.shape), "dtype": int(seed.dtype),
            "attrs": {k: (list(map(float, v)) if k in ("center", "ring_scales") else v)
                      for k, v in seed.attrs.items()},
            "payload": np.ascontiguousarray(payload, dtype=np.uint8),
            "expected": np.frombuffer(expected.tobytes(), dtype=np.uint8).copy()}
    if seed.codec == "lattice":
        case["scales"] = np.ascontiguousarray(seed.scales, dtype=np.float16).view(np.uint16)
    return case


def _winding(indices, shape, dtype, bits, points, rings, center, side, scales):
    attrs = {"bits": bits, "points": points, "rings": rings, "center": [float(c) for c in center],
             "side": float(side), "ring_scales": [float(s) for s in scales]}
    return hyperonnx.Seed("winding", tuple(shape), dtype, bitpack.pack(np.asarray(indices, np.uint64), bits), attrs)


def _lattice(steps, shape, dtype, bits, generator, group, scales, alpha=0.5, beta=0.5, unit=1.0):
    attrs = {"bits": bits, "generator": generator, "group": group, "alpha": float(alpha), "beta": float(beta),
             "scale_unit": float(unit)}
    return hyperonnx.Seed("lattice", tuple(shape), dtype, bitpack.pack(np.asarray(steps, np.uint64), bits), attrs,
                          scales=np.asarray(scales, dtype=np.float16))


def make_lattice_cases(rng, np_types):
    """Lattice cases: real encodes, then every index width 2..16 with random steps over the whole
    trajectory, awkward scales (zero, subnormal, negative, float16 overflow of the output, bfloat16
    range), generators, companding and groups that do not divide the size."""
    cases = []
    for bits, group, shape in ((4, 128, (64, 130)), (8, 128, (1001,)), (8, 32, (33, 65)), (12, 64, (3, 5, 7, 11)),
                               (16, 128, ((1 << 20) + 3,)), (6, 2, (257,))):
        for dtype in (FLOAT, FLOAT16, BFLOAT16):
            if shape[0] > 1 << 20 and dtype != FLOAT16:
                continue
            array = _weights(rng, math.prod(shape), 0.05, 8.0).astype(np_types[dtype]).reshape(shape)
            seed = hyperonnx.encode(array, hyperonnx.LatticeConfig(index_bits=bits, group=group), min_elements=1)
            assert seed.codec == "lattice", (bits, shape, seed.codec)
            cases.append(_case(f"lattice-b{bits}-g{group}-{dtype}-{'x'.join(map(str, shape))}", seed))
    for bits in range(2, 17):
        n = (1 << bits) - 1
        generator = int(rng.integers(0, max(1, (n - 1) // 2))) * 2 + 1  # odd, < N
        dtype = (FLOAT, FLOAT16, BFLOAT16)[bits % 3]
        count = int(rng.integers(1, 60000)) * 2 + int(rng.integers(0, 2))
        group = 126 if bits == 10 else int(rng.choice([2, 6, 64, 126, 128, 1000, 65536]))
        pairs = (count + 1) // 2
        steps = rng.integers(0, n, pairs)
        steps[: min(pairs, n)] = np.arange(min(pairs, n))  # every step when it fits
        groups = -(-count // group)
        kind = bits % 4
        if kind == 0:  # ordinary scales, with zeros, negatives and subnormals
            scales = rng.uniform(-4, 4, groups)
            scales[::7] = 0.0
            scales[1::11] = 3e-7
            alpha, beta, unit = float(rng.uniform(0.1, 1)), float(rng.uniform(0, 1)), 2.0 ** -14
        elif kind == 1:  # outputs past float16's range: +-Inf in float16
            scales = rng.uniform(30000, 65504, groups) * rng.choice([-1, 1], groups)
            alpha, beta, unit = 0.5, 0.5, 4.0
        elif kind == 2:  # float16 subnormal outputs
            scales = rng.uniform(1, 100, groups)
            alpha, beta, unit = -0.25, 1.5, 2.0 ** -30
        else:  # bfloat16 range (float16 Inf)
            scales = rng.uniform(1000, 60000, groups)
            alpha, beta, unit = 0.75, 0.25, 2.0 ** 100  # the largest unit rule 2 allows
        seed = _lattice(steps, (count,), dtype, bits, generator, group, scales, alpha, beta, unit)
        cases.append(_case(f"lattice-bits{bits}-{dtype}-{count}-g{group}", seed))
    # The worked example of FORMAT.md section 7.5 and a scalar.
    example = hyperonnx.Seed("lattice", (5,), FLOAT, np.array([0x2B, 0x00], np.uint8),
                             {"bits": 3, "generator": 3, "group": 4, "alpha": 0.5, "beta": 0.5, "scale_unit": 0.5},
                             scales=np.array([2.0, 3.0], np.float16))
    case = _case("lattice-format-example", example)
    assert case["expected"].tobytes().hex() == "0000000000000000710dc23e373a1ebe94bd8ebf"
    cases.append(case)
    cases.append(_case("lattice-scalar", _lattice([5], (), BFLOAT16, 3, 3, 2, [1.5], unit=0.5)))
    # the largest companding and unit rule 2 allows: products overflow to +-Inf (never NaN),
    # zero scales give signed zeros; every step of 8 bits, each dtype
    for dtype in (FLOAT, FLOAT16, BFLOAT16):
        extreme = _lattice(np.arange(255), (510,), dtype, 8, 101, 64, [65504.0, 0.0, -2.0, 1e-7, -65504.0, 3.0,
                                                                       0.5, -0.0], 2.0 ** 100, -2.0 ** 100, 2.0 ** 100)
        cases.append(_case(f"lattice-extreme-{dtype}", extreme))
    return cases


def make_cases():
    """Every case, built with the encoder and decoded by the reference decoder."""
    import ml_dtypes

    np_types = {FLOAT: np.float32, FLOAT16: np.float16, BFLOAT16: ml_dtypes.bfloat16}
    rng = np.random.default_rng(20240901)
    cases = []
    # Presets x dtypes x shapes (odd totals included), from real encodes.
    shapes = [(17,), (1001,), (33, 65), (64, 128), (3, 5, 7, 11), ((1 << 20) + 3,)]
    for preset in ("paper", "paper-unet", "paper-llama"):
        for dtype in (FLOAT, FLOAT16, BFLOAT16):
            for shape in shapes:
                if shape[0] > 1 << 20 and dtype != FLOAT16:
                    continue  # one large tensor per preset keeps the fixture file small
                scale, gain = (0.05, 25.0) if preset == "paper" else (0.01, 8.0)  # side 0.8 / 0.1
                array = _weights(rng, math.prod(shape), scale, gain).astype(np_types[dtype]).reshape(shape)
                seed = hyperonnx.encode(array, preset, min_elements=1)
                assert seed.codec == "winding", (preset, shape, seed.attrs)
                cases.append(_case(f"{preset}-{dtype}-{'x'.join(map(str, shape))}", seed))
    # Every bit width 1..24, random indices over the whole codebook, awkward float ranges
    # (float16 overflow to Inf, subnormals) so the conversions are exercised; both a codebook
    # that fills 2^bits (no range check needed) and one smaller than 2^bits.
    for bits in range(1, 25):
        for full in (True, False):
            rings = (0, 1, 3)[int(rng.integers(0, 3))] if bits > 2 else 0
            if full:  # (C + 1) a power of two: (n + 1)(C + 1) = 2^bits
                points = min((1 << bits) // (rings + 1) - 1, 1 << 20)
                if points < 1:
                    points, rings = 1, 0
            else:
                points = max(1, min(1 << 20, ((1 << bits) * 3 // 4) // (rings + 1) - 1))
            size = (points + 1) * (rings + 1)
            assert size <= 1 << bits
            dtype = (FLOAT, FLOAT16, BFLOAT16)[bits % 3]
            count = int(rng.integers(1, 40000)) * 2 + int(rng.integers(0, 2))
            pairs = (count + 1) // 2
            indices = rng.integers(0, size, pairs)
            indices[: min(pairs, size)] = np.arange(min(pairs, size))  # every entry when it fits
            kind = bits % 4
            if kind == 0:
                center, side = (float(rng.normal()), float(rng.normal())), float(rng.uniform(0.01, 2))
            elif kind == 1:
                center, side = (65000.0, -65504.0), 300.0  # float16 overflow to +-Inf
            elif kind == 2:
                center, side = (3e-6, -2e-7), 4e-6  # float16 subnormals
            else:
                center, side = (1e30, -3e38), 1e37  # bfloat16 range, float16 Inf
            scales = sorted(float(s) for s in rng.uniform(1.0, 6.0, rings))
            seed = _winding(indices, (count,), dtype, bits, points, rings, center, side, scales)
            cases.append(_case(f"bits{bits}-{'full' if full else 'part'}-{dtype}-{count}", seed))
    # The worked example of FORMAT.md section 6 and a scalar.
    cases.append(_case("format-example", _winding([3, 9], (3,), FLOAT, 4, 4, 1, (1.0, -1.0), 2.0, [2.0])))
    cases.append(_case("scalar", _winding([7], (), FLOAT16, 4, 4, 1, (1.0, -1.0), 2.0, [2.0])))
    return cases + make_lattice_cases(rng, np_types)


ARRAYS = ("payload", "expected", "scales")  # a case's arrays, stored beside the JSON metadata


def write_fixtures(path):
    return cuda_fixtures.save(path, make_cases(), ARRAYS)


def load_cases():
    if hyperonnx is not None:
        return make_cases()
    cases = cuda_fixtures.load("HYPERONNX_CUDA_FIXTURES", ARRAYS)
    for c in cases:
        c.setdefault("codec", "winding")
    return cases


# ----------------------------------------------------------------------------- the device

class Device:
    """Device buffers through torch, else CuPy."""

    def __init__(self):
        self.torch = self.cupy = None
        try:
            import torch

            if torch.cuda.is_available():
                self.torch = torch
        except ImportError:
            pass
        if self.torch is None:
            try:
                import cupy

                if cupy.cuda.runtime.getDeviceCount() > 0:
                    self.cupy = cupy
            except Exception:
                pass

    @property
    def available(self):
        return self.torch is not None or self.cupy is not None

    def name(self):
        if self.torch is not None:
            return self.torch.cuda.get_device_name()
        return self.cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()

    def upload(self, array: np.ndarray, pad_front: int = 0):
        """A device uint8 buffer holding `array`, starting `pad_front` bytes into an allocation."""
        host = np.zeros(array.size + pad_front, np.uint8)
        host[pad_front:] = array
        if self.torch is not None:
            buf = self.torch.from_numpy(host).cuda()
        else:
            buf = self.cupy.asarray(host)
        return buf, self.pointer(buf) + pad_front

    def empty(self, nbytes: int, fill: int = 0xA5):
        if self.torch is not None:
            buf = self.torch.full((max(nbytes, 1),), fill, dtype=self.torch.uint8, device="cuda")
        else:
            buf = self.cupy.full((max(nbytes, 1),), fill, dtype=self.cupy.uint8)
        return buf, self.pointer(buf)

    def pointer(self, buf):
        return buf.data_ptr() if self.torch is not None else buf.data.ptr

    def download(self, buf, nbytes: int) -> np.ndarray:
        if self.torch is not None:
            return buf[:nbytes].cpu().numpy()
        return self.cupy.asnumpy(buf[:nbytes])

    def synchronize(self):
        if self.torch is not None:
            self.torch.cuda.synchronize()
        else:
            self.cupy.cuda.runtime.deviceSynchronize()


def library_path():
    path = os.environ.get("HYPERONNX_LIBRARY")
    if path:
        return path
    if hyperonnx is None:
        pytest.skip("no $HYPERONNX_LIBRARY and hyperonnx cannot be imported")
    return hyperonnx.get_library_path()


def load_entry_points(path):
    """{"winding": hyperonnx_cuda_decode, "lattice": hyperonnx_cuda_decode_lattice}, or None
    when the library was built without the CUDA kernel. The same signatures as
    hyperonnx.bench.cuda.entry_points, declared again: this file runs where hyperonnx cannot be
    imported (a bare GPU machine)."""
    lib = ctypes.CDLL(path)
    try:
        winding, lattice = lib.hyperonnx_cuda_decode, lib.hyperonnx_cuda_decode_lattice
    except AttributeError:
        return None
    u64, i64, p, f32 = ctypes.c_uint64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_float
    winding.argtypes = [p, u64, ctypes.POINTER(i64), u64, i64, i64, i64, i64, ctypes.POINTER(f32), u64,
                        f32, ctypes.POINTER(f32), u64, p, p, ctypes.c_int, p, ctypes.c_char_p, u64]
    lattice.argtypes = [p, u64, p, u64, ctypes.POINTER(i64), u64, i64, i64, i64, i64, f32, f32, f32,
                        p, p, ctypes.c_int, p, ctypes.c_char_p, u64]
    winding.restype = lattice.restype = ctypes.c_int
    return {"winding": winding, "lattice": lattice}


@pytest.fixture(scope="module")
def gpu():
    device = Device()
    if not device.available:
        pytest.skip("no CUDA GPU (torch.cuda / CuPy)")
    fns = load_entry_points(library_path())
    if fns is None:
        pytest.skip("the library was built without the CUDA kernel")
    return device, fns


def call(fns, seed_ptr, seed_bytes, shape, dtype, attrs, out_ptr, stream=0, mode=0, flag=None,
         scales_ptr=None, scales_count=0):
    """One decode through the entry point of the attributes' codec (lattice: they name a
    generator); returns (status, message)."""
    shape_arr = (ctypes.c_int64 * max(1, len(shape)))(*shape)
    message = ctypes.create_string_buffer(1024)
    if "generator" in attrs:
        rc = fns["lattice"](seed_ptr, seed_bytes, scales_ptr, scales_count, shape_arr, len(shape), dtype,
                            attrs["bits"], attrs["generator"], attrs["group"], attrs["alpha"], attrs["beta"],
                            attrs["scale_unit"], out_ptr, stream, mode, flag, message, len(message))
        return rc, message.value.decode()
    center = list(attrs["center"])
    scales = list(attrs["ring_scales"])
    center_arr = (ctypes.c_float * max(1, len(center)))(*center)
    scales_arr = (ctypes.c_float * max(1, len(scales)))(*scales)
    rc = fns["winding"](seed_ptr, seed_bytes, shape_arr, len(shape), dtype, attrs["bits"], attrs["points"],
                        attrs["rings"], center_arr, len(center), attrs["side"], scales_arr, len(scales), out_ptr,
                        stream, mode, flag, message, len(message))
    return rc, message.value.decode()


def upload_scales(device, case, pad_front=0):
    """(buffer, pointer, count) of a lattice case's scales on the device; (None, None, 0) for winding."""
    if "scales" not in case:
        return None, None, 0
    buf, ptr = device.upload(case["scales"].view(np.uint8), pad_front)
    return buf, ptr, case["scales"].size


def decode_on_gpu(device, fns, case, mode=0, pad_front=0, stream=0, out_offset=0):
    """The case decoded on the GPU; the output starts `out_offset` bytes into its allocation, the
    seed `pad_front` bytes and the scales 2 * pad_front bytes into theirs."""
    seed_buf, seed_ptr = device.upload(case["payload"], pad_front)
    scales_buf, scales_ptr, scales_count = upload_scales(device, case, 2 * pad_front)
    nbytes = len(case["expected"])
    out_buf, out_ptr = device.empty(out_offset + nbytes + 64)
    device.synchronize()  # the buffers are filled on the framework's stream, maybe not `stream`
    rc, message = call(fns, seed_ptr, case["payload"].size, case["shape"], case["dtype"], case["attrs"],
                       out_ptr + out_offset, stream=stream, mode=mode, scales_ptr=scales_ptr,
                       scales_count=scales_count)
    assert rc == 0, message
    device.synchronize()
    got = device.download(out_buf, out_offset + nbytes + 64)
    assert (got[:out_offset] == 0xA5).all() and (got[out_offset + nbytes:] == 0xA5).all(), "wrote outside the output"
    return got[out_offset:out_offset + nbytes]


# ----------------------------------------------------------------------------- the tests

_CASES = None


def cases():
    global _CASES
    if _CASES is None:
        _CASES = load_cases()
    return _CASES


@pytest.mark.parametrize("mode", list(MODES))
def test_bytes_equal_reference(gpu, mode):
    device, fns = gpu
    failures = []
    for case in cases():
        got = decode_on_gpu(device, fns, case, mode=MODES[mode])
        if got.tobytes() != case["expected"].tobytes():
            diff = np.flatnonzero(got != case["expected"])
            failures.append(f"{case['name']}: {diff.size} bytes differ, first at byte {diff[0]}")
    assert not failures, "\n".join(failures[:20])


def test_unaligned_seed_and_output_side_stream(gpu):
    """A seed that does not start on a 4-byte boundary takes the byte-wise reads; an output aligned
    to two elements but not to 16 bytes takes the one-pair stores; a non-default stream is honoured."""
    device, fns = gpu
    stream = 0
    if device.torch is not None:
        side = device.torch.cuda.Stream()
        stream = side.cuda_stream
    for case in cases()[::7]:
        pair_bytes = 2 * ITEMSIZE[case["dtype"]]
        for pad, out_offset in ((1, 0), (3, 0), (0, pair_bytes), (1, 3 * pair_bytes)):
            for mode in MODES.values():
                got = decode_on_gpu(device, fns, case, mode=mode, pad_front=pad, stream=stream, out_offset=out_offset)
                assert got.tobytes() == case["expected"].tobytes(), (case["name"], pad, out_offset, mode)
    device.synchronize()


def _small_case():
    for case in cases():
        if case["name"].startswith("bits13-part"):
            return case
    raise AssertionError("no bits13-part case")


def _write_index(payload, bits, position, value):
    """A copy of `payload` with the `bits`-bit index of pair `position` set to `value`."""
    payload = payload.copy()
    bit = position * bits
    for k in range(bits):
        byte, offset = divmod(bit + k, 8)
        payload[byte] = (int(payload[byte]) & ~(1 << offset)) | (((value >> k) & 1) << offset)
    return payload


def _corrupt(case, position):
    """The case's payload with pair `position`'s index set to the codebook size (out of range)."""
    attrs = case["attrs"]
    bad = (attrs["points"] + 1) * (attrs["rings"] + 1)
    assert bad < 1 << attrs["bits"]
    return _write_index(case["payload"], attrs["bits"], position, bad)


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_index_beyond_codebook_refused(gpu, mode, where):
    device, fns = gpu
    case = _small_case()
    pairs = (math.prod(case["shape"]) + 1) // 2
    position = {"first": 0, "middle": pairs // 2, "last": pairs - 1}[where]
    payload = _corrupt(case, position)
    seed_buf, seed_ptr = device.upload(payload)
    out_buf, out_ptr = device.empty(len(case["expected"]))
    rc, message = call(fns, seed_ptr, payload.size, case["shape"], case["dtype"], case["attrs"], out_ptr,
                       mode=MODES[mode])
    assert rc == 1 and "rule 5" in message, (rc, message)
    # No sticky error: the intact seed decodes right after.
    assert decode_on_gpu(device, fns, case, mode=MODES[mode]).tobytes() == case["expected"].tobytes()


def test_index_beyond_codebook_sets_caller_flag(gpu):
    """With a caller's device flag the call does not wait; the flag reports rule 5."""
    device, fns = gpu
    case = _small_case()
    flag_buf, flag_ptr = device.empty(4, fill=0x7F)
    for payload, expected_flag in ((case["payload"], 0), (_corrupt(case, 5), 1)):
        seed_buf, seed_ptr = device.upload(payload)
        out_buf, out_ptr = device.empty(len(case["expected"]))
        rc, message = call(fns, seed_ptr, payload.size, case["shape"], case["dtype"], case["attrs"], out_ptr,
                           flag=flag_ptr)
        assert rc == 0, message
        device.synchronize()
        flag = int(np.frombuffer(device.download(flag_buf, 4).tobytes(), np.uint32)[0])
        assert (flag != 0) == bool(expected_flag), flag


def _attrs(case, **changes):
    attrs = dict(case["attrs"])
    attrs.update(changes)
    return attrs


@pytest.mark.parametrize("change, rule", [
    ({"bits": 0}, "rule 2"), ({"bits": 25}, "rule 2"), ({"points": 0}, "rule 2"),
    ({"points": (1 << 20) + 1}, "rule 2"), ({"rings": 65}, "rule 2"), ({"rings": -1}, "rule 2"),
    ({"center": [1.0]}, "rule 2"), ({"center": [1.0, 2.0, 3.0]}, "rule 2"), ({"center": [float("nan"), 0.0]}, "rule 2"),
    ({"side": 0.0}, "rule 2"), ({"side": float("inf")}, "rule 2"), ({"side": -1.0}, "rule 2"),
    ({"ring_scales": [1.0]}, "rule 2"), ({"ring_scales": []}, "rule 2"), ({"ring_scales": [2.0, float("nan")]}, "rule 2"),
    ({"ring_scales": [2.0, 0.0]}, "rule 2"),
])
def test_bad_attributes_refused(gpu, change, rule):
    device, fns = gpu
    case = _small_case()
    attrs = _attrs(case, rings=2, points=case["attrs"]["points"], ring_scales=[2.0, 3.0])
    attrs.update(change)
    seed_buf, seed_ptr = device.upload(case["payload"])
    out_buf, out_ptr = device.empty(len(case["expected"]))
    rc, message = call(fns, seed_ptr, case["payload"].size, case["shape"], case["dtype"], attrs, out_ptr)
    assert rc == 1 and rule in message, (rc, message)


@pytest.mark.parametrize("shape, dtype, rule", [
    ([-1, 4], FLOAT, "rule 2"), ([1 << 20, 1 << 21], FLOAT, "rule 3"), ([1 << 40, 1 << 40], FLOAT, "rule 3"),
    (None, 11, "rule 2"), (None, 0, "rule 2"),
])
def test_bad_shape_or_dtype_refused(gpu, shape, dtype, rule):
    device, fns = gpu
    case = _small_case()
    seed_buf, seed_ptr = device.upload(case["payload"])
    out_buf, out_ptr = device.empty(len(case["expected"]))
    rc, message = call(fns, seed_ptr, case["payload"].size, shape or case["shape"], dtype, case["attrs"], out_ptr)
    assert rc == 1 and rule in message, (rc, message)


@pytest.mark.parametrize("delta", [-1, 1, -10**6])
def test_wrong_seed_length_refused(gpu, delta):
    device, fns = gpu
    case = _small_case()
    seed_buf, seed_ptr = device.upload(case["payload"])
    out_buf, out_ptr = device.empty(len(case["expected"]))
    size = max(0, case["payload"].size + delta)
    rc, message = call(fns, seed_ptr, size, case["shape"], case["dtype"], case["attrs"], out_ptr)
    assert rc == 1 and "rule 4" in message, (rc, message)


def test_bad_arguments_refused(gpu):
    device, fns = gpu
    case = _small_case()
    seed_buf, seed_ptr = device.upload(case["payload"])
    out_buf, out_ptr = device.empty(len(case["expected"]) + 8)
    args = (case["payload"].size, case["shape"], case["dtype"], case["attrs"])
    assert call(fns, seed_ptr, *args, None)[0] == 3  # no output
    assert call(fns, None, *args, out_ptr)[0] == 3  # no seed
    assert call(fns, seed_ptr, *args, out_ptr + 1)[0] == 3  # output not aligned to its elements
    assert call(fns, seed_ptr, *args, out_ptr, mode=7)[0] == 3
    assert call(fns, seed_ptr, *args, out_ptr)[0] == 0  # and the same call, right, works


def test_empty_output(gpu):
    device, fns = gpu
    attrs = {"bits": 4, "points": 4, "rings": 0, "center": [0.0, 0.0], "side": 1.0, "ring_scales": []}
    rc, message = call(fns, None, 0, [0, 5], FLOAT, attrs, None)
    assert rc == 0, message


# ----------------------------------------------------------------------------- lattice: refusals

def _lattice_case(bits=10):
    for case in cases():
        if case["name"].startswith(f"lattice-bits{bits}-"):
            return case
    raise AssertionError(f"no lattice-bits{bits} case")


def _lattice_call(device, fns, case, payload=None, scales=None, attrs=None, shape=None, flag=None, mode=0,
                  seed_bytes=None, scales_count=None):
    """Decodes a lattice case with parts replaced; returns (status, message)."""
    payload = case["payload"] if payload is None else payload
    scales = case["scales"] if scales is None else scales
    seed_buf, seed_ptr = device.upload(payload)
    scales_buf, scales_ptr = device.upload(scales.view(np.uint8))
    out_buf, out_ptr = device.empty(len(case["expected"]))
    return call(fns, seed_ptr, payload.size if seed_bytes is None else seed_bytes, shape or case["shape"],
                case["dtype"], attrs or case["attrs"], out_ptr, mode=mode, flag=flag, scales_ptr=scales_ptr,
                scales_count=scales.size if scales_count is None else scales_count)


def _positions(count):
    return {"first": 0, "middle": count // 2, "last": count - 1}


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_lattice_step_beyond_trajectory_refused(gpu, mode, where):
    """Rule 7: the all-ones step anywhere in the seed."""
    device, fns = gpu
    case = _lattice_case()
    bits = case["attrs"]["bits"]
    position = _positions((math.prod(case["shape"]) + 1) // 2)[where]
    payload = _write_index(case["payload"], bits, position, (1 << bits) - 1)
    rc, message = _lattice_call(device, fns, case, payload=payload, mode=MODES[mode])
    assert rc == 1 and "rule 7" in message, (rc, message)
    assert decode_on_gpu(device, fns, case, mode=MODES[mode]).tobytes() == case["expected"].tobytes()


@pytest.mark.parametrize("value", [0x7C00, 0xFC00, 0x7E00, 0x7C01, 0xFFFF])
@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_lattice_non_finite_scale_refused(gpu, value, where):
    """Rule 6: a float16 scale with exponent 31 (+-Inf, NaNs), also next to a bad step."""
    device, fns = gpu
    case = _lattice_case()
    scales = case["scales"].copy()
    scales[_positions(scales.size)[where]] = value
    rc, message = _lattice_call(device, fns, case, scales=scales)
    assert rc == 1 and "rule 6" in message, (rc, message)
    bits = case["attrs"]["bits"]
    payload = _write_index(case["payload"], bits, 0, (1 << bits) - 1)
    rc, message = _lattice_call(device, fns, case, payload=payload, scales=scales)
    assert rc == 1 and "rule 6" in message, (rc, message)


def test_lattice_caller_flag_bits(gpu):
    """With a caller's flag the call does not wait; bit 1 reports rule 7, bit 2 rule 6."""
    device, fns = gpu
    case = _lattice_case()
    bits = case["attrs"]["bits"]
    bad_payload = _write_index(case["payload"], bits, 3, (1 << bits) - 1)
    bad_scales = case["scales"].copy()
    bad_scales[-1] = 0x7C00
    flag_buf, flag_ptr = device.empty(4, fill=0x7F)
    for payload, scales, expected in ((None, None, 0), (bad_payload, None, 1), (None, bad_scales, 2),
                                      (bad_payload, bad_scales, 3)):
        rc, message = _lattice_call(device, fns, case, payload=payload, scales=scales, flag=flag_ptr)
        assert rc == 0, message
        device.synchronize()
        assert int(np.frombuffer(device.download(flag_buf, 4).tobytes(), np.uint32)[0]) == expected


@pytest.mark.parametrize("change, rule", [
    ({"bits": 1}, "rule 2"), ({"bits": 17}, "rule 2"), ({"generator": 0}, "rule 2"), ({"generator": 4}, "rule 2"),
    ({"generator": 1023}, "rule 2"), ({"generator": -1}, "rule 2"), ({"group": 0}, "rule 2"), ({"group": 3}, "rule 2"),
    ({"group": 65538}, "rule 2"), ({"alpha": float("nan")}, "rule 2"), ({"beta": float("inf")}, "rule 2"),
    ({"scale_unit": 0.0}, "rule 2"), ({"scale_unit": -1.0}, "rule 2"), ({"scale_unit": float("inf")}, "rule 2"),
    ({"scale_unit": float("nan")}, "rule 2"), ({"alpha": 3e38}, "rule 2"), ({"scale_unit": 2.0 ** 101}, "rule 2"),
])
def test_lattice_bad_attributes_refused(gpu, change, rule):
    device, fns = gpu
    case = _lattice_case()
    assert case["attrs"]["bits"] == 10  # generator 1023 = N is out of range
    rc, message = _lattice_call(device, fns, case, attrs=_attrs(case, **change))
    assert rc == 1 and rule in message, (rc, message)


@pytest.mark.parametrize("shape, dtype, rule", [
    ([-1, 4], FLOAT, "rule 2"), ([1 << 20, 1 << 21], FLOAT, "rule 3"), (None, 11, "rule 2"), (None, 2, "rule 2"),
])
def test_lattice_bad_shape_or_dtype_refused(gpu, shape, dtype, rule):
    device, fns = gpu
    case = dict(_lattice_case(), dtype=dtype)
    rc, message = _lattice_call(device, fns, case, shape=shape)
    assert rc == 1 and rule in message, (rc, message)


@pytest.mark.parametrize("part, delta, rule", [("seed", -1, "rule 4"), ("seed", 1, "rule 4"), ("scales", -1, "rule 6"),
                                               ("scales", 1, "rule 6"), ("scales", -10**6, "rule 6")])
def test_lattice_wrong_lengths_refused(gpu, part, delta, rule):
    device, fns = gpu
    case = _lattice_case()
    sizes = {"seed_bytes": case["payload"].size, "scales_count": case["scales"].size}
    key = "seed_bytes" if part == "seed" else "scales_count"
    sizes[key] = max(0, sizes[key] + delta)
    rc, message = _lattice_call(device, fns, case, **sizes)
    assert rc == 1 and rule in message, (rc, message)


def test_lattice_bad_arguments_refused(gpu):
    device, fns = gpu
    case = _lattice_case()
    seed_buf, seed_ptr = device.upload(case["payload"])
    scales_buf, scales_ptr = device.upload(case["scales"].view(np.uint8), 2)
    out_buf, out_ptr = device.empty(len(case["expected"]) + 8)
    args = (case["payload"].size, case["shape"], case["dtype"], case["attrs"])
    count = case["scales"].size

    def run(seed, out, scales, mode=0):
        return call(fns, seed, *args, out, mode=mode, scales_ptr=scales, scales_count=count)[0]

    assert run(seed_ptr, None, scales_ptr) == 3  # no output
    assert run(None, out_ptr, scales_ptr) == 3  # no seed
    assert run(seed_ptr, out_ptr, None) == 3  # no scales
    assert run(seed_ptr, out_ptr, scales_ptr + 1) == 3  # scales not aligned to float16
    assert run(seed_ptr, out_ptr + 2, scales_ptr) == 3  # output not aligned to its elements
    assert run(seed_ptr, out_ptr, scales_ptr, mode=7) == 3
    assert run(seed_ptr, out_ptr, scales_ptr) == 0  # and the same call, right, works


def test_lattice_empty_output(gpu):
    device, fns = gpu
    attrs = {"bits": 4, "generator": 3, "group": 4, "alpha": 0.5, "beta": 0.5, "scale_unit": 1.0}
    rc, message = call(fns, None, 0, [0, 5], FLOAT, attrs, None)
    assert rc == 0, message


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--write-fixtures":
        print(f"{write_fixtures(sys.argv[2])} cases written to {sys.argv[2]}")
    else:
        print(__doc__)
        sys.exit(2)
