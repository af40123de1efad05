"""`hyperonnx verify original.onnx compressed.onnx`: run both in onnxruntime on the same inputs and
compare every output (max abs / relative difference, cosine); exit 1 beyond the tolerance."""

from __future__ import annotations

import math
import sys

import numpy as np
from onnx import TensorProto

from .. import graph
from ._common import session

_NP = {TensorProto.FLOAT: np.float32, TensorProto.DOUBLE: np.float64, TensorProto.FLOAT16: np.float16,
       TensorProto.INT64: np.int64, TensorProto.INT32: np.int32, TensorProto.INT8: np.int8,
       TensorProto.UINT8: np.uint8, TensorProto.BOOL: np.bool_, TensorProto.INT16: np.int16}


MAX_GENERATED_ELEMENTS = 1 << 28
# Defaults that a sound ~4-bit compression passes and a broken one fails (MiniLM-L6 at 4.25 bits/weight
# on generated token ids: cosine 0.956, max rel 0.29; onnxruntime's int4 MatMulNBits on real text: cosine
# 0.956); tighten them for higher rates.
DEFAULT_TOLERANCE = 0.5
DEFAULT_MIN_COSINE = 0.95


def _gather_rows(model) -> dict[str, int]:
    """{input name: rows of the table it indexes} for graph inputs used (directly or through a
    Cast) as the indices of a Gather on an initializer or Constant: token ids of an embedding."""
    tables = {t.name: t.dims for t in model.graph.initializer}
    tables |= {n.output[0]: a.t.dims for n in model.graph.node if n.op_type == "Constant"
               for a in n.attribute if a.name == "value"}
    casts = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "Cast"}
    rows: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type == "Gather" and len(node.input) == 2 and node.input[0] in tables:
            axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
            dims = tables[node.input[0]]
            if -len(dims) <= axis < len(dims) and dims[axis] > 0:
                source = casts.get(node.input[1], node.input[1])
                rows[source] = min(rows.get(source, dims[axis]), dims[axis])
    return rows


def generate_inputs(model, seed: int = 0, batch: int = 2, sequence: int = 16) -> dict:
    """Inputs from the model's input types and shapes: symbolic first dimensions -> `batch`,
    other symbolic dimensions -> `sequence`. Floats ~ N(0, 1); integer inputs named like masks are
    ones, like type ids zeros, token ids (indices of a Gather on a weight table) uniform over the
    table's rows, others uniform in [0, 100); booleans random."""
    rng = np.random.default_rng(seed)
    inits = {t.name for t in model.graph.initializer}
    rows = _gather_rows(model)
    feeds = {}
    for value in model.graph.input:
        if value.name in inits:
            continue
        ttype = value.type.tensor_type
        dtype = _NP.get(ttype.elem_type)
        if dtype is None:
            raise ValueError(f"input {value.name!r}: cannot generate data of ONNX type {ttype.elem_type}; "
                             "give --inputs x.npz")
        shape = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (batch if i == 0 else sequence)
                 for i, d in enumerate(ttype.shape.dim)]
        if math.prod(shape) > MAX_GENERATED_ELEMENTS:  # a corrupted or absurd shape: no 100 GB array
            raise ValueError(f"input {value.name!r}: shape {shape} is too large to generate; give --inputs x.npz")
        lname = value.name.lower()
        if np.issubdtype(dtype, np.floating):
            feeds[value.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype == np.bool_:
            feeds[value.name] = np.asarray(rng.random(shape) < 0.5)  # a 0-d input must stay an array
        elif "mask" in lname:
            feeds[value.name] = np.ones(shape, dtype)
        elif "type" in lname or "segment" in lname:
            feeds[value.name] = np.zeros(shape, dtype)
        else:
            high = min(rows.get(value.name, 100), int(np.iinfo(dtype).max) + 1)
            feeds[value.name] = rng.integers(0, high, size=shape).astype(dtype)
    return feeds


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
    """Run both models; return (results per output, library path or None, ok)."""
    original_model = graph.load(original) if not hasattr(original, "graph") else original
    compressed_model = graph.load(compressed) if not hasattr(compressed, "graph") else compressed
    feeds = feeds if feeds is not None else generate_inputs(original_model)
    ref_sess, _ = session(original_model, use_library=False)
    cmp_sess, lib = session(compressed_model, use_library=use_library)
    names = [o.name for o in ref_sess.get_outputs()]
    ref = ref_sess.run(names, feeds)
    got = cmp_sess.run(names, feeds)
    results, ok = [], True
    for name, r, g in zip(names, ref, got):
        if r.shape != g.shape:
            results.append({"output": name, "error": f"shape {r.shape} vs {g.shape}"})
            ok = False
            continue
        stats = compare(r, g)
        stats["output"] = name
        stats["ok"] = stats["max_rel"] <= tolerance and stats["cosine"] >= min_cosine
        ok &= stats["ok"]
        results.append(stats)
    return results, lib, ok


def load_npz(path, model) -> dict:
    data = np.load(path)
    names = [v.name for v in model.graph.input if v.name not in {t.name for t in model.graph.initializer}]
    missing = [n for n in names if n not in data.files]
    if missing:
        raise ValueError(f"{path}: lacks input(s) {', '.join(missing)} (has {', '.join(data.files)})")
    return {n: data[n] for n in names}


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
    feeds = load_npz(args.inputs, original) if args.inputs else None
    try:
        results, lib, ok = verify(original, compressed, feeds, args.tolerance, args.min_cosine,
                                  use_library=not args.no_library)
    except Exception as e:  # onnxruntime errors: one line
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"hyperonnx verify: error: onnxruntime could not run the models: {msg}", file=sys.stderr)
        return 2
    print_results(results, lib)
    if not ok:
        print(f"hyperonnx verify: outputs differ beyond tolerance (max rel {args.tolerance}, "
              f"cosine {args.min_cosine})", file=sys.stderr)
        return 1
    return 0
