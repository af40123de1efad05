"""One measured onnxruntime session, in a process of its own so its peak RSS is its own.

`python -m hyperonnx.bench.probe MODEL QUALITY.npz LATENCY.npz OUT.npz --runtime plain|load|stream
--runs N [--threads T]` creates the session (timed), times --runs runs of LATENCY.npz's inputs (peak RSS is read
then), runs QUALITY.npz's inputs (arrays named after the model's inputs, split along axis 0 in
batches of --batch) and saves the outputs, and prints one JSON line: create_s, latency_ms (median),
peak_rss_mb, baseline_rss_mb (after the imports, before the session), packed_mb (the fused kernels'
weights packed at creation).

`measure(...)` runs it from another process and returns that JSON line and the outputs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def measure(model, quality: dict, latency: dict, runtime: str = "plain", runs: int = 50,
            batch: int = 64, threads: int = 0) -> tuple[dict, dict]:
    """Run the probe on `model` in a fresh Python process; (its JSON result, the quality outputs).

    quality / latency: input arrays by name. Raises RuntimeError with the probe's last error line."""
    with tempfile.TemporaryDirectory(prefix="hyperonnx-probe-") as work:
        paths = [Path(work) / name for name in ("quality.npz", "latency.npz", "out.npz")]
        np.savez(paths[0], **quality)
        np.savez(paths[1], **latency)
        result = subprocess.run([sys.executable, "-m", "hyperonnx.bench.probe", str(model), *map(str, paths),
                                 "--runtime", runtime, "--runs", str(runs), "--batch", str(batch),
                                 "--threads", str(threads)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
            raise RuntimeError(lines[-1] if lines else f"probe exit code {result.returncode}")
        with np.load(paths[2]) as outputs:
            return json.loads(result.stdout.strip().splitlines()[-1]), dict(outputs)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("quality")
    parser.add_argument("latency")
    parser.add_argument("out")
    # load-nopack: load mode with packing="none" (the fused kernels decode from the seed every run)
    parser.add_argument("--runtime", choices=["plain", "load", "stream", "load-nopack"], default="plain")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (default: onnxruntime's)")
    args = parser.parse_args(argv)

    import onnxruntime as ort
    if args.runtime != "plain":
        import hyperonnx  # noqa: F401  (its imports belong to the baseline, not to the session)
    baseline = _status_mb("VmRSS")
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    start = time.perf_counter()
    if args.runtime == "plain":
        session = ort.InferenceSession(args.model, so, providers=["CPUExecutionProvider"])
    else:
        import hyperonnx
        mode, packing = ("load", "none") if args.runtime == "load-nopack" else (args.runtime, "auto")
        session = hyperonnx.InferenceSession(args.model, so, mode=mode, packing=packing)
    create_s = time.perf_counter() - start
    packed_mb = 0.0  # the fused kernels' packed weights (HyperonnxPackedBytes)
    if args.runtime != "plain":
        import ctypes
        library = ctypes.CDLL(hyperonnx.get_library_path())  # the handle onnxruntime loaded: one counter
        if hasattr(library, "HyperonnxPackedBytes"):
            library.HyperonnxPackedBytes.restype = ctypes.c_int64
            packed_mb = library.HyperonnxPackedBytes() / 1e6

    names = [i.name for i in session.get_inputs()]
    latency = np.load(args.latency)
    feed = {n: latency[n] for n in names}
    for _ in range(3):
        session.run(None, feed)
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - start)
    # the session's own peak, before the quality batches add their activations
    # VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over from the parent across exec
    peak = _status_mb("VmHWM")
    quality = np.load(args.quality)
    count = len(quality[names[0]])
    outputs: dict[str, list[np.ndarray]] = {}
    for first in range(0, count, args.batch):
        feed = {n: quality[n][first:first + args.batch] for n in names}
        for meta, value in zip(session.get_outputs(), session.run(None, feed)):
            outputs.setdefault(meta.name, []).append(value)
    np.savez(args.out, **{k: np.concatenate(v) for k, v in outputs.items()})

    print(json.dumps({"create_s": create_s, "latency_ms": 1000 * statistics.median(times),
                      "peak_rss_mb": peak, "baseline_rss_mb": baseline, "packed_mb": packed_mb}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
