"""Inspection (read-only): what a model holds, compressed or not — per DecodeWeights node (and
per seed of fused nodes, named after the seed) its
shape, dtype and codec settings and seed size, and the float tensors still stored raw. Each node is
checked against the FORMAT.md rules that need no unpacking (1-4, 6, 8); the first one it breaks
is its `problem`. Indices (rules 5 and 7) are checked when a decoder reads them."""

from __future__ import annotations

import math

from onnx import ModelProto, TensorProto

from .. import format as fmt
from .compress import DTYPE_NAMES, FLOAT_TYPES
from .decompress import find_initializer, read_seed
from .fuse import decode_view
from .walk import scopes

_ELEM_BYTES = {TensorProto.FLOAT: 4, TensorProto.FLOAT16: 2, TensorProto.BFLOAT16: 2}


def inspect_model(model: ModelProto) -> dict:
    """A JSON-able summary: compressed tensors, raw float tensors and totals."""
    compressed, raw = [], []
    version = next((o.version for o in model.opset_import if o.domain == fmt.OP_DOMAIN), None)
    for scope in scopes(model):
        graph = scope.graph
        seen = set()  # the seeds of a graph's fused nodes: a shared weight counts once
        for node in graph.node:
            decode = decode_view(node)
            if decode is not None and tuple(decode.input) not in seen:
                seen.add(tuple(decode.input))
                node = decode
                chain = (graph,) + tuple(reversed(scope.parents))
                seed = read_seed(node, chain, missing_ok=True)
                count = seed.num_elements
                compressed.append({
                    "name": node.output[0], "graph": scope.path, "shape": list(seed.shape),
                    "dtype": DTYPE_NAMES.get(seed.dtype, str(seed.dtype)), "codec": seed.codec,
                    "orig_bytes": count * _ELEM_BYTES.get(seed.dtype, 4),
                    "seed_bytes": seed.nbytes,
                    "bits_per_weight": 8.0 * seed.nbytes / max(1, count),
                    **{k: seed.attrs[k] for k in ("bits", "points", "rings", "generator", "group", "window")
                       if k in seed.attrs},
                    "problem": _problem(seed, version, computed=any(
                        find_initializer(chain, name) is None for name in node.input))})
            elif node.op_type == "Constant":
                for a in node.attribute:
                    if a.name == "value" and a.HasField("t") and a.t.data_type in FLOAT_TYPES:
                        raw.append(_raw_entry(node.output[0], scope.path, "Constant", a.t))
        decode_inputs = {name for n in graph.node for name in fmt.seed_inputs(n)}
        for t in graph.initializer:
            if t.data_type in FLOAT_TYPES and t.name not in decode_inputs:
                raw.append(_raw_entry(t.name, scope.path, "initializer", t))
    seed_bytes = sum(c["seed_bytes"] for c in compressed)
    orig = sum(c["orig_bytes"] for c in compressed)
    raw_bytes = sum(r["bytes"] for r in raw)
    return {
        "format_version": version,
        "function_fallback": any(f.domain == fmt.OP_DOMAIN and f.name == fmt.OP_TYPE for f in model.functions),
        "compressed": compressed, "raw_float": raw,
        "totals": {"compressed_tensors": len(compressed), "compressed_weight_bytes": orig,
                   "seed_bytes": seed_bytes, "raw_float_tensors": len(raw),
                   "raw_float_bytes": raw_bytes,
                   "weight_bytes_before": orig + raw_bytes, "weight_bytes_after": seed_bytes + raw_bytes,
                   "invalid_nodes": sum(c["problem"] is not None for c in compressed)}}


def _problem(seed: fmt.Seed, version: int | None, computed: bool) -> str | None:
    """The first FORMAT.md rule the node breaks, or None. A seed or scales tensor computed at run
    time cannot be checked here."""
    try:
        fmt.check_model_version(version if version is not None else 0, (seed.codec,))
        if not computed:
            fmt.validate(seed)
    except fmt.FormatError as error:
        return str(error)
    return None


def _raw_entry(name, graph, source, t):
    count = math.prod(t.dims)
    return {"name": name, "graph": graph, "source": source, "shape": list(t.dims),
            "dtype": DTYPE_NAMES[t.data_type], "bytes": count * _ELEM_BYTES[t.data_type]}
