"""`hyperonnx bench runtime`: the custom-op library in onnxruntime, against same-run baselines.

1. Decode throughput of the CPU kernel: a model of one DecodeWeights node (a random seed: winding
   over the `paper` preset's codebook, 13 bits per pair; lattice with 8-bit steps and a scale per
   128 weights, the default preset's usual width) runs in onnxruntime with its output bound to a
   preallocated buffer, on 1 intra-op thread and on all cores. Figures are GB/s of output written,
   next to a numpy copy into a preallocated array of the same output size (one core).
2. Sessions on real models (MiniLM-L6 at batch 1, sequence 128; the digits CNN at batch 1): the
   original model in plain onnxruntime and its `paper` compression in load and stream mode, each
   session in a fresh process (hyperonnx.bench.probe): creation time, median latency, peak RSS.
   The runtime's own working set is measured the same way on a weightless model (one Identity).
   The modes are interleaved over --repeat rounds; the table gives the medians of the rounds and
   the median of each round's latency ratio to the original ("x original"). Latency is also
   compared with the three sessions in one process taking turns run by run ("x alt.", the median
   per-run ratio): on a shared machine only this cancels the other users' load, so the latency
   target uses it.

Targets (issue 4) are printed beside the measured ratios.
"""

from __future__ import annotations

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
from . import probe

DTYPES = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16}
CODECS = (fmt.CODEC_WINDING, fmt.CODEC_LATTICE, fmt.CODEC_TRELLIS)  # decode rows of each, measured side by side
# The paper preset's codebook: n = 1600 points, C = 4 rings -> 8005 indices of 13 bits.
PAPER_CODEBOOK = dict(points=1600, rings=4, center=[0.0, 0.0], side=0.8, ring_scales=[1.6, 2.2, 2.8, 3.4])
RUNTIMES = ("plain", "load", "stream")
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


# --- 2. sessions on real models ----------------------------------------------------------------

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
    raise ValueError(f"unknown model {name!r}; choose from minilm, digits")


MODEL_TITLES = {"minilm": "MiniLM-L6 (1x128)", "digits": "digits CNN (1x1x8x8)"}


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


def alternating_latency(original: Path, compressed: Path, inputs: dict, runs: int, threads: int = 0) -> dict:
    """Median per-run latency ratio of load and stream mode to the original, from the three sessions
    in this process taking turns run by run (each run is compared with its neighbours, so a shared
    machine's drifting load cancels out): {runtime: ratio}."""
    import onnxruntime as ort

    def options():
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        return so

    sessions = {"plain": ort.InferenceSession(str(original), options(), providers=["CPUExecutionProvider"]),
                "load": hyperonnx.InferenceSession(compressed, options(), mode="load"),
                "stream": hyperonnx.InferenceSession(compressed, options(), mode="stream")}
    times: dict[str, list[float]] = {r: [] for r in RUNTIMES}
    for turn in range(runs + 3):
        for runtime in RUNTIMES[turn % 3:] + RUNTIMES[:turn % 3]:  # rotate who goes first
            start = time.perf_counter()
            sessions[runtime].run(None, inputs)
            if turn >= 3:  # warm-up turns
                times[runtime].append(time.perf_counter() - start)
    return {r: statistics.median(a / b for a, b in zip(times[r], times["plain"])) for r in RUNTIMES}


def measure_sessions(names: list[str], preset: str, repeat: int, runs: int, threads: int = 0,
                     log=print) -> list[dict]:
    rows = []
    empty = runtime_baseline(repeat, threads)
    log(f"{'onnxruntime alone (an Identity model)':93}{empty:11.0f}")
    for name in names:
        original, inputs = _model_inputs(name)
        with tempfile.TemporaryDirectory(prefix="hyperonnx-bench-runtime-") as work:
            compressed = Path(work) / "compressed.onnx"
            hyperonnx.save(hyperonnx.compress(original, preset), compressed)
            sizes = {"plain": original.stat().st_size, "load": compressed.stat().st_size,
                     "stream": compressed.stat().st_size}
            samples: dict[str, list[dict]] = {r: [] for r in RUNTIMES}
            outputs: dict[str, dict] = {}
            for _ in range(repeat):  # interleaved, so drifting machine load hits every mode alike
                for runtime in RUNTIMES:
                    result, outputs[runtime] = probe.measure(original if runtime == "plain" else compressed,
                                                             inputs, inputs, runtime, runs=runs, threads=threads)
                    samples[runtime].append(result)
            alternating = alternating_latency(original, compressed, inputs, runs, threads)
            for runtime in RUNTIMES:
                row = {"model": name, "runtime": runtime, "file_mb": sizes[runtime] / 1e6, "runtime_rss_mb": empty}
                for key in ("create_s", "latency_ms", "peak_rss_mb", "baseline_rss_mb"):
                    row[key] = statistics.median(s[key] for s in samples[runtime])
                row["session_rss_mb"] = statistics.median(s["peak_rss_mb"] - s["baseline_rss_mb"]
                                                          for s in samples[runtime])
                row["latency_vs_plain"] = statistics.median(
                    s["latency_ms"] / p["latency_ms"] for s, p in zip(samples[runtime], samples["plain"]))
                row["latency_alternating"] = alternating[runtime]
                # load and stream decode the same seeds: their outputs must agree
                row["max_abs_vs_load"] = max(float(np.max(np.abs(outputs[runtime][k] - outputs["load"][k])))
                                             for k in outputs["load"]) if runtime != "plain" else None
                rows.append(row)
                log(_session_line(row))
    return rows


SESSION_HEADER = (f"{'model':22} {'runtime':8} {'file MB':>8} {'session s':>9} {'latency ms':>10} "
                  f"{'x original':>10} {'x alt.':>7} {'peak RSS MB':>11} {'RSS-base MB':>11}")


def _session_line(row: dict) -> str:
    return (f"{MODEL_TITLES[row['model']]:22} {row['runtime']:8} {row['file_mb']:8.2f} {row['create_s']:9.3f} "
            f"{row['latency_ms']:10.3f} {row['latency_vs_plain']:10.3f} {row['latency_alternating']:7.3f} "
            f"{row['peak_rss_mb']:11.0f} "
            f"{row['session_rss_mb']:11.0f}")


# --- targets -----------------------------------------------------------------------------------

def targets(decode_rows: list[dict], session_rows: list[dict]) -> list[dict]:
    """One line per target and measurement: what issue 4 asks, what was measured, met or not."""
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
    by = {(r["model"], r["runtime"]): r for r in session_rows}
    for name in dict.fromkeys(r["model"] for r in session_rows):
        plain, load, stream = (by[(name, r)] for r in RUNTIMES)
        ratio = load["latency_alternating"]
        lines.append({"target": f"{MODEL_TITLES[name]}: load latency / original <= {TARGETS['load_latency']}",
                      "measured": ratio, "met": ratio <= TARGETS["load_latency"]})
        # the working set above the runtime's own (onnxruntime with a weightless model)
        ratio = ((stream["session_rss_mb"] - stream["runtime_rss_mb"])
                 / max(plain["session_rss_mb"] - plain["runtime_rss_mb"], 1e-9))
        lines.append({"target": f"{MODEL_TITLES[name]}: stream (RSS-base - onnxruntime alone) / original's "
                                f"<= {TARGETS['stream_rss']}",
                      "measured": ratio, "met": ratio <= TARGETS["stream_rss"]})
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
    import onnxruntime
    print(f"hyperonnx bench runtime: {all_cores()} CPU(s), onnxruntime {onnxruntime.__version__}, "
          f"library {hyperonnx.get_library_path()}")
    decode_rows, session_rows = [], []
    if sizes:
        print(f"\nDecodeWeights CPU kernel, GB/s of output written (N = {threads} threads); "
              "memcpy = numpy copy into a preallocated array, one core")
        print(DECODE_HEADER)
        decode_rows = measure_decode(sizes, threads)
    if names:
        threads_text = f"{args.session_threads} intra-op threads" if args.session_threads else "onnxruntime's threads"
        print(f"\nSessions, each in its own process ({threads_text}); preset {args.preset}; median of {args.repeat} "
              f"interleaved round(s) of {args.runs} timed runs; RSS-base = peak RSS above the process after its imports")
        print(SESSION_HEADER)
        session_rows = measure_sessions(names, args.preset, args.repeat, args.runs, args.session_threads)
    lines = targets(decode_rows, session_rows)
    if lines:
        print("\nTargets (issue 4)")
        for line in lines:
            print(f"  {'met   ' if line['met'] else 'MISSED'} {line['measured']:6.2f}  {line['target']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"decode": decode_rows, "sessions": session_rows,
                                               "targets": lines}, indent=2))
        print(f"wrote {args.json}")
    return 0
