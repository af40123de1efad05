"""The real-model corpus' machinery (hyperonnx.bench.zoo), without downloading anything: the
detection matcher and decoders, the task checks on synthetic outputs, the feature extractors."""

import numpy as np
import pytest

from hyperonnx.bench import zoo
from hyperonnx.bench import zoo_data as zd


def test_iou_and_greedy_matching():
    a = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float)
    b = np.array([[0, 0, 10, 5], [21, 21, 31, 31], [100, 100, 110, 110]], float)
    m = zd.iou_matrix(a, b)
    assert m.shape == (2, 3)
    assert m[0, 0] == pytest.approx(0.5)
    assert m[1, 1] == pytest.approx(81 / 119)
    assert zd.match_count((a, [0, 0]), (b, [0, 0, 0]), iou=0.5) == 2
    assert zd.match_count((a, [0, 0]), (b, [1, 0, 0]), iou=0.5) == 1  # classes must agree
    assert zd.match_count((a, [0, 0]), (b, [0, 0, 0]), iou=0.7) == 0
    # one-to-one: two boxes on one original box match once
    assert zd.match_count((a[:1], [0]), (np.array([[0, 0, 10, 10], [0, 0, 10, 9]]), [0, 0])) == 1


def test_detections_agree_both_ways_and_vacuous():
    boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], float)
    ref = [(boxes, np.array([0, 1, 2]))] * 4  # 12 boxes
    same = zd.detections_agree(ref, ref)
    assert same[0] == 1.0 and same[1]
    extra = [(np.concatenate([boxes, [[60, 60, 70, 70]]]), np.array([0, 1, 2, 0]))] * 4
    score, kept, text = zd.detections_agree(ref, extra)  # recall 1, precision 12/16
    assert score == pytest.approx(0.75) and not kept and "12/16" in text
    missing = [(boxes[:2], np.array([0, 1]))] * 4
    score, kept, _ = zd.detections_agree(ref, missing)  # recall 8/12
    assert score == pytest.approx(8 / 12) and not kept
    empty = [(np.zeros((0, 4)), np.zeros(0))] * 2
    score, kept, text = zd.detections_agree(empty, empty)
    assert np.isnan(score) and not kept and "VACUOUS" in text


def test_yolov8_decoding_with_nms():
    # 4 + 3 classes, 5 anchors: two overlapping boxes of class 1, one of class 2, two below threshold
    out = np.zeros((1, 7, 5), np.float32)
    out[0, :4, 0] = [50, 50, 20, 20]
    out[0, :4, 1] = [51, 50, 20, 20]
    out[0, :4, 2] = [150, 150, 40, 30]
    out[0, :4, 3:] = 10
    out[0, 5, 0], out[0, 5, 1], out[0, 6, 2] = 0.9, 0.8, 0.6
    out[0, 4, 3] = 0.1
    boxes, classes, scores = zd.decode_yolov8(out, conf=0.25, iou=0.45)
    assert classes.tolist() == [1, 2]
    np.testing.assert_allclose(boxes[0], [40, 40, 60, 60])
    np.testing.assert_allclose(scores, [0.9, 0.6], rtol=1e-6)


def test_yolox_decoding_grid_and_strides():
    size = (64, 64)  # strides 8, 16, 32: 64 + 16 + 4 anchors
    out = np.full((84, 6), -20.0, np.float32)
    out[:, 4:] = 0.0
    out[:, 2:4] = 0.0
    k = 3 * 8 + 5  # stride 8, row 3, column 5
    out[k] = [0.5, 0.5, np.log(2.0), np.log(3.0), 0.9, 0.8]
    boxes, classes, scores = zd.decode_yolox(out, size, conf=0.1)
    assert len(boxes) == 1 and classes.tolist() == [0]
    cx, cy, w, h = (5 + 0.5) * 8, (3 + 0.5) * 8, 2 * 8, 3 * 8
    np.testing.assert_allclose(boxes[0], [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], rtol=1e-6)
    assert scores[0] == pytest.approx(0.72)


def test_picodet_decoding_distribution_boxes():
    size, strides = (32, 32), (8, 16, 32, 64)
    scores = [np.zeros((int(np.ceil(32 / s)) ** 2, 2), np.float32) for s in strides]
    regs = [np.full((len(sc), 4 * 8), -30.0, np.float32) for sc in scores]
    scores[0][5, 1] = 0.9  # stride 8, row 1, column 1: centre (12, 12)
    regs[0][5].reshape(4, 8)[:, 1] = 30.0  # each distance 1 bin = 8 pixels
    boxes, classes, conf = zd.decode_picodet(scores, regs, size, conf=0.5, strides=strides)
    assert classes.tolist() == [1]
    np.testing.assert_allclose(boxes[0], [4, 4, 20, 20], atol=1e-4)


def test_ctc_strings_decisions_cosine():
    assert zd.ctc_greedy(np.array([3, 3, 0, 3, 1, 1, 0, 0, 2]), "_abc", 0) == "ccab"
    score, kept, text = zd.strings_agree(["ab", "cd", "ef"], ["ab", "cd", "eF"], truth=["ab", "cd", "ef"])
    assert score == pytest.approx(2 / 3) and not kept and "3/3 right, this one 2" in text
    score, kept, _ = zd.decisions_agree(np.arange(40) % 4, np.r_[np.arange(39) % 4, 0])
    assert score == pytest.approx(39 / 40) and kept
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(20, 16))
    assert zd.cosine_agree(ref, ref * 3)[1]
    noisy = ref + rng.normal(size=ref.shape) * 0.5
    mean, kept, _ = zd.cosine_agree(ref, noisy)
    assert mean < 0.99 and not kept


def test_entry_checks_on_synthetic_outputs():
    """The corpus' own checks, fed outputs of the right shape (no model, no download)."""
    entries = {e.name: e for e in zoo.entries()}
    assert len(entries) >= 8
    e = entries["nudenet-320n"]
    out = np.zeros((1, 22, 2100), np.float32)
    out[0, :4, 0] = [100, 100, 40, 40]
    out[0, 5, 0] = 0.9
    ref = [{"output0": out}] * 3
    moved = out.copy()
    moved[0, 0, 0] += 30  # shifted: IoU 0.14
    assert e.compare(e, ref, ref)[1]
    assert not e.compare(e, ref, [{"output0": moved}] * 3)[1]
    e = entries["captcha-crnn"]
    logits = np.full((20, 1, 37), -5.0, np.float32)
    logits[:, 0, 36] = 5.0
    logits[2:4, 0, 10] = 10.0  # "A"
    logits[6, 0, 1] = 10.0  # "1"
    e.state["feeds"], e.state["truth"] = [], ["A1"]
    score, kept, text = e.compare(e, [{"logits": logits}], [{"logits": logits}])
    assert kept and "1/1 right, this one 1" in text
    e = entries["fsmn-vad"]
    e.state["feeds"], e.state["truth"] = [], []
    probs = np.zeros((1, 100, 248), np.float32)
    probs[0, :50, 0] = 1.0
    probs[0, 50:, 3] = 1.0
    flipped = probs.copy()
    flipped[0, 40:50, 0], flipped[0, 40:50, 3] = 0.0, 1.0
    assert not e.compare(e, [{"logits": probs}], [{"logits": flipped}])[1]  # 10 % of frames changed


def test_magika_features_match_the_recipe():
    small = b"  \n hello world \n\n"
    f = zd.magika_features(small, 8, 8, 256, 4096)
    assert f.dtype == np.int32 and f.shape == (16,)
    assert bytes(f[:8].tolist()) == b"hello wo"  # stripped, then the first bytes
    assert bytes(f[8:].tolist()) == b"lo world"  # stripped, then the last bytes
    f = zd.magika_features(b"abc", 8, 8, 256, 4096)
    assert f.tolist() == [97, 98, 99] + [256] * 10 + [97, 98, 99]  # padded after / before
    big = b" " * 10 + bytes(range(256)) * 20 + b"\n\n"
    f = zd.magika_features(big, 16, 16, 256, 4096)
    assert f[0] == 0 and f[15] == 15  # lstripped
    assert f[-1] == 255  # rstripped
    files = zd.sample_files(0)
    assert len({t for t, _ in files}) >= 25


def test_kaldi_fbank_and_lfr():
    rate = 16000
    t = np.arange(rate) / rate
    wave = 3000 * np.sin(2 * np.pi * 1000 * t)
    fb = zd.kaldi_fbank(wave, rate, 80)
    assert fb.shape == (98, 80)
    peak = fb.mean(0).argmax()
    mel = lambda f: 1127 * np.log(1 + f / 700)  # noqa: E731
    centres = np.linspace(mel(20), mel(8000), 82)[1:-1]
    assert abs(centres[peak] - mel(1000)) < 2 * (centres[1] - centres[0])
    x = zd.lfr_cmvn(fb, 5, 1, np.zeros(400, np.float32), np.ones(400, np.float32))
    assert x.shape == (98, 400)
    np.testing.assert_allclose(x[2, 160:240], fb[2])  # frame i is the middle of its 5


def test_methods_and_selection():
    assert zoo.method("sqnr35")[1] and zoo.method("bits3.5")[1] and not zoo.method("int8")[1]
    with pytest.raises(SystemExit):
        zoo.method("nonsense")
    with pytest.raises(SystemExit):
        zoo.by_name(["no-such-model"])
    names = [e.name for e in zoo.entries()]
    assert len(names) == len(set(names))
    for e in zoo.entries():
        assert len(e.source.sha256) == 64 and len(e.source.onnx_sha256) == 64


def test_detections_agree_reports_confident_boxes():
    boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float)
    ref = [(boxes, np.array([0, 0]), np.array([0.9, 0.3]))]
    out = [(boxes[:1], np.array([0]), np.array([0.9]))]
    score, kept, text = zd.detections_agree(ref, out)
    assert score == 0.5 and not kept and "scored >= 0.5: 1/1 found" in text


def test_onset_events_and_peak_picking():
    act = np.zeros(300)
    act[[50, 52, 150, 250]] = 1.0
    peaks = zd.pick_onsets(act, smooth=0.0)
    np.testing.assert_allclose(peaks, [0.5, 1.5, 2.5])  # 50 and 52 combined (within 30 ms)
    score, kept, text = zd.events_agree([peaks], [peaks + 0.02], 0.05, what="onsets")
    assert kept and score == 1.0
    score, kept, _ = zd.events_agree([peaks], [np.r_[peaks, 2.9]], 0.05)
    assert score == pytest.approx(0.75) and not kept
    assert np.isnan(zd.events_agree([np.zeros(0)], [peaks], 0.05)[0])
