"""The decompression pass: a plain ONNX model for runtimes without the hyperonnx library.

What this pass ensures: every DecodeWeights node (in any graph; fused operators are first split
into DecodeWeights and their standard op) is replaced by an initializer of
the same graph, with the node's output name and the reference decoder's output (docs/FORMAT.md),
so the model computes exactly what the compressed model computes with the library; seeds no node
reads any more are removed, and with no DecodeWeights left, the model-local function and the
`ai.hyperonnx` opset import go too. Everything else is left as it is.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from onnx import ModelProto, TensorProto, helper, numpy_helper

from .. import codec
from .. import format as fmt
from .fuse import unfuse_model
from .model_io import SpillFile, tensor_array
from .walk import scopes


def decompress_model(model: ModelProto, *, spill: SpillFile | None = None,
                     progress: Callable[[int, int, str], None] | None = None) -> int:
    """Decompress `model` in place; return the number of tensors decoded. With `spill`, each
    decoded tensor goes to that scratch file at once (memory holds one), not into the model."""
    from .validate import check_model
    check_model(model)  # FORMAT.md rules 1-9 on every node first: nothing invalid is carried over
    unfuse_model(model)  # fused operators: DecodeWeights + the standard op, decoded below
    decoded = 0
    inputs_of_decode: set[str] = set()  # seeds and scales: dropped once nothing reads them
    all_scopes = list(scopes(model))
    total = sum(_is_decode(n) for s in all_scopes for n in s.graph.node)
    initializer = spill.tensor if spill is not None else numpy_helper.from_array
    # Deepest graphs first: rewriting a parent's node list re-creates the subgraphs its nodes hold.
    for scope in sorted(all_scopes, key=lambda s: -len(s.parents)):
        graph = scope.graph
        chain = (graph,) + tuple(reversed(scope.parents))  # innermost first: ONNX scoping
        keep, new_inits = [], []
        for node in graph.node:
            if not _is_decode(node):
                keep.append(node)
                continue
            if progress:
                progress(decoded, total, node.output[0] if node.output else node.name)
            seed = read_seed(node, chain)
            new_inits.append(initializer(codec.decode(seed), node.output[0]))
            inputs_of_decode.update(node.input)
            decoded += 1
        if new_inits:
            del graph.node[:]
            graph.node.extend(keep)
            graph.initializer.extend(new_inits)
    # drop seeds nobody reads any more; from the graphs as they are now (the rewrite above copied
    # every subgraph of a rewritten graph: the scopes listed before it are detached)
    all_scopes = list(scopes(model))
    used = set()
    for scope in all_scopes:
        for node in scope.graph.node:
            used.update(node.input)
        used.update(o.name for o in scope.graph.output)
    for scope in all_scopes:
        graph = scope.graph
        if any(t.name in inputs_of_decode and t.name not in used for t in graph.initializer):
            keep = [t for t in graph.initializer if t.name not in inputs_of_decode or t.name in used]
            del graph.initializer[:]
            graph.initializer.extend(keep)
    if not any(n.domain == fmt.OP_DOMAIN for s in all_scopes for n in s.graph.node):
        funcs = [f for f in model.functions if f.domain != fmt.OP_DOMAIN]
        del model.functions[:]
        model.functions.extend(funcs)
        opsets = [o for o in model.opset_import if o.domain != fmt.OP_DOMAIN]
        del model.opset_import[:]
        model.opset_import.extend(opsets)
    if progress:
        progress(decoded, total, "")
    return decoded


def _is_decode(node) -> bool:
    return node.op_type == fmt.OP_TYPE and node.domain == fmt.OP_DOMAIN


def find_initializer(chain, name):
    """The initializer `name` seen from the first graph of `chain` (innermost first), or None."""
    for graph in chain:
        for t in graph.initializer:
            if t.name == name:
                return t
    return None


# What each input of DecodeWeights must be before its bytes are read: (name, ONNX type, rule).
_INPUTS = (("seed", TensorProto.UINT8, 4), ("scales", TensorProto.FLOAT16, 6))


def read_seed(node, chain, missing_ok: bool = False) -> fmt.Seed:
    """The Seed of a DecodeWeights node whose graph and parents are `chain` (innermost first), its
    input tensors read (external data too) once their type and rank are checked; FormatError for
    a malformed node or input (the seed is not yet validated). An input that is no initializer
    (computed at run time) is an error, or with `missing_ok` an empty tensor."""
    if len(node.output) != 1 or not node.input or not node.input[0]:
        raise fmt.FormatError(f"DecodeWeights node {node.name!r} needs a seed input and one output")
    arrays = []
    for name, (role, data_type, rule) in zip(node.input, _INPUTS):
        tensor = find_initializer(chain, name)
        if tensor is None:
            if not missing_ok:
                raise fmt.FormatError(f"DecodeWeights {node.name!r}: {role} {name!r} is not an initializer")
            arrays.append(np.zeros(0, helper.tensor_dtype_to_np_dtype(data_type)))
            continue
        if tensor.data_type != data_type or len(tensor.dims) != 1:
            raise fmt.FormatError(f"rule {rule}: {role} {name!r} must be a rank-1 "
                                  f"{TensorProto.DataType.Name(data_type).lower()} tensor")
        try:
            arrays.append(tensor_array(tensor))
        except (ValueError, TypeError) as error:  # bytes that do not match the declared length
            raise fmt.FormatError(f"rule {rule}: {role} {name!r} cannot be read: {error}") from None
    return fmt.seed_from_node(node, *arrays)


def decompress(model_or_path, base_dir=None) -> ModelProto:
    """A plain ONNX copy of a compressed model (ModelProto, left unmodified, or a path).
    `base_dir`: the folder a ModelProto's external data is relative to (without it such a model
    is refused: model_io.bind_external_data)."""
    from .model_io import bind_external_data, load
    if isinstance(model_or_path, ModelProto):
        model = ModelProto()
        model.CopyFrom(model_or_path)
        bind_external_data(model, base_dir)
    else:
        model = load(model_or_path)
    decompress_model(model)
    return model
