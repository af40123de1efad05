"""The one validator of compressed models: docs/FORMAT.md rules 1-9 over every `ai.hyperonnx` node
of every graph, applied by every path that reads seeds (compress on compressed inputs, inspect,
verify, decompress, the sessions), so they all give the same verdict on the same model.

What it ensures: a model it accepts decodes on every decoder (the reference, the kernels, the
standard-ops function) without an error of the format; a refused model is named by its first
broken node and rule. It reads each seed once, checking its length (rules 4, 6) before unpacking
anything, and unpacks indices (rules 5, 7) a chunk at a time: memory stays a small multiple of the
largest seed, whatever the attributes claim.
"""

from __future__ import annotations

from onnx import ModelProto, NodeProto

from .. import format as fmt
from .decompress import find_initializer, read_seed
from .fuse import decode_view, is_fused
from .walk import scopes


def model_version(model: ModelProto) -> int | None:
    """The `ai.hyperonnx` opset version the model imports (None: none)."""
    return next((o.version for o in model.opset_import if o.domain == fmt.OP_DOMAIN), None)


def _ours(node: NodeProto) -> bool:
    return node.domain == fmt.OP_DOMAIN


def node_problem(node: NodeProto, chain, version: int | None, indices: bool = True) -> str | None:
    """The first rule an `ai.hyperonnx` node of the graph `chain` (innermost first) breaks, or
    None. `indices`: also rules 5 and 7 (a scan of the seed)."""
    try:
        check_node(node, chain, version, indices)
    except fmt.FormatError as error:
        return str(error)
    return None


def check_node(node: NodeProto, chain, version: int | None, indices: bool = True) -> None:
    """`node_problem` as an exception: FormatError naming the rule."""
    if node.op_type != fmt.OP_TYPE and node.op_type not in fmt.FUSED_OPS:
        raise fmt.FormatError(f"rule 2: {fmt.OP_DOMAIN} has no operator {node.op_type!r}")
    fused = is_fused(node)
    if fused and (len(node.output) != 1 or len(node.input) < 2 or not node.input[0] or not node.input[1]):
        raise fmt.FormatError(f"rule 9: {node.op_type} needs an activation and a seed input and one output")
    decode = decode_view(node)
    computed = [name for name in decode.input if name and find_initializer(chain, name) is None]
    if fused and computed:
        raise fmt.FormatError(f"rule 9: {node.op_type}'s seed and scales must be constant initializers")
    for name in computed:  # computed at run time: then by some node, or a graph input
        if not any(name in _produced(graph) for graph in chain):
            raise fmt.FormatError(f"rule 4: the seed or scales {name!r} of {node.op_type} is no initializer, "
                                  "graph input or node output")
    seed = read_seed(decode, chain, missing_ok=True)
    fmt.check_model_version(version if version is not None else 0, (seed.codec,))
    if fused and (version or 0) < fmt.FUSED_VERSION:
        raise fmt.FormatError(f"rule 8: {node.op_type} needs {fmt.OP_DOMAIN} version {fmt.FUSED_VERSION}; the "
                              f"model imports version {version}")
    fmt.validate(seed, inputs=not computed)
    if fused:
        fmt.validate_fused(node, seed)
    if indices and not computed:
        fmt.check_indices(seed)


def _produced(graph) -> set[str]:
    """The values a graph's nodes compute, and its inputs."""
    names = {v.name for v in graph.input}
    for node in graph.node:
        names.update(node.output)
    return names


def problems(model: ModelProto, indices: bool = True):
    """(graph path, node, message) for every `ai.hyperonnx` node that breaks a rule."""
    version = model_version(model)
    for scope in scopes(model):
        chain = (scope.graph,) + tuple(reversed(scope.parents))
        for node in scope.graph.node:
            if _ours(node):
                problem = node_problem(node, chain, version, indices)
                if problem is not None:
                    yield scope.path, node, problem


def check_model(model: ModelProto, indices: bool = True) -> int:
    """Raise FormatError for the first `ai.hyperonnx` node that breaks FORMAT.md (its name and the
    rule); return the number of nodes checked."""
    version = model_version(model)
    if version is not None and version not in fmt.KNOWN_VERSIONS:  # rule 1, even with no node
        fmt.check_model_version(version, ())
    checked = 0
    for scope in scopes(model):
        chain = (scope.graph,) + tuple(reversed(scope.parents))
        for node in scope.graph.node:
            if not _ours(node):
                continue
            try:
                check_node(node, chain, version, indices)
            except fmt.FormatError as error:
                where = f"{scope.path}:" if scope.path else ""
                label = node.name or (node.output[0] if node.output else node.op_type)
                raise fmt.FormatError(f"{error} (node {where}{label})") from None
            checked += 1
    return checked
