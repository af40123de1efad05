"""The command line: compress / inspect / decompress / verify / example, and bad input — each
a one-line error on stderr, a non-zero exit, and no output file left behind."""

import json

import numpy as np
import onnx
import pytest

import hyperonnx
from hyperonnx.cli import main

import graph_models


@pytest.fixture
def model_path(tmp_path):
    path = tmp_path / "m.onnx"
    hyperonnx.save(graph_models.nested(), path)
    return path


def error_line(capsys):
    return error_line_of(capsys.readouterr().err)


def error_line_of(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_compress_inspect_decompress_verify(tmp_path, model_path, capsys):
    out = tmp_path / "m.hc.onnx"
    assert main(["compress", str(model_path), "-o", str(out), "--report", str(tmp_path / "r.json")]) == 0
    text = capsys.readouterr().out
    for column in ("name", "shape", "dtype", "orig", "seed", "bits/w", "SQNR dB", "max abs err"):
        assert column in text
    assert "ratio" in text and "Wloop" in text
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["tensors_compressed"] == 5 and report["weight_bytes_after"] < report["weight_bytes_before"] / 4
    onnx.checker.check_model(str(out), full_check=True)

    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "format version 3" in text and "compressed: 4 tensors" in text  # the default: lattice, fused
    assert main(["inspect", "--json", str(model_path)]) == 0
    assert json.loads(capsys.readouterr().out)["totals"]["compressed_tensors"] == 0

    plain = tmp_path / "plain.onnx"
    assert main(["decompress", str(out), "-o", str(plain)]) == 0
    onnx.checker.check_model(str(plain), full_check=True)

    x = np.random.default_rng(0).standard_normal((2, 32)).astype(np.float32)
    np.savez(tmp_path / "in.npz", x=x, flag=np.array(False))
    capsys.readouterr()
    # a 6-layer random net at 4.25 bits/weight: loose bounds here; test_models.py holds real models
    assert main(["verify", str(model_path), str(out), "--inputs", str(tmp_path / "in.npz"), "--no-library",
                 "--tolerance", "0.5", "--min-cosine", "0.9"]) == 0
    text = capsys.readouterr().out
    assert "cosine" in text and "model-local function" in text
    assert main(["verify", str(plain), str(out), "--no-library", "--tolerance", "1e-5"]) == 0
    assert main(["verify", str(model_path), str(out), "--tolerance", "1e-9"]) == 1  # lossy: beyond 1e-9


def test_example(tmp_path, capsys):
    assert main(["example", "--dir", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "verify: ok" in text and "ratio" in text
    assert (tmp_path / "example.hc.onnx").exists()


def _assert_fails(argv, capsys, expect, folder, before):
    assert main(argv) != 0
    line = error_line(capsys)
    assert expect in line, line
    assert sorted(p.name for p in folder.iterdir()) == before  # nothing written, no temporaries


def test_bad_inputs(tmp_path, model_path, capsys):
    before = sorted(p.name for p in tmp_path.iterdir())
    out = str(tmp_path / "out.onnx")
    text = tmp_path / "notes.txt"
    text.write_text("this is not a model\n" * 20)
    before_all = sorted(p.name for p in tmp_path.iterdir())
    _assert_fails(["compress", str(text), "-o", out], capsys, "not", tmp_path, before_all)
    truncated = tmp_path / "cut.onnx"
    truncated.write_bytes(model_path.read_bytes()[: model_path.stat().st_size // 2])
    before_all = sorted(p.name for p in tmp_path.iterdir())
    _assert_fails(["compress", str(truncated), "-o", out], capsys, "cut.onnx", tmp_path, before_all)
    _assert_fails(["compress", str(tmp_path / "missing.onnx"), "-o", out], capsys, "no such file",
                  tmp_path, before_all)
    _assert_fails(["compress", str(model_path), "-o", str(model_path)], capsys, "overwrite the input",
                  tmp_path, before_all)
    _assert_fails(["compress", str(model_path), "-o", str(tmp_path / "no" / "dir" / "x.onnx")], capsys,
                  "cannot write", tmp_path, before_all)
    # a report that cannot be written, or would replace the input or the output: refused before
    # the work, so no output either
    _assert_fails(["compress", str(model_path), "-o", out, "--report", str(tmp_path / "no" / "r.json")], capsys,
                  "folder", tmp_path, before_all)
    _assert_fails(["compress", str(model_path), "-o", out, "--report", str(model_path)], capsys,
                  "overwrite the input", tmp_path, before_all)
    _assert_fails(["compress", str(model_path), "-o", out, "--report", out], capsys, "choose another",
                  tmp_path, before_all)
    _assert_fails(["decompress", str(model_path), "-o", str(model_path)], capsys, "overwrite the input",
                  tmp_path, before_all)
    # missing external-data file
    ext = tmp_path / "ext"
    ext.mkdir()
    onnx.save_model(graph_models.mlp(), str(ext / "e.onnx"), save_as_external_data=True,
                    location="e.bin", size_threshold=0)
    (ext / "e.bin").unlink()
    _assert_fails(["compress", str(ext / "e.onnx"), "-o", str(ext / "o.onnx")], capsys,
                  "missing external-data file e.bin", ext, ["e.onnx"])
    _assert_fails(["inspect", str(text)], capsys, "not", tmp_path, sorted(before_all + ["ext"]))
    assert before  # the fixture's model is still there, unchanged
    onnx.checker.check_model(str(model_path))


def test_compress_says_when_the_model_needs_the_library(tmp_path, capsys):
    """The default (lattice) preset on an opset-13 model: no function fallback, and the CLI says so."""
    src, out = tmp_path / "m13.onnx", tmp_path / "m13.hc.onnx"
    hyperonnx.save(graph_models.mlp(opset=13), src)
    assert main(["compress", str(src), "-o", str(out), "-q"]) == 0
    assert "runs only with the hyperonnx library" in capsys.readouterr().err
    assert not onnx.load(str(out)).functions
    assert main(["compress", str(src), "-o", str(out), "-q", "--preset", "paper"]) == 0
    assert "hyperonnx library" not in capsys.readouterr().err


def test_generated_token_ids_cover_the_embedding_table():
    """verify's generated inputs: an input that indexes a Gather on a weight table (token ids) is drawn
    over the table's rows, through a Cast too; other integer inputs stay in [0, 100)."""
    from onnx import TensorProto, helper, numpy_helper

    from hyperonnx.commands.verify import generate_inputs
    table = numpy_helper.from_array(np.zeros((5000, 4), np.float32), "table")
    nodes = [helper.make_node("Cast", ["ids32"], ["ids"], to=TensorProto.INT64),
             helper.make_node("Gather", ["table", "ids"], ["emb"]),
             helper.make_node("Cast", ["other"], ["other_f"], to=TensorProto.FLOAT)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("ids32", TensorProto.INT32, ["b", "s"]),
                                            helper.make_tensor_value_info("other", TensorProto.INT64, [64])],
                              [helper.make_tensor_value_info("emb", TensorProto.FLOAT, None),
                               helper.make_tensor_value_info("other_f", TensorProto.FLOAT, None)], [table])
    feeds = generate_inputs(helper.make_model(graph), batch=4, sequence=64)
    assert feeds["ids32"].dtype == np.int32 and feeds["ids32"].shape == (4, 64)
    assert 0 <= feeds["ids32"].min() and feeds["ids32"].max() < 5000 and feeds["ids32"].max() >= 100
    assert feeds["other"].max() < 100


def test_inspect_lists_a_broken_node_and_exits_2(tmp_path, capsys):
    """inspect lists every node, marks one that breaks FORMAT.md (here rule 8: a lattice node in a
    version-1 model, and rule 2: a bound of alpha) and exits 2 with one line naming the rule."""
    model = hyperonnx.compress(graph_models.mlp())
    for opset in model.opset_import:
        if opset.domain == "ai.hyperonnx":
            opset.version = 1
    path = tmp_path / "v1.onnx"
    hyperonnx.save(model, path)
    assert main(["inspect", str(path)]) == 2
    captured = capsys.readouterr()
    assert "INVALID" in captured.out and "rule 8" in error_line_of(captured.err)
    assert main(["inspect", "--json", str(path)]) == 2
    info = json.loads(capsys.readouterr().out)
    assert info["totals"]["invalid_nodes"] == info["totals"]["compressed_tensors"] > 0
    model = hyperonnx.compress(graph_models.mlp(), fuse=False)
    node = next(n for n in model.graph.node if n.op_type == "DecodeWeights")
    next(a for a in node.attribute if a.name == "alpha").f = 3e38
    hyperonnx.save(model, path)
    assert main(["inspect", str(path)]) == 2
    assert "rule 2: attribute alpha" in error_line_of(capsys.readouterr().err)

