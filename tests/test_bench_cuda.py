"""`hyperonnx bench cuda`'s host side, which runs without a GPU: its GPU bit packer equals the
codec's (on torch's CPU device), the preset codebooks are valid, and without a GPU the command
says so and exits 1."""

import numpy as np
import pytest

from onnx import TensorProto
from hyperonnx.bench import cuda as bench_cuda
from hyperonnx.cli import main
from hyperonnx.codec import bitpack


@pytest.mark.parametrize("bits", range(1, 25))
def test_pack_on_gpu_matches_bitpack(bits):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(bits)
    indices = rng.integers(0, 1 << bits, 1001)
    got = bench_cuda.pack_on_gpu(torch, torch.from_numpy(indices), bits).numpy()
    assert got.tobytes() == bitpack.pack(indices.astype(np.uint64), bits).tobytes()


def test_preset_codebooks_are_valid_attributes():
    books = bench_cuda.preset_codebooks()
    assert "paper" in books
    for book in books.values():
        codebook = (book["points"] + 1) * (book["rings"] + 1)
        assert 1 <= (codebook - 1).bit_length() <= 24
        assert len(book["ring_scales"]) == book["rings"] and all(s > 1 for s in book["ring_scales"])
        indices = np.arange(min(codebook, 64))
        out = np.frombuffer(bench_cuda.reference_bytes(indices, TensorProto.FLOAT, 24, book), np.float32)
        assert out.size == 2 * indices.size and np.isfinite(out).all()


def test_sizes_parse():
    assert [bench_cuda.parse_size(s) for s in ("1M", "16m", "512M", "4K", "1000")] == [
        1 << 20, 16 << 20, 512 << 20, 4096, 1000]


def test_without_gpu_exits_1(capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main(["bench", "cuda", "--sizes", "1M"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no CUDA GPU" in err[0], err
