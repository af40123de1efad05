"""web/ (the npm package hyperonnx-web): its decoder turns compressed models into the very model
hyperonnx.decompress writes, every decoded weight bit for bit, for every codec and output dtype
(seeds from the encoders and random ones at the format's edges), fused operators and subgraphs
included, and refuses what FORMAT.md says a decoder refuses. Runs under Node (no npm package
needed: the decoder is plain JavaScript); skipped where node is not installed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import hyperonnx
from hyperonnx import codec
from hyperonnx import format as fmt
from hyperonnx.codec import LatticeConfig, TrellisConfig, WindingConfig
from hyperonnx.codec import bitpack
from hyperonnx.graph.walk import scopes

from graph_models import mlp, nested, zoo
from runtime_models import decode_model

NODE = shutil.which("node")
CLI = Path(__file__).resolve().parent.parent / "web" / "bin" / "hyperonnx-decode.mjs"
pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed")


def js_decode(model: onnx.ModelProto, folder: Path, external: str | None = None, to: str | None = None) -> onnx.ModelProto:
    source, target = folder / "in.onnx", folder / "out.onnx"
    source.write_bytes(model.SerializeToString())
    args = [NODE, str(CLI), str(source), str(target)] + (["--external", external] if external else []) + \
        (["--to", to] if to else [])
    child = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr
    return onnx.load(str(target))  # external data loaded from beside the file


def js_error(model: onnx.ModelProto, folder: Path) -> str:
    source = folder / "bad.onnx"
    source.write_bytes(model.SerializeToString())
    child = subprocess.run([NODE, str(CLI), str(source), str(folder / "bad.out.onnx")], capture_output=True,
                           text=True, timeout=120)
    assert child.returncode == 1, child.stdout
    return child.stderr


def _tensor_bytes(t: onnx.TensorProto) -> bytes:
    return numpy_helper.to_array(t).tobytes()


def _node_bytes(node: onnx.NodeProto) -> bytes:
    """A node without its subgraphs' contents (scopes compares those, initializers as values)."""
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    for a in copy.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            a.g.Clear()
        for g in a.graphs:
            g.Clear()
    return copy.SerializeToString()


def assert_same_model(want: onnx.ModelProto, got: onnx.ModelProto, close=None) -> None:
    """Same graphs (nodes, inputs, outputs, initializers bit for bit, or as `close(name, want,
    got)` accepts), opsets and functions."""
    assert [(o.domain, o.version) for o in got.opset_import] == [(o.domain, o.version) for o in want.opset_import]
    assert [(f.domain, f.name) for f in got.functions] == [(f.domain, f.name) for f in want.functions]
    want_scopes, got_scopes = list(scopes(want)), list(scopes(got))
    assert [s.path for s in got_scopes] == [s.path for s in want_scopes]
    for w, g in zip(want_scopes, got_scopes):
        w, g = w.graph, g.graph
        assert [_node_bytes(n) for n in g.node] == [_node_bytes(n) for n in w.node]
        assert [v.SerializeToString() for v in g.input] == [v.SerializeToString() for v in w.input]
        assert [v.SerializeToString() for v in g.output] == [v.SerializeToString() for v in w.output]
        want_inits = {t.name: t for t in w.initializer}
        got_inits = {t.name: t for t in g.initializer}
        assert sorted(got_inits) == sorted(want_inits)
        for name, t in want_inits.items():
            assert got_inits[name].data_type == t.data_type, name
            assert list(got_inits[name].dims) == list(t.dims), name
            if close is None or _tensor_bytes(got_inits[name]) == _tensor_bytes(t):
                assert _tensor_bytes(got_inits[name]) == _tensor_bytes(t), f"{name}: decoded bits differ"
            else:
                close(name, numpy_helper.to_array(t), numpy_helper.to_array(got_inits[name]))


def _check(model: onnx.ModelProto, folder: Path) -> onnx.ModelProto:
    want = hyperonnx.decompress(model)
    got = js_decode(model, folder)
    assert_same_model(want, got)
    assert not any(n.domain == fmt.OP_DOMAIN for s in scopes(got) for n in s.graph.node)
    external = js_decode(model, folder, external="weights.bin")  # the form handed to onnxruntime-web
    assert_same_model(want, external)
    return got


def _encoded_seeds() -> dict[str, hyperonnx.Seed]:
    rng = np.random.default_rng(7)
    seeds = {}
    for dtype in (np.float32, np.float16, ml_dtypes.bfloat16):
        tag = np.dtype(dtype).name
        heavy = (rng.standard_t(5, (37, 29)) * 0.05).astype(dtype)  # odd element count
        seeds[f"winding_paper_{tag}"] = codec.encode(heavy, "paper")
        seeds[f"winding_unet_{tag}"] = codec.encode(heavy, WindingConfig(side=0.1, points=(225,), max_rings=3))
        for bits in (2, 5, 8, 11, 16):
            seeds[f"lattice_b{bits}_{tag}"] = codec.encode(heavy, LatticeConfig(index_bits=bits, group=66))
        for k, window, group in ((1, 8, 8), (2, 10, 64), (4, 12, 128), (3, 16, 24), (8, 16, 16)):
            seeds[f"trellis_k{k}_L{window}_{tag}"] = codec.encode(heavy[:9, :11], TrellisConfig(
                index_bits=k, window=window, memory=0, group=group))
    seeds["winding_points1"] = codec.encode(rng.standard_normal(41).astype(np.float32),
                                            WindingConfig(side=2.0, points=(1,), max_rings=0))
    seeds["lattice_big"] = codec.encode(rng.standard_normal((300, 257)).astype(np.float32),
                                        LatticeConfig(index_bits=9, group=128))  # several decoder chunks
    for name, seed in seeds.items():
        assert seed.codec != "raw", name
    return seeds


def _random_seeds(rng) -> dict[str, hyperonnx.Seed]:
    """Seeds no encoder writes: random steps and windows, extreme float16 scales (subnormal, the
    largest: float16 outputs overflow to Inf), odd alpha / beta / units, a scalar shape."""
    seeds = {}
    f16_edges = np.array([0x0001, 0x03FF, 0x0400, 0x3C00, 0x7BFF, 0x8001, 0xFBFF, 0x0000, 0x8000], np.uint16)
    for dtype in (1, 10, 16):
        for bits in (3, 7, 13):
            count = 2 * 3 * 5 * 7 + 1
            group = 6
            steps = rng.integers(0, (1 << bits) - 1, fmt.num_pairs(count))
            scales = np.concatenate([f16_edges, rng.integers(0, 0x7C00, 64).astype(np.uint16)])[:-(-count // group)]
            scales = np.resize(scales, -(-count // group)).view(np.float16)
            attrs = {"bits": bits, "generator": int(rng.integers(0, (1 << bits) // 2 - 1)) * 2 + 1, "group": group,
                     "alpha": float(np.float32(rng.uniform(-3, 3))), "beta": float(np.float32(rng.uniform(-3, 3))),
                     "scale_unit": float(np.float32(2.0 ** rng.integers(-30, 30)))}
            seeds[f"lattice_random_b{bits}_{dtype}"] = fmt.Seed("lattice", (count,), dtype,
                                                               bitpack.pack(steps, bits), attrs, scales=scales)
        for k, window in ((1, 1), (3, 7), (5, 16), (8, 8)):
            group, count = 16, 16 * 5 - 3
            scales = np.resize(np.concatenate([f16_edges, rng.integers(0, 0x7C00, 8).astype(np.uint16)]),
                               -(-count // group)).view(np.float16)
            payload = rng.integers(0, 256, -(-count // group) * group * k // 8).astype(np.uint8)
            attrs = {"bits": k, "window": window, "group": group, "scale_unit": float(np.float32(3.0 ** -5))}
            seeds[f"trellis_random_k{k}_L{window}_{dtype}"] = fmt.Seed("trellis", (count,), dtype, payload, attrs,
                                                                       scales=scales)
        points, rings = 1000, 3
        size = (points + 1) * (rings + 1)
        bits = int(size - 1).bit_length()
        indices = rng.integers(0, size, 50)
        indices[:3] = [points, size - 1, 0]  # the centroid, the last ring's centroid, step 0
        attrs = {"bits": bits, "points": points, "rings": rings,
                 "center": [float(np.float32(0.1)), float(np.float32(-3e4))], "side": float(np.float32(0.3)),
                 "ring_scales": [float(np.float32(v)) for v in (1.5, 7.0, 3e5)]}
        seeds[f"winding_random_{dtype}"] = fmt.Seed("winding", (99,), dtype, bitpack.pack(indices, bits), attrs)
    seeds["lattice_scalar"] = fmt.Seed("lattice", (), 1, bitpack.pack(np.array([5]), 4),
                                       {"bits": 4, "generator": 3, "group": 2, "alpha": 0.5, "beta": 0.5,
                                        "scale_unit": 1.0}, scales=np.array([1.5], np.float16))
    seeds["trellis_empty"] = fmt.Seed("trellis", (0, 3), 1, np.zeros(0, np.uint8),
                                      {"bits": 4, "window": 12, "group": 128, "scale_unit": 1.0},
                                      scales=np.zeros(0, np.float16))
    return seeds


def test_every_codec_bit_for_bit(tmp_path):
    got = _check(decode_model(_encoded_seeds()), tmp_path)
    assert len(got.graph.initializer) == len(got.graph.output)


def test_random_seeds_at_the_format_edges(tmp_path):
    seeds = _random_seeds(np.random.default_rng(3))
    for name, seed in seeds.items():
        fmt.validate(seed)
    _check(decode_model(seeds), tmp_path)


def test_worked_examples_of_format_md(tmp_path):
    examples = {
        "winding": fmt.Seed("winding", (3,), 1, np.array([0x93], np.uint8),
                            {"bits": 4, "points": 4, "rings": 1, "center": [1.0, -1.0], "side": 2.0,
                             "ring_scales": [2.0]}),
        "lattice": fmt.Seed("lattice", (5,), 1, np.array([0x2B, 0x00], np.uint8),
                            {"bits": 3, "generator": 3, "group": 4, "alpha": 0.5, "beta": 0.5, "scale_unit": 0.5},
                            scales=np.array([2.0, 3.0], np.float16)),
        "trellis": fmt.Seed("trellis", (10,), 1, np.array([0x1B, 0xE4, 0xFF, 0x00], np.uint8),
                            {"bits": 2, "window": 4, "group": 8, "scale_unit": 0.5},
                            scales=np.array([2.0, 4.0], np.float16)),
    }
    got = {t.name: numpy_helper.to_array(t) for t in js_decode(decode_model(examples), tmp_path).graph.initializer}
    assert got["winding"].tolist() == [1.5, -1.0, 1.0]
    assert got["lattice"].tobytes().hex() == "00000000" "00000000" "710dc23e" "373a1ebe" "94bd8ebf"
    assert got["trellis"].tobytes().hex() == ("0c82f93ef70745be32579ebf22e3ebbf0c82f9bef707453e32579e3f22e3eb3f"
                                              "22e36b4022e36b40")


@pytest.mark.parametrize("preset", ["lattice-4.25", "trellis", "paper"])
def test_compressed_models_fused_ops_and_subgraphs(tmp_path, preset):
    """What hyperonnx.compress writes: fused operators (split back, shared seeds decoded once),
    DecodeWeights in If / Loop bodies, the model-local functions and the opset import dropped."""
    for i, model in enumerate((nested(), mlp())):
        compressed = hyperonnx.compress(model, preset, min_elements=64)
        folder = tmp_path / str(i)
        folder.mkdir()
        _check(compressed, folder)


def test_seeds_in_external_data(tmp_path):
    """A compressed model saved with its tensors in external data: seeds read from that file."""
    compressed = hyperonnx.compress(mlp(), "trellis", min_elements=64)
    source = tmp_path / "m.hc.onnx"
    hyperonnx.save(compressed, str(source), external_data=True)
    assert (tmp_path / "m.hc.onnx.data").exists()
    child = subprocess.run([NODE, str(CLI), str(source), str(tmp_path / "out.onnx")], capture_output=True, text=True,
                           timeout=120)
    assert child.returncode == 0, child.stderr
    assert_same_model(hyperonnx.decompress(str(source)), onnx.load(str(tmp_path / "out.onnx")))


def test_refuses_what_the_format_refuses(tmp_path):
    seed = codec.encode(np.random.default_rng(0).standard_normal(64).astype(np.float32), LatticeConfig(index_bits=4))
    model = decode_model({"w": seed})
    bad = onnx.ModelProto()
    bad.CopyFrom(model)
    next(t for t in bad.graph.initializer if t.name == "w.seed").raw_data = b"\xff" * len(seed.payload)
    assert "rule 7" in js_error(bad, tmp_path)  # all-ones steps
    short = onnx.ModelProto()
    short.CopyFrom(model)
    t = next(t for t in short.graph.initializer if t.name == "w.seed")
    t.raw_data = t.raw_data[:-1]
    t.dims[0] -= 1
    assert "rule 4" in js_error(short, tmp_path)
    assert "rule 1" in js_error(decode_model({"w": seed}, version=9), tmp_path)
    assert "rule 8" in js_error(decode_model({"w": seed}, version=1), tmp_path)
    trellis = codec.encode(np.random.default_rng(0).standard_normal(64).astype(np.float32), TrellisConfig())
    assert "rule 8" in js_error(decode_model({"w": trellis}, version=3), tmp_path)
    odd = decode_model({"w": seed})
    node = odd.graph.node[0]
    node.attribute.append(helper.make_attribute("extra", 1))
    assert "rule 2" in js_error(odd, tmp_path)


@pytest.mark.parametrize("model_name", ["zoo", "nested", "mlp"])
def test_standard_ops_forms_as_python_writes_them(tmp_path, model_name):
    """decode(bytes, {to}): the model `hyperonnx decompress --to` writes; int8 bit for bit, int4
    the same graph with each block's values within one step (a near tie of the scale search,
    summed in float64 here and float32 in numpy, may pick another scale)."""
    model = {"zoo": zoo, "nested": nested, "mlp": mlp}[model_name]()
    compressed = hyperonnx.compress(model, "lattice", min_elements=64)
    assert_same_model(hyperonnx.decompress(compressed, to="int8"), js_decode(compressed, tmp_path, to="int8"))

    def close(name, want, got):
        assert want.shape == got.shape, name
        if name.endswith(".scale"):
            assert np.allclose(want, got, rtol=0.15), name
        else:
            assert np.abs(want.astype(np.int16) - got.astype(np.int16)).max() <= 8, name
            assert np.mean(want != got) < 0.05, name
    assert_same_model(hyperonnx.decompress(compressed, to="int4"), js_decode(compressed, tmp_path, to="int4"), close)


def test_standard_ops_form_refuses_an_opset_it_cannot_raise(tmp_path):
    compressed = hyperonnx.compress(zoo(13, reduce_mean=True), "lattice", min_elements=64)
    source = tmp_path / "m.onnx"
    source.write_bytes(compressed.SerializeToString())
    child = subprocess.run([NODE, str(CLI), str(source), str(tmp_path / "o.onnx"), "--to", "int8"],
                           capture_output=True, text=True, timeout=120)
    assert child.returncode == 1 and "version_converter" in child.stderr
