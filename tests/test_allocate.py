"""Output-aware allocation (hyperonnx/graph/allocate.py) and sample inputs (graph/samples.py):
the default meets its output budget as measured independently, bits follow sensitivity, a size
target holds, models that cannot run fall back with one line, bad --inputs are refused."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import graph_models
import hyperonnx
from hyperonnx.cli import main
from hyperonnx.commands._common import session
from hyperonnx.graph import allocate, samples


def _relative_error(original, compressed, feeds) -> list[float]:
    """Relative error of each output, measured here with the library (not with the allocator's probe)."""
    ref, _ = session(original, use_library=False)
    got, lib = session(compressed)
    assert lib is not None
    errors = []
    for i, _ in enumerate(ref.get_outputs()):
        a = np.concatenate([ref.run(None, f)[i].ravel() for f in feeds]).astype(np.float64)
        b = np.concatenate([got.run(None, f)[i].ravel() for f in feeds]).astype(np.float64)
        errors.append(float(np.linalg.norm(a - b) / np.linalg.norm(a)))
    return errors


def allocator_feeds(model) -> list[dict]:
    """The feeds the allocator generates for `model` (samples.plausible, run by plain onnxruntime)."""
    ref, _ = session(model, use_library=False)
    return samples.plausible(model, allocate.DEFAULT_SAMPLES, lambda feed: ref.run(None, feed))[0]


def sensitive_model(seed: int = 0) -> onnx.ModelProto:
    """x -> MatMul A (64x256) -> Relu -> MatMul B (256x64) -> Mul by 1 -> + (x MatMul C) * 40:
    C's path is amplified 40x, so C's error costs the output far more than A's or B's per weight."""
    rng = np.random.default_rng(seed)
    A = graph_models.weights(rng, 64, 256, scale=0.1)
    B = graph_models.weights(rng, 256, 64, scale=0.1)
    C = graph_models.weights(rng, 64, 64, scale=0.1)
    nodes = [helper.make_node("MatMul", ["x", "A"], ["h"]), helper.make_node("Relu", ["h"], ["hr"]),
             helper.make_node("MatMul", ["hr", "B"], ["y1"]), helper.make_node("MatMul", ["x", "C"], ["c"]),
             helper.make_node("Mul", ["c", "gain"], ["cg"]), helper.make_node("Add", ["y1", "cg"], ["y"])]
    graph = helper.make_graph(nodes, "sensitive", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 64])],
                              [numpy_helper.from_array(A, "A"), numpy_helper.from_array(B, "B"),
                               numpy_helper.from_array(C, "C"), numpy_helper.from_array(np.float32(40), "gain")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_default_meets_the_output_budget_measured_independently():
    model = sensitive_model()
    compressed, report = hyperonnx.compress(model, return_report=True)
    assert report.allocation is not None and report.allocation.met
    feeds = allocator_feeds(model)
    (error,) = _relative_error(model, compressed, feeds)
    assert error <= allocate.DEFAULT_MAX_OUTPUT_ERROR
    assert report.allocation.outputs[0]["measured"] == pytest.approx(error, rel=1e-3)
    # and a tighter budget costs bits and gives a smaller error
    tight, tight_report = hyperonnx.compress(model, max_output_error=0.01, return_report=True)
    (tight_error,) = _relative_error(model, tight, feeds)
    assert tight_error <= 0.01 < error
    weights = lambda r: sum(t.seed_bytes for t in r.tensors)  # noqa: E731
    assert weights(tight_report) > weights(report)


@pytest.mark.parametrize("budget", [0.1, 0.02])
def test_trellis_meets_the_output_budget(budget):
    """The trellis codec through the same allocation: its own k per tensor (C, amplified 40x, the
    most), the budget met as measured independently, fused and still runnable without the library."""
    model = sensitive_model()
    compressed, report = hyperonnx.compress(model, "trellis", max_output_error=budget, return_report=True)
    assert report.allocation is not None and report.allocation.met
    (error,) = _relative_error(model, compressed, allocator_feeds(model))
    assert error <= budget
    k = {t.name: t.attrs.get("bits") for t in report.tensors if t.compressed}
    assert all("window" in t.attrs for t in report.tensors if t.compressed)  # trellis seeds
    assert k.get("C", 99) >= max(k.get("A", 0), k.get("B", 0))
    assert {f.name for f in compressed.functions} == {"DecodeWeights", "DecodeMatMul"}


def test_one_class_decisions_do_not_vouch_for_probabilities():
    """A Softmax output whose sample decisions are all one class (a recogniser's blank on
    generated images) is judged by its relative error as well: its decisions say nothing."""
    rng = np.random.default_rng(0)
    W = graph_models.weights(rng, 64, 16, scale=0.1)
    bias = np.zeros(16, np.float32)
    bias[0] = 30.0  # class 0 always wins by far
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Add", ["h", "bias"], ["z"]),
             helper.make_node("Softmax", ["z"], ["prob"], axis=-1)]
    graph = helper.make_graph(nodes, "blank", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 64])],
                              [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["b", 16])],
                              [numpy_helper.from_array(W, "W"), numpy_helper.from_array(bias, "bias")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    _, report = hyperonnx.compress(model, return_report=True, fuse=False)
    (row,) = report.allocation.outputs
    assert row["argmax_agreement"] == 1.0 and row["budget"] == allocate.DEFAULT_MAX_OUTPUT_ERROR
    assert any("decide 1 class only" in note for note in report.notes)


def test_bits_follow_output_sensitivity():
    """C is amplified 40x: it gets more bits per weight than A and B, unlike the weight planner."""
    _, report = hyperonnx.compress(sensitive_model(), bits=4.25, return_report=True)
    width = {t.name: t.bits_per_weight for t in report.tensors}
    assert width["C"] > width["A"] and width["C"] > width["B"]
    _, by_weights = hyperonnx.compress(sensitive_model(), bits=4.25, allocation="weights", return_report=True)
    assert {t.name: t.bits_per_weight for t in by_weights.tensors}["C"] < width["C"]
    # the size target holds: average bits/weight over the compressed tensors
    size = sum(t.orig_bytes // 4 for t in report.compressed)
    assert 8 * sum(t.seed_bytes for t in report.compressed) <= 4.25 * size
    # the output-aware choice has the smaller output error at the same size
    feeds = samples.generate(sensitive_model(), 4)
    out = _relative_error(sensitive_model(), hyperonnx.compress(sensitive_model(), bits=4.25), feeds)[0]
    weight = _relative_error(sensitive_model(), hyperonnx.compress(sensitive_model(), bits=4.25,
                                                                   allocation="weights"), feeds)[0]
    assert out < weight


def test_prediction_tracks_the_measurement():
    """Each tensor's predicted share and the measured whole agree within a factor of 2 (the
    errors add: the sum of the shares predicts the total)."""
    _, report = hyperonnx.compress(sensitive_model(), bits=5, return_report=True)
    shares = [t.predicted_output_error for t in report.compressed]
    assert all(s is not None and s > 0 for s in shares)
    predicted = float(np.sqrt(np.sum(np.square(shares))))
    measured = report.allocation.outputs[0]["measured"]
    assert 0.5 < predicted / measured < 2.0


def test_report_json_has_allocation_and_per_tensor_fields(tmp_path, capsys):
    src, out, rep = tmp_path / "m.onnx", tmp_path / "m.hc.onnx", tmp_path / "r.json"
    onnx.save(sensitive_model(), src)
    assert main(["compress", str(src), "-o", str(out), "--report", str(rep), "-q"]) == 0
    line = capsys.readouterr().out.strip().splitlines()
    assert len(line) == 1 and line[0].startswith("outputs on 4 generated feeds: y rel err") and "within" in line[0]
    data = json.loads(rep.read_text())
    assert data["allocation"]["met"] and data["target"].startswith("max output error")
    for t in data["tensors"]:
        if t["compressed"]:
            assert t["sensitivity"] > 0 and t["predicted_output_error"] > 0


def test_user_inputs_are_used_and_checked(tmp_path, capsys):
    src, out = tmp_path / "m.onnx", tmp_path / "m.hc.onnx"
    onnx.save(sensitive_model(), src)
    folder = tmp_path / "feeds"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        np.savez(folder / f"{i}.npz", x=rng.standard_normal((2, 64)).astype(np.float32))
    assert main(["compress", str(src), "-o", str(out), "-q", "--inputs", str(folder)]) == 0
    assert "outputs on 3 given feeds" in capsys.readouterr().out
    out.unlink()
    bad = {"name": {"z": np.zeros((2, 64), np.float32)}, "dtype": {"x": np.zeros((2, 64), np.float64)},
           "shape": {"x": np.zeros((2, 63), np.float32)}}
    for what, arrays in bad.items():
        path = tmp_path / f"{what}.npz"
        np.savez(path, **arrays)
        assert main(["compress", str(src), "-o", str(out), "-q", "--inputs", str(path)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "'x'" in err[0] and "[?, 64] float32" in err[0], err
        assert not out.exists()


def test_a_model_that_cannot_run_falls_back_with_one_line(tmp_path, capsys):
    """An unknown custom op: the weight planner, one note, no traceback, a valid model."""
    model = graph_models.mlp()
    model.graph.node.append(helper.make_node("Mystery", ["y"], ["z"], domain="com.example"))
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("z", TensorProto.FLOAT, None))
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    src, out = tmp_path / "m.onnx", tmp_path / "m.hc.onnx"
    onnx.save(model, src)
    assert main(["compress", str(src), "-o", str(out), "-q"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("note: output-aware allocation skipped (onnxruntime cannot load")
    assert "weight SQNR 40 dB" in err[0]
    assert out.exists()


def test_tensors_the_inputs_never_reach_are_not_starved():
    """An If whose else-branch (never taken on the sample inputs) holds a weight: that weight is
    not measured, so it gets the fallback width (40 dB of weight SQNR), not the least width."""
    rng = np.random.default_rng(0)
    W = graph_models.weights(rng, 64, 64, scale=0.1)
    V = graph_models.weights(rng, 64, 64, scale=0.1)
    branch = lambda name, w: helper.make_graph(  # noqa: E731
        [helper.make_node("MatMul", ["x", w], [name])], name, [],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None)],
        [numpy_helper.from_array(W if w == "W" else V, w)])
    graph = helper.make_graph(
        [helper.make_node("If", ["flag"], ["y"], then_branch=branch("t", "W"), else_branch=branch("e", "V"))],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 64]),
              helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    feeds = [{"x": rng.standard_normal((2, 64)).astype(np.float32), "flag": np.array(True)}]
    _, report = hyperonnx.compress(model, inputs=feeds, return_report=True)
    by_name = {t.name: t for t in report.tensors}
    assert by_name["V"].sensitivity is None and by_name["W"].sensitivity > 0
    assert by_name["V"].compressed and not by_name["V"].reason
    assert by_name["V"].sqnr_db >= allocate.FALLBACK_SQNR - 1.5  # interpolated between measured widths
    assert any("not reached by the sample inputs" in n for n in report.notes)


def test_generated_inputs_look_like_data():
    """Images with dark strokes on a bright background in [-1, 1]; audio with speech-like energy;
    state inputs zeros; a sample rate of 16 kHz; all deterministic."""
    inputs = [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 3, "h", "w"]),
              helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["n", "t"]),
              helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "n", 8]),
              helper.make_tensor_value_info("sr", TensorProto.INT64, [])]
    outputs = [helper.make_tensor_value_info(v.name + "_o", v.type.tensor_type.elem_type, None) for v in inputs]
    graph = helper.make_graph([helper.make_node("Identity", [v.name], [v.name + "_o"]) for v in inputs], "g",
                              inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    feed = samples.generate_inputs(model, seed=3, batch=1)
    image = feed["image"]
    assert image.shape == (1, 3) + samples.IMAGE_SIZES[0] and -1 <= image.min() < 0 < image.max() <= 1
    assert image.min() < -0.5 < 0.5 < image.max()  # strokes on a background of another brightness
    assert feed["audio"].shape == (1, samples.AUDIO_SAMPLES) and np.abs(feed["audio"]).max() < 1
    assert not feed["state"].any() and feed["sr"] == 16000
    again = samples.generate_inputs(model, seed=3, batch=1)
    assert all(np.array_equal(feed[k], again[k]) for k in feed)


def test_open_image_sizes_are_tried_until_the_model_runs():
    """A model that only takes 64-high images: generation tries the sizes in turn."""
    def run(feed):
        if feed["x"].shape[2] != 64:
            raise RuntimeError("wrong height")
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    feeds = samples.generate(model, 2, run)
    assert len(feeds) == 2 and all(f["x"].shape[2] == 64 for f in feeds)


def test_bad_targets_are_refused_before_any_work(tmp_path, capsys):
    src, out = tmp_path / "m.onnx", tmp_path / "m.hc.onnx"
    onnx.save(sensitive_model(), src)
    for argv, expect in ((["--max-output-error", "0"], "max_output_error must be a positive"),
                         (["--max-output-error", "0.1", "--preset", "paper"], "needs a lattice or trellis preset"),
                         (["--inputs", str(tmp_path / "missing.npz")], "no such file or folder")):
        assert main(["compress", str(src), "-o", str(out), "-q", *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expect in err[0], err
        assert not out.exists()


def test_a_branch_the_feeds_do_not_all_take_is_held_at_the_conservative_rule():
    """A verifier behind If(max score >= 0): some feeds take it, some do not (the wake-word chain):
    its weight is measured only where the scores happen to pass, so it is held at 40 dB."""
    rng = np.random.default_rng(0)
    W = graph_models.weights(rng, 64, 64, scale=0.1)
    V = graph_models.weights(rng, 64, 64, scale=0.1)
    then = helper.make_graph([helper.make_node("MatMul", ["h", "V"], ["t"])], "then", [],
                             [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)],
                             [numpy_helper.from_array(V, "V")])
    other = helper.make_graph([helper.make_node("Identity", ["h"], ["e"])], "else", [],
                              [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)])
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("ReduceMax", ["x"], ["m"], keepdims=0),
             helper.make_node("Greater", ["m", "zero"], ["c"]),
             helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(W, "W"), numpy_helper.from_array(np.float32(0), "zero")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    feeds = [{"x": (s * np.abs(rng.standard_normal((1, 64)))).astype(np.float32)} for s in (1, -1, 1, -1)]
    _, report = hyperonnx.compress(model, inputs=feeds, return_report=True)
    by_name = {t.name: t for t in report.tensors}
    assert by_name["V"].rule == "rare If branch" and by_name["V"].sqnr_db >= allocate.FALLBACK_SQNR - 1.5
    assert by_name["W"].rule in ("outputs", "floor")
    assert any("do not all take" in n for n in report.notes)


def test_no_tensor_goes_below_the_floor():
    """A tensor whose measured response is nil (its path is multiplied by 1e-6) is still held at
    the weight SQNR floor: a measurement on a few feeds cannot lower it."""
    rng = np.random.default_rng(0)
    A = graph_models.weights(rng, 64, 64, scale=0.1)
    B = graph_models.weights(rng, 64, 64, scale=0.1)
    nodes = [helper.make_node("MatMul", ["x", "A"], ["a"]), helper.make_node("MatMul", ["x", "B"], ["b"]),
             helper.make_node("Mul", ["b", "tiny"], ["bt"]), helper.make_node("Add", ["a", "bt"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 64])],
                              [numpy_helper.from_array(A, "A"), numpy_helper.from_array(B, "B"),
                               numpy_helper.from_array(np.float32(1e-6), "tiny")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    _, report = hyperonnx.compress(model, return_report=True)
    b = {t.name: t for t in report.tensors}["B"]
    assert b.rule == "floor" and b.sqnr_db >= allocate.FLOOR_SQNR - 1.0
    assert report.allocation.rules.get("floor", 0) >= 1


@pytest.mark.parametrize("preset", ["lattice", "trellis"])
def test_the_weight_planner_holds_a_floor_per_tensor(preset):
    """A total SQNR target is energy-weighted: a tensor 1000x smaller than the rest would get the
    least width. Each tensor keeps at least target - TARGET_SLACK dB."""
    from hyperonnx import codec
    from hyperonnx.codec import rates
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(8192).astype(np.float32), 1e-3 * rng.standard_normal(4096).astype(np.float32)]
    configs = codec.plan(arrays, preset, target_sqnr=30)
    for array, config in zip(arrays, configs):
        decoded = codec.decode(codec.encode(array, config))
        sqnr = 10 * np.log10(np.sum(array.astype(np.float64) ** 2) / np.sum((decoded - array.astype(np.float64)) ** 2))
        assert sqnr >= max(rates.MIN_TENSOR_SQNR, 30 - rates.TARGET_SLACK) - 1.0


def test_every_mode_prints_a_measured_fidelity_line(tmp_path, capsys):
    """A preset without a target gets the default budget; a weight rule, a fixed codec and a size
    target are measured on the outputs, and a size that breaks them says WARNING, never "within"."""
    src, out = tmp_path / "m.onnx", tmp_path / "m.hc.onnx"
    onnx.save(sensitive_model(), src)
    expected = {("--preset", "trellis"): "(within max_output_error 0.1;",
                ("--preset", "paper"): "(at preset paper;",
                ("--target-sqnr", "40"): "(at weight SQNR 40 dB; within the default max_output_error 0.1;",
                ("--bits", "2.2"): "WARNING: misses the default max_output_error 0.1"}
    for argv, text in expected.items():
        assert main(["compress", str(src), "-o", str(out), "-q", *argv]) == 0
        lines = capsys.readouterr().out.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("outputs on 4 generated feeds") and text in lines[0], lines
        out.unlink()
    _, report = hyperonnx.compress(sensitive_model(), "trellis", return_report=True)
    assert report.allocation.target == "max_output_error 0.1" and report.allocation.met


def test_a_log_gets_progress_lines_for_each_stage():
    import io
    from hyperonnx.commands._common import Progress
    stream = io.StringIO()
    progress = Progress("compressing", stream=stream)
    progress.start -= 20  # a long run, its last line 20 s ago
    progress.last -= 20
    progress(3, 10, "a", "measured")
    progress(10, 10, "", "measured")
    progress(10, 10, "")
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("compressing: 3/10 tensors measured") and "10/10 tensors measured" in lines[1]
    assert lines[2].startswith("compressing: 10/10 tensors,")


def test_only_cheap_models_get_larger_feeds():
    """Weights in Constant nodes (paddle exports) count like initializers: a model of 1M weights on
    2048-wide inputs keeps its feed; a tiny one gets up to MAX_CHEAP_BATCH samples."""
    rng = np.random.default_rng(0)
    big = rng.standard_normal((2048, 512)).astype(np.float32)
    for as_constant in (False, True):
        nodes = [helper.make_node("MatMul", ["x", "W"], ["y"])]
        inits = [numpy_helper.from_array(big, "W")]
        if as_constant:
            nodes.insert(0, helper.make_node("Constant", [], ["W"], value=numpy_helper.from_array(big)))
            inits = []
        graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2048])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 512])], inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        assert samples._cheap_batch(model, samples.generate(model, 1)[0]) is None
    assert samples._cheap_batch(sensitive_model(), samples.generate(sensitive_model(), 1)[0]) == samples.MAX_CHEAP_BATCH
