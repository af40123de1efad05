"""The DecodeWeights contract of docs/FORMAT.md: names, limits and the validation every decoder applies.

This module is the Python side of the spec; the C++ kernels mirror `validate` rule for rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import ml_dtypes
import numpy as np
from onnx import AttributeProto, NodeProto, TensorProto, helper

OP_DOMAIN = "ai.hyperonnx"
OP_TYPE = "DecodeWeights"
# The opset version of OP_DOMAIN a model imports is the format version (docs/FORMAT.md §1).
# A model imports the least version that holds all its codecs: models of the `winding` codec only
# stay at version 1; `lattice` needs 2, the fused operators 3, `trellis` 4.
OP_VERSION = 4  # the newest version the kernels decode (they decode every one of KNOWN_VERSIONS)
FORMAT_VERSION = 4  # the newest version this Python reference reads and writes
KNOWN_VERSIONS = (1, 2, 3, 4)
# The fused operators (docs/FORMAT.md §8, version 3 and later): DecodeWeights + the standard op
# named by the value, the weight as that op's input at the position given.
FUSED_VERSION = 3
FUSED_OPS = {"DecodeMatMul": ("MatMul", 1), "DecodeGemm": ("Gemm", 1), "DecodeGather": ("Gather", 0),
             "DecodeConv": ("Conv", 1)}
# A fused node carries the standard op's attributes under this prefix (op_transB, op_group, ...):
# codecs have attributes of the same names (lattice: alpha, beta, group).
FUSED_ATTRIBUTE_PREFIX = "op_"
# DecodeMatMul / DecodeGemm's own optional attribute (docs/FORMAT.md §8): 0 (absent) float32
# compute, 4 int8 compute.
ACCURACY_LEVEL = "accuracy_level"
ACCURACY_LEVELS = (0, 4)
ACCURACY_OPS = ("DecodeMatMul", "DecodeGemm")

CODEC_WINDING = "winding"  # docs/FORMAT.md §3, format version 1 and later
CODEC_LATTICE = "lattice"  # docs/FORMAT.md §7, format version 2 and later
CODEC_TRELLIS = "trellis"  # docs/FORMAT.md §9, format version 4 and later
CODECS = (CODEC_WINDING, CODEC_LATTICE, CODEC_TRELLIS)
CODEC_VERSION = {CODEC_WINDING: 1, CODEC_LATTICE: 2, CODEC_TRELLIS: 4}  # the least format version holding each codec
SCALED_CODECS = (CODEC_LATTICE, CODEC_TRELLIS)  # nodes with a second input, float16 group scales

# Output element types a decoder must support, as ONNX TensorProto data types.
OUTPUT_DTYPES = {
    TensorProto.FLOAT: np.dtype(np.float32),
    TensorProto.FLOAT16: np.dtype(np.float16),
    TensorProto.BFLOAT16: np.dtype(ml_dtypes.bfloat16),
}

MAX_ELEMENTS = 1 << 40  # largest output a decoder accepts (4 TiB of float32)
MAX_BITS = 24  # widest packed index; an index plus its bit offset fits one 32-bit window
MAX_POINTS = 1 << 20  # largest trajectory length n; keeps m*m <= 2**20, exact in float32
MAX_RINGS = 64
LATTICE_BITS = (2, 16)  # index bits per pair of the lattice codec: N = 2^bits - 1 points
MAX_GROUP = 1 << 16  # weights per scale of the lattice codec
# |alpha|, |beta| and scale_unit of the lattice codec: every float32 intermediate of §7.3 stays
# finite, so no decoder meets 0 * Inf (whose NaN bits differ between CPU and GPU)
LATTICE_FLOAT_LIMIT = 2.0 ** 100
TRELLIS_BITS = (1, 8)  # bits per weight k of the trellis codec
TRELLIS_MAX_WINDOW = 16  # window L: k <= L <= 16, the decoder's table holds 2^L floats
TRELLIS_MULTIPLIER = 0x9E3779B1  # the odd multiplier of FORMAT.md §9.3's state permutation
TRELLIS_MAP = (1.0084383, -0.9740608, 1.4579432, -0.4645949)  # a, b, c, d of §9.3 (float32)


class FormatError(ValueError):
    """A seed or its attributes break docs/FORMAT.md."""


@dataclass(frozen=True)
class Seed:
    """One compressed tensor: the packed payload plus the DecodeWeights attributes that decode it.

    `codec == "raw"` marks a tensor the encoder kept exactly (too small, non-finite values, or an
    error budget it could not meet); the graph pass leaves such tensors untouched, and `array`
    holds them here so `decode` can return them.
    """

    codec: str
    shape: tuple[int, ...]
    dtype: int  # ONNX TensorProto data type of the decoded tensor
    payload: np.ndarray  # uint8, 1-D
    attrs: dict = field(default_factory=dict)  # codec attributes, exactly as stored on the node
    array: np.ndarray | None = None  # only for codec == "raw"
    scales: np.ndarray | None = None  # float16, 1-D: the second input of a `lattice` or `trellis` node

    @property
    def num_elements(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes this tensor occupies in a compressed model (raw tensors: their own size)."""
        if self.codec == "raw":
            return self.array.nbytes
        return int(self.payload.size) + (0 if self.scales is None else int(self.scales.nbytes))

    @property
    def version(self) -> int:
        """The least format version (ai.hyperonnx opset version) that decodes this seed."""
        return CODEC_VERSION.get(self.codec, 1)

    @property
    def bits_per_weight(self) -> float:
        return 8.0 * self.nbytes / max(1, self.num_elements)

    def node_attributes(self) -> dict:
        """All DecodeWeights attributes, in the order FORMAT.md lists them."""
        return {"codec": self.codec, "shape": list(self.shape), "dtype": self.dtype, **self.attrs}


def seed_inputs(node: NodeProto) -> list[str]:
    """The seed (and scales) input names of a DecodeWeights or fused node; [] for other nodes."""
    if node.domain != OP_DOMAIN:
        return []
    if node.op_type == OP_TYPE:
        return list(node.input)
    return [name for name in node.input[1:3] if name] if node.op_type in FUSED_OPS else []


def scale_count(num_elements: int, group: int) -> int:
    """Elements of a lattice node's `scales` input: one per group of `group` weights."""
    return -(-num_elements // group)


def winding_modulus(points: int) -> tuple[int, int]:
    """(m, M) of FORMAT.md §3: m = ceil(sqrt(n)), M = m*m."""
    m = math.isqrt(points - 1) + 1
    return m, m * m


def num_pairs(num_elements: int) -> int:
    return (num_elements + 1) // 2


def validate(seed: Seed, inputs: bool = True) -> None:
    """Apply every rule of FORMAT.md §5 to a seed; raise FormatError naming the first rule broken.
    With `inputs` False (a seed or scales computed at run time) only the attributes' rules 2-3."""
    if seed.codec not in CODECS:
        raise FormatError(f"rule 2: unknown codec {seed.codec!r} (this decoder knows {', '.join(CODECS)})")
    if seed.dtype not in OUTPUT_DTYPES:
        raise FormatError(f"rule 2: dtype {seed.dtype} is not float32 (1), float16 (10) or bfloat16 (16)")
    count = 1
    for dim in seed.shape:
        if not isinstance(dim, (int, np.integer)) or dim < 0:
            raise FormatError(f"rule 2: shape {list(seed.shape)} has a negative or non-integer dimension")
        count *= int(dim)
        if count > MAX_ELEMENTS:
            raise FormatError(f"rule 3: shape {list(seed.shape)} has more than 2**40 elements")
    if seed.codec == CODEC_LATTICE:
        _validate_lattice(seed, count, inputs)
    elif seed.codec == CODEC_TRELLIS:
        _validate_trellis(seed, count, inputs)
    else:
        _validate_winding(seed, count, inputs)


_SCAN_CHUNK = 1 << 20  # indices unpacked per step by `check_indices`: bounded memory


def check_indices(seed: Seed) -> None:
    """Rules 5 (winding: every index below (n + 1) * (C + 1)) and 7 (lattice: every step below
    2^b - 1) over the whole seed, a chunk at a time, on a seed `validate` accepted; trellis has
    no such rule. Raises FormatError naming the rule."""
    from .codec import bitpack  # the codec package imports this module
    if seed.codec == CODEC_TRELLIS:
        return
    bits = int(seed.attrs["bits"])
    if seed.codec == CODEC_LATTICE:
        limit, rule, what = (1 << bits) - 1, 7, "the trajectory's steps"
    else:
        limit, rule, what = (int(seed.attrs["points"]) + 1) * (int(seed.attrs["rings"]) + 1), 5, "the codebook's entries"
    if limit >= 1 << bits:
        return  # every b-bit value is a valid index
    pairs = num_pairs(seed.num_elements)
    for start in range(0, pairs, _SCAN_CHUNK):  # chunks of a multiple of 8 indices: whole bytes
        count = min(_SCAN_CHUNK, pairs - start)
        first = start * bits // 8
        part = seed.payload[first:first + (count * bits + 7) // 8]
        indices = bitpack.unpack(part, bits, count)
        if indices.size and int(indices.max()) >= limit:
            raise FormatError(f"rule {rule}: seed index {int(indices.max())} is beyond {what} ({limit})")

def _int_in(attrs: dict, name: str, low: int, high: int) -> int:
    value = attrs.get(name)
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not low <= value <= high:
        raise FormatError(f"rule 2: attribute {name}={value!r} is outside [{low}, {high}]")
    return int(value)


def _finite(attrs: dict, name: str) -> float:
    value = attrs.get(name)
    if not isinstance(value, (float, int, np.floating)) or not math.isfinite(value):
        raise FormatError(f"rule 2: attribute {name}={value!r} must be a finite float")
    return float(value)


def _float32(value: float) -> float:
    """The value as a node stores it (ONNX float attributes are binary32)."""
    with np.errstate(over="ignore"):
        return float(np.float32(value))


def _check_payload(seed: Seed, count: int, bits: int, indices: int | None = None) -> None:
    """Rule 4: `indices` packed indices of `bits` bits (default: one per pair)."""
    if not isinstance(seed.payload, np.ndarray) or seed.payload.dtype != np.uint8 or seed.payload.ndim != 1:
        raise FormatError("rule 4: seed must be a 1-D uint8 tensor")
    expected = ((num_pairs(count) if indices is None else indices) * bits + 7) // 8
    if seed.payload.size != expected:
        raise FormatError(f"rule 4: seed holds {seed.payload.size} bytes; shape {list(seed.shape)} at "
                          f"{bits} bits per pair needs exactly {expected}")


def _validate_lattice(seed: Seed, count: int, inputs: bool = True) -> None:
    """FORMAT.md §5 rules 2-4 and §7.4 for the lattice codec."""
    a = seed.attrs
    bits = _int_in(a, "bits", *LATTICE_BITS)
    points = (1 << bits) - 1
    generator = _int_in(a, "generator", 1, points - 1)
    if generator % 2 == 0:
        raise FormatError(f"rule 2: attribute generator={generator} must be odd")
    group = _int_in(a, "group", 2, MAX_GROUP)
    if group % 2:
        raise FormatError(f"rule 2: attribute group={group} must be even")
    for name in ("alpha", "beta"):
        if abs(_float32(_finite(a, name))) > LATTICE_FLOAT_LIMIT:
            raise FormatError(f"rule 2: attribute {name}={a[name]!r} must be within ±2**100")
    unit = _float32(_finite(a, "scale_unit"))
    if not 0 < unit <= LATTICE_FLOAT_LIMIT:
        raise FormatError(f"rule 2: attribute scale_unit={unit!r} must be > 0 and <= 2**100")
    if inputs:
        _check_payload(seed, count, bits)
        _check_scales(seed, count, group)


def _check_scales(seed: Seed, count: int, group: int) -> None:
    """Rule 6: one finite float16 scale per group."""
    scales = seed.scales
    if not isinstance(scales, np.ndarray) or scales.dtype != np.float16 or scales.ndim != 1:
        raise FormatError("rule 6: scales must be a 1-D float16 tensor")
    if scales.size != scale_count(count, group):
        raise FormatError(f"rule 6: scales holds {scales.size} values; shape {list(seed.shape)} in groups "
                          f"of {group} needs exactly {scale_count(count, group)}")
    if not np.isfinite(scales).all():
        raise FormatError("rule 6: scales must all be finite")


def _validate_trellis(seed: Seed, count: int, inputs: bool = True) -> None:
    """FORMAT.md §5 rules 2-4 and §9.4 for the trellis codec."""
    a = seed.attrs
    bits = _int_in(a, "bits", *TRELLIS_BITS)
    window = _int_in(a, "window", bits, TRELLIS_MAX_WINDOW)
    group = _int_in(a, "group", 8, MAX_GROUP)
    if group % 8:
        raise FormatError(f"rule 2: attribute group={group} must be a multiple of 8")
    if bits * group < window:
        raise FormatError(f"rule 2: a group's stream of bits*group = {bits * group} bits is shorter than window={window}")
    unit = _float32(_finite(a, "scale_unit"))
    if not 0 < unit <= LATTICE_FLOAT_LIMIT:
        raise FormatError(f"rule 2: attribute scale_unit={unit!r} must be > 0 and <= 2**100")
    if inputs:
        _check_payload(seed, count, bits, scale_count(count, group) * group)
        _check_scales(seed, count, group)


def _validate_winding(seed: Seed, count: int, inputs: bool = True) -> None:
    """FORMAT.md §5 rules 2-4 for the winding codec."""
    a = seed.attrs
    bits, points, rings = a.get("bits"), a.get("points"), a.get("rings")
    for name, value, low, high in (("bits", bits, 1, MAX_BITS), ("points", points, 1, MAX_POINTS),
                                   ("rings", rings, 0, MAX_RINGS)):
        if not isinstance(value, (int, np.integer)) or not low <= value <= high:
            raise FormatError(f"rule 2: attribute {name}={value!r} is outside [{low}, {high}]")
    center, side, scales = a.get("center"), a.get("side"), a.get("ring_scales")
    if center is None or len(center) != 2 or not all(math.isfinite(v) for v in center):
        raise FormatError("rule 2: attribute center must hold two finite floats")
    if side is None or not math.isfinite(side) or not side > 0:
        raise FormatError(f"rule 2: attribute side={side!r} must be finite and > 0")
    if scales is None or len(scales) != rings or not all(math.isfinite(s) and s > 0 for s in scales):
        raise FormatError(f"rule 2: attribute ring_scales must hold rings={rings} finite values > 0")
    if seed.scales is not None:
        raise FormatError("rule 2: a winding node has one input (seed); it got scales")
    if inputs:
        _check_payload(seed, count, bits)


# Attribute name -> ONNX attribute type, in the order FORMAT.md §2 (winding) and §7.1 (lattice) list them.
ATTRIBUTE_TYPES = {
    "codec": AttributeProto.STRING, "shape": AttributeProto.INTS, "dtype": AttributeProto.INT,
    "bits": AttributeProto.INT, "points": AttributeProto.INT, "rings": AttributeProto.INT,
    "center": AttributeProto.FLOATS, "side": AttributeProto.FLOAT,
    "ring_scales": AttributeProto.FLOATS,
}
LATTICE_ATTRIBUTE_TYPES = {
    "codec": AttributeProto.STRING, "shape": AttributeProto.INTS, "dtype": AttributeProto.INT,
    "bits": AttributeProto.INT, "generator": AttributeProto.INT, "group": AttributeProto.INT,
    "alpha": AttributeProto.FLOAT, "beta": AttributeProto.FLOAT, "scale_unit": AttributeProto.FLOAT,
}
TRELLIS_ATTRIBUTE_TYPES = {
    "codec": AttributeProto.STRING, "shape": AttributeProto.INTS, "dtype": AttributeProto.INT,
    "bits": AttributeProto.INT, "window": AttributeProto.INT, "group": AttributeProto.INT,
    "scale_unit": AttributeProto.FLOAT,
}


def attribute_types(codec: str) -> dict:
    return {CODEC_LATTICE: LATTICE_ATTRIBUTE_TYPES, CODEC_TRELLIS: TRELLIS_ATTRIBUTE_TYPES}.get(codec, ATTRIBUTE_TYPES)


def make_node(seed: Seed, seed_name: str, output_name: str, scales_name: str | None = None) -> NodeProto:
    """The DecodeWeights node that turns the uint8 initializer `seed_name` (and, for the lattice
    codec, the float16 initializer `scales_name`) into `output_name`."""
    inputs = [seed_name]
    if seed.codec in SCALED_CODECS:
        if scales_name is None:
            raise ValueError(f"a {seed.codec} node needs the name of its scales input")
        inputs.append(scales_name)
    node = helper.make_node(OP_TYPE, inputs, [output_name], domain=OP_DOMAIN,
                            name=f"DecodeWeights/{output_name}")
    values = seed.node_attributes()
    for name, kind in attribute_types(seed.codec).items():
        node.attribute.append(helper.make_attribute(name, values[name], attr_type=kind))
    return node


def seed_from_node(node: NodeProto, payload: np.ndarray, scales: np.ndarray | None = None) -> Seed:
    """Read a DecodeWeights node (and its input tensors) back into a Seed (not yet validated)."""
    if node.op_type != OP_TYPE or node.domain != OP_DOMAIN:
        raise FormatError(f"node {node.name!r} is not {OP_DOMAIN}.{OP_TYPE}")
    if len(node.output) != 1 or not node.output[0] or not node.input or not node.input[0]:
        raise FormatError(f"DecodeWeights node {node.name!r} needs a seed input and one output")
    codec = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "codec"), b"")
    codec = codec.decode("utf-8", "replace") if isinstance(codec, bytes) else str(codec)
    types = attribute_types(codec)
    attrs = {}
    for attribute in node.attribute:
        if attribute.name not in types:
            raise FormatError(f"rule 2: DecodeWeights has an unknown attribute {attribute.name!r}")
        if attribute.type != types[attribute.name]:
            raise FormatError(f"rule 2: DecodeWeights attribute {attribute.name!r} has the wrong type")
        attrs[attribute.name] = helper.get_attribute_value(attribute)
    missing = [name for name in types if name not in attrs]
    if missing:
        raise FormatError(f"rule 2: DecodeWeights lacks attribute(s) {', '.join(missing)}")
    attrs.pop("codec")
    shape = tuple(int(d) for d in attrs.pop("shape"))
    dtype = int(attrs.pop("dtype"))
    if codec in SCALED_CODECS:
        if len(node.input) != 2 or scales is None:
            raise FormatError(f"DecodeWeights {node.name!r} ({codec}) needs two inputs: seed and scales")
        scales = np.asarray(scales).ravel()
    else:
        if len(node.input) != 1:
            raise FormatError(f"DecodeWeights {node.name!r} ({codec}) takes one input")
        attrs["center"], attrs["ring_scales"] = list(attrs["center"]), list(attrs["ring_scales"])
        scales = None
    return Seed(codec, shape, dtype, np.asarray(payload, dtype=np.uint8).ravel(), attrs, scales=scales)


def check_model_version(version: int, codecs) -> None:
    """FORMAT.md §5 rule 1 and §7.4 rule 8: a known version, and every codec allowed at that version."""
    if version not in KNOWN_VERSIONS:
        raise FormatError(f"rule 1: the model imports {OP_DOMAIN} version {version}; this hyperonnx "
                          f"knows versions {', '.join(map(str, KNOWN_VERSIONS))}")
    for codec in codecs:
        if CODEC_VERSION.get(codec, 1) > version:
            raise FormatError(f"rule 8: codec {codec!r} needs {OP_DOMAIN} version {CODEC_VERSION[codec]}; "
                              f"the model imports version {version}")


# The standard operators' attributes a fused node may carry (docs/FORMAT.md §8), prefixed `op_`.
FUSED_OP_ATTRIBUTES = {
    "DecodeMatMul": {},
    "DecodeGemm": {"transA": AttributeProto.INT, "transB": AttributeProto.INT, "alpha": AttributeProto.FLOAT,
                   "beta": AttributeProto.FLOAT},
    "DecodeGather": {"axis": AttributeProto.INT},
    "DecodeConv": {"auto_pad": AttributeProto.STRING, "dilations": AttributeProto.INTS, "group": AttributeProto.INT,
                   "kernel_shape": AttributeProto.INTS, "pads": AttributeProto.INTS, "strides": AttributeProto.INTS},
}
FUSED_RANKS = {"DecodeMatMul": (2,), "DecodeGemm": (2,), "DecodeConv": (4,)}  # DecodeGather: rank >= 1
AUTO_PADS = (b"NOTSET", b"VALID", b"SAME_UPPER", b"SAME_LOWER")
_CONV_LIMIT = 1 << 20  # strides, dilations and pads of DecodeConv (as the kernels accept)


def validate_fused(node: NodeProto, seed: Seed) -> None:
    """FORMAT.md §8.1 rule 9's static part for a fused node whose codec attributes decode `seed`
    (already validated): the weight float32 of a rank that fits, every `op_` attribute known, of
    its type and within what the standard operator accepts, `accuracy_level` 0 or 4."""
    op = node.op_type
    if seed.dtype != TensorProto.FLOAT:
        raise FormatError(f"rule 9: a fused operator's weight must be float32 (dtype 1), not dtype {seed.dtype}")
    shape = list(seed.shape)
    if len(shape) not in FUSED_RANKS.get(op, range(1, 1 << 30)):
        raise FormatError(f"rule 9: {op}'s weight cannot have rank {len(shape)}")
    known = FUSED_OP_ATTRIBUTES[op]
    attrs = {}
    for a in node.attribute:
        if a.name == ACCURACY_LEVEL:
            if op not in ACCURACY_OPS or a.type != AttributeProto.INT or a.i not in ACCURACY_LEVELS:
                raise FormatError(f"rule 9: {ACCURACY_LEVEL} must be an int, 0 (float32) or 4 (int8), on "
                                  f"DecodeMatMul / DecodeGemm only")
        elif a.name.startswith(FUSED_ATTRIBUTE_PREFIX):
            name = a.name[len(FUSED_ATTRIBUTE_PREFIX):]
            if name not in known or a.type != known[name]:
                raise FormatError(f"rule 9: {op} has an unknown or mistyped attribute {a.name!r}")
            attrs[name] = helper.get_attribute_value(a)

    def ints(name, default, count, low):
        value = list(attrs.get(name, default))  # an empty list too is refused (onnxruntime's Conv does)
        if len(value) != count or not all(low <= v <= _CONV_LIMIT for v in value):
            raise FormatError(f"rule 9: op_{name} needs {count} values in [{low}, 2**20], not {value}")
        return value

    if op == "DecodeGemm":
        if attrs.get("transA", 0) != 0 or attrs.get("transB", 0) not in (0, 1):
            raise FormatError("rule 9: op_transA must be 0 and op_transB 0 or 1")
    elif op == "DecodeGather":
        if attrs.get("axis", 0) != 0:
            raise FormatError("rule 9: op_axis must be 0")
    elif op == "DecodeConv":
        if attrs.get("auto_pad", b"NOTSET") not in AUTO_PADS:
            raise FormatError("rule 9: op_auto_pad is not NOTSET, VALID, SAME_UPPER or SAME_LOWER")
        group = attrs.get("group", 1)
        if group < 1 or shape[0] % group:
            raise FormatError(f"rule 9: op_group={group} must be >= 1 and divide M = {shape[0]}")
        ints("dilations", [1, 1], 2, 1)
        ints("strides", [1, 1], 2, 1)
        ints("pads", [0, 0, 0, 0], 4, 0)
        if list(attrs.get("kernel_shape", shape[2:])) != shape[2:]:
            raise FormatError("rule 9: op_kernel_shape does not match the weight")
        if min(shape[1:]) < 1:
            raise FormatError("rule 9: the weight has an empty kernel")
