"""Fidelity where the output's meaning lives (hyperonnx/graph/fidelity.py): outputs that mix scales
are judged per slice, near-zero parts keep a meaningful error, score-like outputs by decisions;
and end to end, the default compress keeps a detector's class scores."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

import hyperonnx
from hyperonnx.commands._common import session
from hyperonnx.graph import allocate, fidelity
from test_allocate import allocator_feeds


def _judge(reference: np.ndarray) -> fidelity.Judge:
    return fidelity.Judge(["y"], [[reference]])


def _boxes_and_scores(rng, anchors: int = 400, classes: int = 20) -> np.ndarray:
    boxes = rng.uniform(0, 320, (1, 4, anchors))
    scores = 1 / (1 + np.exp(-rng.normal(-6, 2, (1, classes, anchors))))  # mostly near 0, a few high
    return np.concatenate([boxes, scores], axis=1).astype(np.float32)


def test_boxes_beside_scores_are_judged_per_slice():
    """Destroying every class score moves the whole tensor by ~1e-3 of its norm (the boxes
    dominate it): per slice, it is a total loss."""
    rng = np.random.default_rng(0)
    y = _boxes_and_scores(rng)
    judge = _judge(y)
    assert judge.layouts[0].axis == 1 and judge.parts == 24 and judge.layouts[0].scores.sum() == 20
    broken = y.copy()
    broken[:, 4:] = rng.permutation(broken[:, 4:].ravel()).reshape(broken[:, 4:].shape)  # scores shuffled
    whole = np.linalg.norm(broken - y) / np.linalg.norm(y)
    assert whole < 0.05  # the old measure passes this
    errors = judge.errors([[broken]])
    assert np.sqrt(judge.per_output(errors))[0] > 0.5
    axis, index, _ = judge.worst_part(errors, 0)
    assert axis == 1 and index >= 4  # a score row
    assert judge.score_agreement([[broken]])[0] < fidelity.MIN_SCORE_AGREEMENT
    # a small change everywhere passes both
    near = y * (1 + 0.01 * rng.standard_normal(y.shape)).astype(np.float32)
    near[:, 4:] = np.clip(near[:, 4:], 0, 1)
    assert np.sqrt(judge.per_output(judge.errors([[near]])))[0] < 0.05
    assert judge.score_agreement([[near]])[0] >= fidelity.MIN_SCORE_AGREEMENT


def test_heads_of_different_scales_and_alike_slices():
    """Slices 1000x apart in scale are parts; slices alike in scale (tokens of an embedding) are not."""
    rng = np.random.default_rng(1)
    heads = rng.standard_normal((2, 3, 64)) * np.array([1000.0, 1.0, 1.0])[None, :, None]
    judge = _judge(heads)
    assert judge.layouts[0].axis == 1 and judge.parts == 3
    got = heads.copy()
    got[:, 2] += 0.5 * rng.standard_normal((2, 64))  # the small head 50 % off
    assert np.sqrt(judge.errors([[got]]))[2] > 0.4
    tokens = rng.standard_normal((2, 16, 384))
    assert _judge(tokens).layouts[0].axis is None and _judge(tokens).parts == 1


def test_a_scalar_score_near_zero_keeps_a_meaningful_error():
    """A sigmoid of 1e-4 moving to 3e-3 is no change (relative error 29 before the floor); moving
    to 0.9 is a flipped decision."""
    y = np.array([[1e-4]], np.float32)
    judge = _judge(y)
    small = judge.errors([[np.array([[3e-3]], np.float32)]])
    assert np.sqrt(small[0]) < allocate.DEFAULT_MAX_OUTPUT_ERROR
    assert judge.score_agreement([[np.array([[3e-3]], np.float32)]])[0] == 1.0
    assert judge.score_agreement([[np.array([[0.9]], np.float32)]])[0] == 0.0  # a detection out of nothing


def test_a_sparse_score_map_that_loses_its_few_positives_fails():
    """A 64x64 map with 6 hot pixels: losing them changes 0.15 % of the pixels, yet every
    detection is gone."""
    y = np.full((1, 1, 64, 64), 0.01, np.float32)
    y[0, 0, 10:12, 20:23] = 0.95
    judge = _judge(y)
    lost = np.full_like(y, 0.01)
    assert judge.score_agreement([[lost]])[0] == 0.0
    kept = y.copy()
    kept[0, 0, 10, 20] = 0.7
    assert judge.score_agreement([[kept]])[0] == 1.0


def _detector(seed: int = 0) -> "onnx.ModelProto":  # noqa: F821
    """x [1, 16, anchors] -> box head (Conv 1x1 -> 4 rows, x 160 + 160: pixels) and class head
    (Conv 1x1 -> 32 rows -> Sigmoid), concatenated on axis 1: the YOLO output layout."""
    rng = np.random.default_rng(seed)
    wb = (rng.standard_normal((4, 64, 1)) / 8).astype(np.float32)
    wf = (rng.standard_normal((64, 16, 1)) / 4).astype(np.float32)
    wc = (rng.standard_normal((32, 64, 1)) / 8).astype(np.float32)
    bias = np.full(32, -2.0, np.float32)
    nodes = [helper.make_node("Conv", ["x", "wf"], ["f0"]), helper.make_node("Relu", ["f0"], ["f"]),
             helper.make_node("Conv", ["f", "wb"], ["b0"]), helper.make_node("Mul", ["b0", "k"], ["b1"]),
             helper.make_node("Add", ["b1", "k"], ["boxes"]),
             helper.make_node("Conv", ["f", "wc", "bias"], ["c0"]), helper.make_node("Sigmoid", ["c0"], ["scores"]),
             helper.make_node("Concat", ["boxes", "scores"], ["out"], axis=1)]
    graph = helper.make_graph(nodes, "detector", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 256])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 36, 256])],
                              [numpy_helper.from_array(w, n) for w, n in ((wb, "wb"), (wf, "wf"), (wc, "wc"),
                                                                         (bias, "bias"))]
                              + [numpy_helper.from_array(np.float32(160), "k")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_the_default_keeps_a_detectors_class_scores():
    model = _detector()
    compressed, report = hyperonnx.compress(model, min_elements=64, return_report=True)
    (row,) = report.allocation.outputs
    assert report.allocation.met and "slices along axis 1" in row["judged"]
    feeds = allocator_feeds(model)
    ref, _ = session(model, use_library=False)
    got, _ = session(compressed)
    for feed in feeds:
        a, b = ref.run(None, feed)[0][:, 4:], got.run(None, feed)[0][:, 4:]
        for k in range(a.shape[1]):  # every class row within the budget (with its floor)
            floor = a[:, k].size * fidelity.SCORE_FLOOR ** 2
            error = np.linalg.norm(b[:, k] - a[:, k]) / np.sqrt(np.sum(a[:, k] ** 2) + floor)
            assert error <= allocate.DEFAULT_MAX_OUTPUT_ERROR * 1.001
