"""`hyperonnx verify original.onnx compressed.onnx`: run both in onnxruntime on the same inputs and
compare every output (max abs / relative difference, cosine); exit 1 beyond the tolerance."""

from __future__ import annotations

import sys

import numpy as np

from .. import graph
from ..graph.model_io import first_line
from ..graph.validate import check_model
from ..graph.samples import generate_inputs, load_inputs
from ._common import session

# Defaults that a sound ~4-bit compression passes and a broken one fails (MiniLM-L6 at 4.25 bits/weight
# on generated token ids: cosine 0.956, max rel 0.29; onnxruntime's int4 MatMulNBits on real text: cosine
# 0.956); tighten them for higher rates.
DEFAULT_TOLERANCE = 0.5
DEFAULT_MIN_COSINE = 0.95


def compare(reference: np.ndarray, actual: np.ndarray) -> dict:
    a = np.asarray(reference, np.float64).ravel()
    b = np.asarray(actual, np.float64).ravel()
    diff = np.abs(a - b)
    max_abs = float(diff.max()) if diff.size else 0.0
    scale = float(np.abs(a).max()) if a.size else 0.0
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    cosine = float(np.dot(a, b) / denom) if denom > 0 else (1.0 if max_abs == 0 else 0.0)
    return {"max_abs": max_abs, "max_rel": max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf")),
            "cosine": cosine}


def verify(original, compressed, feeds=None, tolerance: float = DEFAULT_TOLERANCE,
           min_cosine: float = DEFAULT_MIN_COSINE,
           use_library: bool = True):
    """Run both models on `feeds` (a feed dict or a list of them; default: one generated feed);
    return (results per output, library path or None, ok)."""
    original_model = graph.load(original) if not hasattr(original, "graph") else original
    compressed_model = graph.load(compressed) if not hasattr(compressed, "graph") else compressed
    check_model(compressed_model)  # FORMAT.md first, as every path does (with or without the library)
    feeds = feeds if feeds is not None else generate_inputs(original_model)
    feeds = [feeds] if isinstance(feeds, dict) else feeds
    ref_sess, _ = session(original_model, use_library=False)
    cmp_sess, lib = session(compressed_model, use_library=use_library)
    names = [o.name for o in ref_sess.get_outputs()]
    # feed by feed (a batch at a time: memory holds one feed's outputs), each output's statistics
    # accumulated over the feeds as if they were joined
    sums = [_Sums() for _ in names]
    for feed in feeds:
        for acc, r, g in zip(sums, ref_sess.run(names, feed), cmp_sess.run(names, feed)):
            acc.add(r, g)
    results, ok = [], True
    for name, acc in zip(names, sums):
        if acc.error:
            results.append({"output": name, "error": acc.error})
            ok = False
            continue
        stats = acc.stats()
        stats["output"] = name
        stats["ok"] = stats["max_rel"] <= tolerance and stats["cosine"] >= min_cosine
        ok &= stats["ok"]
        results.append(stats)
    return results, lib, ok


class _Sums:
    """`compare` over outputs joined across feeds, accumulated one feed at a time."""

    def __init__(self):
        self.max_abs = self.scale = self.dot = self.aa = self.bb = 0.0
        self.nan = False
        self.error = ""

    def add(self, reference, actual) -> None:
        a = np.asarray(reference, np.float64).ravel()
        b = np.asarray(actual, np.float64).ravel()
        if np.shape(reference) != np.shape(actual):
            self.error = self.error or f"shape {np.shape(reference)} vs {np.shape(actual)}"
            return
        if a.size:
            diff = np.abs(a - b)
            self.nan |= bool(np.isnan(diff).any())
            self.max_abs = max(self.max_abs, float(diff.max()))
            self.scale = max(self.scale, float(np.abs(a).max()))
            self.dot += float(np.dot(a, b))
            self.aa += float(np.dot(a, a))
            self.bb += float(np.dot(b, b))

    def stats(self) -> dict:
        max_abs = float("nan") if self.nan else self.max_abs
        denom = float(np.sqrt(self.aa) * np.sqrt(self.bb))
        cosine = self.dot / denom if denom > 0 else (1.0 if max_abs == 0 else 0.0)
        max_rel = max_abs / self.scale if self.scale > 0 else (0.0 if max_abs == 0 else float("inf"))
        return {"max_abs": max_abs, "max_rel": max_rel, "cosine": float(cosine)}


def print_results(results, lib) -> None:
    print(f"runtime: onnxruntime, DecodeWeights via {'the hyperonnx library' if lib else 'the model-local function (no library)'}")
    print(f"{'output':<28} {'max abs':>11} {'max rel':>10} {'cosine':>10}  result")
    for r in results:
        if "error" in r:
            print(f"{r['output'][:28]:<28} {r['error']}  FAIL")
        else:
            print(f"{r['output'][:28]:<28} {r['max_abs']:>11.4g} {r['max_rel']:>10.4g} {r['cosine']:>10.6f}  "
                  f"{'ok' if r['ok'] else 'FAIL'}")


def run(args) -> int:
    original = graph.load(args.original)
    compressed = graph.load(args.compressed)
    limit = None if getattr(args, "max_inputs_mb", None) is None else int(args.max_inputs_mb * 2**20)
    feeds = load_inputs(args.inputs, original, max_bytes=limit) if args.inputs else None
    try:
        results, lib, ok = verify(original, compressed, feeds, args.tolerance, args.min_cosine,
                                  use_library=not args.no_library)
    except Exception as e:  # onnxruntime errors: one line
        msg = first_line(e)
        print(f"hyperonnx verify: error: onnxruntime could not run the models: {msg}", file=sys.stderr)
        return 2
    print_results(results, lib)
    if not ok:
        print(f"hyperonnx verify: outputs differ beyond tolerance (max rel {args.tolerance}, "
              f"cosine {args.min_cosine})", file=sys.stderr)
        return 1
    return 0
