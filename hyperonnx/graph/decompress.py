"""The decompression pass: a plain ONNX model for runtimes without the hyperonnx library.

What this pass ensures: every DecodeWeights node (in any graph; fused operators are first split
into DecodeWeights and their standard op) is replaced by an initializer of
the same graph, with the node's output name and the reference decoder's output (docs/FORMAT.md),
so the model computes exactly what the compressed model computes with the library; seeds no node
reads any more are removed, and with no DecodeWeights left, the model-local function and the
`ai.hyperonnx` opset import go too. Everything else is left as it is.

The standard-ops forms (`to="int8"` / `"int4"`): the same, then each decoded weight read only as
the weight of MatMul / Gemm / Conv or the data of Gather is stored as blocked int8 / int4 values
with one scale per block of `block_size` along its reduction axis (symmetric, no zero point;
computed from the decoded weights), dequantized by a standard `DequantizeLinear` (opset 21,
`block_size`): MatMul and Gemm weights [K, N] in blocks along K (a Gemm with transB=1 gets the
transposed weight and transB=0), the layout onnxruntime's CPU provider fuses into MatMulNBits;
Conv weights in blocks along their input channels (per output channel when there are fewer
than 16); Gather tables in blocks (of 128 at least) along their rows' last axis, the rows
gathered as integers and their scales beside them, then dequantized (so a runtime never holds
the float table; int8 in both forms: Gather takes no int4 data). The
model's default opset becomes 21 (a plain bump where no operator it uses changed its meaning
since, else onnx.version_converter). No ai.hyperonnx node or function is left; every other
tensor stays float, as the compressed model has it.
"""

from __future__ import annotations

from typing import Callable

import ml_dtypes
import numpy as np
from onnx import AttributeProto, ModelProto, TensorProto, helper, numpy_helper

from .. import codec
from .. import format as fmt
from .fuse import unfuse_model
from .model_io import SpillFile, tensor_array
from .walk import NameMaker, all_names, default_opset, scopes


FORMS = ("float", "int8", "int4")  # what `decompress --to` writes
QUANTIZED_OPSET = 21  # DequantizeLinear with block_size, int4
BLOCK_SIZE = 32  # onnxruntime's MatMulNBits int8 compute quantizes the activations in the weight's blocks
TABLE_BLOCK_SIZE = 128  # Gather tables


def decompress_model(model: ModelProto, *, spill: SpillFile | None = None,
                     progress: Callable[[int, int, str], None] | None = None, to: str = "float",
                     block_size: int = BLOCK_SIZE) -> int:
    """Decompress `model` in place; return the number of tensors decoded. With `spill`, each
    decoded tensor goes to that scratch file at once (memory holds one), not into the model.
    `to` "int8" / "int4": the standard-ops form of the module docstring, `block_size` weights
    per scale."""
    if to not in FORMS:
        raise ValueError(f"to must be one of {', '.join(FORMS)}, not {to!r}")
    if to != "float" and not (isinstance(block_size, int) and block_size >= 2):
        raise ValueError(f"block_size must be an integer >= 2, not {block_size!r}")
    from .validate import check_model
    check_model(model)  # FORMAT.md rules 1-9 on every node first: nothing invalid is carried over
    decoded_names: dict[str, set[str]] = {}  # scope path -> names of the weights decoded there
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
            decoded_names.setdefault(scope.path, set()).add(node.output[0])
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
    if to != "float":
        upgrade_opset(model, QUANTIZED_OPSET)
        quantize_weights(model, decoded_names, 8 if to == "int8" else 4, block_size, spill)
    if progress:
        progress(decoded, total, "")
    return decoded


# --- the standard-ops forms -------------------------------------------------------------------

# Operators whose meaning changed at the given opset (inputs that were attributes, new defaults,
# renamed modes), for models at opset 13 or later; every other update from 13 to 21 only added
# types or optional attributes whose defaults keep the old behaviour, so the opset number may
# simply be raised. Below 13, or with one of these, onnx.version_converter rewrites the model.
_MEANING_CHANGED = {**{op: 18 for op in ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax",
                                         "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSumSquare", "Split")},
                    "RoiAlign": 16, "GridSample": 20, "DFT": 20, "GroupNormalization": 21}


def _default_ops(model: ModelProto) -> set[str]:
    ops = {n.op_type for s in scopes(model) for n in s.graph.node if n.domain in ("", "ai.onnx")}
    for f in model.functions:
        ops.update(n.op_type for n in f.node if n.domain in ("", "ai.onnx"))
    return ops


def upgrade_opset(model: ModelProto, target: int) -> None:
    """The model (no ai.hyperonnx node left) at default-domain opset >= `target`, in place."""
    current = default_opset(model)
    if current >= target:
        return
    if current >= 13 and not any(_MEANING_CHANGED.get(op, 0) > current for op in _default_ops(model)):
        for opsets in [model.opset_import] + [f.opset_import for f in model.functions]:
            for o in opsets:
                if o.domain in ("", "ai.onnx"):
                    o.version = target
    else:
        from onnx import version_converter
        try:
            converted = version_converter.convert_version(model, target)
        except Exception as error:  # the converter raises RuntimeError / ValueError / its own types
            raise ValueError(f"cannot convert the model from opset {current} to {target} "
                             f"(onnx.version_converter: {str(error).splitlines()[0] if str(error) else error})") from None
        model.CopyFrom(converted)
    model.ir_version = max(model.ir_version, 10)  # opset 21, int4


def quantize_blocks(w: np.ndarray, axis: int, block: int, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric blockwise quantization of float32 `w` along `axis` (blocks of `block`, the last
    one shorter): int8 values (in [-127, 127] for 8 bits, [-8, 7] for 4) and one float32 scale per
    block, the scales' shape that of `w` with ceil(dim / block) along `axis` (DequantizeLinear's
    blocked layout). 8 bits: scale max|w| / 127. 4 bits: of the scales max|w| / c, c in 7 ... 8,
    the one of least squared error per block."""
    moved = np.moveaxis(np.asarray(w, np.float32), axis, -1)
    length = moved.shape[-1]
    blocks = -(-length // block)
    padded = np.zeros(moved.shape[:-1] + (blocks * block,), np.float32)
    padded[..., :length] = moved
    grouped = padded.reshape(moved.shape[:-1] + (blocks, block))
    top = np.abs(grouped).max(axis=-1, keepdims=True)
    low, high = (-127, 127) if bits == 8 else (-8, 7)
    divisors = (127.0,) if bits == 8 else tuple(np.linspace(7.0, 8.0, 9))
    best_q = best_s = best_err = None
    for c in divisors:
        scale = np.where(top > 0, top / np.float32(c), np.float32(1)).astype(np.float32)
        q = np.clip(np.rint(grouped / scale), low, high)
        if len(divisors) == 1:
            best_q, best_s = q, scale
            break
        err = np.square(q * scale - grouped).sum(axis=-1, keepdims=True)
        if best_err is None:
            best_q, best_s, best_err = q, scale, err
        else:
            better = err < best_err
            best_q = np.where(better, q, best_q)
            best_s = np.where(better, scale, best_s)
            best_err = np.minimum(err, best_err)
    q = best_q.reshape(padded.shape)[..., :length].astype(np.int8)
    return np.ascontiguousarray(np.moveaxis(q, -1, axis)), np.ascontiguousarray(np.moveaxis(best_s[..., 0], -1, axis))


def _attribute(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _set_attribute(node, name, value) -> None:
    keep = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(keep)
    node.attribute.append(helper.make_attribute(name, value))


def _family(node, position: int, rank: int) -> str | None:
    """How a reader takes the weight: "kn" (MatMul / Gemm B, reduced along axis 0), "nk" (Gemm
    with transB=1), "conv", "gather"; None for any other use."""
    if node.domain not in ("", "ai.onnx"):
        return None
    if node.op_type == "MatMul" and position == 1 and rank == 2:
        return "kn"
    if node.op_type == "Gemm" and position == 1 and rank == 2 and _attribute(node, "transA", 0) == 0:
        return "nk" if _attribute(node, "transB", 0) else "kn"
    if node.op_type == "Conv" and position == 1 and rank >= 3:
        return "conv"
    if node.op_type == "Gather" and position == 0 and rank >= 2 and _attribute(node, "axis", 0) == 0:
        return "gather"
    return None


_QUANTIZED_TYPES = {8: np.int8, 4: ml_dtypes.int4}


def quantize_weights(model: ModelProto, names: dict[str, set[str]], bits: int, block: int,
                     spill: SpillFile | None = None) -> int:
    """The weights `names` (scope path -> initializer names) as blocked DequantizeLinear
    initializers where every reader takes them as a MatMul / Gemm / Conv weight or a Gather table
    (the module docstring); returns how many."""
    initializer = spill.tensor if spill is not None else numpy_helper.from_array
    quantized = 0
    for scope in scopes(model):
        wanted = names.get(scope.path)
        if not wanted:
            continue
        graph = scope.graph
        readers: dict[str, list[tuple[int, int]]] = {}
        for i, node in enumerate(graph.node):
            for position, name in enumerate(node.input):
                readers.setdefault(name, []).append((i, position))
        blocked = {o.name for o in graph.output} | _names_in_subgraphs(graph)
        tensors = {t.name: t for t in graph.initializer}
        maker = NameMaker(all_names(model))
        front, replace, drop = [], {}, set()
        for name in sorted(wanted):
            t = tensors.get(name)
            if t is None or name in blocked or t.data_type not in fmt.OUTPUT_DTYPES or not readers.get(name):
                continue
            rank = len(t.dims)
            families = {_family(graph.node[i], position, rank) for i, position in readers[name]}
            if len(families) != 1 or None in families:
                continue
            family = families.pop()
            w = tensor_array(t)
            dtype = w.dtype
            w = w.astype(np.float32)
            if family in ("kn", "nk"):
                if family == "nk":
                    w = w.T
                    for i, _ in readers[name]:
                        _set_attribute(graph.node[i], "transB", 0)
                axis, size = 0, block
            elif family == "conv":
                axis, size = (1, block) if w.shape[1] >= 16 else (0, None)
            else:  # rows looked up meet no activation quantizer: coarser blocks, a quarter of the scales
                axis, size = rank - 1, min(max(block, TABLE_BLOCK_SIZE), w.shape[-1])
            width = 8 if family == "gather" else bits  # Gather takes no int4 data: tables stay int8
            if size is None:  # per output channel
                q, scale = quantize_blocks(w.reshape(w.shape[0], -1), 1, w[0].size, width)
                q, scale = q.reshape(w.shape), scale.reshape(w.shape[0])
            else:
                q, scale = quantize_blocks(w, axis, size, width)
            q_name, s_name = maker(f"{name}.q{width}"), maker(f"{name}.scale")
            new = [initializer(q.astype(_QUANTIZED_TYPES[width]), q_name), initializer(scale.astype(dtype), s_name)]
            attrs = {"axis": axis} | ({"block_size": size} if size is not None else {})
            if family != "gather":
                front.append(helper.make_node("DequantizeLinear", [q_name, s_name], [name],
                                              name=maker(f"DequantizeLinear/{name}"), **attrs))
            else:  # gather the integer rows and their scales, dequantize the rows
                for i, _ in readers[name]:
                    reader = graph.node[i]
                    rows, row_scales = maker(f"{reader.output[0]}.q{width}"), maker(f"{reader.output[0]}.scale")
                    replace[i] = [
                        helper.make_node("Gather", [q_name, reader.input[1]], [rows], name=maker(f"{reader.name}.q")),
                        helper.make_node("Gather", [s_name, reader.input[1]], [row_scales],
                                         name=maker(f"{reader.name}.scale")),
                        helper.make_node("DequantizeLinear", [rows, row_scales], [reader.output[0]],
                                         name=maker(f"DequantizeLinear/{reader.output[0]}"), axis=-1, block_size=size)]
            drop.add(name)
            graph.initializer.extend(new)
            quantized += 1
        if drop:
            nodes = front + [m for i, n in enumerate(graph.node) for m in replace.get(i, [n])]
            del graph.node[:]
            graph.node.extend(nodes)
            keep = [t for t in graph.initializer if t.name not in drop]
            del graph.initializer[:]
            graph.initializer.extend(keep)
    return quantized


def _names_in_subgraphs(graph) -> set[str]:
    """Names read inside the subgraphs of `graph`'s nodes (at any depth)."""
    names: set[str] = set()
    stack = [a.g for n in graph.node for a in n.attribute if a.type == AttributeProto.GRAPH]
    stack += [g for n in graph.node for a in n.attribute for g in a.graphs]
    while stack:
        g = stack.pop()
        for n in g.node:
            names.update(n.input)
            for a in n.attribute:
                if a.type == AttributeProto.GRAPH:
                    stack.append(a.g)
                stack.extend(a.graphs)
        names.update(o.name for o in g.output)
    return names


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


def decompress(model_or_path, base_dir=None, *, to: str = "float", block_size: int = BLOCK_SIZE) -> ModelProto:
    """A plain ONNX copy of a compressed model (ModelProto, left unmodified, or a path).
    `base_dir`: the folder a ModelProto's external data is relative to (without it such a model
    is refused: model_io.bind_external_data). `to` "int8" / "int4": the standard-ops form
    (blocked DequantizeLinear weights, opset 21; see the module docstring)."""
    from .model_io import bind_external_data, load
    if isinstance(model_or_path, ModelProto):
        model = ModelProto()
        model.CopyFrom(model_or_path)
        bind_external_data(model, base_dir)
    else:
        model = load(model_or_path)
    decompress_model(model, to=to, block_size=block_size)
    return model
