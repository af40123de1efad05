"""`hyperonnx bench runtime` and the probe it shares with `bench models`: small inputs, no timings
asserted (the figures are benchmarks), only what can be wrong regardless of the machine."""

import numpy as np
import pytest

import hyperonnx
from hyperonnx.bench import probe, runtime
from hyperonnx.cli import main
from runtime_models import mlp_model, mlp_weights


def test_parse_size():
    assert runtime.parse_size("1M") == 1 << 20 and runtime.parse_size("3k") == 3072
    assert runtime.parse_size("1001") == 1001
    for bad in ("", "1", "M", "x2M"):
        with pytest.raises(ValueError):
            runtime.parse_size(bad)


@pytest.mark.parametrize("codec", runtime.CODECS)
def test_random_seed_is_valid_and_decodes(codec):
    seed = runtime.random_seed(1001, 10, np.random.default_rng(0), codec)
    hyperonnx.format.validate(seed)
    assert seed.codec == codec and hyperonnx.decode(seed).shape == (1001,)


def test_decode_rows_check_the_kernel_against_the_reference(capsys):
    # measure_decode compares the kernel's output with the reference decoder before timing it
    rows = runtime.measure_decode([4099], threads=2, log=lambda line: None)
    assert [(r["dtype"], r["codec"]) for r in rows] == [(d, c) for d in ("float32", "float16")
                                                        for c in ("winding", "lattice", "trellis")]
    for row in rows:
        assert row["decode_1t_gbs"] > 0 and row["memcpy_gbs"] > 0
        assert row["ratio_1t"] == pytest.approx(row["decode_1t_gbs"] / row["memcpy_gbs"])
    lines = runtime.targets(rows, [])
    assert len(lines) == 12 and all(isinstance(line["met"], bool) for line in lines)


def test_cli_decode_only(capsys):
    assert main(["bench", "runtime", "--sizes", "2K", "--no-models", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "memcpy GB/s" in out and "Targets (issues 4, 14, 22 and 25)" in out and "1 thread / memcpy" in out


def test_fused_kernel_limits():
    """The per-kernel table: each kernel's time, weights per ns and the bytes it streams; packing
    auto reads a packed form (int8 always; float where the CPU has AVX-512 VBMI), none the seed."""
    rows = runtime.measure_fused(log=lambda line: None, shapes=((1, 64, 128), (20, 64, 128)))
    assert len(rows) == 2 * len(runtime.FUSED_KERNELS)
    for row in rows:
        assert row["ms"] > 0 and row["weights_per_ns"] > 0 and row["read_gbs"] > 0
        assert (row["packed_mb"] > 0) == (row["reads"] == "packed")
        if row["packing"] == "none":
            assert row["reads"] == "seed"
        elif row["compute"] == "int8":
            assert row["packed_mb"] >= 64 * 128 / 1e6


def test_cli_bad_arguments(capsys):
    assert main(["bench", "runtime", "--sizes", "x", "--no-models"]) == 2
    assert "bad size" in capsys.readouterr().err
    assert main(["bench", "runtime", "--sizes", "", "--models", "resnet"]) == 2
    assert "unknown model" in capsys.readouterr().err


def test_probe_peak_is_its_own(tmp_path):
    """The probe's peak RSS is the child's own, not the parent's (ru_maxrss survives fork+exec)."""
    model = tmp_path / "mlp.onnx"
    model.write_bytes(mlp_model(mlp_weights(), compress=True).SerializeToString())
    ballast = np.ones(400 << 20, np.uint8)  # 400 MB resident in the parent
    x = {"x": np.zeros((2, 64), np.float32)}
    for mode in ("load", "stream"):
        result, outputs = probe.measure(model, x, x, mode, runs=2, threads=1)
        assert result["peak_rss_mb"] < 350 and result["peak_rss_mb"] >= result["baseline_rss_mb"]
        assert outputs[next(iter(outputs))].shape == (2, 10)
    del ballast


def test_session_targets_use_alternating_latency_and_rss_above_the_runtime():
    def row(method, latency, ratio, rss, model="digits"):
        return {"model": model, "method": method, "latency_ms": latency, "latency_alternating": ratio,
                "session_rss_mb": rss, "runtime_rss_mb": 20.0}
    rows = [row("float32", 10.0, 1.0, 120.0), row("fused", 11.0, 1.2, 40.0), row("load", 11.0, 1.02, 180.0),
            row("stream", 14.0, 1.4, 70.0)]
    lines = {line["target"].split(": ")[1]: line for line in runtime.targets([], rows)}
    fused = lines["fused latency / float32 (alt.) <= 1.3"]
    assert fused["measured"] == 1.2 and fused["met"]  # the alternating runs' ratio, not 11 / 10
    load = lines["load (RSS-base - onnxruntime alone) / float32's <= 1"]
    assert load["measured"] == 1.6 and not load["met"]  # (180 - 20) / (120 - 20)
    stream = lines["stream (RSS-base - onnxruntime alone) / float32's <= 0.5"]
    assert stream["measured"] == 0.5 and stream["met"]
    llama = [row("float32", 10.0, 1.0, 600.0, "llama"), row("fused", 5.0, 0.5, 100.0, "llama"),
             row("nbits-b128-a4", 4.0, 0.4, 100.0, "llama")]
    lines = {line["target"].split(": ")[1]: line for line in runtime.targets([], llama)}
    assert lines["fused latency / float32 (alt.) <= 0.6"]["met"]
    assert lines["fused latency / MatMulNBits b128 a4 (alt.) <= 1.5"]["measured"] == pytest.approx(1.25)
    llama.append(row("fused-int8", 4.0, 0.42, 100.0, "llama"))
    lines = {line["target"].split(": ")[1]: line for line in runtime.targets([], llama)}
    assert lines["fused-int8 latency / MatMulNBits b128 a4 (alt.) <= 1.1"]["measured"] == pytest.approx(1.05)
    minilm = [dict(row(method, 10.0, ratio, 100.0, "minilm"), cos_vs_float32=cos)
              for method, ratio, cos in (("float32", 1.0, 1.0), ("int8", 0.5, 0.95), ("fused-int8", 0.6, 0.97))]
    lines = {line["target"].split(": ")[1]: line for line in runtime.targets([], minilm)}
    assert not lines["fused-int8 latency / int8 quantize_dynamic (alt.) <= 1"]["met"]
    assert lines["int8 quantize_dynamic cosine - fused-int8 cosine <= 0"]["met"]
    standard = [row("float32", 10.0, 1.0, 140.0, "minilm"),
                dict(row("std-int8", 8.0, 0.8, 63.0, "minilm"), cos_vs_fused=0.9985)]  # issue 22
    lines = {line["target"].split(": ")[1]: line for line in runtime.targets([], standard)}
    assert lines["std-int8 RSS-base / float32's <= 0.45"]["measured"] == pytest.approx(0.45)
    assert lines["std-int8 latency / float32 (alt.) <= 1"]["met"]
    assert not lines["std-int8 cosine to fused's output >= 0.999"]["met"]


def test_runtime_baseline_is_small_and_positive():
    assert 0 < runtime.runtime_baseline(1, threads=1) < 200


def test_alternating_latency_ratios(tmp_path):
    weights = mlp_weights()
    original, compressed = tmp_path / "o.onnx", tmp_path / "c.onnx"
    original.write_bytes(mlp_model(weights).SerializeToString())
    compressed.write_bytes(mlp_model(weights, compress=True).SerializeToString())
    fused = tmp_path / "f.onnx"
    hyperonnx.save(hyperonnx.compress(original), fused)
    paths = {"float32": original, "load": compressed, "stream": compressed, "fused": fused}
    ratios = runtime.alternating_latency(paths, {"x": np.zeros((1, 64), np.float32)}, runs=5, threads=1)
    assert set(ratios) == set(paths) and ratios["float32"] == 1.0
    assert all(r > 0 for r in ratios.values())
