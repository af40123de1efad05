"""compress.py + decompress.py: what the passes ensure, checked through onnxruntime (no library:
the model-local function runs DecodeWeights; decompress uses the reference decoder)."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import hyperonnx
from hyperonnx import format as fmt
from hyperonnx.graph.walk import scopes

import graph_models

ort = pytest.importorskip("onnxruntime")


def run(model, feeds):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def decode_nodes(model):
    return [(s.path, n) for s in scopes(model) for n in s.graph.node
            if n.op_type == fmt.OP_TYPE and n.domain == fmt.OP_DOMAIN]


def io_signature(model):
    return ([(v.name, v.type.SerializeToString()) for v in model.graph.input],
            [(v.name, v.type.SerializeToString()) for v in model.graph.output])


def test_mlp_checker_io_and_exact_decompression():
    original = graph_models.mlp()
    before = original.SerializeToString()
    model, report = hyperonnx.compress(original, "paper", min_elements=1024, return_report=True, fuse=False)
    assert original.SerializeToString() == before  # the input model is not modified
    onnx.checker.check_model(model, full_check=True)
    assert io_signature(model) == io_signature(original)
    assert {t.name for t in report.compressed} == {"W1", "W2"}  # b2 (32) and the int shape stay
    names = {t.name for t in model.graph.initializer}
    assert {"b2", "shape", "W1.seed", "W2.seed"} == names
    assert any(o.domain == fmt.OP_DOMAIN and o.version == 1 for o in model.opset_import)  # winding only: version 1
    assert [f.name for f in model.functions] == [fmt.OP_TYPE]
    # decompress(compress(m)) holds exactly the reference decoder's output
    seeds = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    plain = hyperonnx.decompress(model)
    onnx.checker.check_model(plain, full_check=True)
    assert not decode_nodes(plain) and not plain.functions
    assert all(o.domain != fmt.OP_DOMAIN for o in plain.opset_import)
    plain_inits = {t.name: numpy_helper.to_array(t) for t in plain.graph.initializer}
    for _path, node in decode_nodes(model):
        expected = hyperonnx.decode(fmt.seed_from_node(node, seeds[node.input[0]]))
        assert np.array_equal(plain_inits[node.output[0]], expected)
    # compressed (function fallback) == decompressed, bit for bit; both close to the original
    x = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    (y_ref,), (y_c,), (y_p,) = run(original, {"x": x}), run(model, {"x": x}), run(plain, {"x": x})
    assert np.array_equal(y_c, y_p)
    cos = np.dot(y_ref.ravel(), y_c.ravel()) / np.linalg.norm(y_ref) / np.linalg.norm(y_c)
    assert cos > 0.99 and np.abs(y_ref - y_c).max() <= 0.1 * np.abs(y_ref).max()


def test_compressing_twice_changes_nothing():
    once = hyperonnx.compress(graph_models.nested())
    twice = hyperonnx.compress(once)
    assert once.SerializeToString() == twice.SerializeToString()


def test_no_function_and_selection_options():
    model, report = hyperonnx.compress(graph_models.mlp(), function_fallback=False, exclude=["W2"],
                                       return_report=True)
    assert not model.functions
    assert [t.name for t in report.compressed] == ["W1"]
    model, report = hyperonnx.compress(graph_models.mlp(), include=["W*", "b?"], min_elements=16, return_report=True)
    assert {t.name for t in report.compressed} == {"W1", "W2", "b2"}
    model, report = hyperonnx.compress(graph_models.mlp(), min_elements=10**6, return_report=True)
    assert not report.tensors and not model.functions
    assert all(o.domain != fmt.OP_DOMAIN for o in model.opset_import)


@pytest.mark.parametrize("dtype", [np.float16, "bfloat16"])
def test_half_precision_models(dtype):
    original = graph_models.mlp(dtype=np.dtype(dtype))
    model, report = hyperonnx.compress(original, return_report=True)
    onnx.checker.check_model(model, full_check=True)
    assert {t.dtype for t in report.compressed} == {np.dtype(dtype).name}
    plain = hyperonnx.decompress(model)
    if np.dtype(dtype) == np.float16:  # onnxruntime has no bfloat16 MatMul on CPU
        x = np.random.default_rng(0).standard_normal((2, 64)).astype(np.float16)
        assert np.array_equal(run(model, {"x": x})[0], run(plain, {"x": x})[0])


@pytest.mark.parametrize("opset", [13, 18])
def test_function_follows_model_opset(opset):
    model = hyperonnx.compress(graph_models.mlp(opset=opset), "paper")  # lattice bodies need opset 17
    assert model.functions[0].opset_import[0].version == opset
    onnx.checker.check_model(model, full_check=True)
    x = np.ones((1, 64), np.float32)
    # the fused function's product against the stock op on the decoded weight: float32 summation order
    want = run(hyperonnx.decompress(model), {"x": x})[0]
    np.testing.assert_allclose(run(model, {"x": x})[0], want, rtol=1e-5, atol=1e-6 * np.abs(want).max())


def test_lattice_model_runs_without_the_library():
    """A lattice-compressed model carries the function (version 2), passes the full checker and
    runs in plain onnxruntime exactly as its decompressed twin; --no-function leaves it out."""
    model = hyperonnx.compress(graph_models.mlp(opset=18), "lattice", min_elements=1024, fuse=False)
    assert [(o.domain, o.version) for o in model.opset_import if o.domain == fmt.OP_DOMAIN] == [(fmt.OP_DOMAIN, 2)]
    assert [f.name for f in model.functions] == [fmt.OP_TYPE] and model.ir_version >= 9
    onnx.checker.check_model(model, full_check=True)
    x = np.random.default_rng(1).standard_normal((3, 64)).astype(np.float32)
    assert np.array_equal(run(model, {"x": x})[0], run(hyperonnx.decompress(model), {"x": x})[0])
    assert not hyperonnx.compress(graph_models.mlp(opset=18), "lattice", function_fallback=False).functions


def test_mixed_winding_and_lattice_model():
    """Winding seeds from a first pass, lattice seeds from a second: one function decodes both."""
    first = hyperonnx.compress(graph_models.mlp(opset=17), "paper", exclude=["W2"], fuse=False)
    mixed = hyperonnx.compress(first, "lattice", min_elements=1024, fuse=False)
    codecs = sorted(helper.get_attribute_value(a).decode() for _p, n in decode_nodes(mixed)
                    for a in n.attribute if a.name == "codec")
    assert codecs == ["lattice", "winding"]
    assert len(mixed.functions) == 1 and list(mixed.functions[0].input) == ["seed", "scales"]
    onnx.checker.check_model(mixed, full_check=True)
    x = np.random.default_rng(2).standard_normal((2, 64)).astype(np.float32)
    assert np.array_equal(run(mixed, {"x": x})[0], run(hyperonnx.decompress(mixed), {"x": x})[0])


def test_lattice_below_opset_17_has_no_function():
    model = hyperonnx.compress(graph_models.mlp(opset=16), "lattice", min_elements=1024, fuse=False)
    assert decode_nodes(model) and not model.functions
    onnx.checker.check_model(model, full_check=True)


def test_nested_subgraphs_constants_and_shared_weights():
    original = graph_models.nested()
    model, report = hyperonnx.compress(original, "paper", return_report=True, fuse=False)
    onnx.checker.check_model(model, full_check=True)
    assert io_signature(model) == io_signature(original)
    where = {node.output[0]: path for path, node in decode_nodes(model)}
    # every weight decoded in the graph where it lived; W_copy shares W's seed (an Identity)
    assert where == {"W": "", "Wc": "", "Wthen": "If/then_branch",
                     "Wloop": "If/else_branch/Loop/body"}
    shared = next(t for t in report.tensors if t.name == "W_copy")
    assert shared.reason == "shared with W" and shared.seed_bytes == 0
    main = {n.output[0]: (i, n) for i, n in enumerate(model.graph.node)}
    assert main["W_copy"][1].op_type == "Identity" and main["W_copy"][1].input[0] == "W"
    assert main["W"][0] < main["W_copy"][0] < main["b"][0]
    assert not any(t.data_type == TensorProto.FLOAT for s in scopes(model) for t in s.graph.initializer)
    # a Constant-born weight is decoded where its Constant was, before its consumer
    assert main["Wc"][0] < main["c"][0]
    plain = hyperonnx.decompress(model)
    onnx.checker.check_model(plain, full_check=True)
    # decompressed: no seed left in any graph, every weight float32 where it lived
    stored = {(s.path, t.name): t.data_type for s in scopes(plain) for t in s.graph.initializer}
    assert TensorProto.UINT8 not in stored.values(), stored
    assert stored[("If/then_branch", "Wthen")] == stored[("If/else_branch/Loop/body", "Wloop")] == TensorProto.FLOAT
    x = np.random.default_rng(1).standard_normal((3, 32)).astype(np.float32)
    for flag in (True, False):
        feeds = {"x": x, "flag": np.array(flag)}
        (ref,), (got,), (dec,) = run(original, feeds), run(model, feeds), run(plain, feeds)
        np.testing.assert_allclose(got, dec, rtol=1e-6, atol=1e-6)
        assert np.abs(ref - got).max() <= 0.2 * np.abs(ref).max()


def test_external_data_models(tmp_path):
    original = graph_models.mlp()
    path = tmp_path / "ext.onnx"
    onnx.save_model(original, str(path), save_as_external_data=True, location="ext.weights",
                    size_threshold=0)
    model = hyperonnx.compress(path, fuse=False)
    assert len(decode_nodes(model)) == 2
    out = hyperonnx.save(model, tmp_path / "out.onnx", external_data=True)
    reloaded = hyperonnx.load(out)
    assert (tmp_path / "out.onnx.data").exists()
    assert hyperonnx.decompress(reloaded).graph.initializer
    x = np.ones((2, 64), np.float32)
    assert np.array_equal(run(reloaded, {"x": x})[0], run(model, {"x": x})[0])
    (tmp_path / "ext.weights").unlink()
    with pytest.raises(hyperonnx.ModelIOError, match="missing external-data file ext.weights"):
        hyperonnx.compress(path)


def test_save_is_atomic_and_refuses_its_input(tmp_path):
    src = tmp_path / "m.onnx"
    hyperonnx.save(graph_models.mlp(), src)
    before = src.read_bytes()
    model = hyperonnx.compress(src)
    with pytest.raises(hyperonnx.ModelIOError, match="overwrite the input"):
        hyperonnx.save(model, src, source=src)
    assert src.read_bytes() == before
    with pytest.raises(hyperonnx.ModelIOError, match="does not exist"):
        hyperonnx.save(model, tmp_path / "nope" / "m.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no temporary left


def test_large_models_go_to_external_data(tmp_path, monkeypatch):
    from hyperonnx.graph import model_io
    monkeypatch.setattr(model_io, "EXTERNAL_DATA_THRESHOLD", 1000)  # pretend 2 GB is 1 kB
    model = graph_models.mlp()
    hyperonnx.save(model, tmp_path / "big.onnx")
    assert (tmp_path / "big.onnx.data").exists()
    assert model.graph.initializer[0].raw_data  # the caller's model keeps its data in memory
    assert np.array_equal(numpy_helper.to_array(hyperonnx.load(tmp_path / "big.onnx").graph.initializer[0]),
                          numpy_helper.to_array(model.graph.initializer[0]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.onnx", "big.onnx.data"]


def test_weights_listed_as_graph_inputs_are_compressed():
    """torch.onnx's keep_initializers_as_inputs=True (IR < 4 style): every weight is also a graph
    input. They are weights: compressed, no longer inputs, and the model runs without feeding them."""
    import onnxruntime as ort
    model = graph_models.mlp(opset=13)
    for t in model.graph.initializer:
        model.graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    model.ir_version = 3
    out, report = hyperonnx.compress(model, return_report=True, min_elements=64)
    assert report.compressed and any("also graph inputs" in n for n in report.notes)
    onnx.checker.check_model(out)
    names = {v.name for v in out.graph.input}
    assert not names & {t.name for t in report.compressed}
    session = hyperonnx.InferenceSession(out)
    x = np.random.default_rng(0).standard_normal((2, 64)).astype(np.float32)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = session.run(None, {"x": x})[0]
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 0.2
