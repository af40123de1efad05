"""The trellis codec (docs/FORMAT.md §9): reference encoder and decoder, the library's native
search against the numpy reference, the CPU kernel against the reference decoder, validation."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import hyperonnx
from hyperonnx import format as fmt
from hyperonnx.codec import trellis
from runtime_models import decode_model, make_model

DTYPES = {TensorProto.FLOAT: np.float32, TensorProto.FLOAT16: np.float16, TensorProto.BFLOAT16: ml_dtypes.bfloat16}


def sqnr_db(x, y):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return 10 * np.log10(np.sum(x * x) / np.sum((x - y) ** 2))


def example_seed(**changes) -> hyperonnx.Seed:
    """FORMAT.md §9.5: k = 2, L = 4, G = 8, 10 weights in two groups."""
    attrs = {"bits": 2, "window": 4, "group": 8, "scale_unit": 0.5}
    attrs.update(changes.pop("attrs", {}))
    payload = np.array(changes.pop("payload", (0x1B, 0xE4, 0xFF, 0x00)), np.uint8)
    scales = np.array(changes.pop("scales", (2.0, 4.0)), np.float16)
    return hyperonnx.Seed(fmt.CODEC_TRELLIS, changes.pop("shape", (10,)), changes.pop("dtype", TensorProto.FLOAT),
                          payload, attrs, scales=scales)


def test_worked_example_decodes_as_format_md_says():
    seed = example_seed()
    windows = trellis.unpack_windows(seed.payload, 2, 4, 2, 8)
    assert windows.tolist() == [[0b1011, 0b0110, 0b0001, 0b0000, 0b0100, 0b1001, 0b1110, 0b1111],
                                [0b1111, 0b1111, 0b1111, 0b0011, 0b0000, 0b0000, 0b0000, 0b1100]]
    h = trellis.values(4)
    assert [float(h[s]).hex() for s in (11, 6, 15)] == ["0x1.f304180000000p-2", "-0x1.8a0fee0000000p-3",
                                                        "0x1.d7c6440000000p+0"]
    out = hyperonnx.decode(seed)
    assert out.tobytes().hex() == ("0c82f93ef70745be32579ebf22e3ebbf0c82f9bef707453e32579e3f22e3eb3f"
                                   "22e36b4022e36b40")


def test_value_map_is_odd_and_bounded():
    for window in (1, 4, 12, 16):
        h = trellis.values(window).astype(np.float64)
        assert np.isfinite(h).all() and np.abs(h).max() < 8
        assert abs(h.sum()) < 1e-3 * h.size and np.sort(h).tolist() == sorted((-h).tolist())


@pytest.mark.parametrize("shape,dtype", [((1001,), np.float32), ((37, 29), np.float16), ((4, 3, 32), ml_dtypes.bfloat16)])
def test_round_trip_keeps_shape_dtype_and_quality(shape, dtype):
    w = (0.05 * np.random.default_rng(0).standard_normal(shape)).astype(dtype)
    seed = hyperonnx.encode(w, "trellis")
    assert seed.codec == fmt.CODEC_TRELLIS and seed.version == 4
    out = hyperonnx.decode(seed)
    assert out.shape == w.shape and out.dtype == w.dtype
    assert sqnr_db(w, out) > 21
    groups = -(-w.size // 128)
    assert seed.payload.size == groups * 128 * 4 // 8 and seed.scales.size == groups


def test_the_search_is_optimal_on_a_short_walk():
    """The tail-biting walk found equals the brute-force best over every stream of a tiny group,
    given the L - k bits the ends share (the first pass's choice)."""
    k, window, group = 1, 3, 8
    x = np.random.default_rng(3).standard_normal((1, group)).astype(np.float32)
    h = trellis.values(window)
    found = trellis.viterbi(x, k, window)[0]
    best = None
    for stream in range(1 << (k * group)):
        payload = np.array([stream], np.uint8)
        windows = trellis.unpack_windows(payload, k, window, 1, group)[0]
        if (windows[0] & 3) != (found[0] & 3):
            continue
        err = float(np.sum((h[windows] - x[0]) ** 2, dtype=np.float32))
        best = err if best is None else min(best, err)
    assert np.isclose(float(np.sum((h[found] - x[0]) ** 2, dtype=np.float32)), best, rtol=1e-6)
    # the walk is a tail-biting one: its windows are those of its own packed stream
    assert (trellis.unpack_windows(trellis.pack(found[None], k), k, window, 1, group)[0] == found).all()


@pytest.mark.parametrize("k,window,group", [(4, 12, 128), (2, 10, 64), (1, 8, 16), (3, 9, 8), (8, 16, 8), (4, 4, 32),
                                            (8, 12, 8), (6, 9, 16), (7, 8, 8), (2, 3, 8)])
def test_native_search_equals_the_reference_for_any_thread_count(k, window, group):
    x = np.random.default_rng(k * 100 + window).standard_normal((5, group)).astype(np.float32)
    x[0] = 0
    x[1] *= 1e-30
    expected = trellis.viterbi(x, k, window)
    for threads in (1, 2, 3):
        got = trellis.native_viterbi(x, k, window, threads)
        assert got is not None and got.tobytes() == expected.tobytes()


def test_native_search_refuses_bad_arguments():
    x = np.zeros((1, 8), np.float32)
    for k, window, threads in ((0, 4, 1), (9, 12, 1), (4, 17, 1), (4, 3, 1)):
        with pytest.raises(RuntimeError, match="trellis search"):
            trellis.native_viterbi(x, k, window, threads)


def test_more_bits_give_less_error():
    w = np.random.default_rng(1).standard_normal(4096).astype(np.float32)
    errors = [sqnr_db(w, hyperonnx.decode(hyperonnx.encode(w, hyperonnx.TrellisConfig(index_bits=k)))) for k in (1, 2, 3, 4)]
    assert all(b - a > 4.5 for a, b in zip(errors, errors[1:])), errors


def test_all_zero_tensor_is_exact_and_encoding_is_deterministic():
    zeros = np.zeros((3, 64), np.float32)
    assert not hyperonnx.decode(hyperonnx.encode(zeros, "trellis")).any()
    w = np.random.default_rng(2).standard_normal(999).astype(np.float32)
    a, b = hyperonnx.encode(w, "trellis"), hyperonnx.encode(w, "trellis")
    assert a.payload.tobytes() == b.payload.tobytes() and a.scales.tobytes() == b.scales.tobytes()


def test_rate_targets_choose_k_per_tensor():
    rng = np.random.default_rng(4)
    arrays = [rng.standard_normal(4096).astype(np.float32) * s for s in (1.0, 0.1, 3.0)]
    configs = hyperonnx.codec.plan(arrays, "trellis", bits=4.25)
    assert all(isinstance(c, hyperonnx.TrellisConfig) and c.fixed for c in configs)
    bits = sum(8 * hyperonnx.encode(a, c).nbytes for a, c in zip(arrays, configs))
    assert bits <= 4.25 * sum(a.size for a in arrays)
    assert len({c.index_bits for c in configs}) > 1
    assert hyperonnx.TrellisConfig().at(6) == hyperonnx.TrellisConfig(index_bits=6)
    assert hyperonnx.TrellisConfig(index_bits=6).effective_window == 14
    assert hyperonnx.TrellisConfig(index_bits=2).effective_window == 12
    with pytest.raises(ValueError, match="below the least rate"):
        hyperonnx.codec.plan(arrays, "trellis", bits=1.0)


@pytest.mark.parametrize("change", [dict(index_bits=0), dict(index_bits=9), dict(group=12), dict(memory=16),
                                    dict(scales=()), dict(scales=(1.0, -1.0)), dict(wide_scales=(float("nan"),)), dict(bits=4.0, target_sqnr=20.0),
                                    dict(index_bits=1, window=9, group=8), dict(window=0), dict(window=17)])
def test_bad_configs_are_refused(change):
    with pytest.raises(ValueError):
        hyperonnx.TrellisConfig(**change)


@pytest.mark.parametrize("change,message", [
    (dict(attrs={"bits": 0}), "rule 2: attribute bits"),
    (dict(attrs={"window": 1}), "rule 2: attribute window"),
    (dict(attrs={"window": 17}), "rule 2: attribute window"),
    (dict(attrs={"group": 12}), "multiple of 8"),
    (dict(attrs={"bits": 1, "window": 9}), "shorter than window"),
    (dict(attrs={"scale_unit": 0.0}), "scale_unit"),
    (dict(payload=(1, 2, 3)), "rule 4"),
    (dict(scales=(1.0,)), "rule 6"),
    (dict(scales=(1.0, np.inf)), "rule 6"),
])
def test_validation_rejects(change, message):
    with pytest.raises(fmt.FormatError, match=message):
        hyperonnx.decode(example_seed(**change))


def test_node_round_trip_and_version_rules():
    seed = hyperonnx.encode(np.linspace(-1, 1, 301, dtype=np.float32).reshape(7, 43), "trellis")
    node = fmt.make_node(seed, "w.seed", "w", "w.scales")
    assert [a.name for a in node.attribute] == list(fmt.TRELLIS_ATTRIBUTE_TYPES)
    back = fmt.seed_from_node(node, seed.payload, seed.scales)
    assert hyperonnx.decode(back).tobytes() == hyperonnx.decode(seed).tobytes()
    with pytest.raises(fmt.FormatError, match="version 4"):
        fmt.check_model_version(3, ["trellis"])


def test_graph_pass_fuses_imports_version_4_and_runs_anywhere():
    rng = np.random.default_rng(5)
    w = (0.05 * rng.standard_normal((64, 128))).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 128])],
                              [numpy_helper.from_array(w, "W")])
    model = make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    out = hyperonnx.compress(model, "trellis")
    assert [(o.domain, o.version) for o in out.opset_import if o.domain == fmt.OP_DOMAIN] == [(fmt.OP_DOMAIN, 4)]
    assert [n.op_type for n in out.graph.node] == ["DecodeMatMul"]
    assert {f.name for f in out.functions} == {"DecodeWeights", "DecodeMatMul"}  # the standard-ops fallback
    x = rng.standard_normal((1, 64)).astype(np.float32)
    plain = ort.InferenceSession(hyperonnx.decompress(out).SerializeToString(), providers=["CPUExecutionProvider"])
    want = plain.run(None, {"x": x})[0]
    anywhere = ort.InferenceSession(out.SerializeToString(), providers=["CPUExecutionProvider"])  # no library
    np.testing.assert_allclose(anywhere.run(None, {"x": x})[0], want, rtol=1e-6, atol=1e-6)
    got = hyperonnx.InferenceSession(out, mode="load").run(None, {"x": x})[0]  # the fused kernel
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert hyperonnx.inspect_model(out)["format_version"] == 4


def kernel_decode(seed: hyperonnx.Seed, threads: int = 0) -> np.ndarray:
    so = ort.SessionOptions()
    so.register_custom_ops_library(hyperonnx.get_library_path())
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(decode_model({"w": seed}).SerializeToString(), so, providers=["CPUExecutionProvider"])
    out = np.zeros(seed.shape, np.float32 if seed.dtype == TensorProto.FLOAT else np.uint16)
    binding = sess.io_binding()
    binding.bind_ortvalue_output("w", ort.OrtValue.ortvalue_from_numpy_with_onnx_type(out, seed.dtype))
    sess.run_with_iobinding(binding)
    return out.view(DTYPES[seed.dtype])


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("k,window,group,shape", [(4, 12, 128, (300, 7)), (1, 8, 8, (77,)), (2, 16, 64, (5, 64)),
                                                  (8, 16, 8, (1000,)), (3, 3, 16, (3, 3, 3)), (5, 14, 256, (70000,))])
def test_kernel_bytes_equal_the_reference(dtype, k, window, group, shape):
    w = np.random.default_rng(k).standard_normal(shape).astype(DTYPES[dtype])
    seed = hyperonnx.encode(w, hyperonnx.TrellisConfig(index_bits=k, window=window, memory=0, group=group))
    assert seed.codec == fmt.CODEC_TRELLIS
    expected = hyperonnx.decode(seed)
    for threads in (1, 2):
        assert kernel_decode(seed, threads).tobytes() == expected.tobytes()


def test_kernel_decodes_random_seeds_and_extreme_scales():
    rng = np.random.default_rng(9)
    for k, window, group, count in ((4, 12, 128, 5000), (7, 16, 24, 999), (1, 1, 8, 17)):
        groups = -(-count // group)
        payload = rng.integers(0, 256, groups * group * k // 8, dtype=np.uint8)
        scales = rng.standard_normal(groups).astype(np.float16)
        scales[0], scales[-1] = 65504, 6e-8
        for dtype in DTYPES:
            seed = hyperonnx.Seed(fmt.CODEC_TRELLIS, (count,), dtype, payload,
                                  {"bits": k, "window": window, "group": group, "scale_unit": 2.0 ** 100}, scales=scales)
            assert kernel_decode(seed).tobytes() == hyperonnx.decode(seed).tobytes()


@pytest.mark.parametrize("attrs,message", [({"window": 1}, "rule 2: attribute window"), ({"group": 4}, "rule 2: attribute group"),
                                           ({"scale_unit": float("nan")}, "scale_unit"), ({"alpha": 0.5}, "unknown")])
def test_kernel_refuses_bad_nodes(attrs, message):
    seed = example_seed()
    node = fmt.make_node(seed, "w.seed", "w", "w.scales")
    for name, value in attrs.items():
        kept = [a for a in node.attribute if a.name != name]
        del node.attribute[:]
        node.attribute.extend(kept + [helper.make_attribute(name, value)])
    graph = helper.make_graph([node], "g", [], [helper.make_tensor_value_info("w", TensorProto.FLOAT, [10])],
                              [numpy_helper.from_array(seed.payload, "w.seed"), numpy_helper.from_array(seed.scales, "w.scales")])
    model = make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(fmt.OP_DOMAIN, 4)])
    so = ort.SessionOptions()
    so.register_custom_ops_library(hyperonnx.get_library_path())
    with pytest.raises(Exception, match=message):
        ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, {})


def test_kernel_refuses_bad_inputs():
    seed = example_seed()
    for bad in (example_seed(payload=(1, 2, 3)), example_seed(scales=(1.0,)), example_seed(scales=(1.0, np.nan))):
        model = decode_model({"w": bad})
        so = ort.SessionOptions()
        so.register_custom_ops_library(hyperonnx.get_library_path())
        with pytest.raises(Exception, match="rule [46]"):
            ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, {})
    assert kernel_decode(seed).tobytes() == hyperonnx.decode(seed).tobytes()


def test_scalar_paths_give_the_same_bytes():
    """The search and the kernel without AVX2 (HYPERONNX_NO_AVX2), in a process of their own (the
    kernel on random seeds: any stream is valid, so no slow scalar encode is needed)."""
    import os
    import subprocess
    import sys
    env = {**os.environ, "HYPERONNX_NO_AVX2": "1"}
    child = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k",
                            "native_search_equals or random_seeds"],
                           capture_output=True, text=True, env=env, cwd=os.path.dirname(__file__), timeout=600)
    assert child.returncode == 0, child.stdout[-3000:]
    assert " passed" in child.stdout


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_cuda_kernel_bytes_equal_the_reference(dtype):
    """The CUDA kernel through hyperonnx_cuda_decode_trellis (torch device buffers): the reference
    decoder's bytes for encoded and random seeds; a NaN scale is rule 6."""
    import ctypes
    fn = getattr(ctypes.CDLL(hyperonnx.get_library_path()), "hyperonnx_cuda_decode_trellis", None)
    if fn is None:
        pytest.skip("the library was built without CUDA")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    p, u64, i64 = ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int64
    fn.argtypes = [p, u64, p, u64, ctypes.POINTER(i64), u64, i64, i64, i64, i64, ctypes.c_float, p, p, p,
                   ctypes.c_char_p, u64]
    fn.restype = ctypes.c_int

    def run(seed):
        payload = torch.from_numpy(seed.payload.copy()).cuda()
        scales = torch.from_numpy(seed.scales.view(np.int16).copy()).cuda()
        out = torch.zeros(seed.num_elements * (4 if seed.dtype == TensorProto.FLOAT else 2), dtype=torch.uint8).cuda()
        shape = (i64 * len(seed.shape))(*seed.shape)
        message = ctypes.create_string_buffer(512)
        a = seed.attrs
        rc = fn(payload.data_ptr(), seed.payload.size, scales.data_ptr(), seed.scales.size, shape, len(seed.shape),
                seed.dtype, a["bits"], a["window"], a["group"], a["scale_unit"], out.data_ptr(), None, None, message, 512)
        return rc, out.cpu().numpy(), message.value.decode()

    rng = np.random.default_rng(0)
    w = rng.standard_normal((77, 130)).astype(DTYPES[dtype])
    seeds = [hyperonnx.encode(w, "trellis"), hyperonnx.encode(w, hyperonnx.TrellisConfig(index_bits=2, window=10, group=8))]
    for k, window, group in ((8, 16, 24), (1, 1, 8)):
        groups = -(-999 // group)
        seeds.append(hyperonnx.Seed(fmt.CODEC_TRELLIS, (999,), dtype, rng.integers(0, 256, groups * group * k // 8, dtype=np.uint8),
                                    {"bits": k, "window": window, "group": group, "scale_unit": 2.0 ** -10},
                                    scales=rng.standard_normal(groups).astype(np.float16)))
    for seed in seeds:
        rc, got, message = run(seed)
        assert rc == 0, message
        assert got.tobytes() == hyperonnx.decode(seed).tobytes()
    bad = seeds[0]
    bad.scales[1] = np.nan
    rc, _, message = run(bad)
    assert rc == 1 and "rule 6" in message
