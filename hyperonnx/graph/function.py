"""The model-local ONNX function that defines `ai.hyperonnx.DecodeWeights` from standard ops.

What this pass ensures: a model that carries this FunctionProto runs in any ONNX runtime, our
custom-op library or not, and decodes every seed to exactly the bits docs/FORMAT.md defines:
`winding` (§3) and, for default-domain opset 17 and later, `lattice` (§7), both through one body.
Where the library is registered, onnxruntime runs our kernel instead of the body.

How the body decodes (every attribute is read through a reference, `ref_attr_name`):

1. Tables. Both codecs decode a pair of weights as one row of a small float32 table, computed
   once by the very float32 operations of FORMAT.md in their order, then looked up per pair
   (decoding a row and looking it up give the same bits as decoding each pair):
   - winding: the (n+1)*(C+1) codebook entries (u as integers, float32(u)*step + offset, the
     centroid, cx + q*S_k); 8005 rows for the paper preset;
   - lattice: row j = (phi(u(j)), phi(u((j*g + c) mod N))), N = 2^b - 1 rows (at most 65535);
     each group's values are then multiplied by S_q = float32(h_q) * U, one float32 operation.
   One body serves both codecs: an If on `generator > 0` (lattice) picks the codec's branch,
   which onnxruntime folds away at session creation like every constant. Each codec's own
   attributes have defaults (IR version 9) under which the other codec's branch stays valid and
   empty: onnxruntime builds, and folds, the untaken branch's operations too.
2. Bit unpacking. Indices come in groups of 8 that fill exactly `b` bytes, so the seed is padded
   to whole groups and viewed as a [G, b] byte matrix. Index r of a group reads a few byte
   *segments* (the bits of one byte that belong to it): a Gather of those columns, the bits
   kept and shifted down, then a MatMul with powers of two that puts every segment in its place:
   int32 from opset 18 (BitwiseAnd, BitShift); below it exact float32 Floor/Mod and a float32
   MatMul whose products and partial sums are integers below 2**24, exact in any order. The
   segment tables depend only on `b` (1..24) and are built here in Python.

onnxruntime constant-folds this body when a session is created without the library and keeps
every intermediate until folding ends (for all tensors together), so each full-size temporary
costs its bytes once per weight. The body keeps them few and narrow: uint8 bytes, an int32 index
per pair (lattice rows of a multiple of 8 pairs come out of the unpacking already in rows), the
gathered and, for lattice, scaled values, and the output: one Reshape when the pairs fill the
shape exactly, else flatten, slice off the pad and reshape (If, folded, picks). Two onnxruntime
behaviours matter: DivMulFusion turns Div(1, x) feeding a Mul into one Div, which rounds
differently (so 1/N comes from a table), and Compress is never constant-folded (so no Compress).

The body is written for the model's own default-domain opset (a function's opset imports must
match the model's). Opsets below 13 get no function, and a model with `lattice` nodes below
opset 17 none either (the model then needs the library).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import AttributeProto, FunctionProto, TensorProto, helper, numpy_helper

from .. import format as fmt

MIN_OPSET = 13  # Cast to bfloat16 and the forms of Slice/Pad/Gather used below
_SEGMENTS = 32  # at most b + 7 <= 31 segments per group of 8 indices
LATTICE_MIN_OPSET = 17  # LayerNormalization, through which the optional `scales` input enters
# Each codec's own attributes default so that one body serves both: generator 0 marks a winding
# node (its lattice branch gets an empty table, rows of group/2 = 8 pairs), points 0 a lattice
# node (its winding branch gets a one-entry codebook).
_DEFAULTS = {"points": 0, "rings": 0, "center": [0.0, 0.0], "side": 1.0, "ring_scales": [],
             "generator": 0, "group": 16, "alpha": 0.0, "beta": 0.0, "scale_unit": 1.0}


_RECIPROCALS = np.float32(1) / np.array([(1 << b) - 1 or 1 for b in range(fmt.MAX_BITS + 1)], np.float32)


def decodes_lattice(opset: int) -> bool:
    """Whether the function built for this default-domain opset decodes `lattice` nodes."""
    return opset >= LATTICE_MIN_OPSET


def decodes(codecs: set[str], opset: int) -> bool:
    """Whether a function body at this default-domain opset decodes nodes of all these codecs
    (one body: winding and lattice together, or trellis alone)."""
    if opset < MIN_OPSET:
        return False
    if fmt.CODEC_TRELLIS in codecs:
        return codecs == {fmt.CODEC_TRELLIS}
    return fmt.CODEC_LATTICE not in codecs or decodes_lattice(opset)


def build_function_for(codecs: set[str], opset: int) -> FunctionProto:
    """The DecodeWeights function for a model with nodes of these codecs (`decodes` is true)."""
    return build_trellis_function(opset) if fmt.CODEC_TRELLIS in codecs else build_function(opset)


def segment_tables():
    """Per bit width b (row b; row 0 unused), for each segment: its byte column, the mask of its
    bits, its bit range [lo, hi) within the byte as the shift lo, 2**-lo and 2**(hi-lo), the index
    r (0..7) it belongs to, and its place value 2**(8*byte + lo - r*b) (the byte shifted down by
    lo); and the segment count. Small uint8/float32 tables: the [segments, 8] MatMul weights are
    built from them in the body with OneHot."""
    rows, cols = fmt.MAX_BITS + 1, _SEGMENTS
    t = {"count": np.zeros(rows, np.int64), "column": np.zeros((rows, cols), np.uint8),
         "mask": np.zeros((rows, cols), np.uint8), "shift": np.zeros((rows, cols), np.uint8),
         "low": np.zeros((rows, cols), np.float32),
         "width": np.ones((rows, cols), np.float32), "index": np.zeros((rows, cols), np.uint8),
         "place_shifted": np.zeros((rows, cols), np.float32)}
    for b in range(1, fmt.MAX_BITS + 1):
        s = 0
        for r in range(8):
            start = r * b
            for byte in range(start // 8, (start + b - 1) // 8 + 1):
                lo = max(start, 8 * byte) - 8 * byte
                hi = min(start + b, 8 * byte + 8) - 8 * byte
                t["column"][b, s] = byte
                t["mask"][b, s] = ((1 << hi) - 1) & ~((1 << lo) - 1)
                t["shift"][b, s] = lo
                t["low"][b, s] = 2.0 ** -lo
                t["width"][b, s] = 2.0 ** (hi - lo)
                t["index"][b, s] = r
                t["place_shifted"][b, s] = 2.0 ** (8 * byte + lo - start)
                s += 1
        t["count"][b] = s
    return t


class _Body:
    """A tiny builder: nodes with fresh names, and If nodes whose branches it builds."""

    def __init__(self):
        self.nodes = []
        self._n = 0

    def op(self, op_type, *inputs, out=None, **attrs):
        out = out or self.op_name(op_type)
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attrs))
        return out

    def op_name(self, op_type):
        self._n += 1
        return f"_{op_type.lower()}{self._n}"

    def const(self, array):
        self._n += 1
        out = f"_c{self._n}"
        self.nodes.append(helper.make_node("Constant", [], [out],
                                           value=numpy_helper.from_array(np.asarray(array), out)))
        return out

    def attr(self, name, kind, raw: bool = False):
        """The attribute `name` as a tensor `_attr_<name>` (`raw`: `_raw_<name>`, to be checked
        and then `gated`)."""
        value_name = {AttributeProto.INT: "value_int", AttributeProto.INTS: "value_ints",
                      AttributeProto.FLOAT: "value_float", AttributeProto.FLOATS: "value_floats",
                      AttributeProto.STRING: "value_string"}[kind]
        out = f"_{'raw' if raw else 'attr'}_{name}"
        node = helper.make_node("Constant", [], [out])
        node.attribute.append(helper.make_attribute_ref(value_name, kind, ref_attr_name=name))
        self.nodes.append(node)
        return out

    def scalar(self, x):
        """A one-element tensor as a scalar."""
        return self.op("Reshape", x, self.const(np.zeros(0, np.int64)))

    def gated(self, value, gate):
        """`value` read through a Gather at `gate` (0, or 1 when a rule is broken: an index out of
        range, an error). Every size the body allocates from (a Range's end, a Pad's amount,
        ConstantOfShape's shape) is gated, so no allocation is made from an unchecked value; the
        If conditions are not (onnxruntime must fold them)."""
        rows = self.op("Unsqueeze", value, self.const(np.array([0], np.int64)))  # [1, ...]
        return self.op("Gather", rows, gate, axis=0)

    def all_of(self, conditions):
        """0 (int64 scalar) when every boolean condition holds, else 1."""
        one = self.const(np.array([1], np.int64))
        bad = [self.op("Cast", self.op("Reshape", self.op("Not", c), one), to=TensorProto.INT64) for c in conditions]
        return self.op("ReduceMax", self.op("Concat", *bad, axis=0), keepdims=0)

    def within(self, x, low, high):
        """low <= x <= high for an int64 scalar (bounds as Python ints)."""
        return self.op("And", self.op("GreaterOrEqual", x, self.const(np.array(low, np.int64))),
                       self.op("LessOrEqual", x, self.const(np.array(high, np.int64))))

    def codec_is(self, codec, name):
        """Whether the string attribute tensor `codec` is `name`: Unique of the two has one value
        (string Equal needs opset 19)."""
        pair = self.op("Concat", self.op("Reshape", codec, self.const(np.array([1], np.int64))),
                       self.const(np.array([name], dtype=object)), axis=0)
        return self.scalar(self.op("Equal", self.op("Shape", self.op("Unique", pair)),
                                   self.const(np.array([1], np.int64))))

    def common_checks(self, shape, dtype, seed_bytes):
        """Rules 2 (dtype), 3 (shape: no negative dimension, at most 2^40 elements, in float64: no
        int64 wrap) and 4 (a rank-1 seed of exactly `seed_bytes` bytes, an int64 [1])."""
        d = self.op("Concat", self.op("Cast", shape, to=TensorProto.DOUBLE), self.const(np.array([1.0])), axis=0)
        dtype_ok = self.op("Or", self.op("Or", self.op("Equal", dtype, self.const(np.array(1, np.int64))),
                                         self.op("Equal", dtype, self.const(np.array(10, np.int64)))),
                           self.op("Equal", dtype, self.const(np.array(16, np.int64))))
        seed_shape = self.op("Shape", "seed")
        # rule 4's type: BitShift by a uint8 takes only a uint8 seed (unsigned types only, both
        # the same): any other type fails the graph. One byte of it: no copy of the seed.
        first = self.op("Slice", "seed", self.const(np.array([0], np.int64)), self.const(np.array([1], np.int64)))
        byte = self.op("BitShift", first, self.const(np.array(0, np.uint8)), direction="RIGHT")
        return [self.op("Equal", self.op("Size", byte), self.op("Size", first)), dtype_ok,
                self.op("GreaterOrEqual", self.op("ReduceMin", d, keepdims=0), self.const(np.array(0.0))),
                self.op("LessOrEqual", self.op("ReduceProd", d, keepdims=0), self.const(np.array(float(fmt.MAX_ELEMENTS)))),
                self.scalar(self.op("Equal", self.op("Size", seed_shape), self.const(np.array(1, np.int64)))),
                self.scalar(self.op("Equal", self.op("ReduceMax", self.op("Concat", seed_shape, self.const(np.array([-1], np.int64)), axis=0),
                                                     keepdims=1), seed_bytes))]

    def finite_positive(self, x, limit=3.4028234663852886e38):
        """0 < x <= limit for every element of a float32 tensor (NaN and Inf fail; x may be empty)."""
        x1 = self.op("Concat", self.op("Reshape", x, self.const(np.array([-1], np.int64))),
                     self.const(np.array([1.0], np.float32)), axis=0)
        bad = self.op("Or", self.op("Or", self.op("IsNaN", x1), self.op("Greater", x1, self.const(np.array(limit, np.float32)))),
                      self.op("Not", self.op("Greater", x1, self.const(np.array(0.0, np.float32)))))
        return self.op("Equal", self.op("ReduceSum", self.op("Cast", bad, to=TensorProto.INT64), keepdims=0),
                       self.const(np.array(0, np.int64)))

    def finite(self, x):
        """Every element of a float32 tensor finite (x may be empty)."""
        x1 = self.op("Concat", self.op("Reshape", x, self.const(np.array([-1], np.int64))),
                     self.const(np.array([0.0], np.float32)), axis=0)
        bad = self.op("Or", self.op("IsNaN", x1), self.op("IsInf", x1))
        return self.op("Equal", self.op("ReduceSum", self.op("Cast", bad, to=TensorProto.INT64), keepdims=0),
                       self.const(np.array(0, np.int64)))

    def cast_to_dtype(self, value):
        self._n += 1
        out = f"_dtype{self._n}"
        node = helper.make_node("Cast", [value], [out])
        node.attribute.append(helper.make_attribute_ref("to", AttributeProto.INT, ref_attr_name="dtype"))
        self.nodes.append(node)
        return out

    def branch(self, build) -> onnx.GraphProto:
        """A subgraph of the nodes `build()` adds; its one output is what `build` returns (made
        in the subgraph: an Identity would be one more copy). Its type is left to inference."""
        outer, self.nodes = self.nodes, []
        result = build()
        graph = helper.make_graph(self.nodes, f"_branch{self._n}", [], [helper.make_empty_tensor_value_info(result)])
        self.nodes = outer
        return graph

    def if_(self, cond, then, otherwise, out=None):
        """If node; onnxruntime folds it to one branch when `cond` is constant (always here)."""
        node = helper.make_node("If", [cond], [out or self.op_name("If")],
                                then_branch=self.branch(then), else_branch=self.branch(otherwise))
        self.nodes.append(node)
        return node.output[0]


def _unpack(f: "_Body", grid, bits, bits1, opset: int):
    """The b-bit indices of `grid` ([..., b] uint8: groups of 8 indices in b bytes, §4) as int32
    [..., 8]; `bits` is b as a scalar, `bits1` as [1]."""
    I64 = np.int64
    zero = f.const(np.array([0], I64))
    col = f.const(np.array([-1, 1], I64))
    tables = segment_tables()

    def unpack():
        nseg = f.op("Gather", f.const(tables["count"]), bits1)  # [1]

        def row(name):  # the first nseg entries of row b of a segment table
            return f.op("Slice", f.op("Gather", f.const(tables[name]), bits), zero, nseg, zero)

        column = f.op("Cast", row("column"), to=TensorProto.INT64)
        segs = f.op("Gather", grid, column, axis=-1)  # [..., nseg] uint8
        # weights[s, r] = place[s] if segment s belongs to index r else 0
        onehot = f.op("OneHot", f.op("Cast", row("index"), to=TensorProto.INT64), f.const(np.array(8, I64)),
                      f.const(np.array([0.0, 1.0], np.float32)), axis=-1)  # [nseg, 8]
        weights = f.op("Mul", onehot, f.op("Reshape", row("place_shifted"), col))
        if opset >= 18:  # int32 MatMul of the segments shifted down: the index comes out as it is
            segs = f.op("BitShift", f.op("BitwiseAnd", segs, row("mask")), row("shift"), direction="RIGHT")
            return f.op("MatMul", f.op("Cast", segs, to=TensorProto.INT32), f.op("Cast", weights, to=TensorProto.INT32))
        # exact float32 bit extraction: floor(byte / 2**lo) mod 2**(hi - lo)
        segf = f.op("Floor", f.op("Mul", f.op("Cast", segs, to=TensorProto.FLOAT), row("low")))
        segf = f.op("Mod", segf, row("width"), fmod=1)
        return f.op("Cast", f.op("MatMul", segf, weights), to=TensorProto.INT32)  # [..., 8]

    # 8 bits (the lattice preset's width): every byte is one index, in place
    return f.if_(f.op("Equal", bits, f.const(np.array(8, I64))), lambda: f.op("Cast", grid, to=TensorProto.INT32),
                 unpack)


def build_function(opset: int) -> FunctionProto:
    """FunctionProto `ai.hyperonnx.DecodeWeights` for a model whose
    default-domain opset is `opset` (>= MIN_OPSET); it decodes `lattice` nodes too from
    LATTICE_MIN_OPSET on (`decodes_lattice`)."""
    if opset < MIN_OPSET:
        raise ValueError(f"the DecodeWeights function needs opset >= {MIN_OPSET}, model has {opset}")
    lattice = decodes_lattice(opset)
    f = _Body()
    I64 = np.int64
    raw = {name: f.attr(name, kind) for name, kind in (
        ("shape", AttributeProto.INTS), ("bits", AttributeProto.INT), ("points", AttributeProto.INT),
        ("rings", AttributeProto.INT), ("center", AttributeProto.FLOATS), ("side", AttributeProto.FLOAT),
        ("ring_scales", AttributeProto.FLOATS), ("codec", AttributeProto.STRING), ("dtype", AttributeProto.INT))
        + ((("generator", AttributeProto.INT), ("group", AttributeProto.INT), ("alpha", AttributeProto.FLOAT),
            ("beta", AttributeProto.FLOAT)) if lattice else ())}
    gate = _winding_lattice_checks(f, raw, lattice)
    shape, bits, points, rings = raw["shape"], raw["bits"], raw["points"], raw["rings"]
    center, side, ring_scales = raw["center"], raw["side"], raw["ring_scales"]
    one = f.const(np.array([1], I64))
    zero = f.const(np.array([0], I64))
    eight = f.const(np.array([8], I64))
    col = f.const(np.array([-1, 1], I64))
    bits1 = f.op("Reshape", bits, one)
    elements = f.op("ReduceProd", shape, keepdims=1)  # [1]; reduces all axes in every opset
    pairs = f.op("Div", f.op("Add", elements, one), f.const(np.array([2], I64)))

    def winding_table():
        """The winding codebook [(n+1)*(C+1), 2] in `dtype`, FORMAT.md §3 entry by entry."""
        n = f.op("Cast", points, to=TensorProto.INT32)  # scalar
        n1 = f.op("Add", n, f.const(np.array(1, np.int32)))
        c1 = f.op("Add", f.op("Cast", rings, to=TensorProto.INT32), f.const(np.array(1, np.int32)))
        t = f.op("Range", f.const(np.array(0, np.int32)), f.gated(f.op("Mul", n1, c1), gate), f.const(np.array(1, np.int32)))
        j = f.op("Mod", t, n1)
        k = f.op("Div", t, n1)
        m = f.op("Cast", f.op("Ceil", f.op("Sqrt", f.op("Cast", f.op("Max", n, f.const(np.array(1, np.int32))),
                                                        to=TensorProto.DOUBLE))), to=TensorProto.INT32)
        modulus = f.op("Mul", m, m)
        ux = f.op("Mod", j, modulus)
        uy = f.op("Mod", f.op("Mul", j, m), modulus)
        u = f.op("Concat", f.op("Reshape", ux, col), f.op("Reshape", uy, col), axis=1)
        step = f.op("Div", side, f.op("Cast", modulus, to=TensorProto.FLOAT))
        offset = f.op("Mul", f.const(np.array(-0.5, np.float32)), side)
        q = f.op("Add", f.op("Mul", f.op("Cast", u, to=TensorProto.FLOAT), step), offset)
        on_centroid = f.op("Reshape", f.op("Equal", j, n), col)
        q = f.op("Where", on_centroid, f.const(np.array(0.0, np.float32)), q)
        scales = f.op("Concat", f.const(np.array([1.0], np.float32)), ring_scales, axis=0)
        s = f.op("Reshape", f.op("Gather", scales, k), col)
        return f.cast_to_dtype(f.op("Add", center, f.op("Mul", q, s)))

    if lattice:
        generator = "_attr_generator"
        group = f.op("Reshape", "_attr_group", one)
        unit = f.attr("scale_unit", AttributeProto.FLOAT)
        is_lattice = f.op("Greater", generator, f.const(np.array(0, I64)))  # winding: the default 0
        # Pairs come in rows of `per` (one scale each; winding: the default group 16 gives 8),
        # padded to T pairs, a multiple of 8 (unpacking) and of `per`.
        per = f.op("Div", group, f.const(np.array([2], I64)))
        gcd = f.op("Gather", f.const(np.array([8, 1, 2, 1, 4, 1, 2, 1], I64)), f.op("Mod", per, eight))
        lcm = f.op("Mul", per, f.op("Div", eight, gcd))
        total = f.op("Mul", f.op("Div", f.op("Add", pairs, f.op("Sub", lcm, one)), lcm), lcm)
        rows = f.op("Div", total, per)
        groups = f.op("Div", total, eight)
        # rows of a multiple of 8 pairs are whole groups of b bytes: the seed is viewed as
        # [rows, per/8, b] and the index comes out in rows, else as [groups, 1, b] (reshaped later)
        aligned = f.op("Equal", gcd, eight)
        grid_shape = f.op("Where", aligned, f.op("Concat", rows, f.op("Div", per, eight), bits1, axis=0),
                          f.op("Concat", groups, one, bits1, axis=0))
    else:
        groups = f.op("Div", f.op("Add", pairs, f.const(np.array([7], I64))), eight)
        grid_shape = f.op("Concat", groups, bits1, axis=0)

    # --- unpack the indices, groups of 8 in b bytes --------------------------------------------
    pad = f.gated(f.op("Sub", f.op("Mul", groups, bits1), f.op("Shape", "seed")), gate)
    seed = f.op("Pad", "seed", f.op("Concat", zero, pad, axis=0))
    grid = f.op("Reshape", seed, grid_shape)  # [..., b] uint8
    index = _unpack(f, grid, bits, bits1, opset)

    # --- look the pairs up (and scale them), in `dtype` ----------------------------------------
    if lattice:
        decoded = f.if_(is_lattice, lambda: lattice_values(f, index, aligned, rows, per, elements, gate),
                        lambda: f.op("Gather", winding_table(), index))
    else:
        decoded = f.op("Gather", winding_table(), index)  # [groups, 8, 2]

    # --- shape: flatten, slice off the pad, reshape; or, when the pairs fill the shape exactly,
    # one Reshape (If has bfloat16 outputs from opset 16)
    def sliced(out=None):
        flat = f.op("Reshape", decoded, f.const(np.array([-1], I64)))
        return f.op("Reshape", f.op("Slice", flat, zero, elements, zero), shape, out=out)

    if opset >= 16:
        exact = f.op("Equal", f.op("Mul", groups, f.const(np.array([16], I64))), elements)
        f.if_(f.op("Squeeze", exact, zero), lambda: f.op("Reshape", decoded, shape), sliced, out="output")
    else:
        sliced(out="output")

    names = dict(fmt.ATTRIBUTE_TYPES, **fmt.LATTICE_ATTRIBUTE_TYPES) if lattice else fmt.ATTRIBUTE_TYPES
    defaults = [helper.make_attribute(name, value, attr_type=names[name])
                for name, value in _DEFAULTS.items()] if lattice else []
    return helper.make_function(
        fmt.OP_DOMAIN, fmt.OP_TYPE, ["seed", "scales"] if lattice else ["seed"], ["output"], f.nodes,
        [helper.make_opsetid("", opset)], attributes=[a for a in names if a not in _DEFAULTS or not lattice],
        attribute_protos=defaults,
        doc_string="DecodeWeights from standard ONNX ops (hyperonnx docs/FORMAT.md version "
                   f"{fmt.CODEC_VERSION[fmt.CODEC_LATTICE] if lattice else 1}); a registered kernel takes precedence.")


def _seed_bytes(f: _Body, shape, bits):
    """ceil(ceil(N/2) * b / 8) as an int64 [1] from the raw shape and bits (rule 4)."""
    I64 = np.int64
    elements = f.op("ReduceProd", shape, keepdims=1)
    pairs = f.op("Div", f.op("Add", elements, f.const(np.array([1], I64))), f.const(np.array([2], I64)))
    return f.op("Div", f.op("Add", f.op("Mul", pairs, f.op("Reshape", bits, f.const(np.array([1], I64)))),
                            f.const(np.array([7], I64))), f.const(np.array([8], I64)))


def _winding_lattice_checks(f: _Body, raw: dict, lattice: bool):
    """The gate of the winding / lattice body: 0 when the node follows FORMAT.md §5 rules 2-4 (and
    §7.4 for lattice nodes), else 1. Rule 5 / 7 (an index beyond the table) fails its Gather,
    rule 6 the scales' LayerNormalization and `_checked_unit`."""
    I64 = np.int64
    bits, points, rings = raw["bits"], raw["points"], raw["rings"]
    seed_bytes = _seed_bytes(f, raw["shape"], bits)
    common = f.common_checks(raw["shape"], raw["dtype"], seed_bytes)
    n_scales = f.scalar(f.op("Shape", raw["ring_scales"]))
    winding = [f.codec_is(raw["codec"], fmt.CODEC_WINDING), f.within(bits, 1, fmt.MAX_BITS),
               f.within(points, 1, fmt.MAX_POINTS), f.within(rings, 0, fmt.MAX_RINGS),
               f.finite_positive(raw["side"]), f.finite(raw["center"]),
               f.scalar(f.op("Equal", f.op("Shape", raw["center"]), f.const(np.array([2], I64)))),
               f.op("Equal", n_scales, rings), f.finite_positive(raw["ring_scales"])]
    if not lattice:
        return f.all_of(common + winding)
    generator, group = raw["generator"], raw["group"]
    winding.append(f.op("Equal", generator, f.const(np.array(0, I64))))  # a winding node has no generator
    clipped = f.op("Clip", bits, f.const(np.array(0, I64)), f.const(np.array(fmt.MAX_BITS, I64)))
    size = f.op("Gather", f.const(np.array([(1 << b) - 1 for b in range(fmt.MAX_BITS + 1)], I64)), clipped)
    limit = f.const(np.array(fmt.LATTICE_FLOAT_LIMIT, np.float32))
    lattice_ok = [f.codec_is(raw["codec"], fmt.CODEC_LATTICE), f.within(bits, *fmt.LATTICE_BITS),
                  f.op("GreaterOrEqual", generator, f.const(np.array(1, I64))),
                  f.op("LessOrEqual", generator, f.op("Sub", size, f.const(np.array(1, I64)))),
                  f.op("Equal", f.op("Mod", generator, f.const(np.array(2, I64))), f.const(np.array(1, I64))),
                  f.within(group, 2, fmt.MAX_GROUP),
                  f.op("Equal", f.op("Mod", group, f.const(np.array(2, I64))), f.const(np.array(0, I64))),
                  f.op("LessOrEqual", f.op("Abs", raw["alpha"]), limit), f.op("LessOrEqual", f.op("Abs", raw["beta"]), limit),
                  f.op("Equal", points, f.const(np.array(0, I64))), f.op("Equal", rings, f.const(np.array(0, I64)))]
    ok_w = f.op("Equal", f.all_of(winding), f.const(np.array(0, I64)))
    ok_l = f.op("Equal", f.all_of(lattice_ok), f.const(np.array(0, I64)))
    return f.all_of(common + [f.op("Or", ok_w, ok_l)])


def lattice_values(f: _Body, index, aligned, rows, per, elements, gate):
    """The lattice branch: FORMAT.md §7.3 values of the unpacked steps `index` ([rows, per/8, 8]
    when `aligned`, else [groups, 1, 8]), scaled per row, in `dtype`."""
    I64 = np.int64
    one = f.const(np.array([1], I64))
    col = f.const(np.array([-1, 1], I64))
    generator = "_attr_generator"
    bits = "_attr_bits"
    # the pair table [N, 2] float32: row j = (v(j), v((j*g + c) mod N)), v(m) = phi(u(m)) op by op
    size = f.op("Gather", f.const(np.array([(1 << b) - 1 for b in range(fmt.MAX_BITS + 1)], I64)), bits)
    rows_n = f.gated(f.op("Mul", size, f.op("Min", generator, f.const(np.array(1, I64)))), gate)
    steps = f.op("Range", f.const(np.array(0, I64)), rows_n, f.const(np.array(1, I64)))
    c = f.op("Div", f.op("Sub", generator, f.const(np.array(1, I64))), f.const(np.array(2, I64)))
    y = f.op("Mod", f.op("Add", f.op("Mul", steps, generator), c), size)  # int64: j*g < 2^32
    # r = 1.0f / float32(N) from a table: onnxruntime's DivMulFusion would turn Div(1, N)
    # feeding a Mul into one Div, which rounds differently
    r = f.op("Gather", f.const(_RECIPROCALS), bits)
    lin = f.op("Sub", f.op("Mul", steps, f.const(np.array(2, I64))), f.op("Sub", size, f.const(np.array(1, I64))))
    u = f.op("Mul", f.op("Cast", lin, to=TensorProto.FLOAT), r)
    t = f.op("Add", f.op("Mul", f.op("Mul", u, u), "_attr_beta"), "_attr_alpha")
    v = f.op("Mul", u, t)
    table = f.op("Concat", f.op("Reshape", v, col), f.op("Reshape", f.op("Gather", v, y), col), axis=1)

    # the group scales S_q = float32(h) * U, one per row (the padding rows: 1.0). A function body
    # may name an input a node leaves out (winding nodes have no `scales`) only as an optional
    # input: LayerNormalization's bias B is one, and normalising zeros with Scale = -1 gives
    # -0 + B = B bit for bit.
    group = f.op("Mul", per, f.const(np.array([2], I64)))
    count = f.gated(f.op("Div", f.op("Add", elements, f.op("Sub", group, one)), group), gate)
    zeros = f.op("ConstantOfShape", f.op("Concat", one, count, axis=0),
                 value=numpy_helper.from_array(np.zeros(1, np.float16)))
    minus = f.op("ConstantOfShape", count, value=numpy_helper.from_array(np.full(1, -1, np.float16)))
    h = f.op("Cast", f.op("Reshape", f.op("LayerNormalization", zeros, minus, "scales", axis=-1),
                          f.const(np.array([-1], I64))), to=TensorProto.FLOAT)
    # rule 6 (a NaN or +-Inf scale) and rule 2's bounds of alpha, beta and U (LessOrEqual is
    # false for NaN) make the Gather of U out of range: an error, not output
    limit = f.const(np.array(fmt.LATTICE_FLOAT_LIMIT, np.float32))
    within = f.op("And", f.op("LessOrEqual", f.op("Abs", "_attr_alpha"), limit),
                  f.op("LessOrEqual", f.op("Abs", "_attr_beta"), limit))
    unit = _checked_unit(f, h, "_attr_scale_unit", within)
    scale = f.op("Pad", f.op("Mul", h, unit), f.op("Concat", f.const(np.array([0], I64)), f.op("Sub", rows, count), axis=0),
                 f.const(np.array(1.0, np.float32)))
    scale = f.op("Reshape", scale, f.const(np.array([-1, 1, 1, 1], I64)))
    # aligned: [rows, per/8, 8] already; else the int32 steps are reshaped into rows
    in_rows = f.op("Concat", rows, per, one, axis=0)
    return f.if_(aligned, lambda: f.cast_to_dtype(f.op("Mul", f.op("Gather", table, index), scale)),
                 lambda: f.cast_to_dtype(f.op("Mul", f.op("Gather", table, f.op("Reshape", index, in_rows)), scale)))


def _checked_unit(f: _Body, scales, unit, within):
    """The scale unit U as [1], read through a Gather whose index is out of range (an error, not
    output) when a scale is NaN or +-Inf (rule 6), U is outside (0, 2^100], or `within` (the
    codec's other bounds) is false: LessOrEqual is false for NaN."""
    limit = f.const(np.array(fmt.LATTICE_FLOAT_LIMIT, np.float32))
    within = f.op("And", within, f.op("And", f.op("Greater", unit, f.const(np.array(0, np.float32))),
                                      f.op("LessOrEqual", unit, limit)))
    bad = f.op("Add", f.op("ReduceSum", f.op("Cast", f.op("Or", f.op("IsNaN", scales), f.op("IsInf", scales)),
                                             to=TensorProto.INT64), keepdims=0),
               f.op("Cast", f.op("Not", within), to=TensorProto.INT64))
    return f.op("Gather", f.op("Reshape", unit, f.const(np.array([1], np.int64))),
                f.op("Min", bad, f.const(np.array(1, np.int64))))


# 2^e for e = 0..24 (int64) and 2^-L for L = 0..16 (float32, exact): table lookups, not Pow
_POWERS = np.array([1 << e for e in range(25)], np.int64)
_INVERSE_POWERS = np.array([2.0 ** -e for e in range(fmt.TRELLIS_MAX_WINDOW + 1)], np.float32)


def _trellis_checks(f: _Body, raw: dict):
    """The gate of the trellis body: 0 when the node follows FORMAT.md §9.4 (rules 2-4 and the
    count of rule 6; a NaN / Inf scale and the scale unit fail `_checked_unit`), else 1."""
    I64 = np.int64
    bits, window, group = raw["bits"], raw["window"], raw["group"]
    elements = f.op("ReduceProd", raw["shape"], keepdims=1)
    g1 = f.op("Reshape", f.op("Max", group, f.const(np.array(1, I64))), f.const(np.array([1], I64)))
    count = f.op("Div", f.op("Add", elements, f.op("Sub", g1, f.const(np.array([1], I64)))), g1)
    seed_bytes = f.op("Div", f.op("Mul", f.op("Mul", count, g1), f.op("Reshape", bits, f.const(np.array([1], I64)))),
                      f.const(np.array([8], I64)))
    scales_shape = f.op("Shape", "scales")
    checks = f.common_checks(raw["shape"], raw["dtype"], seed_bytes) + [
        f.codec_is(raw["codec"], fmt.CODEC_TRELLIS), f.within(bits, *fmt.TRELLIS_BITS),
        f.op("And", f.op("GreaterOrEqual", window, bits),
             f.op("LessOrEqual", window, f.const(np.array(fmt.TRELLIS_MAX_WINDOW, I64)))),
        f.within(group, 8, fmt.MAX_GROUP),
        f.op("Equal", f.op("Mod", group, f.const(np.array(8, I64))), f.const(np.array(0, I64))),
        f.op("GreaterOrEqual", f.op("Mul", bits, group), window),
        f.scalar(f.op("Equal", f.op("Size", scales_shape), f.const(np.array(1, I64)))),
        f.scalar(f.op("Equal", f.op("ReduceMax", f.op("Concat", scales_shape, f.const(np.array([-1], I64)), axis=0),
                                    keepdims=1), count))]
    return f.all_of(checks)


def build_trellis_function(opset: int) -> FunctionProto:
    """FunctionProto `ai.hyperonnx.DecodeWeights` for a model whose DecodeWeights nodes are all
    `trellis` (FORMAT.md §9), default-domain `opset` >= MIN_OPSET.

    Each group's stream is bytes [q*G*k/8, (q+1)*G*k/8) of the seed. The window of weight t starts
    at stream bit p = k*t and spans at most 3 bytes (L <= 16, p mod 8 <= 7): the bytes at
    (p div 8 + i) mod (G*k/8), i = 0, 1, 2, give the 24-bit integer whose bits from p mod 8 on are
    the window (circular, so short streams wrap too), taken out exactly with int32 Div and Mod.
    h is tabulated for all 2^L states with the §9.3 operations in their order (onnxruntime's
    elementwise float32 Mul / Add / Sub / Div round each result, no fused multiply-add), looked
    up per weight and scaled per group. Temporaries: 12 bytes per weight (the 3 gathered bytes
    as int32), then int32 windows and the float32 output."""
    if opset < MIN_OPSET:
        raise ValueError(f"the DecodeWeights function needs opset >= {MIN_OPSET}, model has {opset}")
    f = _Body()
    I64, I32 = np.int64, np.int32
    raw = {name: f.attr(name, kind) for name, kind in (
        ("shape", AttributeProto.INTS), ("bits", AttributeProto.INT), ("window", AttributeProto.INT),
        ("group", AttributeProto.INT), ("codec", AttributeProto.STRING), ("dtype", AttributeProto.INT))}
    gate = _trellis_checks(f, raw)
    shape, bits, window = raw["shape"], raw["bits"], raw["window"]
    group = f.gated(raw["group"], gate)  # the sizes below (Range, the 2^L table) come from gated values
    window = f.gated(window, gate)
    unit = f.attr("scale_unit", AttributeProto.FLOAT)
    one = f.const(np.array([1], I64))
    zero = f.const(np.array([0], I64))
    eight = f.const(np.array(8, I64))
    elements = f.op("ReduceProd", shape, keepdims=1)  # [1]
    group1 = f.op("Reshape", group, one)
    count = f.op("Div", f.op("Add", elements, f.op("Sub", group1, one)), group1)  # Q, [1]
    stream = f.op("Div", f.op("Mul", group, bits), eight)  # bytes per group, scalar
    # rule 4: a seed of any other length fails this Reshape
    streams = f.op("Cast", f.op("Reshape", "seed", f.op("Concat", count, f.op("Reshape", stream, one), axis=0)),
                   to=TensorProto.INT32)  # [Q, G*k/8]

    # the 3 bytes holding each window, and its bit offset in the first
    start = f.op("Mul", f.op("Range", f.const(np.array(0, I64)), group, f.const(np.array(1, I64))), bits)  # p, [G]
    first = f.op("Div", start, eight)
    byte = f.op("Mod", f.op("Add", f.op("Reshape", first, f.const(np.array([1, -1], I64))),
                             f.const(np.array([[0], [1], [2]], I64))), stream)  # [3, G]
    word = f.op("ReduceSum", f.op("Mul", f.op("Gather", streams, byte, axis=1),
                                  f.const(np.array([[1], [1 << 8], [1 << 16]], I32))),
                f.const(np.array([1], I64)), keepdims=0)  # [Q, G] int32 < 2^24
    shift = f.op("Cast", f.op("Gather", f.const(_POWERS), f.op("Mod", start, eight)), to=TensorProto.INT32)
    states = f.op("Mod", f.op("Div", word, shift),
                  f.op("Cast", f.op("Gather", f.const(_POWERS), window), to=TensorProto.INT32))  # [Q, G]

    # h of every state, FORMAT.md §9.3 operation by operation
    size = f.op("Gather", f.const(_POWERS), window)  # 2^L, int64 scalar
    s_ = f.op("Range", f.const(np.array(0, I64)), size, f.const(np.array(1, I64)))
    r = f.op("Mod", f.op("Mul", s_, f.const(np.array(fmt.TRELLIS_MULTIPLIER, I64))), size)  # < 2^48: exact
    lin = f.op("Sub", f.op("Add", f.op("Mul", r, f.const(np.array(2, I64))), f.const(np.array(1, I64))), size)
    u = f.op("Mul", f.op("Cast", lin, to=TensorProto.FLOAT), f.op("Gather", f.const(_INVERSE_POWERS), window))
    a, b, c, dd = (f.const(np.array(v, np.float32)) for v in fmt.TRELLIS_MAP)
    t = f.op("Mul", u, u)
    n = f.op("Mul", u, f.op("Add", f.op("Mul", t, b), a))
    d = f.op("Sub", f.const(np.array(1.0, np.float32)), f.op("Mul", f.op("Add", f.op("Mul", t, dd), c), t))
    h = f.op("Div", n, d)

    # S_q = float32(scales[q]) * U; rule 6 (a NaN or Inf scale) and the bounds of U make the
    # Gather of U out of range: an error, not output
    # rule 6's type: Concat takes inputs of one type, so scales other than float16 fail the graph
    scales = f.op("Cast", f.op("Concat", "scales", f.const(np.zeros(0, np.float16)), axis=0), to=TensorProto.FLOAT)
    unit = _checked_unit(f, scales, unit, f.const(np.array(True)))
    scale = f.op("Reshape", f.op("Mul", scales, unit), f.const(np.array([-1, 1], I64)))  # rule 6: Q of them
    values = f.cast_to_dtype(f.op("Mul", f.op("Gather", h, states), scale))  # [Q, G]
    flat = f.op("Reshape", values, f.const(np.array([-1], I64)))
    f.op("Reshape", f.op("Slice", flat, zero, elements, zero), shape, out="output")
    return helper.make_function(
        fmt.OP_DOMAIN, fmt.OP_TYPE, ["seed", "scales"], ["output"], f.nodes, [helper.make_opsetid("", opset)],
        attributes=list(fmt.TRELLIS_ATTRIBUTE_TYPES),
        doc_string="DecodeWeights of `trellis` seeds from standard ONNX ops (hyperonnx docs/FORMAT.md version "
                   f"{fmt.CODEC_VERSION[fmt.CODEC_TRELLIS]}); a registered kernel takes precedence.")
