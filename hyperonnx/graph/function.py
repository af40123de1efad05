"""The model-local ONNX function that defines `ai.hyperonnx.DecodeWeights` from standard ops.

What this pass ensures: a model that carries this FunctionProto runs in any ONNX runtime, our
custom-op library or not, and decodes every seed to exactly the bits docs/FORMAT.md §3-4 defines.
Where the library is registered, onnxruntime runs our kernel instead of the body.

How the body decodes (every attribute is read through a reference, `ref_attr_name`):

1. Codebook table. The (n+1)*(C+1) codebook entries are decoded once, by the very float32
   operations of FORMAT.md §3 in their order (u as integers, float32(u)*step + offset, the
   centroid, cx + q*S_k), and cast to `dtype`. The table is small (8005 entries for the paper
   preset), so its arithmetic costs nothing; every pair is then one Gather from it. Decoding an
   entry and looking it up give the same bits as decoding each pair.
2. Bit unpacking. Indices come in groups of 8 that fill exactly `b` bytes, so the seed is padded
   to whole groups and viewed as a [G, b] byte matrix. Index r of a group reads a few byte
   *segments* (the bits of one byte that belong to it): a Gather of those columns, a mask that
   keeps the segment's bits, then a float32 MatMul with powers of two that shifts every segment to
   its place. Every product and every partial sum is an integer below 2**24, so the float32
   MatMul is exact whatever the summation order or FMA. The segment tables depend only on `b`
   (1..24) and are built here in Python.

onnxruntime constant-folds this body when a session is created without the library, and keeps
every intermediate until folding ends; so the body keeps its full-size temporaries few and narrow:
uint8 bytes, one float32 copy of the gathered segments (~nseg/16 floats per weight), an int32
index per pair, then the output in `dtype` (Gather, flatten, slice off the odd pad, reshape).

The body is written for the model's own default-domain opset (a function's opset imports must
match the model's): BitwiseAnd needs opset 18; below it the segment mask is done with exact
float32 Floor/Mod instead. Opsets below 13 get no function (the model then needs the library).
"""

from __future__ import annotations

import numpy as np
from onnx import AttributeProto, FunctionProto, TensorProto, helper, numpy_helper

from .. import format as fmt

MIN_OPSET = 13  # Cast to bfloat16 and the forms of Slice/Pad/Gather used below
_SEGMENTS = 32  # at most b + 7 <= 31 segments per group of 8 indices


def segment_tables():
    """Per bit width b (row b; row 0 unused), for each segment: its byte column, the mask of its
    bits, its bit range [lo, hi) within the byte as 2**-lo and 2**(hi-lo), the index r (0..7) it
    belongs to, and its place value 2**(8*byte - r*b) (masked byte) or 2**(8*byte + lo - r*b)
    (byte already shifted down by lo); and the segment count. Small uint8/float32 tables: the
    [segments, 8] MatMul weights are built from them in the body with OneHot."""
    rows, cols = fmt.MAX_BITS + 1, _SEGMENTS
    t = {"count": np.zeros(rows, np.int64), "column": np.zeros((rows, cols), np.uint8),
         "mask": np.zeros((rows, cols), np.uint8), "low": np.zeros((rows, cols), np.float32),
         "width": np.ones((rows, cols), np.float32), "index": np.zeros((rows, cols), np.uint8),
         "place": np.zeros((rows, cols), np.float32), "place_shifted": np.zeros((rows, cols), np.float32)}
    for b in range(1, fmt.MAX_BITS + 1):
        s = 0
        for r in range(8):
            start = r * b
            for byte in range(start // 8, (start + b - 1) // 8 + 1):
                lo = max(start, 8 * byte) - 8 * byte
                hi = min(start + b, 8 * byte + 8) - 8 * byte
                t["column"][b, s] = byte
                t["mask"][b, s] = ((1 << hi) - 1) & ~((1 << lo) - 1)
                t["low"][b, s] = 2.0 ** -lo
                t["width"][b, s] = 2.0 ** (hi - lo)
                t["index"][b, s] = r
                t["place"][b, s] = 2.0 ** (8 * byte - start)  # masked byte: a multiple of 2**lo
                t["place_shifted"][b, s] = 2.0 ** (8 * byte + lo - start)
                s += 1
        t["count"][b] = s
    return t


class _Body:
    """A tiny builder: nodes with fresh names."""

    def __init__(self):
        self.nodes = []
        self._n = 0

    def op(self, op_type, *inputs, **attrs):
        self._n += 1
        out = f"_{op_type.lower()}{self._n}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attrs))
        return out

    def const(self, array):
        self._n += 1
        out = f"_c{self._n}"
        self.nodes.append(helper.make_node("Constant", [], [out],
                                           value=numpy_helper.from_array(np.asarray(array), out)))
        return out

    def attr(self, name, kind):
        value_name = {AttributeProto.INT: "value_int", AttributeProto.INTS: "value_ints",
                      AttributeProto.FLOAT: "value_float", AttributeProto.FLOATS: "value_floats"}[kind]
        out = f"_attr_{name}"
        node = helper.make_node("Constant", [], [out])
        node.attribute.append(helper.make_attribute_ref(value_name, kind, ref_attr_name=name))
        self.nodes.append(node)
        return out


def build_function(opset: int) -> FunctionProto:
    """FunctionProto `ai.hyperonnx.DecodeWeights` (version fmt.OP_VERSION) for a model whose
    default-domain opset is `opset` (>= MIN_OPSET)."""
    if opset < MIN_OPSET:
        raise ValueError(f"the DecodeWeights function needs opset >= {MIN_OPSET}, model has {opset}")
    f = _Body()
    I64 = np.int64
    shape = f.attr("shape", AttributeProto.INTS)
    bits = f.attr("bits", AttributeProto.INT)
    points = f.attr("points", AttributeProto.INT)
    rings = f.attr("rings", AttributeProto.INT)
    center = f.attr("center", AttributeProto.FLOATS)
    side = f.attr("side", AttributeProto.FLOAT)
    ring_scales = f.attr("ring_scales", AttributeProto.FLOATS)
    one = f.const(np.array([1], I64))
    zero = f.const(np.array([0], I64))
    bits1 = f.op("Reshape", bits, one)

    # --- 1. the codebook table [(n+1)*(C+1), 2], FORMAT.md §3 entry by entry -------------------
    n = f.op("Cast", points, to=TensorProto.INT32)  # scalar
    n1 = f.op("Add", n, f.const(np.array(1, np.int32)))
    c1 = f.op("Add", f.op("Cast", rings, to=TensorProto.INT32), f.const(np.array(1, np.int32)))
    entries = f.op("Mul", n1, c1)
    t = f.op("Range", f.const(np.array(0, np.int32)), entries, f.const(np.array(1, np.int32)))
    j = f.op("Mod", t, n1)
    k = f.op("Div", t, n1)
    m = f.op("Cast", f.op("Ceil", f.op("Sqrt", f.op("Cast", points, to=TensorProto.DOUBLE))),
             to=TensorProto.INT32)
    modulus = f.op("Mul", m, m)
    ux = f.op("Mod", j, modulus)
    uy = f.op("Mod", f.op("Mul", j, m), modulus)
    col = f.const(np.array([-1, 1], I64))
    u = f.op("Concat", f.op("Reshape", ux, col), f.op("Reshape", uy, col), axis=1)
    step = f.op("Div", side, f.op("Cast", modulus, to=TensorProto.FLOAT))
    offset = f.op("Mul", f.const(np.array(-0.5, np.float32)), side)
    q = f.op("Add", f.op("Mul", f.op("Cast", u, to=TensorProto.FLOAT), step), offset)
    on_centroid = f.op("Reshape", f.op("Equal", j, n), col)
    q = f.op("Where", on_centroid, f.const(np.array(0.0, np.float32)), q)
    scales = f.op("Concat", f.const(np.array([1.0], np.float32)), ring_scales, axis=0)
    s = f.op("Reshape", f.op("Gather", scales, k), col)
    value = f.op("Add", center, f.op("Mul", q, s))
    cast = helper.make_node("Cast", [value], ["_table"])
    cast.attribute.append(helper.make_attribute_ref("to", AttributeProto.INT, ref_attr_name="dtype"))
    f.nodes.append(cast)
    table = "_table"

    # --- 2. unpack the indices, groups of 8 in b bytes ----------------------------------------
    tables = segment_tables()
    elements = f.op("ReduceProd", shape, keepdims=1)  # [1]; reduces all axes in every opset
    pairs = f.op("Div", f.op("Add", elements, one), f.const(np.array([2], I64)))
    groups = f.op("Div", f.op("Add", pairs, f.const(np.array([7], I64))), f.const(np.array([8], I64)))
    grid_bytes = f.op("Mul", groups, bits1)
    pad = f.op("Sub", grid_bytes, f.op("Shape", "seed"))
    seed = f.op("Pad", "seed", f.op("Concat", zero, pad, axis=0))
    grid = f.op("Reshape", seed, f.op("Concat", groups, bits1, axis=0))  # [G, b] uint8
    nseg = f.op("Gather", f.const(tables["count"]), bits1)  # [1]

    def row(name):  # the first nseg entries of row b of a segment table
        return f.op("Slice", f.op("Gather", f.const(tables[name]), bits), zero, nseg, zero)

    column = f.op("Cast", row("column"), to=TensorProto.INT64)
    segs = f.op("Gather", grid, column, axis=1)  # [G, nseg] uint8
    if opset >= 18:
        segs = f.op("BitwiseAnd", segs, row("mask"))
        segf = f.op("Cast", segs, to=TensorProto.FLOAT)
        place = row("place")
    else:  # exact float32 bit extraction: floor(byte / 2**lo) mod 2**(hi - lo)
        segf = f.op("Floor", f.op("Mul", f.op("Cast", segs, to=TensorProto.FLOAT), row("low")))
        segf = f.op("Mod", segf, row("width"), fmod=1)
        place = row("place_shifted")
    # weights[s, r] = place[s] if segment s belongs to index r else 0
    onehot = f.op("OneHot", f.op("Cast", row("index"), to=TensorProto.INT64), f.const(np.array(8, I64)),
                  f.const(np.array([0.0, 1.0], np.float32)), axis=-1)  # [nseg, 8]
    weights = f.op("Mul", onehot, f.op("Reshape", place, f.const(np.array([-1, 1], I64))))
    index = f.op("Cast", f.op("MatMul", segf, weights), to=TensorProto.INT32)  # [G, 8]

    # --- 3. look the pairs up, drop the odd pad, shape ----------------------------------------
    decoded = f.op("Gather", table, index)  # [G, 8, 2]
    flat = f.op("Reshape", decoded, f.const(np.array([-1], I64)))
    flat = f.op("Slice", flat, zero, elements, zero)
    f.nodes.append(helper.make_node("Reshape", [flat, shape], ["output"]))

    return helper.make_function(
        fmt.OP_DOMAIN, fmt.OP_TYPE, ["seed"], ["output"], f.nodes,
        [helper.make_opsetid("", opset)], attributes=list(fmt.ATTRIBUTE_TYPES),
        doc_string="DecodeWeights from standard ONNX ops (hyperonnx docs/FORMAT.md version "
                   f"{fmt.OP_VERSION}); a registered kernel takes precedence.")
