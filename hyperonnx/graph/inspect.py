"""Inspection (read-only): what a model holds, compressed or not — per DecodeWeights node (and
per seed of fused nodes, named after the seed) its
shape, dtype and codec settings and seed size, and the float tensors still stored raw. Every
`ai.hyperonnx` node is checked against FORMAT.md rules 1-9 by the validator every path applies
(validate.py); `invalid` lists the nodes that break one (each tensor's `problem` is its first)."""

from __future__ import annotations

import math

from onnx import ModelProto, TensorProto

from .. import format as fmt
from .compress import DTYPE_NAMES, FLOAT_TYPES
from .decompress import read_seed
from .fuse import decode_view
from .validate import node_problem
from .walk import scopes

_ELEM_BYTES = {TensorProto.FLOAT: 4, TensorProto.FLOAT16: 2, TensorProto.BFLOAT16: 2}


def inspect_model(model: ModelProto, base_dir=None) -> dict:
    """A JSON-able summary: compressed tensors, raw float tensors and totals. `base_dir`: the
    folder the model's external data is relative to, where `load` did not read it."""
    from .model_io import bound
    with bound(model, base_dir):
        return _inspect(model)


def _inspect(model: ModelProto) -> dict:
    compressed, raw, invalid = [], [], []
    version = next((o.version for o in model.opset_import if o.domain == fmt.OP_DOMAIN), None)
    if version is not None and version not in fmt.KNOWN_VERSIONS:
        invalid.append({"graph": "", "node": "", "problem": node_problem_version(version)})
    for scope in scopes(model):
        graph = scope.graph
        seen = set()  # the seeds of a graph's fused nodes: a shared weight counts once
        entry_of, problem_of = {}, {}
        chain = (graph,) + tuple(reversed(scope.parents))
        for i, node in enumerate(graph.node):  # every ai.hyperonnx node against the rules (validate.py)
            if node.domain != fmt.OP_DOMAIN:
                continue
            problem = problem_of[i] = node_problem(node, chain, version)
            if problem is not None:
                invalid.append({"graph": scope.path, "node": node.name or (node.output[0] if node.output else ""),
                                "problem": problem})
        for node in graph.node:
            decode = decode_view(node)
            if decode is not None and tuple(decode.input) not in seen:
                seen.add(tuple(decode.input))
                original, node = node, decode
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
                    "problem": None})
                entry_of[tuple(decode.input)] = compressed[-1]
            elif node.op_type == "Constant":
                for a in node.attribute:
                    if a.name == "value" and a.HasField("t") and a.t.data_type in FLOAT_TYPES:
                        raw.append(_raw_entry(node.output[0], scope.path, "Constant", a.t))
        # a node's problem shown on its tensor; the sizes of a broken node are claims: not counted
        for i, node in enumerate(graph.node):
            decode = decode_view(node)
            if decode is not None and tuple(decode.input) in entry_of:
                entry = entry_of[tuple(decode.input)]
                if entry["problem"] is None:
                    entry["problem"] = problem_of[i]
                    if entry["problem"] is not None:
                        entry["orig_bytes"], entry["bits_per_weight"] = 0, 0.0
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
        "compressed": compressed, "raw_float": raw, "invalid": invalid,
        "totals": {"compressed_tensors": len(compressed), "compressed_weight_bytes": orig,
                   "seed_bytes": seed_bytes, "raw_float_tensors": len(raw),
                   "raw_float_bytes": raw_bytes,
                   "weight_bytes_before": orig + raw_bytes, "weight_bytes_after": seed_bytes + raw_bytes,
                   "invalid_nodes": len(invalid)}}


def node_problem_version(version: int) -> str:
    try:
        fmt.check_model_version(version, ())
    except fmt.FormatError as error:
        return str(error)
    return ""


def _stored_bytes(t) -> int:
    """The bytes a tensor holds in the file (never its declared shape's: a claim)."""
    if t.data_location == TensorProto.EXTERNAL:
        entries = {e.key: e.value for e in t.external_data}
        try:
            return max(0, int(entries.get("length", 0)))
        except ValueError:
            return 0
    if t.HasField("raw_data"):
        return len(t.raw_data)
    # float32 in float_data; float16 / bfloat16 one element per int32_data entry
    return 4 * len(t.float_data) + _ELEM_BYTES.get(t.data_type, 4) * len(t.int32_data)


def _raw_entry(name, graph, source, t):
    count = math.prod(t.dims)
    declared = count * _ELEM_BYTES[t.data_type]
    stored = _stored_bytes(t)
    return {"name": name, "graph": graph, "source": source, "shape": list(t.dims),
            "dtype": DTYPE_NAMES[t.data_type], "bytes": min(declared, stored) if stored != declared else declared}
