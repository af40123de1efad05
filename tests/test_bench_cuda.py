"""`hyperonnx bench cuda`'s host side, which runs without a GPU: its GPU bit packer equals the
codec's (on torch's CPU device), the preset codebooks and lattice rows are valid, the reference
bytes of a tensor's two ends match a whole decode, and without a GPU the command says so and
exits 1."""

import numpy as np
import pytest

import hyperonnx

from onnx import TensorProto
from hyperonnx.bench import cuda as bench_cuda
from hyperonnx.cli import main
from hyperonnx.codec import bitpack
from hyperonnx.format import Seed


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


@pytest.mark.parametrize("bits", [2, 4, 8, 12, 16])
def test_lattice_reference_ends_match_a_whole_decode(bits):
    """The bench checks the first and last pairs of a decode separately: those reference bytes are
    the matching slices of the whole tensor's."""
    attrs = bench_cuda.lattice_attributes(bits)
    rng = np.random.default_rng(bits)
    size, ends = 40 * bench_cuda.LATTICE_GROUP, 300
    steps = rng.integers(0, (1 << bits) - 1, size // 2)
    scales = rng.uniform(0.5, 2.0, size // bench_cuda.LATTICE_GROUP).astype(np.float16)
    whole = Seed("lattice", (size,), TensorProto.FLOAT, bitpack.pack(steps.astype(np.uint64), bits), attrs,
                 scales=scales)
    full = hyperonnx.decode(whole).tobytes()
    tail_start = size // 2 - ends
    tail_start -= tail_start % (bench_cuda.LATTICE_GROUP // 2)
    head = bench_cuda.lattice_reference_bytes(steps[:ends], scales, TensorProto.FLOAT, attrs)
    tail = bench_cuda.lattice_reference_bytes(steps[tail_start:], scales[2 * tail_start // bench_cuda.LATTICE_GROUP:],
                                              TensorProto.FLOAT, attrs)
    assert head == full[:8 * ends] and tail == full[8 * tail_start:]
    assert np.isfinite(np.frombuffer(full, np.float32)).all()


def test_bad_lattice_bits_refused(capsys):
    assert main(["bench", "cuda", "--lattice-bits", "4,17"]) == 1
    assert "index bits must be in [2, 16]" in capsys.readouterr().err


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
