"""The fusion pass: a weight read only as the weight of MatMul / Gemm / Gather / Conv is computed
with straight from its seed (docs/FORMAT.md §8), so a runtime never holds it decoded.

What this pass ensures:
- a float32 DecodeWeights node whose seed (and scales) are initializers of its own graph, whose
  output is no graph output, is read by no subgraph, and whose every reader in that graph takes
  it only as the weight of a standard MatMul (rank 2), Gemm (rank 2, transA 0), Gather (axis 0)
  or 2-D Conv (rank 4), is removed, and each reader becomes the fused operator: same name and
  output, inputs (activation, seed, scales or "", [C / B]), the codec attributes plus the
  reader's own attributes prefixed `op_`. A weight with several readers (shared weights) keeps
  one seed that every fused node reads;
- anything else (float16 / bfloat16 weights, other readers, weights in an enclosing graph's
  initializers) stays DecodeWeights, exactly as it was;
- with a fused node, the model imports `ai.hyperonnx` at version 3 and, where it carries the
  DecodeWeights function, one model-local function per fused operator used (DecodeWeights + the
  standard operator), so it still runs without the library.

`unfuse_model` undoes it (DecodeWeights + the standard op again; the weight named after its seed):
decompress and inspect read fused models through it. Plain protobuf edits, like compress.py (and
for its reason: a graphsurgeon round trip rebuilds every graph).
"""

from __future__ import annotations

from onnx import AttributeProto, FunctionProto, ModelProto, NodeProto, TensorProto, helper

from .. import format as fmt
from .walk import NameMaker, all_names, default_opset, scopes

_FUSED_BY_STANDARD = {standard: op for op, (standard, _position) in fmt.FUSED_OPS.items()}


def is_fused(node: NodeProto) -> bool:
    return node.domain == fmt.OP_DOMAIN and node.op_type in fmt.FUSED_OPS


def _attribute(node: NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _fusable(reader: NodeProto, weight: str, rank: int) -> str | None:
    """The fused operator `reader` becomes when it reads `weight` only as its weight, else None."""
    if reader.domain not in ("", "ai.onnx") or reader.op_type not in _FUSED_BY_STANDARD:
        return None
    op = _FUSED_BY_STANDARD[reader.op_type]
    position = fmt.FUSED_OPS[op][1]
    if list(reader.input).count(weight) != 1 or len(reader.input) <= position or reader.input[position] != weight:
        return None
    if rank not in fmt.FUSED_RANKS.get(op, (rank,)) or rank < 1 or len(reader.output) != 1:
        return None
    known = fmt.FUSED_OP_ATTRIBUTES[op]
    if any(a.name not in known or a.type != known[a.name] for a in reader.attribute):
        return None  # an attribute the fused operator does not carry (or mistyped): leave it alone
    if op == "DecodeGemm" and (_attribute(reader, "transA", 0) != 0 or _attribute(reader, "transB", 0) not in (0, 1)):
        return None
    if op == "DecodeGather" and _attribute(reader, "axis", 0) != 0:
        return None
    if op == "DecodeConv":
        pad = _attribute(reader, "auto_pad", b"NOTSET")
        if pad not in (b"NOTSET", b"VALID", b"SAME_UPPER", b"SAME_LOWER") or _attribute(reader, "group", 1) < 1:
            return None
    return op


def fused_node(op: str, reader: NodeProto, decode: NodeProto) -> NodeProto:
    """`reader` (a standard op) as the fused operator `op` computing from `decode`'s seed."""
    standard, position = fmt.FUSED_OPS[op]
    others = [name for i, name in enumerate(reader.input) if i != position]  # activation, [C / B]
    seed_inputs = list(decode.input) + ([""] if len(decode.input) == 1 else [])
    inputs = others[:1] + seed_inputs + others[1:]
    while inputs and inputs[-1] == "":
        inputs.pop()
    node = helper.make_node(op, inputs, list(reader.output), name=reader.name, domain=fmt.OP_DOMAIN)
    node.attribute.extend(a for a in decode.attribute)
    for a in reader.attribute:
        copy = AttributeProto()
        copy.CopyFrom(a)
        copy.name = fmt.FUSED_ATTRIBUTE_PREFIX + a.name
        node.attribute.append(copy)
    return node


def _is_codec_attribute(name: str) -> bool:
    """A fused node's attribute that belongs to its DecodeWeights (not op_*, not accuracy_level)."""
    return not name.startswith(fmt.FUSED_ATTRIBUTE_PREFIX) and name != fmt.ACCURACY_LEVEL


def set_accuracy_level(model: ModelProto, level: int) -> int:
    """Every DecodeMatMul / DecodeGemm of `model` (all graphs) computes at `level` (docs/FORMAT.md
    §8: 0 float32, the attribute left off; 4 int8), in place; returns how many nodes there are."""
    if level not in fmt.ACCURACY_LEVELS:
        raise ValueError(f"accuracy_level must be one of {', '.join(map(str, fmt.ACCURACY_LEVELS))} "
                         f"(0 float32 compute, 4 int8), not {level!r}")
    count = 0
    for scope in scopes(model):
        for node in scope.graph.node:
            if node.domain == fmt.OP_DOMAIN and node.op_type in fmt.ACCURACY_OPS:
                keep = [a for a in node.attribute if a.name != fmt.ACCURACY_LEVEL]
                del node.attribute[:]
                node.attribute.extend(keep)
                if level:
                    node.attribute.append(helper.make_attribute(fmt.ACCURACY_LEVEL, level))
                count += 1
    return count


def split_fused(node: NodeProto, weight: str) -> tuple[NodeProto, NodeProto]:
    """A fused node as (DecodeWeights -> `weight`, the standard op reading `weight`)."""
    standard, position = fmt.FUSED_OPS[node.op_type]
    inputs = list(node.input) + [""] * (3 - len(node.input))
    seed_inputs = [inputs[1]] + ([inputs[2]] if inputs[2] else [])
    codec = {a.name for a in node.attribute if _is_codec_attribute(a.name)}
    decode = helper.make_node(fmt.OP_TYPE, seed_inputs, [weight], name=f"DecodeWeights/{weight}", domain=fmt.OP_DOMAIN)
    decode.attribute.extend(a for a in node.attribute if a.name in codec)
    others = [inputs[0]] + list(node.input[3:])
    others.insert(position, weight)
    while others and others[-1] == "":
        others.pop()
    reader = helper.make_node(standard, others, list(node.output), name=node.name)
    for a in node.attribute:
        if a.name.startswith(fmt.FUSED_ATTRIBUTE_PREFIX):
            copy = AttributeProto()
            copy.CopyFrom(a)
            copy.name = a.name[len(fmt.FUSED_ATTRIBUTE_PREFIX):]
            reader.attribute.append(copy)
    return decode, reader


def weight_name(node: NodeProto) -> str:
    """The name a fused node's weight gets when split off: its seed's, less ".seed"."""
    seed = node.input[1] if len(node.input) > 1 and node.input[1] else node.name
    return seed[:-len(".seed")] if seed.endswith(".seed") else f"{seed}.weight"


def decode_view(node: NodeProto) -> NodeProto | None:
    """The DecodeWeights node a DecodeWeights or fused node decodes with; None for other nodes."""
    if node.domain == fmt.OP_DOMAIN and node.op_type == fmt.OP_TYPE:
        return node
    return split_fused(node, weight_name(node))[0] if is_fused(node) else None


def fuse_model(model: ModelProto, function_fallback: bool = True) -> int:
    """Fuse `model` in place (see the module docstring); returns the number of fused nodes."""
    fused = 0
    # deepest graphs first: rewriting a parent's node list re-creates the subgraphs its nodes hold
    for scope in sorted(scopes(model), key=lambda s: -len(s.parents)):
        graph = scope.graph
        initializers = {t.name for t in graph.initializer}
        outputs = {o.name for o in graph.output}
        implicit = set()  # names read inside subgraphs of this graph's nodes
        for node in graph.node:
            for a in node.attribute:
                for sub in ([a.g] if a.type == AttributeProto.GRAPH else list(a.graphs)):
                    implicit |= _names_read(sub)
        readers: dict[str, list[int]] = {}
        for i, node in enumerate(graph.node):
            for name in set(node.input):
                readers.setdefault(name, []).append(i)
        replace: dict[int, NodeProto] = {}
        drop: set[int] = set()
        for i, node in enumerate(graph.node):
            if node.op_type != fmt.OP_TYPE or node.domain != fmt.OP_DOMAIN or len(node.output) != 1:
                continue
            weight = node.output[0]
            shape = _attribute(node, "shape")
            if (_attribute(node, "dtype") != TensorProto.FLOAT or shape is None or weight in outputs
                    or weight in implicit or not 1 <= len(node.input) <= 2
                    or not all(name in initializers for name in node.input)):
                continue
            users = readers.get(weight, [])
            ops = [_fusable(graph.node[j], weight, len(shape)) for j in users]
            if not users or any(op is None for op in ops) or any(j in replace for j in users):
                continue
            for j, op in zip(users, ops):
                replace[j] = fused_node(op, graph.node[j], node)
            drop.add(i)
            fused += len(users)
        if replace:
            nodes = [replace.get(i, n) for i, n in enumerate(graph.node) if i not in drop]
            del graph.node[:]
            graph.node.extend(nodes)
    if fused:
        _ensure_version(model)
        if function_fallback:
            ensure_functions(model)
    return fused


def unfuse_model(model: ModelProto) -> int:
    """Every fused node back to DecodeWeights + the standard op, in place (one DecodeWeights per
    seed and attributes in a graph); returns the number of fused nodes split."""
    names = NameMaker(all_names(model))
    split = 0
    for scope in sorted(scopes(model), key=lambda s: -len(s.parents)):
        graph = scope.graph
        if not any(is_fused(n) for n in graph.node):
            continue
        decoded: dict[tuple, str] = {}  # (inputs, attributes) -> weight name
        nodes = []
        for node in graph.node:
            if not is_fused(node):
                nodes.append(node)
                continue
            codec_attrs = tuple(a.SerializeToString() for a in node.attribute if _is_codec_attribute(a.name))
            key = (tuple(node.input[1:3]), codec_attrs)
            weight = decoded.get(key) or names(weight_name(node))
            decode, reader = split_fused(node, weight)
            if key not in decoded:
                decoded[key] = weight
                nodes.append(decode)
            nodes.append(reader)
            split += 1
        del graph.node[:]
        graph.node.extend(nodes)
    if split:
        used = {n.op_type for s in scopes(model) for n in s.graph.node if n.domain == fmt.OP_DOMAIN}
        keep = [f for f in model.functions if not (f.domain == fmt.OP_DOMAIN and f.name in fmt.FUSED_OPS
                                                   and f.name not in used)]
        del model.functions[:]
        model.functions.extend(keep)
    return split


def _names_read(graph) -> set[str]:
    names = set()
    for node in graph.node:
        names.update(node.input)
        for a in node.attribute:
            for sub in ([a.g] if a.type == AttributeProto.GRAPH else list(a.graphs)):
                names |= _names_read(sub)
    names.update(o.name for o in graph.output)
    return names


def _ensure_version(model: ModelProto) -> None:
    for opset in model.opset_import:
        if opset.domain == fmt.OP_DOMAIN:
            opset.version = max(opset.version, fmt.FUSED_VERSION)
            return
    model.opset_import.append(helper.make_opsetid(fmt.OP_DOMAIN, fmt.FUSED_VERSION))


def ensure_functions(model: ModelProto) -> None:
    """One function per fused operator the model uses, where it carries the DecodeWeights function
    (else the model needs the library, as its DecodeWeights nodes do)."""
    used = {n.op_type for s in scopes(model) for n in s.graph.node if is_fused(n)}
    ours = {f.name: f for f in model.functions if f.domain == fmt.OP_DOMAIN}
    if fmt.OP_TYPE not in ours:
        return
    opset = default_opset(model)
    for op in sorted(used - set(ours)):
        model.functions.append(build_fused_function(op, opset, ours[fmt.OP_TYPE]))
        if model.functions[-1].attribute_proto:
            model.ir_version = max(model.ir_version, 9)  # function attribute defaults: IR version 9


def build_fused_function(op: str, opset: int, decode_function: FunctionProto) -> FunctionProto:
    """FunctionProto `ai.hyperonnx.<op>`: DecodeWeights (the model's own `decode_function`, whose
    inputs and attributes it takes, or the library) and the standard operator, every attribute
    passed through by reference."""
    standard, position = fmt.FUSED_OPS[op]
    known = {**fmt.ATTRIBUTE_TYPES, **fmt.LATTICE_ATTRIBUTE_TYPES, **fmt.TRELLIS_ATTRIBUTE_TYPES}
    names = list(decode_function.attribute) + [a.name for a in decode_function.attribute_proto]
    codec_types = {name: known[name] for name in names}
    scaled = list(decode_function.input) == ["seed", "scales"]
    checks, seed = [], "seed"
    if op in fmt.ACCURACY_OPS:  # rule 9: accuracy_level 0 (absent) or 4, else the seed's Gather fails
        level = helper.make_node("Constant", [], ["_level"])
        level.attribute.append(helper.make_attribute_ref("value_int", AttributeProto.INT, ref_attr_name=fmt.ACCURACY_LEVEL))
        const = lambda name, value: helper.make_node("Constant", [], [name], value=helper.make_tensor(  # noqa: E731
            name, TensorProto.INT64, [len(value)] if isinstance(value, list) else [], value if isinstance(value, list) else [value]))
        checks = [level, const("_zero", 0), const("_four", 4), const("_axes", [0]),
                  helper.make_node("Equal", ["_level", "_zero"], ["_is0"]),
                  helper.make_node("Equal", ["_level", "_four"], ["_is4"]),
                  helper.make_node("Or", ["_is0", "_is4"], ["_ok"]),
                  helper.make_node("Not", ["_ok"], ["_bad"]),
                  helper.make_node("Cast", ["_bad"], ["_gate"], to=TensorProto.INT64),
                  helper.make_node("Unsqueeze", ["seed", "_axes"], ["_seed_rows"]),
                  helper.make_node("Gather", ["_seed_rows", "_gate"], ["_seed_checked"], axis=0)]
        seed = "_seed_checked"
    decode = helper.make_node(fmt.OP_TYPE, [seed, "scales"] if scaled else [seed], ["weight"], domain=fmt.OP_DOMAIN)
    for name, kind in codec_types.items():
        decode.attribute.append(helper.make_attribute_ref(name, kind, ref_attr_name=name))
    has_extra = op in ("DecodeGemm", "DecodeConv")
    inputs = ["x"] + (["extra"] if has_extra else [])
    inputs.insert(position, "weight")
    standard_node = helper.make_node(standard, inputs, ["y"])
    op_attrs = {k: v for k, v in fmt.FUSED_OP_ATTRIBUTES[op].items() if not (op == "DecodeGemm" and k == "transA")}
    for name, kind in op_attrs.items():
        standard_node.attribute.append(helper.make_attribute_ref(name, kind,
                                                                 ref_attr_name=fmt.FUSED_ATTRIBUTE_PREFIX + name))
    attributes = list(codec_types) + [fmt.FUSED_ATTRIBUTE_PREFIX + name for name in op_attrs]
    # accuracy_level: checked (0, its default, or 4), else unused: the body computes in float32
    defaults = [helper.make_attribute(fmt.ACCURACY_LEVEL, 0)] if op in fmt.ACCURACY_OPS else []
    return helper.make_function(
        fmt.OP_DOMAIN, op, ["x", "seed", "scales"] + (["extra"] if has_extra else []), ["y"],
        checks + [decode, standard_node],
        [helper.make_opsetid("", opset), helper.make_opsetid(fmt.OP_DOMAIN, fmt.FUSED_VERSION)],
        attributes=attributes, attribute_protos=defaults,
        doc_string=f"{op} from DecodeWeights and {standard} (hyperonnx docs/FORMAT.md §8); a registered kernel "
                   "takes precedence.")
