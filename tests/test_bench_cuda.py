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


def test_fused_shapes_parse():
    assert bench_cuda.parse_shapes("4096x4096, 4096X14336,") == [(4096, 4096), (4096, 14336)]
    assert bench_cuda.parse_shapes("") == []
    for bad in ("4096", "0x5", "ax4"):
        with pytest.raises(ValueError):
            bench_cuda.parse_shapes(bad)


def test_bad_fused_shapes_refused(capsys):
    assert main(["bench", "cuda", "--fused-shapes", "4096x"]) == 1
    assert "error" in capsys.readouterr().err


@pytest.mark.parametrize("codec", ["lattice", "trellis"])
@pytest.mark.parametrize("elements", [1000, 4096 * 3 + 5])
def test_random_fused_seeds_are_valid(codec, elements):
    """The fused rows' random seeds: the lengths FORMAT.md asks, every index valid, finite weights
    of order 1e-4."""
    payload, scales, attrs = bench_cuda.random_fused_seed(codec, elements, np.random.default_rng(elements))
    seed = Seed(codec, (elements,), TensorProto.FLOAT, payload, attrs, scales=scales.view(np.float16))
    w = hyperonnx.decode(seed)
    assert w.shape == (elements,) and np.isfinite(w).all() and 0 < np.abs(w).max() < 1e-2


@pytest.mark.parametrize("codec", ["lattice", "trellis"])
def test_fused_weights_pass_the_library_checks(codec):
    """The fused rows' weights through the library's create entry point: accepted by the host
    checks, so the call either creates the weight (a GPU) or fails at the copy (status 2)."""
    fns = bench_cuda.fused_entry_points(hyperonnx.get_library_path())
    if fns is None:
        pytest.skip("the library was built without the CUDA kernels")
    payload, scales, attrs = bench_cuda.random_fused_seed(codec, 96 * 40, np.random.default_rng(1))
    try:
        handle = bench_cuda.create_fused_weight(fns, codec, payload, scales, attrs, (96, 40))
    except RuntimeError as e:
        assert "(status 2)" in str(e), e
    else:
        fns["free"](handle)
