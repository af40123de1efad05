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
OP_VERSION = 1  # the opset version of OP_DOMAIN a model imports; equals the format version

CODEC_WINDING = "winding"  # the only codec of format version 1 (docs/FORMAT.md §3)
CODECS = (CODEC_WINDING,)

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

    @property
    def num_elements(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes this tensor occupies in a compressed model (raw tensors: their own size)."""
        if self.codec == "raw":
            return self.array.nbytes
        return int(self.payload.size)

    @property
    def bits_per_weight(self) -> float:
        return 8.0 * self.nbytes / max(1, self.num_elements)

    def node_attributes(self) -> dict:
        """All DecodeWeights attributes, in the order FORMAT.md lists them."""
        return {"codec": self.codec, "shape": list(self.shape), "dtype": self.dtype, **self.attrs}


def winding_modulus(points: int) -> tuple[int, int]:
    """(m, M) of FORMAT.md §3: m = ceil(sqrt(n)), M = m*m."""
    m = math.isqrt(points - 1) + 1
    return m, m * m


def num_pairs(num_elements: int) -> int:
    return (num_elements + 1) // 2


def validate(seed: Seed) -> None:
    """Apply every rule of FORMAT.md §5 to a seed; raise FormatError naming the first rule broken."""
    if seed.codec not in CODECS:
        raise FormatError(f"unknown codec {seed.codec!r} (this decoder knows {', '.join(CODECS)})")
    if seed.dtype not in OUTPUT_DTYPES:
        raise FormatError(f"dtype {seed.dtype} is not float32 (1), float16 (10) or bfloat16 (16)")
    count = 1
    for dim in seed.shape:
        if not isinstance(dim, (int, np.integer)) or dim < 0:
            raise FormatError(f"shape {list(seed.shape)} has a negative or non-integer dimension")
        count *= int(dim)
        if count > MAX_ELEMENTS:
            raise FormatError(f"shape {list(seed.shape)} has more than 2**40 elements")
    a = seed.attrs
    bits, points, rings = a.get("bits"), a.get("points"), a.get("rings")
    for name, value, low, high in (("bits", bits, 1, MAX_BITS), ("points", points, 1, MAX_POINTS),
                                   ("rings", rings, 0, MAX_RINGS)):
        if not isinstance(value, (int, np.integer)) or not low <= value <= high:
            raise FormatError(f"attribute {name}={value!r} is outside [{low}, {high}]")
    center, side, scales = a.get("center"), a.get("side"), a.get("ring_scales")
    if center is None or len(center) != 2 or not all(math.isfinite(v) for v in center):
        raise FormatError("attribute center must hold two finite floats")
    if side is None or not math.isfinite(side) or not side > 0:
        raise FormatError(f"attribute side={side!r} must be finite and > 0")
    if scales is None or len(scales) != rings or not all(math.isfinite(s) and s > 0 for s in scales):
        raise FormatError(f"attribute ring_scales must hold rings={rings} finite values > 0")
    if seed.payload.dtype != np.uint8 or seed.payload.ndim != 1:
        raise FormatError("seed must be a 1-D uint8 tensor")
    expected = (num_pairs(count) * bits + 7) // 8
    if seed.payload.size != expected:
        raise FormatError(f"seed holds {seed.payload.size} bytes; shape {list(seed.shape)} at "
                          f"{bits} bits per pair needs exactly {expected}")


# Attribute name -> ONNX attribute type, in the order FORMAT.md §2 lists them.
ATTRIBUTE_TYPES = {
    "codec": AttributeProto.STRING, "shape": AttributeProto.INTS, "dtype": AttributeProto.INT,
    "bits": AttributeProto.INT, "points": AttributeProto.INT, "rings": AttributeProto.INT,
    "center": AttributeProto.FLOATS, "side": AttributeProto.FLOAT,
    "ring_scales": AttributeProto.FLOATS,
}


def make_node(seed: Seed, seed_name: str, output_name: str) -> NodeProto:
    """The DecodeWeights node that turns the uint8 initializer `seed_name` into `output_name`."""
    node = helper.make_node(OP_TYPE, [seed_name], [output_name], domain=OP_DOMAIN,
                            name=f"DecodeWeights/{output_name}")
    values = seed.node_attributes()
    for name, kind in ATTRIBUTE_TYPES.items():
        node.attribute.append(helper.make_attribute(name, values[name], attr_type=kind))
    return node


def seed_from_node(node: NodeProto, payload: np.ndarray) -> Seed:
    """Read a DecodeWeights node back into a Seed (not yet validated)."""
    if node.op_type != OP_TYPE or node.domain != OP_DOMAIN:
        raise FormatError(f"node {node.name!r} is not {OP_DOMAIN}.{OP_TYPE}")
    attrs = {}
    for attribute in node.attribute:
        if attribute.name not in ATTRIBUTE_TYPES:
            raise FormatError(f"DecodeWeights has an unknown attribute {attribute.name!r}")
        if attribute.type != ATTRIBUTE_TYPES[attribute.name]:
            raise FormatError(f"DecodeWeights attribute {attribute.name!r} has the wrong type")
        attrs[attribute.name] = helper.get_attribute_value(attribute)
    missing = [name for name in ATTRIBUTE_TYPES if name not in attrs]
    if missing:
        raise FormatError(f"DecodeWeights lacks attribute(s) {', '.join(missing)}")
    codec = attrs.pop("codec").decode("utf-8", "replace")
    shape = tuple(int(d) for d in attrs.pop("shape"))
    dtype = int(attrs.pop("dtype"))
    attrs["center"], attrs["ring_scales"] = list(attrs["center"]), list(attrs["ring_scales"])
    return Seed(codec, shape, dtype, np.asarray(payload, dtype=np.uint8).ravel(), attrs)
