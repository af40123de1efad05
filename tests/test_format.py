"""docs/FORMAT.md held to the letter: the worked example byte by byte, bit packing, validation."""

import numpy as np
import pytest
from onnx import TensorProto

import hyperonnx
from hyperonnx import format as fmt
from hyperonnx.codec import bitpack, winding

EXAMPLE_ATTRS = {"bits": 4, "points": 4, "rings": 1, "center": [1.0, -1.0], "side": 2.0,
                 "ring_scales": [2.0]}


def example_seed(payload=(0x93,), **changes):
    attrs = {**EXAMPLE_ATTRS, **{k: v for k, v in changes.items() if k in EXAMPLE_ATTRS}}
    return fmt.Seed(changes.get("codec", "winding"), changes.get("shape", (3,)),
                    changes.get("dtype", TensorProto.FLOAT), np.array(payload, dtype=np.uint8), attrs)


def test_worked_example_decodes_as_format_md_says():
    out = hyperonnx.decode(example_seed())
    assert out.dtype == np.float32 and out.shape == (3,)
    assert out.tobytes() == np.array([1.5, -1.0, 1.0], dtype=np.float32).tobytes()


def test_worked_example_derived_constants():
    book = winding.Codebook.from_attrs(EXAMPLE_ATTRS)
    assert (book.m, book.modulus, float(book.step), float(book.offset), book.size) == (2, 4, 0.5, -1.0, 10)


def test_bit_order_is_lsb_first_across_bytes():
    # indices 5 (101) and 3 (011) at 3 bits: stream bits 1,0,1,1,1,0 -> byte 0b00011101
    assert bitpack.pack(np.array([5, 3]), 3).tolist() == [0b00011101]
    # a 13-bit index straddles bytes: 0x1ABC -> 0xBC, 0x1A
    assert bitpack.pack(np.array([0x1ABC]), 13).tolist() == [0xBC, 0x1A]
    assert bitpack.pack(np.array([0x1ABC, 1]), 13).tolist() == [0xBC, 0x3A, 0x00, 0x00]


@pytest.mark.parametrize("bits", [1, 2, 3, 7, 8, 11, 13, 16, 23, 24])
def test_pack_unpack_round_trip(bits):
    rng = np.random.default_rng(bits)
    indices = rng.integers(0, 1 << bits, size=1003)
    packed = bitpack.pack(indices, bits)
    assert packed.size == (1003 * bits + 7) // 8
    assert np.array_equal(bitpack.unpack(packed, bits, indices.size), indices)
    spare = packed.size * 8 - 1003 * bits
    assert packed[-1] >> (8 - spare) == 0 if spare else True  # padding bits are zero


@pytest.mark.parametrize("change, message", [
    ({"codec": "gzip"}, "unknown codec"),
    ({"dtype": TensorProto.DOUBLE}, "dtype"),
    ({"shape": (-1, 3)}, "negative"),
    ({"shape": (1 << 21, 1 << 21)}, "2\\*\\*40"),
    ({"bits": 0}, "bits"),
    ({"bits": 25}, "bits"),
    ({"points": 0}, "points"),
    ({"points": (1 << 20) + 1}, "points"),
    ({"rings": 65}, "rings"),
    ({"center": [1.0]}, "center"),
    ({"center": [float("nan"), 0.0]}, "center"),
    ({"side": 0.0}, "side"),
    ({"side": float("inf")}, "side"),
    ({"ring_scales": []}, "ring_scales"),
    ({"ring_scales": [float("inf")]}, "ring_scales"),
    ({"payload": (0x93, 0)}, "exactly 1"),
    ({"payload": ()}, "exactly 1"),
])
def test_validation_rejects(change, message):
    with pytest.raises(fmt.FormatError, match=message):
        hyperonnx.decode(example_seed(**change))


def test_index_beyond_codebook_is_rejected():
    # 4 bits allow index 15, the codebook has 10 entries
    with pytest.raises(fmt.FormatError, match="beyond the codebook"):
        hyperonnx.decode(example_seed(payload=(0xF3,)))


def test_node_round_trip_keeps_every_attribute():
    seed = hyperonnx.encode(np.linspace(-1, 1, 301, dtype=np.float32).reshape(7, 43), "paper-unet")
    node = fmt.make_node(seed, "w.seed", "w")
    assert (node.domain, node.op_type) == (fmt.OP_DOMAIN, fmt.OP_TYPE)
    assert [a.name for a in node.attribute] == list(fmt.ATTRIBUTE_TYPES)
    back = fmt.seed_from_node(node, seed.payload)
    assert back.codec == seed.codec and back.shape == seed.shape and back.dtype == seed.dtype
    assert back.attrs == seed.attrs
    assert hyperonnx.decode(back).tobytes() == hyperonnx.decode(seed).tobytes()


def test_node_without_rings_keeps_empty_ring_scales():
    seed = hyperonnx.encode(np.full(64, 0.01, dtype=np.float32), "paper")
    assert seed.attrs["rings"] == 0
    back = fmt.seed_from_node(fmt.make_node(seed, "s", "w"), seed.payload)
    assert back.attrs["ring_scales"] == []
    fmt.validate(back)


def test_node_with_missing_or_mistyped_attribute_is_rejected():
    seed = hyperonnx.encode(np.linspace(-1, 1, 64, dtype=np.float32), "paper")
    node = fmt.make_node(seed, "s", "w")
    del node.attribute[3]
    with pytest.raises(fmt.FormatError, match="lacks"):
        fmt.seed_from_node(node, seed.payload)
    node = fmt.make_node(seed, "s", "w")
    node.attribute[1].type = node.attribute[0].type
    with pytest.raises(fmt.FormatError, match="wrong type"):
        fmt.seed_from_node(node, seed.payload)
