"""`hyperonnx bench runtime`: the custom-op library in onnxruntime, against same-run baselines.

1. Decode throughput of the CPU kernel: a model of one DecodeWeights node (a random seed: winding
   over the `paper` preset's codebook, 13 bits per pair; lattice with 8-bit steps and a scale per
   128 weights, the default preset's usual width) runs in onnxruntime with its output bound to a
   preallocated buffer, on 1 intra-op thread and on all cores. Figures are GB/s of output written,
   next to a numpy copy into a preallocated array of the same output size (one core).
2. What limits each fused kernel (--fused, and with the models): one DecodeMatMul of a
   lattice-4.25 seed (the models' shapes) against MatMul on the decoded weight, one thread, per
   kernel: float compute and int8 compute (accuracy_level 4), each from the layout packed at
   kernel creation (packing auto) and from the seed (packing none): ms, weights per ns, and the
   bytes each reads per call (packed form or seed) in GB/s, beside the float32 GB/s MatMul reads;
   the packed form's MB.
3. Sessions on real models (MiniLM-L6 at batch 1, sequence 128; the digits CNN, PP-OCRv4 rec and
   a Llama-like 134 M decoder's single-token step, all at batch 1), per method: float32 (the
   original), hyperonnx fused (the default compression), fused-int8 (the same model with int8
   compute: accuracy_level 4, its error against fused printed too), fused-nopack / fused-int8-nopack
   (the same with packing="none": decoded from the seed every run), load and stream (DecodeWeights models,
   compress --no-fuse), and onnxruntime's int8 quantize_dynamic and 4-bit MatMulNBits (blocks 32
   and 128, accuracy_level 0 and 4) where they change the model. Each session runs in a fresh
   process (hyperonnx.bench.probe): creation time, median latency, peak RSS; the runtime's own
   working set is measured the same way on a weightless model (one Identity). Methods are
   interleaved over --repeat rounds (medians shown). Latency is also compared with all of a
   model's sessions in one process taking turns run by run ("x alt.", the median per-run ratio to
   float32): on a shared machine only this cancels the other users' load, so the targets use it.

Targets (issues 4, 14, 22 and 25) are printed beside the measured ratios.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

import hyperonnx
from .. import format as fmt
from .. import models
from ..codec import bitpack, lattice
from ..graph.fuse import set_accuracy_level
from . import probe

DTYPES = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16}
CODECS = (fmt.CODEC_WINDING, fmt.CODEC_LATTICE, fmt.CODEC_TRELLIS)  # decode rows of each, measured side by side
# The paper preset's codebook: n = 1600 points, C = 4 rings -> 8005 indices of 13 bits.
PAPER_CODEBOOK = dict(points=1600, rings=4, center=[0.0, 0.0], side=0.8, ring_scales=[1.6, 2.2, 2.8, 3.4])
TARGETS = {
    "decode_1t": 0.5,     # decode on one core >= half of memcpy
    "load_latency": 1.03,  # load-mode latency <= 1.03 x original
    "stream_rss": 0.5,    # stream peak RSS above its baseline <= 0.5 x the original's
}


def parse_size(text: str) -> int:
    text = text.strip().upper()
    factor = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    try:
        value = int(text.rstrip("KMG")) * factor
    except ValueError:
        raise ValueError(f"bad size {text!r}: write e.g. 1M, 16M or 1048576") from None
    if value < 2:
        raise ValueError(f"bad size {text!r}: at least 2 elements")
    return value


def all_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# --- 1. decode throughput ----------------------------------------------------------------------

def random_seed(count: int, dtype: int, rng: np.random.Generator, codec: str = fmt.CODEC_WINDING) -> fmt.Seed:
    """A valid seed of `count` elements with uniformly random indices (no encoder run): winding
    over the paper preset's codebook, lattice at the default preset's usual width (8-bit
    steps, a float16 scale per 128 weights), or trellis as its preset (k = 4, L = 12, groups of 128)."""
    if codec == fmt.CODEC_TRELLIS:
        k, window, group = 4, 12, 128
        groups = fmt.scale_count(count, group)
        payload = rng.integers(0, 256, groups * group * k // 8, dtype=np.uint8)
        scales = rng.uniform(2 ** 13, 2 ** 15, groups).astype(np.float16)
        attrs = dict(bits=k, window=window, group=group, scale_unit=2.0 ** -20)
        return fmt.Seed(fmt.CODEC_TRELLIS, (count,), dtype, payload, attrs, scales=scales)
    if codec == fmt.CODEC_LATTICE:
        bits, group = 8, 128
        steps = rng.integers(0, (1 << bits) - 1, fmt.num_pairs(count), dtype=np.uint32)
        scales = rng.uniform(2 ** 13, 2 ** 15, fmt.scale_count(count, group)).astype(np.float16)
        attrs = dict(bits=bits, generator=lattice.generator(bits), group=group, alpha=0.5, beta=0.5,
                     scale_unit=2.0 ** -20)
        return fmt.Seed(fmt.CODEC_LATTICE, (count,), dtype, bitpack.pack(steps, bits), attrs, scales=scales)
    points, rings = PAPER_CODEBOOK["points"], PAPER_CODEBOOK["rings"]
    entries = (points + 1) * (rings + 1)
    bits = (entries - 1).bit_length()
    indices = rng.integers(0, entries, fmt.num_pairs(count), dtype=np.uint32)
    return fmt.Seed(fmt.CODEC_WINDING, (count,), dtype, bitpack.pack(indices, bits),
                    dict(bits=bits, **PAPER_CODEBOOK))


def _median_time(fn, min_seconds: float = 0.3, min_samples: int = 5, min_sample_s: float = 2e-3) -> float:
    """Median seconds per call of `fn`; each sample times enough calls to last `min_sample_s`."""
    start = time.perf_counter()
    fn()  # warm-up: first touch of pages, thread pool start
    calls = max(1, int(min_sample_s / max(time.perf_counter() - start, 1e-7)))
    times: list[float] = []
    total = 0.0
    while len(times) < min_samples or total < min_seconds:
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        elapsed = time.perf_counter() - start
        times.append(elapsed / calls)
        total += elapsed
    return statistics.median(times)


def _decode_runner(seed: fmt.Seed, threads: int):
    """A callable that runs one DecodeWeights node in onnxruntime into a preallocated buffer."""
    import onnxruntime as ort

    inits = [numpy_helper.from_array(seed.payload, "seed")]
    if seed.scales is not None:
        inits.append(numpy_helper.from_array(seed.scales, "scales"))
    graph = helper.make_graph(
        [fmt.make_node(seed, "seed", "w", "scales" if seed.scales is not None else None)], "decode", [],
        [helper.make_tensor_value_info("w", seed.dtype, list(seed.shape))], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid(fmt.OP_DOMAIN, fmt.OP_VERSION)])
    so = hyperonnx.session_options("stream")
    so.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    buffer = np.ones(seed.shape, np.float32 if seed.dtype == TensorProto.FLOAT else np.uint16)  # pages touched
    binding = session.io_binding()
    binding.bind_ortvalue_output("w", ort.OrtValue.ortvalue_from_numpy_with_onnx_type(buffer, seed.dtype))
    return (lambda: session.run_with_iobinding(binding)), buffer


def measure_decode(sizes: list[int], threads: int, log=print) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for count in sizes:
        for (name, dtype), codec in itertools.product(DTYPES.items(), CODECS):
            seed = random_seed(count, dtype, rng, codec)
            nbytes = count * (4 if dtype == TensorProto.FLOAT else 2)
            src, dst = np.ones(nbytes, np.uint8), np.zeros(nbytes, np.uint8)
            row = {"elements": count, "dtype": name, "codec": codec, "threads": threads,
                   "memcpy_gbs": nbytes / _median_time(lambda: np.copyto(dst, src)) / 1e9}
            del src, dst
            for key, n in (("decode_1t_gbs", 1), ("decode_nt_gbs", threads)):
                run, buffer = _decode_runner(seed, n)
                row[key] = nbytes / _median_time(run) / 1e9
                if n == 1:  # the kernel wrote into our buffer, and wrote the reference decoder's bits
                    expected = hyperonnx.decode(seed).view(buffer.dtype) if count <= 1 << 22 else None
                    if expected is not None and not np.array_equal(buffer, expected):
                        raise RuntimeError(f"DecodeWeights output differs from the reference ({count}, {name}, {codec})")
                del run, buffer
            row["ratio_1t"] = row["decode_1t_gbs"] / row["memcpy_gbs"]
            row["ratio_nt"] = row["decode_nt_gbs"] / row["memcpy_gbs"]
            row["speedup"] = row["decode_nt_gbs"] / row["decode_1t_gbs"]
            rows.append(row)
            log(_decode_line(row))
    return rows


DECODE_HEADER = (f"{'elements':>9} {'dtype':>8} {'codec':>8} {'memcpy GB/s':>11} {'1 thread':>9} {'x memcpy':>8} "
                 f"{'N threads':>9} {'x memcpy':>8} {'N/1':>6}")


def _decode_line(row: dict) -> str:
    return (f"{_size_name(row['elements']):>9} {row['dtype']:>8} {row['codec']:>8} {row['memcpy_gbs']:11.2f} "
            f"{row['decode_1t_gbs']:9.2f} {row['ratio_1t']:8.2f} {row['decode_nt_gbs']:9.2f} "
            f"{row['ratio_nt']:8.2f} {row['speedup']:6.2f}")


def _size_name(count: int) -> str:
    for unit, factor in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if count % factor == 0:
            return f"{count // factor}{unit}"
    return str(count)


# --- 2. the fused kernels: what limits them --------------------------------------------------

# (rows M, K, N): a decode step's 4096-wide layer, Llama-like's FFN and LM head at one token, MiniLM's FFN
FUSED_SHAPES = ((1, 4096, 4096), (1, 768, 2048), (1, 768, 32000), (128, 384, 1536))
FUSED_KERNELS = (("float", None, "auto"), ("float", None, "none"), ("int8", 4, "auto"), ("int8", 4, "none"))


def _packed_bytes() -> int:
    import ctypes
    library = ctypes.CDLL(hyperonnx.get_library_path())
    library.HyperonnxPackedBytes.restype = ctypes.c_int64
    return int(library.HyperonnxPackedBytes())


def measure_fused(log=print, shapes=FUSED_SHAPES) -> list[dict]:
    """DecodeMatMul (a lattice-4.25 seed of N(0, 0.05) weights) against MatMul on the decoded
    float32 weight, one thread, same run, per kernel (compute x packing): ms per call, weights per
    ns, the bytes it reads per call (its packed form, or the seed) in GB/s, the packed MB."""
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    rows = []
    for m, k, n in shapes:
        seed = hyperonnx.encode((rng.standard_normal((k, n)) * 0.05).astype(np.float32), "lattice-4.25")
        x = rng.standard_normal((m, k)).astype(np.float32)
        inits = [numpy_helper.from_array(seed.payload, "w.seed"), numpy_helper.from_array(seed.scales, "w.scales")]
        io = ([helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])])
        plain = helper.make_model(helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "plain", *io,
                                                    [numpy_helper.from_array(hyperonnx.decode(seed), "w")]),
                                  opset_imports=[helper.make_opsetid("", 17)])
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        plain_s = _median_time(lambda s=ort.InferenceSession(plain.SerializeToString(), so,
                                                             providers=["CPUExecutionProvider"]): s.run(None, {"x": x}))
        log(f"{m:>5} {k:>5} {n:>5} {'MatMul float32':22} {1e3 * plain_s:9.3f} {k * n / plain_s / 1e9:11.3f} "
            f"{4 * k * n / plain_s / 1e9:11.2f} {'':>9}")
        for compute, level, packing in FUSED_KERNELS:
            node = helper.make_node("DecodeMatMul", ["x", "w.seed", "w.scales"], ["y"], domain=fmt.OP_DOMAIN)
            node.attribute.extend(fmt.make_node(seed, "w.seed", "w", "w.scales").attribute)
            if level is not None:
                node.attribute.append(helper.make_attribute(fmt.ACCURACY_LEVEL, level))
            fused = helper.make_model(helper.make_graph([node], "fused", *io, inits),
                                      opset_imports=[helper.make_opsetid("", 17),
                                                     helper.make_opsetid(fmt.OP_DOMAIN, fmt.FUSED_VERSION)])
            so = hyperonnx.session_options("load", packing=packing)
            so.intra_op_num_threads = 1
            before = _packed_bytes()
            session = ort.InferenceSession(fused.SerializeToString(), so, providers=["CPUExecutionProvider"])
            packed = _packed_bytes() - before
            seconds = _median_time(lambda: session.run(None, {"x": x}))
            read = packed if packed else seed.nbytes  # what a call streams: the packed form, else the seed
            row = {"m": m, "k": k, "n": n, "compute": compute, "packing": packing, "ms": 1e3 * seconds,
                   "plain_ms": 1e3 * plain_s, "x_plain": seconds / plain_s, "weights_per_ns": k * n / seconds / 1e9,
                   "read_gbs": read / seconds / 1e9, "packed_mb": packed / 1e6, "reads": "packed" if packed else "seed",
                   "plain_weight_gbs": 4 * k * n / plain_s / 1e9}
            rows.append(row)
            del session
            kernel = f"{compute}, {'packed' if packed else 'from the seed'}"
            log(f"{m:>5} {k:>5} {n:>5} {kernel:22} {row['ms']:9.3f} {row['weights_per_ns']:11.3f} {row['read_gbs']:11.2f} "
                f"{row['packed_mb']:9.2f}  x{row['x_plain']:.2f}")
    return rows


FUSED_HEADER = (f"{'M':>5} {'K':>5} {'N':>5} {'kernel':22} {'ms':>9} {'weights/ns':>11} {'read GB/s':>11} "
                f"{'packed MB':>9}  x MatMul")


# --- 3. sessions on real models ----------------------------------------------------------------

def _model_inputs(name: str) -> tuple[Path, dict]:
    """(original model, batch-1 inputs) of a benchmark model."""
    if name == "minilm":
        rng = np.random.default_rng(0)
        return models.minilm(), {"input_ids": rng.integers(1000, 29000, (1, 128), dtype=np.int64),
                                 "attention_mask": np.ones((1, 128), np.int64),
                                 "token_type_ids": np.zeros((1, 128), np.int64)}
    if name == "digits":
        path, data = models.digits_cnn()
        with np.load(data) as test:
            return path, {"input": test["input"][:1]}
    if name == "ppocr":
        path, data = models.ppocr_rec()
        with np.load(data) as test:
            return path, {"x": test["input"][:1]}
    if name == "llama":
        return models.llama_decoder(), models.llama_inputs()
    raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODEL_TITLES)}")


MODEL_TITLES = {"minilm": "MiniLM-L6 (1x128)", "digits": "digits CNN (1x1x8x8)", "ppocr": "PP-OCRv4 rec (1x3x48x320)",
                "llama": "Llama-like 134M (1 token)"}
# the output whose cosine to float32's is the quality column
QUALITY_OUTPUT = {"minilm": "sentence_embedding", "digits": "logits", "ppocr": "softmax_11.tmp_0", "llama": "logits"}


def _int8_dynamic(src: Path, dst: Path, preset: str) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)


def _nbits(block_size: int, accuracy_level: int):
    def make(src: Path, dst: Path, preset: str) -> None:
        import onnx
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
        quantizer = MatMulNBitsQuantizer(onnx.load(str(src)), bits=4, block_size=block_size, is_symmetric=False,
                                         accuracy_level=accuracy_level)
        quantizer.process()
        quantizer.model.save_model_to_file(str(dst), use_external_data_format=False)
    return make


@functools.lru_cache(maxsize=1)
def _compressed(src: Path, preset: str, fuse: bool):
    """The compression the sessions measure; preset "default": hyperonnx.compress's default (lattice
    widths for the default output budget)."""
    return hyperonnx.compress(src, None if preset == "default" else preset, fuse=fuse)


def _hyperonnx(fuse: bool, accuracy_level: int = 0):
    def make(src: Path, dst: Path, preset: str) -> None:
        import onnx
        model = onnx.ModelProto()
        model.CopyFrom(_compressed(src, preset, fuse))  # fused and fused-int8: one compression
        set_accuracy_level(model, accuracy_level)
        hyperonnx.save(model, dst)
    return make


def _standard(to: str):
    """The default compression written back as plain ONNX (hyperonnx decompress --to `to`):
    float, or blocked int8 / int4 DequantizeLinear weights (issue 22), for stock onnxruntime."""
    def make(src: Path, dst: Path, preset: str) -> None:
        hyperonnx.save(hyperonnx.decompress(_compressed(src, preset, True), to=to), dst)
    return make


# method: (how its model is made from the original (None: the original), how probe.py opens it)
METHODS = {
    "float32": (None, "plain"),
    "fused": (_hyperonnx(True), "load"),  # the default compression: fused operators, weights stay encoded
    "fused-int8": (_hyperonnx(True, 4), "load"),  # the same, MatMul / Gemm with accuracy_level 4 (int8 compute)
    "fused-nopack": (_hyperonnx(True), "load-nopack"),  # fused, packing="none": decoded from the seed every run
    "fused-int8-nopack": (_hyperonnx(True, 4), "load-nopack"),
    "load": (_hyperonnx(False), "load"),  # DecodeWeights decoded once at session creation
    "stream": (_hyperonnx(False), "stream"),  # DecodeWeights on every run
    "decoded": (_standard("float"), "plain"),  # decompress: the decoded float32 weights, stock onnxruntime
    "std-int8": (_standard("int8"), "plain"),  # decompress --to int8: blocked DequantizeLinear, stock onnxruntime
    "std-int4": (_standard("int4"), "plain"),  # decompress --to int4
    "int8": (_int8_dynamic, "plain"),  # onnxruntime quantize_dynamic
    "nbits-b32-a0": (_nbits(32, 0), "plain"),  # onnxruntime MatMulNBits, 4 bits, block 32, fp32 compute
    "nbits-b128-a0": (_nbits(128, 0), "plain"),
    "nbits-b32-a4": (_nbits(32, 4), "plain"),  # accuracy_level 4: int8 activations
    "nbits-b128-a4": (_nbits(128, 4), "plain"),
}
# the baselines that change something in each model (PP-OCR's weights are Constant nodes: neither
# quantizer touches them; the digits CNN has no MatMul)
BASELINES = {"minilm": ("int8", "nbits-b32-a0", "nbits-b128-a0", "nbits-b32-a4", "nbits-b128-a4"),
             "llama": ("int8", "nbits-b32-a0", "nbits-b128-a0", "nbits-b32-a4", "nbits-b128-a4"),
             "digits": ("int8",), "ppocr": ()}
OURS = ("fused", "fused-int8", "fused-nopack", "fused-int8-nopack", "load", "stream", "decoded", "std-int8", "std-int4")


def runtime_baseline(repeat: int, threads: int = 0) -> float:
    """MB a session of a weightless model (one Identity) adds above the probe's imports: the
    runtime's own working set, which no weight format can shrink."""
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "empty",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    x = {"x": np.zeros(1, np.float32)}
    with tempfile.TemporaryDirectory(prefix="hyperonnx-bench-runtime-") as work:
        path = Path(work) / "empty.onnx"
        path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
        results = [probe.measure(path, x, x, "plain", runs=1, threads=threads)[0] for _ in range(repeat)]
    return statistics.median(r["peak_rss_mb"] - r["baseline_rss_mb"] for r in results)


def alternating_latency(paths: dict[str, Path], inputs: dict, runs: int, threads: int = 0) -> dict:
    """Median per-run latency ratio of each method to float32, from all the sessions in this
    process taking turns run by run (each run is compared with its neighbours, so a shared
    machine's drifting load cancels out): {method: ratio}."""
    import onnxruntime as ort

    def options():
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        return so

    sessions = {}
    for method, path in paths.items():
        runtime = METHODS[method][1]
        if runtime == "plain":
            sessions[method] = ort.InferenceSession(str(path), options(), providers=["CPUExecutionProvider"])
        else:
            mode, packing = ("load", "none") if runtime == "load-nopack" else (runtime, "auto")
            sessions[method] = hyperonnx.InferenceSession(path, options(), mode=mode, packing=packing)
    names = list(sessions)
    times: dict[str, list[float]] = {m: [] for m in names}
    for turn in range(runs + 3):
        for method in names[turn % len(names):] + names[:turn % len(names)]:  # rotate who goes first
            start = time.perf_counter()
            sessions[method].run(None, inputs)
            if turn >= 3:  # warm-up turns
                times[method].append(time.perf_counter() - start)
    return {m: statistics.median(a / b for a, b in zip(times[m], times["float32"])) for m in names}


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(np.dot(a, b) / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-300))


def measure_sessions(names: list[str], preset: str, repeat: int, runs: int, threads: int = 0,
                     methods: list[str] | None = None, log=print) -> list[dict]:
    rows = []
    empty = runtime_baseline(repeat, threads)
    log(f"{'onnxruntime alone (an Identity model)':100}{empty:11.0f}")
    for name in names:
        original, inputs = _model_inputs(name)
        chosen = [m for m in ("float32",) + OURS + BASELINES[name] if methods is None or m in methods or m == "float32"]
        with tempfile.TemporaryDirectory(prefix="hyperonnx-bench-runtime-") as work:
            paths: dict[str, Path] = {}
            made: dict[object, Path] = {}
            for method in chosen:
                make = METHODS[method][0]
                if make is None:
                    paths[method] = original
                    continue
                key = (make.__qualname__, make.__closure__ and tuple(c.cell_contents for c in make.__closure__))
                if key not in made:  # load and stream share one model
                    made[key] = Path(work) / f"{method}.onnx"
                    make(original, made[key], preset)
                paths[method] = made[key]
            samples: dict[str, list[dict]] = {m: [] for m in chosen}
            outputs: dict[str, dict] = {}
            for _ in range(repeat):  # interleaved, so drifting machine load hits every method alike
                for method in chosen:
                    result, outputs[method] = probe.measure(paths[method], inputs, inputs, METHODS[method][1],
                                                            runs=runs, threads=threads)
                    samples[method].append(result)
            alternating = alternating_latency(paths, inputs, runs, threads)
            for method in chosen:
                row = {"model": name, "method": method, "file_mb": paths[method].stat().st_size / 1e6,
                       "runtime_rss_mb": empty}
                for key in ("create_s", "latency_ms", "peak_rss_mb", "baseline_rss_mb"):
                    row[key] = statistics.median(s[key] for s in samples[method])
                row["packed_mb"] = statistics.median(s.get("packed_mb", 0.0) for s in samples[method])
                row["session_rss_mb"] = statistics.median(s["peak_rss_mb"] - s["baseline_rss_mb"]
                                                          for s in samples[method])
                row["latency_alternating"] = alternating[method]
                key = QUALITY_OUTPUT[name]
                row["cos_vs_float32"] = _cosine(outputs[method][key], outputs["float32"][key])
                if method.startswith("std-") and "fused" in outputs:  # against the compressed model
                    row["cos_vs_fused"] = _cosine(outputs[method][key], outputs["fused"][key])
                if method == "fused-int8" and "fused" in outputs:  # the int8 compute's own error
                    got, want = outputs[method][key].astype(np.float64), outputs["fused"][key].astype(np.float64)
                    row["rel_rms_vs_fused"] = float(np.sqrt(np.mean((got - want) ** 2) / np.mean(want ** 2)))
                    row["cos_vs_fused"] = _cosine(got, want)
                rows.append(row)
                log(_session_line(row))
            int8 = next((r for r in rows if r["model"] == name and "rel_rms_vs_fused" in r), None)
            if int8 is not None:
                log(f"{'':26} fused-int8 against fused ({key}): relative RMS error {int8['rel_rms_vs_fused']:.4f}, "
                    f"cosine {int8['cos_vs_fused']:.5f}")
    return rows


SESSION_HEADER = (f"{'model':26} {'method':17} {'file MB':>8} {'session s':>9} {'latency ms':>10} "
                  f"{'x alt.':>7} {'peak RSS MB':>11} {'RSS-base MB':>11} {'packed MB':>9} {'cos':>8}")


def _session_line(row: dict) -> str:
    return (f"{MODEL_TITLES[row['model']]:26} {row['method']:17} {row['file_mb']:8.2f} {row['create_s']:9.3f} "
            f"{row['latency_ms']:10.3f} {row['latency_alternating']:7.3f} {row['peak_rss_mb']:11.0f} "
            f"{row['session_rss_mb']:11.0f} {row.get('packed_mb', 0.0):9.1f} {row['cos_vs_float32']:8.5f}")


# --- targets -----------------------------------------------------------------------------------

def targets(decode_rows: list[dict], session_rows: list[dict]) -> list[dict]:
    """One line per target and measurement: what issues 4, 14 and 22 ask, what was measured, met or not."""
    lines = []
    for row in decode_rows:
        what = f"decode {_size_name(row['elements'])} {row['dtype']} {row['codec']}"
        lines.append({"target": f"{what}: 1 thread / memcpy >= {TARGETS['decode_1t']}",
                      "measured": row["ratio_1t"], "met": row["ratio_1t"] >= TARGETS["decode_1t"]})
        if row["threads"] > 1:
            # "scaling with cores": at least half of linear speed-up
            goal = 0.5 * row["threads"]
            lines.append({"target": f"{what}: {row['threads']} threads / 1 thread >= {goal:g}",
                          "measured": row["speedup"], "met": row["speedup"] >= goal})
    by = {(r["model"], r["method"]): r for r in session_rows}

    def add(name, text, value, goal):
        lines.append({"target": f"{MODEL_TITLES[name]}: {text} <= {goal:g}", "measured": value, "met": value <= goal})

    def above_runtime(row):  # the working set above onnxruntime's own (a weightless model)
        return row["session_rss_mb"] - row["runtime_rss_mb"]

    for name in dict.fromkeys(r["model"] for r in session_rows):
        plain = by[(name, "float32")]
        fused = by.get((name, "fused"))
        if fused is not None:
            goal = {"minilm": 1.10, "llama": 0.6}.get(name, 1.3)
            add(name, "fused latency / float32 (alt.)", fused["latency_alternating"], goal)
            if name == "minilm":
                add(name, "fused (RSS-base - onnxruntime alone) / float32's",
                    above_runtime(fused) / max(above_runtime(plain), 1e-9), 0.25)
            if name == "llama" and (name, "nbits-b128-a4") in by:
                add(name, "fused latency / MatMulNBits b128 a4 (alt.)",
                    fused["latency_alternating"] / by[(name, "nbits-b128-a4")]["latency_alternating"], 1.5)
        int8 = by.get((name, "fused-int8"))
        if int8 is not None:
            if name == "llama" and (name, "nbits-b128-a4") in by:
                add(name, "fused-int8 latency / MatMulNBits b128 a4 (alt.)",
                    int8["latency_alternating"] / by[(name, "nbits-b128-a4")]["latency_alternating"], 1.1)
            if name == "minilm" and (name, "int8") in by:
                add(name, "fused-int8 latency / int8 quantize_dynamic (alt.)",
                    int8["latency_alternating"] / by[(name, "int8")]["latency_alternating"], 1.0)
                add(name, "int8 quantize_dynamic cosine - fused-int8 cosine", by[(name, "int8")]["cos_vs_float32"]
                    - int8["cos_vs_float32"], 0.0)
        standard = by.get((name, "std-int8"))
        if standard is not None:  # issue 22
            add(name, "std-int8 RSS-base / float32's", standard["session_rss_mb"] / max(plain["session_rss_mb"], 1e-9),
                0.45)
            add(name, "std-int8 latency / float32 (alt.)", standard["latency_alternating"], 1.0)
            if "cos_vs_fused" in standard:
                lines.append({"target": f"{MODEL_TITLES[name]}: std-int8 cosine to fused's output >= 0.999",
                              "measured": standard["cos_vs_fused"], "met": standard["cos_vs_fused"] >= 0.999})
        # issue 25 (the packed layouts)
        nbits = by.get((name, "nbits-b128-a4"))
        if fused is not None and name in ("llama", "minilm", "ppocr", "digits"):
            goal = {"llama": 0.8, "minilm": 1.1}.get(name, 1.3)
            add(name, "fused latency / float32 (alt.) [issue 25]", fused["latency_alternating"], goal)
        if int8 is not None and name == "llama" and nbits is not None:
            add(name, "fused-int8 latency / MatMulNBits b128 a4 (alt.) [issue 25]",
                int8["latency_alternating"] / nbits["latency_alternating"], 1.6)
        if int8 is not None and name == "minilm" and (name, "int8") in by:
            add(name, "fused-int8 latency / int8 quantize_dynamic (alt.) [issue 25]",
                int8["latency_alternating"] / by[(name, "int8")]["latency_alternating"], 1.2)
        if name == "llama" and nbits is not None:
            for ours in ("fused", "fused-int8"):
                if (name, ours) in by:
                    add(name, f"{ours} session RSS-base / MatMulNBits b128 a4's [issue 25]",
                        by[(name, ours)]["session_rss_mb"] / max(nbits["session_rss_mb"], 1e-9), 1.0)
        if (name, "load") in by:
            add(name, "load (RSS-base - onnxruntime alone) / float32's",
                above_runtime(by[(name, "load")]) / max(above_runtime(plain), 1e-9), 1.0)
        if (name, "stream") in by:
            add(name, "stream (RSS-base - onnxruntime alone) / float32's",
                above_runtime(by[(name, "stream")]) / max(above_runtime(plain), 1e-9), TARGETS["stream_rss"])
    return lines


def main(args) -> int:
    sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()] if args.sizes else []
    threads = args.threads or all_cores()
    if threads < 1 or args.repeat < 1 or args.runs < 1 or args.session_threads < 0:
        raise ValueError("--threads, --repeat and --runs must be >= 1, --session-threads >= 0")
    names = [] if args.no_models else list(args.models)
    for name in names:
        if name not in MODEL_TITLES:
            raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODEL_TITLES)}")
    methods = list(args.methods) if args.methods else None
    for method in methods or []:
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    import onnxruntime
    print(f"hyperonnx bench runtime: {all_cores()} CPU(s), onnxruntime {onnxruntime.__version__}, "
          f"library {hyperonnx.get_library_path()}")
    decode_rows, fused_rows, session_rows = [], [], []
    if sizes:
        print(f"\nDecodeWeights CPU kernel, GB/s of output written (N = {threads} threads); "
              "memcpy = numpy copy into a preallocated array, one core")
        print(DECODE_HEADER)
        decode_rows = measure_decode(sizes, threads)
    if args.fused or names:
        print("\nWhat limits each fused kernel: DecodeMatMul (lattice-4.25 seed) against MatMul on the decoded "
              "float32 weight, one thread, median per call; read GB/s = the bytes a call streams (the packed form, "
              "else the seed; MatMul: its float32 weight) per second")
        print(FUSED_HEADER)
        fused_rows = measure_fused()
    if names:
        threads_text = f"{args.session_threads} intra-op threads" if args.session_threads else "onnxruntime's threads"
        print(f"\nSessions, each in its own process ({threads_text}); preset {args.preset}; median of {args.repeat} "
              f"interleaved round(s) of {args.runs} timed runs; RSS-base = peak RSS above the process after its "
              "imports; x alt. = latency / float32's, all sessions of a model taking turns in one process; "
              "cos = cosine of the output to float32's")
        print(SESSION_HEADER)
        session_rows = measure_sessions(names, args.preset, args.repeat, args.runs, args.session_threads, methods)
    lines = targets(decode_rows, session_rows)
    if lines:
        print("\nTargets (issues 4, 14, 22 and 25)")
        for line in lines:
            print(f"  {'met   ' if line['met'] else 'MISSED'} {line['measured']:6.2f}  {line['target']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"decode": decode_rows, "fused": fused_rows, "sessions": session_rows,
                                               "targets": lines}, indent=2))
        print(f"wrote {args.json}")
    return 0
