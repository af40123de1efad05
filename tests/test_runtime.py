"""hyperonnx.runtime: the library path, session options, and InferenceSession's two modes."""

from __future__ import annotations

import ctypes
import os

import ml_dtypes
import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import hyperonnx
from hyperonnx import format as fmt
from hyperonnx import runtime
from hyperonnx.codec import LatticeConfig
from runtime_models import decode_model, decoded_weights, make_model, mlp_model, mlp_weights

X = np.random.default_rng(1).standard_normal((5, 64)).astype(np.float32)


def plain(model, sess_options=None):
    return ort.InferenceSession(model.SerializeToString(), sess_options, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def mlp():
    w = mlp_weights()
    return mlp_model(w, compress=True), mlp_model(decoded_weights(w))


def test_library_path_and_two_line_registration(mlp):
    compressed, reference = mlp
    path = hyperonnx.get_library_path()
    assert os.path.isfile(path) and os.path.isabs(path)
    so = ort.SessionOptions()
    so.register_custom_ops_library(hyperonnx.get_library_path())
    got = plain(compressed, so).run(None, {"x": X})[0]
    np.testing.assert_allclose(got, plain(reference).run(None, {"x": X})[0], rtol=1e-5, atol=1e-6)


def test_library_path_override(monkeypatch, tmp_path):
    real = hyperonnx.get_library_path()
    monkeypatch.setenv("HYPERONNX_LIBRARY", str(tmp_path / "missing.so"))
    with pytest.raises(FileNotFoundError):
        hyperonnx.get_library_path()
    monkeypatch.setenv("HYPERONNX_LIBRARY", real)
    assert hyperonnx.get_library_path() == real


def test_load_mode_equals_original_bitwise(mlp):
    """Load mode hands onnxruntime plain initializers: the very graph the reference model is."""
    compressed, reference = mlp
    session = hyperonnx.InferenceSession(compressed, mode="load")
    assert isinstance(session, ort.InferenceSession) and session.hyperonnx_mode == "load"
    expected = plain(reference).run(None, {"x": X})[0]
    for _ in range(3):  # the decoded weights stay valid across runs
        assert session.run(None, {"x": X})[0].tobytes() == expected.tobytes()


def test_stream_mode_matches(mlp):
    compressed, reference = mlp
    session = hyperonnx.InferenceSession(compressed, mode="stream")
    expected = plain(reference).run(None, {"x": X})[0]
    # the weights are the same bits; onnxruntime may order a non-constant MatMul's sums differently
    np.testing.assert_allclose(session.run(None, {"x": X})[0], expected, rtol=1e-5, atol=1e-6)


def test_stream_decoded_weights_bitwise():
    """Every decoded tensor as a graph output, both modes, all dtypes, vs the reference decoder."""
    rng = np.random.default_rng(3)
    seeds = {}
    for dtype in (np.float32, np.float16):
        for shape in ((33, 17), (1001,)):
            seeds[f"w_{np.dtype(dtype).name}_{len(seeds)}"] = hyperonnx.encode(
                (rng.standard_normal(shape) * 0.1).astype(dtype), "paper-unet", min_elements=1)
    model = decode_model(seeds)
    for mode in ("load", "stream"):
        outputs = hyperonnx.InferenceSession(model, mode=mode).run(None, {})
        for (name, seed), got in zip(seeds.items(), outputs):
            assert got.tobytes() == hyperonnx.decode(seed).tobytes(), (mode, name)


def test_model_sources_and_input_untouched(mlp, tmp_path):
    compressed, reference = mlp
    before = compressed.SerializeToString()
    expected = plain(reference).run(None, {"x": X})[0]
    path = tmp_path / "mlp.onnx"
    onnx.save(compressed, path)
    external = tmp_path / "ext" / "mlp.onnx"
    external.parent.mkdir()
    copy = onnx.ModelProto()
    copy.CopyFrom(compressed)  # saving with external data rewrites the model it is given
    onnx.save(copy, external, save_as_external_data=True, location="weights.bin", size_threshold=0)
    assert (external.parent / "weights.bin").stat().st_size > 0
    for source in (compressed, before, str(path), path, str(external)):
        for mode in ("load", "stream"):
            got = hyperonnx.InferenceSession(source, mode=mode).run(None, {"x": X})[0]
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert compressed.SerializeToString() == before


def test_load_mode_keeps_nodes_it_cannot_decode_at_load():
    """A DecodeWeights node inside an If branch stays a node (and runs) in load mode."""
    w = (np.random.default_rng(4).standard_normal((8, 8)) * 0.1).astype(np.float32)
    seed = hyperonnx.encode(w, "paper", min_elements=1)
    branch = helper.make_graph(
        [fmt.make_node(seed, "w.seed", "w_then"), helper.make_node("Identity", ["w_then"], ["out_then"])],
        "then", [], [helper.make_tensor_value_info("out_then", TensorProto.FLOAT, [8, 8])],
        [numpy_helper.from_array(seed.payload, "w.seed")])
    other = helper.make_graph([helper.make_node("Constant", [], ["out_else"], value=numpy_helper.from_array(
        np.zeros((8, 8), np.float32)))], "else", [], [helper.make_tensor_value_info("out_else", TensorProto.FLOAT, [8, 8])])
    graph = helper.make_graph([helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=other)], "g",
                              [helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, 8])])
    model = make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(fmt.OP_DOMAIN, 1)])
    for mode in ("load", "stream"):
        got = hyperonnx.InferenceSession(model, mode=mode).run(None, {"c": np.array(True)})[0]
        assert got.tobytes() == hyperonnx.decode(seed).tobytes()


def test_load_mode_seed_shared_and_decoded_output_consumed_twice():
    w = (np.random.default_rng(5).standard_normal((16, 16)) * 0.1).astype(np.float32)
    seed = hyperonnx.encode(w, "paper", min_elements=1)
    nodes = [fmt.make_node(seed, "s", "w"), helper.make_node("MatMul", ["x", "w"], ["a"]),
             helper.make_node("MatMul", ["a", "w"], ["y"]), helper.make_node("Identity", ["s"], ["s_out"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 16]),
                               helper.make_tensor_value_info("s_out", TensorProto.UINT8, None)],
                              [numpy_helper.from_array(seed.payload, "s")])
    model = make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(fmt.OP_DOMAIN, 1)])
    x = np.ones((2, 16), np.float32)
    decoded = hyperonnx.decode(seed)
    y, s = hyperonnx.InferenceSession(model, mode="load").run(None, {"x": x})
    np.testing.assert_allclose(y, x @ decoded @ decoded, rtol=1e-5, atol=1e-6)
    assert s.tobytes() == seed.payload.tobytes()  # the seed is still there for its other consumer


def test_session_options_modes():
    so = hyperonnx.session_options("stream")
    assert so.get_session_config_entry("optimization.disable_specified_optimizers") == "ConstantFolding"
    so = hyperonnx.session_options("load")
    with pytest.raises(RuntimeError):
        so.get_session_config_entry("optimization.disable_specified_optimizers")
    with pytest.raises(ValueError):
        hyperonnx.session_options("lazy")


def test_user_session_options_registered_once(mlp):
    compressed, _ = mlp
    so = hyperonnx.session_options("stream")
    so.intra_op_num_threads = 1
    so.add_session_config_entry("optimization.disable_specified_optimizers", "ConstantFolding,EliminateIdentity")
    session = hyperonnx.InferenceSession(compressed, so, mode="stream")
    assert session.run(None, {"x": X})[0].shape == (5, 10)
    entry = so.get_session_config_entry("optimization.disable_specified_optimizers")
    assert entry.split(",").count("ConstantFolding") == 1


def test_bad_mode_and_bad_node_errors(mlp):
    compressed, _ = mlp
    with pytest.raises(ValueError):
        hyperonnx.InferenceSession(compressed, mode="eager")
    broken = onnx.ModelProto()
    broken.CopyFrom(compressed)
    for attribute in broken.graph.node[0].attribute:
        if attribute.name == "bits":
            attribute.i = 30
    for mode in ("load", "stream"):
        with pytest.raises(Exception, match="rule 2: attribute bits"):
            hyperonnx.InferenceSession(broken, mode=mode)


def test_old_onnxruntime_refused(monkeypatch):
    monkeypatch.setattr(ort, "__version__", "1.19.2")
    with pytest.raises(RuntimeError, match=r"onnxruntime >= 1\.20 \(ORT API version 20\)"):
        hyperonnx.session_options()


def embedding_model(rows, row, dtype=np.float32, opset=17, preset="paper"):
    """ids -> Gather(DecodeWeights(seed)) -> y: a compressed embedding table and its decoded copy."""
    table = (np.random.default_rng(rows).standard_normal((rows, row)) * 0.1).astype(dtype)
    seed = hyperonnx.encode(table, preset)
    tensors = [numpy_helper.from_array(np.asarray(seed.payload, np.uint8), "E.seed")]
    if seed.scales is not None:
        tensors.append(numpy_helper.from_array(seed.scales, "E.scales"))
    graph = helper.make_graph(
        [fmt.make_node(seed, "E.seed", "E", "E.scales"), helper.make_node("Gather", ["E", "ids"], ["y"])],
        "embedding", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["n"])],
        [helper.make_tensor_value_info("y", seed.dtype, ["n", row])], tensors)
    model = make_model(graph, opset_imports=[helper.make_opsetid("", opset),
                                             helper.make_opsetid(fmt.OP_DOMAIN, fmt.OP_VERSION)])
    return model, hyperonnx.decode(seed)


@pytest.mark.parametrize("rows, row, dtype, preset", [
    (1001, 6, np.float32, "paper"), (700, 64, np.float16, "paper"), (64, 512, np.float32, "paper"),
    # lattice: blocks on group boundaries (6-element rows: 64 rows a group multiple), odd widths
    (1001, 6, np.float32, LatticeConfig(index_bits=7)), (700, 64, np.float16, LatticeConfig(index_bits=9, group=96)),
    (64, 512, np.float32, "lattice"), (333, 10, np.float32, LatticeConfig(index_bits=5, group=6)),
    # trellis: whole groups per block, the last group partial
    (1001, 6, np.float32, "trellis"), (700, 64, np.float16, hyperonnx.TrellisConfig(index_bits=3, group=24))])
def test_stream_gathers_a_large_table_in_row_blocks(monkeypatch, rows, row, dtype, preset):
    """Stream mode decodes a Gather-only table block by block: same rows, bit for bit, any ids."""
    monkeypatch.setattr(runtime, "STREAM_BLOCK_BYTES", 4096)
    model, table = embedding_model(rows, row, dtype, preset=preset)
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    assert runtime._split_gathered(rewritten) == 1
    blocks = [n for n in rewritten.graph.node if n.op_type == fmt.OP_TYPE]
    assert len(blocks) > 2 and sum(runtime._attribute(n, "shape")[0] for n in blocks) == rows
    onnx.checker.check_model(rewritten)
    ids = np.array([0, rows - 1, -1, -rows, 5, rows // 2, 5, rows - 2], np.int64)
    got = hyperonnx.InferenceSession(model, mode="stream").run(None, {"ids": ids})[0]
    assert got.tobytes() == table[ids].tobytes()
    with pytest.raises(Exception, match="out of data bounds|indices"):
        hyperonnx.InferenceSession(model, mode="stream").run(None, {"ids": np.array([rows], np.int64)})


def test_stream_leaves_small_odd_or_shared_tables_whole(monkeypatch):
    monkeypatch.setattr(runtime, "STREAM_BLOCK_BYTES", 4096)
    for model in (embedding_model(100, 4)[0],        # smaller than two blocks
                  embedding_model(1001, 7)[0],       # rows of an odd length share pairs
                  embedding_model(1001, 6, opset=11)[0],  # Unsqueeze's axes input needs opset 13
                  embedding_model(700, 64, ml_dtypes.bfloat16)[0]):  # no bfloat16 Where in onnxruntime
        assert runtime._split_gathered(model) == 0
    model, table = embedding_model(700, 64, ml_dtypes.bfloat16)  # runs whole
    ids = np.array([0, 5, -1], np.int64)
    session = hyperonnx.InferenceSession(model, mode="stream")
    out = np.zeros((3, 64), np.uint16)
    binding = session.io_binding()
    binding.bind_cpu_input("ids", ids)
    binding.bind_ortvalue_output("y", ort.OrtValue.ortvalue_from_numpy_with_onnx_type(out, TensorProto.BFLOAT16))
    session.run_with_iobinding(binding)
    assert out.tobytes() == table[ids].tobytes()
    model, _ = embedding_model(1001, 6)
    model.graph.output.append(helper.make_tensor_value_info("E", TensorProto.FLOAT, None))  # read twice
    assert runtime._split_gathered(model) == 0


# --- the lattice codec (format version 2): two-input nodes --------------------------------------

@pytest.fixture(scope="module")
def lattice_mlp():
    w = mlp_weights()
    return mlp_model(w, "lattice", compress=True), mlp_model(decoded_weights(w, "lattice"))


def test_lattice_load_and_stream(lattice_mlp):
    compressed, reference = lattice_mlp
    lattice_nodes = [n for n in compressed.graph.node if n.domain == fmt.OP_DOMAIN and len(n.input) == 2]
    assert len(lattice_nodes) == 3  # W0, W1, W2 (the biases are below min_elements)
    expected = plain(reference).run(None, {"x": X})[0]
    session = hyperonnx.InferenceSession(compressed, mode="load")
    assert session.run(None, {"x": X})[0].tobytes() == expected.tobytes()
    session = hyperonnx.InferenceSession(compressed, mode="stream")
    np.testing.assert_allclose(session.run(None, {"x": X})[0], expected, rtol=1e-5, atol=1e-6)


def test_lattice_load_mode_drops_seeds_and_scales(lattice_mlp):
    """Load mode hands onnxruntime the decoded weights; neither input of a decoded node stays."""
    compressed, _ = lattice_mlp
    model = onnx.ModelProto()
    model.CopyFrom(compressed)
    positions, names, _values = runtime.decode_initializers(model)
    assert sorted(names) == ["W0", "W1", "W2"]
    stripped = runtime._strip_decoders(model, positions)
    left = {t.name for t in stripped.graph.initializer if t.data_location != TensorProto.EXTERNAL}
    assert not any(name.endswith((".seed", ".scales")) for name in left), left


def test_lattice_decoded_weights_bitwise():
    """Every dtype and odd/even sizes, both modes, against the reference decoder."""
    rng = np.random.default_rng(6)
    seeds = {}
    for dtype in (np.float32, np.float16, ml_dtypes.bfloat16):
        for shape in ((33, 17), (1001,), (64, 130)):
            seeds[f"w{len(seeds)}"] = hyperonnx.encode((rng.standard_normal(shape) * 0.1).astype(dtype), "lattice")
    model = decode_model(seeds)
    for mode in ("load", "stream"):
        session = hyperonnx.InferenceSession(model, mode=mode)
        binding = session.io_binding()
        for name in seeds:
            binding.bind_output(name, "cpu")
        session.run_with_iobinding(binding)
        for (name, seed), value in zip(seeds.items(), binding.get_outputs()):
            expected = hyperonnx.decode(seed).tobytes()
            got = ctypes.string_at(value.data_ptr(), value.tensor_size_in_bytes())
            assert got == expected, (mode, name)
